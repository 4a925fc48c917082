//! Reductions shared by the losses, with PyTorch's exact semantics.

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};

/// `F.cross_entropy(logits, targets, ignore_index)`: mean negative log-likelihood over the
/// targets that are not `ignore_index` (NaN when every target is ignored, as in PyTorch).
///
/// * `logits`: `[N, V]`
/// * `targets`: `N` ids in `0..V` or `ignore_index`.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[i64],
    ignore_index: i64,
) -> Tensor<B, 1> {
    let device = logits.device();
    let n = targets.len();
    let keep: Vec<f32> = targets
        .iter()
        .map(|&t| (t != ignore_index) as u8 as f32)
        .collect();
    let count: f32 = keep.iter().sum();
    let index: Vec<i64> = targets
        .iter()
        .map(|&t| if t == ignore_index { 0 } else { t })
        .collect();
    let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, [n, 1]), &device);
    let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [n]), &device);
    let picked = log_softmax(logits, 1).gather(1, index).reshape([n]);
    (picked * keep).sum().neg().div_scalar(count)
}

/// `masked_mean(t, mask)` of torch-einops-utils: `sum(t * mask) / max(sum(mask expanded), 1e-5)`.
///
/// * `t`: `[batch, n, d]`; `mask`: `batch * n` weights (0 or 1), broadcast over `d`.
pub fn masked_mean<B: Backend>(t: Tensor<B, 3>, mask: &[f32]) -> Tensor<B, 1> {
    let [b, n, d] = t.dims();
    let count: f32 = mask.iter().sum::<f32>() * d as f32;
    let mask = Tensor::<B, 3>::from_data(TensorData::new(mask.to_vec(), [b, n, 1]), &t.device());
    (t * mask).sum().div_scalar(count.max(1e-5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn cross_entropy_ignores_targets() {
        let device = Default::default();
        let logits = Tensor::<Flex, 2>::from_floats([[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]], &device);
        let loss: f32 = cross_entropy(logits, &[1, 0, 7], 7).into_scalar();
        // row 0: ln 2; row 1: -log_softmax([2, 0])[0] = ln(1 + e^-2); row 2 ignored
        let expect = (2f32.ln() + (1.0 + (-2f32).exp()).ln()) / 2.0;
        assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
        let all_ignored: f32 =
            cross_entropy(Tensor::<Flex, 2>::zeros([1, 2], &device), &[7], 7).into_scalar();
        assert!(all_ignored.is_nan());
    }

    #[test]
    fn masked_mean_counts_features() {
        let device = Default::default();
        let t = Tensor::<Flex, 3>::from_floats([[[1.0, 3.0], [10.0, 10.0]]], &device);
        let m: f32 = masked_mean(t.clone(), &[1.0, 0.0]).into_scalar();
        assert_eq!(m, 2.0);
        let none: f32 = masked_mean(t, &[0.0, 0.0]).into_scalar();
        assert_eq!(none, 0.0);
    }
}
