//! Layer norm on `Autodiff<Flex>` as one node: Flex's fused forward and a one-pass backward per
//! row. Stock autodiff records Burn's decomposition (mean, subtract, square, mean, add, square
//! root, divide, multiply, add) and runs about twice as many passes backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Flex;
use burn::tensor::ops::ModuleOps;
use burn::tensor::Shape;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{contiguous, new_f32};
use super::AdFlexTensor;

/// Rows per parallel task.
const TASK_ROWS: usize = 64;

/// Lanes of the partial sums below: independent accumulators the compiler keeps in one vector
/// register (a single running sum would serialise on each addition).
const LANES: usize = 16;

/// `Σ f(a[i], b[i])` over equal-length slices, in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (a_main, b_main) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = (a_main.remainder().iter().zip(b_main.remainder()))
        .map(|(&a, &b)| f(a, b))
        .sum();
    for (a, b) in a_main.zip(b_main) {
        for l in 0..LANES {
            acc[l] += f(a[l], b[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One row's input gradient into `dx`, and its `g · x̂` and `g` added to `d_gamma`, `d_beta`:
/// `x̂ = (x − μ) · rstd`, `dx = rstd · (gγ − mean(gγ) − x̂ · mean(gγ · x̂))`.
fn row_backward(
    x: &[f32],
    g: &[f32],
    gamma: &[f32],
    epsilon: f32,
    dx: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    let d = x.len() as f32;
    let mean = lane_sum(x, x, |x, _| x) / d;
    let var = lane_sum(x, x, |x, _| (x - mean) * (x - mean)) / d;
    let rstd = 1.0 / (var + epsilon).sqrt();
    // dx's slot holds g·γ until the last pass
    for ((s, g), gamma) in dx.iter_mut().zip(g).zip(gamma) {
        *s = g * gamma;
    }
    let mean_scaled = lane_sum(dx, dx, |s, _| s) / d;
    let mean_projected = lane_sum(dx, x, |s, x| s * ((x - mean) * rstd)) / d;
    for i in 0..x.len() {
        let normed = (x[i] - mean) * rstd;
        d_gamma[i] += g[i] * normed;
        d_beta[i] += g[i];
        dx[i] = rstd * (dx[i] - mean_scaled - normed * mean_projected);
    }
}

/// The gradients of layer norm over the last axis: `(dx, dγ, dβ)`.
fn backward(
    x: FlexTensor,
    gamma: FlexTensor,
    epsilon: f32,
    grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, gamma, grad) = (contiguous(x), contiguous(gamma), contiguous(grad));
    let dims = x.layout().shape().to_vec();
    let d = *dims.last().expect("layer norm has a last axis");
    let n = x.layout().num_elements();
    let (xs, gs) = (&x.storage::<f32>()[..n], &grad.storage::<f32>()[..n]);
    let gamma = &gamma.storage::<f32>()[..d];
    let mut dx = vec![0f32; n];
    let task = TASK_ROWS * d;
    let (d_gamma, d_beta) = dx
        .par_chunks_mut(task)
        .zip(xs.par_chunks(task).zip(gs.par_chunks(task)))
        .map(|(dx, (x, g))| {
            let (mut d_gamma, mut d_beta) = (vec![0f32; d], vec![0f32; d]);
            for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                row_backward(x, g, gamma, epsilon, dx, &mut d_gamma, &mut d_beta);
            }
            (d_gamma, d_beta)
        })
        .reduce(
            || (vec![0f32; d], vec![0f32; d]),
            |(mut a, mut b), (c, e)| {
                a.iter_mut().zip(c).for_each(|(a, c)| *a += c);
                b.iter_mut().zip(e).for_each(|(b, e)| *b += e);
                (a, b)
            },
        );
    (
        new_f32(dx, Shape::from(dims)),
        new_f32(d_gamma, Shape::from(vec![d])),
        new_f32(d_beta, Shape::from(vec![d])),
    )
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = (FlexTensor, FlexTensor, f32); // input, γ, ε

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, epsilon) = ops.state;
        let (dx, d_gamma, d_beta) = backward(x, gamma, epsilon, grad);
        for (parent, grad) in ops.parents.iter().zip([dx, d_gamma, d_beta]) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// `(x − μ) / sqrt(σ² + ε) · γ + β` over the last axis (biased variance), as one node.
pub fn on_autodiff(
    x: AdFlexTensor,
    gamma: AdFlexTensor,
    beta: AdFlexTensor,
    epsilon: f64,
) -> AdFlexTensor {
    let y = Flex::layer_norm(
        x.primitive.clone(),
        gamma.primitive.clone(),
        Some(beta.primitive),
        epsilon,
    );
    match LayerNormBackward
        .prepare::<NoCheckpointing>([x.node, gamma.node, beta.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, gamma.primitive, epsilon as f32), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
