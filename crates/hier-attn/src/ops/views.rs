//! Narrowing and axis swaps on `Autodiff<Flex>` as nodes whose backward writes the gradient
//! once, row by row. Stock autodiff fills a zero tensor and assigns the gradient into it through
//! Flex's element-at-a-time strided copy (narrow), and hands a strided view to the next node's
//! backward, which copies it element by element again on reshape (swap).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Flex;
use burn::tensor::Shape;
use burn_flex::FlexTensor;

use super::flex::{contiguous, new_f32};
use super::AdFlexTensor;

/// `grad` (the narrowed part) placed at `start` along `axis` of zeros shaped `dims`.
fn pad_into(grad: FlexTensor, dims: &[usize], axis: usize, start: usize) -> FlexTensor {
    let grad = contiguous(grad);
    let part = grad.layout().shape()[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let (src, whole) = (part * inner, dims[axis] * inner);
    let values = &grad.storage::<f32>()[..outer * src];
    let mut out = vec![0f32; outer * whole];
    for (dst, src) in out.chunks_exact_mut(whole).zip(values.chunks_exact(src)) {
        dst[start * inner..start * inner + src.len()].copy_from_slice(src);
    }
    new_f32(out, Shape::from(dims.to_vec()))
}

#[derive(Debug)]
struct NarrowBackward;

impl Backward<Flex, 1> for NarrowBackward {
    type State = (Vec<usize>, usize, usize); // the input's dims, axis, start

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (dims, axis, start) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            pad_into(g, &dims, axis, start)
        });
    }
}

/// `len` elements from `start` along `axis`, as a view; one node.
pub fn narrow(x: AdFlexTensor, axis: usize, start: usize, len: usize) -> AdFlexTensor {
    let dims = x.primitive.layout().shape().to_vec();
    let y = x.primitive.narrow(axis, start, len);
    match NarrowBackward
        .prepare::<NoCheckpointing>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((dims, axis, start), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[derive(Debug)]
struct SwapBackward;

impl Backward<Flex, 1> for SwapBackward {
    type State = (usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            contiguous(g.transpose(a, b))
        });
    }
}

/// Axes `a` and `b` swapped, the values laid out row-major; one node whose gradient is laid
/// out row-major too.
pub fn swap_dims(x: AdFlexTensor, a: usize, b: usize) -> AdFlexTensor {
    let y = contiguous(x.primitive.transpose(a, b));
    match SwapBackward
        .prepare::<NoCheckpointing>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((a, b), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
