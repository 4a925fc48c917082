//! hier's kernels as single autodiff nodes on `Autodiff<Flex>`, each with its own backward
//! (Burn's custom-backward API, as the Burn book shows for custom kernels). Stock autodiff
//! records softmax as five nodes whose backward recomputes the exponentials, and runs GELU's
//! and SiLU's backward through scalar `erf` and `exp`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn_flex::FlexTensor;

use super::flex;

type AdTensor = FloatTensor<Autodiff<Flex>>;

/// An element-wise function as one node; its backward needs only the input.
#[derive(Debug)]
struct Elementwise {
    /// `(x, grad) -> grad · f'(x)`
    backward: fn(FlexTensor, FlexTensor) -> FlexTensor,
}

impl Backward<Flex, 1> for Elementwise {
    type State = FlexTensor; // the input

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| (self.backward)(x, g));
    }
}

fn elementwise(
    x: AdTensor,
    forward: fn(FlexTensor) -> FlexTensor,
    backward: fn(FlexTensor, FlexTensor) -> FlexTensor,
) -> AdTensor {
    match (Elementwise { backward })
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = forward(x.primitive.clone());
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

/// Exact GELU as one node.
pub fn gelu(x: AdTensor) -> AdTensor {
    elementwise(x, flex::gelu, flex::gelu_backward)
}

/// SiLU as one node.
pub fn silu(x: AdTensor) -> AdTensor {
    elementwise(x, flex::silu, flex::silu_backward)
}

#[derive(Debug)]
struct Softmax;

impl Backward<Flex, 1> for Softmax {
    type State = FlexTensor; // the output

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            flex::softmax_last_backward(y, g)
        });
    }
}

/// Softmax over the last axis as one node; its backward needs only the output.
pub fn softmax_last(x: AdTensor) -> AdTensor {
    match Softmax
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = flex::softmax_last(x.primitive);
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex::softmax_last(x.primitive)),
    }
}

/// The same node with its values in row-major order (a copy changes no value, so the graph
/// is unchanged).
pub fn contiguous(mut x: AdTensor) -> AdTensor {
    x.primitive = flex::contiguous(x.primitive);
    x
}
