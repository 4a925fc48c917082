//! hier's kernels on Flex tensors (f32): reached through [`super`]'s dispatch, so they serve
//! crates built against stock Burn as well as this workspace.

use burn::tensor::{DType, Shape};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::fast_math;

/// Elements per parallel task: large enough to amortise rayon's scheduling.
const CHUNK: usize = 1 << 15;

/// A row-major f32 tensor of `values`.
pub fn new_f32(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// The tensor's elements in row-major order, one copy at most: contiguous rows are slice copies
/// (stock Flex copies views of three or more dimensions that do not collapse to two one element
/// at a time).
pub fn contiguous(tensor: FlexTensor) -> FlexTensor {
    let layout = tensor.layout();
    if layout.is_contiguous() && layout.start_offset() == 0 {
        return tensor;
    }
    let n = layout.num_elements();
    let shape = layout.shape().clone();
    let dims = shape.to_vec();
    let strides = layout.strides().to_vec();
    let offset = layout.start_offset() as isize;
    let src: &[f32] = tensor.storage();
    let rank = dims.len();
    let cols = dims.last().copied().unwrap_or(1).max(1);
    let col_stride = strides.last().copied().unwrap_or(1);
    let mut out = vec![0f32; n];
    // an odometer over every axis but the last; each row copied as a slice where it can be
    let mut index = vec![0usize; rank.saturating_sub(1)];
    let mut base = offset;
    for row in out.chunks_exact_mut(cols) {
        if col_stride == 1 {
            row.copy_from_slice(&src[base as usize..base as usize + cols]);
        } else {
            for (j, y) in row.iter_mut().enumerate() {
                *y = src[(base + j as isize * col_stride) as usize];
            }
        }
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            base += strides[axis];
            if index[axis] < dims[axis] {
                break;
            }
            base -= dims[axis] as isize * strides[axis];
            index[axis] = 0;
        }
    }
    new_f32(out, shape)
}

/// The contiguous f32 values of `tensor` and its shape.
fn values(tensor: &FlexTensor) -> (&[f32], Shape) {
    let layout = tensor.layout();
    let shape = layout.shape().clone();
    let (start, end) = layout
        .contiguous_offsets()
        .expect("callers pass contiguous tensors");
    (&tensor.storage::<f32>()[start..end], shape)
}

/// `out = f(x)` in parallel tasks of `task` elements (a multiple of any row length `f` needs).
fn map(x: FlexTensor, task: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> FlexTensor {
    let x = contiguous(x);
    let (xs, shape) = values(&x);
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(task)
        .zip(xs.par_chunks(task))
        .for_each(|(y, x)| f(x, y));
    new_f32(out, shape)
}

/// A copy of `grad` updated by `df(state, grad)` (a backward: `state` is the input or output the
/// gradient needs), in parallel tasks of `task` elements.
fn map_backward(
    state: FlexTensor,
    grad: FlexTensor,
    task: usize,
    df: impl Fn(&[f32], &mut [f32]) + Sync,
) -> FlexTensor {
    let state = contiguous(state);
    let grad = contiguous(grad);
    let (states, shape) = values(&state);
    let mut out = values(&grad).0.to_vec();
    out.par_chunks_mut(task)
        .zip(states.par_chunks(task))
        .for_each(|(g, s)| df(s, g));
    new_f32(out, shape)
}

/// Exact GELU.
pub fn gelu(x: FlexTensor) -> FlexTensor {
    map(x, CHUNK, fast_math::gelu_slice)
}

/// `grad · gelu'(x)`.
pub fn gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    map_backward(x, grad, CHUNK, fast_math::gelu_backward_slice)
}

/// SiLU, `x · σ(x)`.
pub fn silu(x: FlexTensor) -> FlexTensor {
    map(x, CHUNK, fast_math::silu_slice)
}

/// `grad · silu'(x)`.
pub fn silu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    map_backward(x, grad, CHUNK, fast_math::silu_backward_slice)
}

/// The last axis' length and the whole rows of about [`CHUNK`] elements per parallel task.
fn rows(tensor: &FlexTensor) -> (usize, usize) {
    let row = tensor.layout().shape().last().copied().unwrap_or(1).max(1);
    (row, (CHUNK / row).max(1) * row)
}

/// Softmax over the last axis.
pub fn softmax_last(x: FlexTensor) -> FlexTensor {
    let (row, task) = rows(&x);
    map(x, task, |x, y| fast_math::softmax_rows(x, y, row))
}

/// Softmax's backward over the last axis from its output `y`: `y · (g − Σ g·y)`.
pub fn softmax_last_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let (row, task) = rows(&y);
    map_backward(y, grad, task, |y, g| {
        fast_math::softmax_backward_rows(y, g, row)
    })
}

/// `tensor` row-major from offset 0 and not shared, so its storage can be written in place.
fn owned(tensor: FlexTensor) -> FlexTensor {
    let mut tensor = contiguous(tensor);
    if !tensor.is_unique() {
        tensor.storage_mut::<f32>(); // copy-on-write: the copy is this tensor's own
    }
    tensor
}

/// `tensor`'s first `layout.num_elements()` values, written in place ([`owned`] tensors only).
fn values_mut(tensor: &mut FlexTensor) -> &mut [f32] {
    let n = tensor.layout().num_elements();
    &mut tensor.storage_mut::<f32>()[..n]
}

/// Adam's update in one pass over `param`, `grad` and the moments (from zero on the first
/// step), each element through Burn's operations in Burn's order: `(param, m, v)`.
pub fn adam_update(
    param: FlexTensor,
    grad: FlexTensor,
    moments: Option<(FlexTensor, FlexTensor)>,
    c: &super::adam::AdamCoefficients,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let mut param = owned(param);
    // a gradient cut from the all-reduce buffer is contiguous at an offset: read it in place
    let grad = match grad.layout().contiguous_offsets() {
        Some(_) => grad,
        None => contiguous(grad),
    };
    let shape = param.layout().shape().clone();
    let first = moments.is_none();
    let (mut m, mut v) = match moments {
        Some((m, v)) => (owned(m), owned(v)),
        None => {
            let zeros = || new_f32(vec![0f32; shape.num_elements()], shape.clone());
            (zeros(), zeros())
        }
    };
    let c = *c;
    let update = move |p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
        adam_slices(p, m, v, g, &c, first)
    };
    values_mut(&mut param)
        .par_chunks_mut(CHUNK)
        .zip(values_mut(&mut m).par_chunks_mut(CHUNK))
        .zip(values_mut(&mut v).par_chunks_mut(CHUNK))
        .zip(values(&grad).0.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| update(p, m, v, g));
    (param, m, v)
}

/// [`adam_update`]'s arithmetic over equal-length slices, compiled for the CPU it runs on. Plain
/// multiplies and adds (Rust never fuses them), so each element rounds as Burn's passes do.
#[macerator::with_simd]
#[allow(clippy::extra_unused_type_parameters)] // `S` selects the instruction set
fn adam_slices<S: macerator::Simd>(
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    c: &super::adam::AdamCoefficients,
    first: bool,
) {
    let n = p.len();
    let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
    let (f1, f2) = (1.0 - c.beta_1, 1.0 - c.beta_2);
    if first {
        // Burn starts the moments at `g·(1 − β)`, not at `0·β + g·(1 − β)`
        for i in 0..n {
            m[i] = g[i] * f1;
            v[i] = (g[i] * g[i]) * f2;
        }
    } else {
        for i in 0..n {
            m[i] = m[i] * c.beta_1 + g[i] * f1;
            v[i] = v[i] * c.beta_2 + (g[i] * g[i]) * f2;
        }
    }
    for i in 0..n {
        p[i] -= (m[i] * c.step_factor) / (v[i].sqrt() + c.epsilon) * c.lr;
    }
}
