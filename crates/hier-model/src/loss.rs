//! Reductions shared by the losses, with PyTorch's exact semantics. Targets and masks stay on
//! the device: the losses of a training step read nothing back to the host.

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};

/// `F.cross_entropy(logits, targets, ignore_index)`: mean negative log-likelihood over the
/// targets that are not `ignore_index` (NaN when every target is ignored, as in PyTorch).
///
/// * `logits`: `[N, V]`
/// * `targets`: `[N]` ids in `0..V` or `ignore_index`.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    ignore_index: i64,
) -> Tensor<B, 1> {
    let [n] = targets.dims();
    let ignored = targets.clone().equal_elem(ignore_index);
    let keep = ignored.clone().bool_not().float();
    // an ignored target still indexes a row: any id in range does, its term is masked out
    let index = targets.mask_fill(ignored, 0).reshape([n, 1]);
    let picked = log_softmax(logits, 1).gather(1, index).reshape([n]);
    // a count of 0 divides 0 by 0: NaN, as PyTorch's mean over no target
    (picked * keep.clone()).sum().neg().div(keep.sum())
}

/// `masked_mean(t, mask)` of torch-einops-utils: `sum(t * mask) / max(sum(mask expanded), 1e-5)`.
///
/// * `t`: `[batch, n, d]`; `mask`: `[batch, n]` weights (0 or 1), broadcast over `d`.
pub fn masked_mean<B: Backend>(t: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, n, d] = t.dims();
    let count = mask.clone().sum().mul_scalar(d as f64).clamp_min(1e-5);
    (t * mask.reshape([b, n, 1])).sum().div(count)
}

/// The ids of `ids [batch, len]` at `positions` (the same for every row), with `ignore_index`
/// for a position outside `0..len`: `[batch, positions.len()]`. The positions are host
/// metadata (they depend only on shapes); the ids never leave the device.
pub fn ids_at<B: Backend>(
    ids: Tensor<B, 2, Int>,
    positions: &[i64],
    ignore_index: i64,
) -> Tensor<B, 2, Int> {
    let [batch, len] = ids.dims();
    let device = ids.device();
    let before = positions.iter().map(|&p| -p).max().unwrap_or(0).max(0) as usize;
    let after = positions
        .iter()
        .map(|&p| p + 1 - len as i64)
        .max()
        .unwrap_or(0)
        .max(0) as usize;
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(Tensor::full([batch, before], ignore_index, &device));
    }
    parts.push(ids);
    if after > 0 {
        parts.push(Tensor::full([batch, after], ignore_index, &device));
    }
    let shifted: Vec<i64> = positions.iter().map(|&p| p + before as i64).collect();
    let index =
        Tensor::<B, 1, Int>::from_data(TensorData::new(shifted, [positions.len()]), &device);
    Tensor::cat(parts, 1).select(1, index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn ints(values: &[i64]) -> Tensor<Flex, 1, Int> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &Default::default(),
        )
    }

    #[test]
    fn cross_entropy_ignores_targets() {
        let device = Default::default();
        let logits = Tensor::<Flex, 2>::from_floats([[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]], &device);
        let loss: f32 = cross_entropy(logits, ints(&[1, 0, 7]), 7).into_scalar();
        // row 0: ln 2; row 1: -log_softmax([2, 0])[0] = ln(1 + e^-2); row 2 ignored
        let expect = (2f32.ln() + (1.0 + (-2f32).exp()).ln()) / 2.0;
        assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
        let all_ignored: f32 =
            cross_entropy(Tensor::<Flex, 2>::zeros([1, 2], &device), ints(&[7]), 7).into_scalar();
        assert!(all_ignored.is_nan());
    }

    #[test]
    fn masked_mean_counts_features() {
        let device = Default::default();
        let t = Tensor::<Flex, 3>::from_floats([[[1.0, 3.0], [10.0, 10.0]]], &device);
        let mask = |m: [f32; 2]| Tensor::<Flex, 2>::from_floats([m], &device);
        let m: f32 = masked_mean(t.clone(), mask([1.0, 0.0])).into_scalar();
        assert_eq!(m, 2.0);
        let none: f32 = masked_mean(t, mask([0.0, 0.0])).into_scalar();
        assert_eq!(none, 0.0);
    }

    #[test]
    fn ids_at_pads_with_the_ignore_index() {
        let ids =
            Tensor::<Flex, 2, Int>::from_ints([[10, 11, 12], [20, 21, 22]], &Default::default());
        let got: Vec<i64> = ids_at(ids.clone(), &[-2, 0, 2, 4], -1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        assert_eq!(got, vec![-1, 10, 12, -1, -1, 20, 22, -1]);
        let got: Vec<i64> = ids_at(ids, &[1], -1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        assert_eq!(got, vec![11, 21]);
    }
}
