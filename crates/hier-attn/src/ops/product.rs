//! Linear layers on Flex as 2-D matrix products over all `batch · seq` rows, straight through
//! gemm: transposed operands are stride swaps (no copies) and outputs are written once (never
//! zero-filled first). Stock Flex broadcasts the weight over the batch, one product per batch
//! element, and its weight gradient multiplies per element before summing over the batch.

use std::mem::MaybeUninit;

use burn::tensor::Shape;
use burn_flex::FlexTensor;

use super::flex::{contiguous, new_f32};

/// Products below this many multiply-adds run on one thread: rayon's split costs more.
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// A strided 2-D view of f32 values: element `(i, j)` at `offset + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    values: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Matrix<'a> {
    /// A 2-D tensor as it is laid out (any strides, e.g. a narrowed or transposed weight).
    fn of(tensor: &'a FlexTensor) -> Self {
        let layout = tensor.layout();
        let (dims, strides) = (layout.shape(), layout.strides());
        assert_eq!(dims.num_dims(), 2, "a matrix is 2-D");
        Matrix {
            values: tensor.storage::<f32>(),
            offset: layout.start_offset(),
            rows: dims[0],
            cols: dims[1],
            row_stride: strides[0],
            col_stride: strides[1],
        }
    }

    fn transposed(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn ptr(&self) -> *const f32 {
        self.values[self.offset..].as_ptr()
    }
}

/// `a · b` as a new row-major `[a.rows, b.cols]` tensor.
fn product(a: Matrix, b: Matrix) -> FlexTensor {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions agree");
    let shape = Shape::from(vec![m, n]);
    if k == 0 || m == 0 || n == 0 {
        return new_f32(vec![0f32; m * n], shape);
    }
    let mut out: Vec<MaybeUninit<f32>> = Vec::with_capacity(m * n);
    // SAFETY: `MaybeUninit` needs no initialisation; gemm writes every element below.
    unsafe { out.set_len(m * n) };
    let parallelism = if m * n * k >= PARALLEL_WORK && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers and strides describe `a`, `b` (in bounds of their storage, checked by
    // Flex's layouts) and the `m × n` row-major output; `read_dst = false` with `alpha = 0`,
    // `beta = 1` writes `out = a · b` without reading `out`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            false,
            a.ptr(),
            a.col_stride,
            a.row_stride,
            b.ptr(),
            b.col_stride,
            b.row_stride,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    let mut out = std::mem::ManuallyDrop::new(out);
    // SAFETY: same allocation, length and capacity; every element was written by gemm.
    let out =
        unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity()) };
    new_f32(out, shape)
}

/// `[.., d]` as a row-major `[rows, d]` (a copy only when not row-major already).
pub fn as_rows(tensor: FlexTensor) -> FlexTensor {
    let tensor = contiguous(tensor);
    let dims = tensor.layout().shape().to_vec();
    let d = dims.last().copied().unwrap_or(1);
    let rows = dims.iter().product::<usize>() / d.max(1);
    tensor.reshape(Shape::from(vec![rows, d]))
}

/// `[rows, d]` back to `like`'s leading dimensions with last dimension `d`.
pub fn from_rows(tensor: FlexTensor, like: &[usize]) -> FlexTensor {
    let mut dims = like.to_vec();
    let last = dims.len() - 1;
    dims[last] = tensor.layout().shape()[1];
    tensor.reshape(Shape::from(dims))
}

/// `rows · weight + bias` (`rows`: `[n, d_in]` from [`as_rows`]; `weight`: `[d_in, d_out]`, as
/// Burn's `Linear`): `[n, d_out]`.
pub fn linear_rows(
    rows: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> FlexTensor {
    let mut out = product(Matrix::of(rows), Matrix::of(weight));
    if let Some(bias) = bias {
        let bias = contiguous(bias.clone());
        let cols = out.layout().shape()[1];
        let b = &bias.storage::<f32>()[..cols];
        for row in out.storage_mut::<f32>().chunks_exact_mut(cols) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
    out
}

/// The gradient of [`linear_rows`]'s input: `grad · weightᵀ`, in `grad`'s leading dimensions.
pub fn linear_x_backward(weight: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let dims = grad.layout().shape().to_vec();
    let rows = as_rows(grad.clone());
    from_rows(
        product(Matrix::of(&rows), Matrix::of(weight).transposed()),
        &dims,
    )
}

/// The gradient of [`linear_rows`]'s weight from its input rows: `xᵀ · grad`, `[d_in, d_out]`.
pub fn linear_weight_backward(x_rows: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let rows = as_rows(grad.clone());
    product(Matrix::of(x_rows).transposed(), Matrix::of(&rows))
}

/// The gradient of [`linear_rows`]'s bias: `grad` summed over every row, `[d_out]`.
pub fn linear_bias_backward(grad: &FlexTensor) -> FlexTensor {
    let rows = as_rows(grad.clone());
    let cols = rows.layout().shape()[1];
    let mut sum = vec![0f32; cols];
    for row in rows.storage::<f32>()[..rows.layout().num_elements()].chunks_exact(cols) {
        sum.iter_mut().zip(row).for_each(|(s, g)| *s += g);
    }
    new_f32(sum, Shape::from(vec![cols]))
}
