//! Auxiliary objectives beyond the reference 0.4.0, off by default (so parity is untouched):
//!
//! * **ProphetNet-style future tokens** (`prophet_loss_weight`): for every hierarchy with
//!   `c > 1`, a bias-free head on its final embedding at position `j` — which has seen the
//!   original tokens up to `j*s` — predicts the next `c` tokens `ids[j*s + 1 ..= j*s + c]`.
//!   No embedding is trained to predict a token it has seen.
//! * **Hierarchical autoregressive loss** (`hierarchical_ar_loss_weight`, the reference 0.2.0):
//!   for every hierarchy with `c > 1`, `Linear(d, d)` of the embedding at `t` is pulled toward the
//!   embedding at `t + 1` with `1 - cos`, averaged over batch and positions.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use hier_attn::ops::narrow;

use crate::loss::{cross_entropy, ids_at};

/// Where the future-token head's targets sit in the full sequence (inputs and the final label,
/// `n + 1` per row): for compressed position `j` and offset `k < c`, the token `j*s + 1 + k`.
/// Row-major `[positions, c]`.
pub fn prophet_positions(positions: usize, c: usize, s: usize) -> Vec<i64> {
    (0..positions)
        .flat_map(|j| (0..c).map(move |k| (j * s + 1 + k) as i64))
        .collect()
}

/// Targets of the future-token head, on the device: the ids `[batch, n + 1]` at
/// [`prophet_positions`], or `ignore_index` past their end. `[batch * positions * c]`, row-major
/// `[batch, positions, c]`.
pub fn prophet_targets<B: Backend>(
    ids: Tensor<B, 2, Int>,
    positions: usize,
    c: usize,
    s: usize,
    ignore_index: i64,
) -> Tensor<B, 1, Int> {
    let [batch, _] = ids.dims();
    ids_at(ids, &prophet_positions(positions, c, s), ignore_index).reshape([batch * positions * c])
}

/// Cross-entropy of the future-token head's logits `[batch, positions, c * V]` against
/// [`prophet_targets`] of `ids [batch, n + 1]`.
pub fn prophet_loss<B: Backend>(
    logits: Tensor<B, 3>,
    ids: Tensor<B, 2, Int>,
    c: usize,
    s: usize,
    ignore_index: i64,
) -> Tensor<B, 1> {
    let [batch, positions, cv] = logits.dims();
    let targets = prophet_targets(ids, positions, c, s, ignore_index);
    cross_entropy(
        logits.reshape([batch * positions * c, cv / c]),
        targets,
        ignore_index,
    )
}

/// `1 - mean_{b,t} cos(pred[:, t], embeds[:, t + 1])` (the reference 0.2.0's
/// `cosine_sim_loss(h_pred[:, :-1], h_embed[:, 1:])`, normalising with eps 1e-12; the target is
/// not detached, as there). `pred`, `embeds`: `[batch, n, d]`; 0 when `n < 2`.
pub fn hierarchical_ar_loss<B: Backend>(pred: Tensor<B, 3>, embeds: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, n, _] = embeds.dims();
    if n < 2 {
        return Tensor::zeros([1], &embeds.device());
    }
    let l2norm = |t: Tensor<B, 3>| t.clone() / t.square().sum_dim(2).sqrt().clamp_min(1e-12);
    let pred = l2norm(narrow(pred, 1, 0, n - 1));
    let next = l2norm(narrow(embeds, 1, 1, n - 1));
    let cos = (pred * next).sum_dim(2); // [b, n - 1, 1]
    cos.sum()
        .div_scalar((b * (n - 1)) as f64)
        .neg()
        .add_scalar(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn ids(values: [i64; 5]) -> Tensor<Flex, 2, Int> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [1, 5]),
            &Default::default(),
        )
    }

    fn targets(positions: usize, c: usize, s: usize) -> Vec<i64> {
        let t = prophet_targets(ids([10, 11, 12, 13, 14]), positions, c, s, -1);
        t.into_data().convert::<i64>().to_vec().unwrap()
    }

    #[test]
    fn prophet_targets_are_the_unseen_next_tokens() {
        // one row, n + 1 = 5 ids, c = 2, s = 1: position j predicts ids[j+1], ids[j+2]
        assert_eq!(targets(4, 2, 1), vec![11, 12, 12, 13, 13, 14, 14, -1]);
        // c = 4, s = 2: position j has seen up to 2j and predicts 2j+1 ..= 2j+4
        assert_eq!(targets(2, 4, 2), vec![11, 12, 13, 14, 13, 14, -1, -1]);
    }

    #[test]
    fn prophet_loss_of_uniform_logits_is_ln_v() {
        let device = Default::default();
        let logits = Tensor::<Flex, 3>::zeros([1, 4, 2 * 7], &device);
        let loss: f32 = prophet_loss(logits, ids([1, 2, 3, 4, 5]), 2, 1, 0).into_scalar();
        assert!((loss - 7f32.ln()).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn hierarchical_ar_loss_by_hand() {
        let device = Default::default();
        // embeds: e0 = (1, 0), e1 = (0, 1), e2 = (1, 1); pred = embeds
        let e = Tensor::<Flex, 3>::from_floats([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], &device);
        let loss: f32 = hierarchical_ar_loss(e.clone(), e).into_scalar();
        // cos(e0, e1) = 0, cos(e1, e2) = 1/sqrt(2)
        let expect = 1.0 - (0.0 + std::f32::consts::FRAC_1_SQRT_2) / 2.0;
        assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
    }
}
