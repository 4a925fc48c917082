//! The attention arithmetic shared by full and local attention: masked softmax over keys.

use burn::nn::Linear;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Bool, Tensor, TensorData};

use crate::ops::{apply_linear, linear, narrow, softmax_last, swap_dims};

/// The reference masks with `-finfo(float32).max` (finite), never `-inf`: a row can never be all
/// `-inf`, and masked keys get exactly zero weight after the softmax.
pub const MASK_VALUE: f32 = f32::MIN;

/// How attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionImpl {
    /// Full attention fused on backends without autodiff (inference, generation), explicit
    /// when training (Burn 0.21's autodiff computes the fused op through the same explicit
    /// operations); local attention explicit (its blocked kernel beats the fused op with a
    /// band mask on Flex).
    #[default]
    Auto,
    /// Burn's `module::attention`: one kernel where the backend has one (Flex: a naive kernel
    /// for short sequences, tiled flash attention for long ones; CUDA/WGPU: their kernels).
    Fused,
    /// Matmul, additive mask, softmax, matmul, as the reference.
    Explicit,
}

impl AttentionImpl {
    /// Whether to take the fused op on `B`.
    pub fn is_fused<B: Backend>(self, device: &B::Device) -> bool {
        match self {
            AttentionImpl::Auto => !B::ad_enabled(device),
            AttentionImpl::Fused => true,
            AttentionImpl::Explicit => false,
        }
    }
}

/// `softmax(q kᵀ / sqrt(dim_head)) v` with Burn's fused attention op, in the form backends
/// accelerate (CUDA's flash kernel takes no custom scale and no additive bias, only a boolean
/// mask). `q, k, v`: `[batch, heads, seq, dim_head]`; `mask`: `[batch, heads, queries, keys]`,
/// `true` where masked (or `None` with `causal`).
pub fn fused_attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    causal: bool,
) -> Tensor<B, 4> {
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    attention(q, k, v, mask, None, options)
}

/// `softmax(sim + bias) @ v` over the last axis of `sim`.
///
/// * `sim`: `[..., queries, keys]` attention logits, already scaled.
/// * `bias`: `[frame]`, 0 where a key is seen and [`MASK_VALUE`] where it is masked, repeated over
///   the leading elements of `sim` (`frame` is e.g. `queries · keys`). Adding `f32::MIN` to a
///   logit gives exactly `f32::MIN`, so this equals the reference's `masked_fill`, and the add
///   broadcasts as one shared row where a boolean mask would be expanded and copied.
/// * `v`: `[..., keys, dim_head]`.
pub fn masked_softmax_attend<B: Backend, const D: usize>(
    sim: Tensor<B, D>,
    bias: Tensor<B, 1>,
    v: Tensor<B, D>,
) -> Tensor<B, D> {
    let dims = sim.dims();
    let [frame] = bias.dims();
    let rows = dims.iter().product::<usize>() / frame;
    let sim = (sim.reshape([rows, frame]) + bias.unsqueeze()).reshape(dims);
    softmax_last(sim).matmul(v)
}

/// Additive mask values for `shape` (row-major): [`MASK_VALUE`] where `masked(index)`, else 0.
pub fn bias_values<const D: usize>(
    shape: [usize; D],
    masked: impl Fn([usize; D]) -> bool,
) -> Vec<f32> {
    let len: usize = shape.iter().product();
    let mut values = Vec::with_capacity(len);
    let mut index = [0usize; D];
    for _ in 0..len {
        values.push(if masked(index) { MASK_VALUE } else { 0.0 });
        for axis in (0..D).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    values
}

/// [`bias_values`] as a flat `[frame]` tensor for [`masked_softmax_attend`].
pub fn host_bias<B: Backend, const D: usize>(
    shape: [usize; D],
    device: &B::Device,
    masked: impl Fn([usize; D]) -> bool,
) -> Tensor<B, 1> {
    let values = bias_values(shape, masked);
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

/// `[batch, seq, heads * dim_head] -> [batch, heads, seq, dim_head]`, contiguous: every later
/// element-wise op then reads plain rows (stock Flex walks N-D views element by element).
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, inner] = x.dims();
    swap_dims(x.reshape([b, n, heads, inner / heads]), 1, 2)
}

/// The q, k and v projections of a fused `[dim, 3 · inner]` weight, each `[batch, seq, inner]`
/// and contiguous. Slicing the small weight rather than the large output keeps the activations
/// and their gradients contiguous, and skips the backward of `chunk` (zero-filled copies of the
/// whole projection for each part).
pub fn qkv_projections<B: Backend>(x: Tensor<B, 3>, to_qkv: &Linear<B>) -> [Tensor<B, 3>; 3] {
    let w = to_qkv.weight.val();
    let inner = w.dims()[1] / 3;
    let project = |i: usize| linear(x.clone(), narrow(w.clone(), 1, i * inner, inner), None);
    [project(0), project(1), project(2)]
}

/// The q, k and v projections of a fused `[dim, 3 · inner]` weight split into heads, each
/// `[batch, heads, seq, dim_head]` and contiguous: one wide product per part, then a row copy.
/// (Per-head products straight into `[b, h, n, dh]` avoid the copy but were 10% slower in a
/// `(1,2)` training step: narrow products and a head sum in the output projection.)
pub fn qkv_heads<B: Backend>(
    x: Tensor<B, 3>,
    to_qkv: &Linear<B>,
    heads: usize,
) -> [Tensor<B, 4>; 3] {
    qkv_projections(x, to_qkv).map(|t| split_heads(t, heads))
}

/// The output projection of `[batch, heads, seq, dim_head]` heads: `[batch, seq, dim]`.
pub fn project_heads_out<B: Backend>(x: Tensor<B, 4>, to_out: &Linear<B>) -> Tensor<B, 3> {
    apply_linear(to_out, merge_heads(x))
}

/// `[batch, heads, seq, dim_head] -> [batch, seq, heads * dim_head]`
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    swap_dims(x, 1, 2).reshape([b, n, h * d])
}

/// Zero rows appended along `axis` so that its length becomes `len`.
pub fn pad_end<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    axis: usize,
    len: usize,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    if dims[axis] >= len {
        return x;
    }
    dims[axis] = len - dims[axis];
    let zeros = Tensor::zeros(dims, &x.device());
    Tensor::cat(vec![x, zeros], axis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tolerance;

    #[test]
    fn masked_keys_get_no_weight() {
        let device = Default::default();
        let sim = Tensor::<Flex, 2>::from_floats([[1.0, 50.0], [1.0, 50.0]], &device);
        let v = Tensor::<Flex, 2>::from_floats([[1.0], [100.0]], &device);
        let mask = host_bias::<Flex, 2>([2, 2], &device, |[i, j]| j > i);
        let out: Vec<f32> = masked_softmax_attend(sim, mask, v)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 100.0).abs() < 1e-3);
    }

    /// Head `j` of q, k and v holds columns `j·dh ..` of the fused projection's part.
    #[test]
    fn projections_into_heads_are_the_fused_projections_columns() {
        use burn::nn::LinearConfig;
        let device = Default::default();
        let (b, n, dim, h, dh) = (2, 7, 12, 3, 4);
        let to_qkv = LinearConfig::new(dim, 3 * h * dh)
            .with_bias(false)
            .init::<Flex>(&device);
        let x =
            Tensor::<Flex, 3>::random([b, n, dim], burn::tensor::Distribution::Default, &device);
        let fused = to_qkv.forward(x.clone()); // [b, n, 3 · h · dh]
        for (part, heads) in qkv_heads(x, &to_qkv, h).into_iter().enumerate() {
            for j in 0..h {
                let expected = fused.clone().narrow(2, (part * h + j) * dh, dh);
                let head: Tensor<Flex, 3> = heads.clone().narrow(1, j, 1).squeeze_dim(1);
                head.into_data()
                    .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
            }
        }
    }

    #[test]
    fn heads_round_trip() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([2, 5, 12], burn::tensor::Distribution::Default, &device);
        let y = merge_heads(split_heads(x.clone(), 3));
        x.into_data().assert_eq(&y.into_data(), true);
    }
}
