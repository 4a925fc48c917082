//! Linear layers on Flex and `Autodiff<Flex>` through [`super::product`]: one 2-D product over all
//! rows forward, and one each for the input's and the weight's gradient.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Flex;
use burn_flex::FlexTensor;

use super::product::{
    as_rows, from_rows, linear_bias_backward, linear_rows, linear_weight_backward,
    linear_x_backward,
};
use super::AdFlexTensor;

/// `x · weight + bias` on Flex.
pub fn on_flex(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
    let dims = x.layout().shape().to_vec();
    from_rows(linear_rows(&as_rows(x), &weight, bias.as_ref()), &dims)
}

/// The node's backward; parents `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = (FlexTensor, FlexTensor); // the input as rows, the weight

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_rows, weight) = ops.state;
        if let Some(node) = &ops.parents[0] {
            grads.register::<Flex>(node.id, linear_x_backward(&weight, &grad));
        }
        if let Some(node) = &ops.parents[1] {
            grads.register::<Flex>(node.id, linear_weight_backward(&x_rows, &grad));
        }
        if let Some(node) = ops.parents.get(2).and_then(Option::as_ref) {
            grads.register::<Flex>(node.id, linear_bias_backward(&grad));
        }
    }
}

/// One node over `$nodes` (`[x, weight]` or `[x, weight, bias]`) with `y` computed already.
macro_rules! record {
    ($nodes:expr, $rows:expr, $weight:expr, $y:expr) => {
        match LinearBackward
            .prepare::<NoCheckpointing>($nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(($rows, $weight), $y),
            OpsKind::UnTracked(prep) => prep.finish($y),
        }
    };
}

/// `x · weight + bias` as one autodiff node.
pub fn on_autodiff(
    x: AdFlexTensor,
    weight: AdFlexTensor,
    bias: Option<AdFlexTensor>,
) -> AdFlexTensor {
    let dims = x.primitive.layout().shape().to_vec();
    let rows = as_rows(x.primitive);
    let b = bias.as_ref().map(|b| &b.primitive);
    let y = from_rows(linear_rows(&rows, &weight.primitive, b), &dims);
    match bias {
        Some(bias) => record!([x.node, weight.node, bias.node], rows, weight.primitive, y),
        None => record!([x.node, weight.node], rows, weight.primitive, y),
    }
}
