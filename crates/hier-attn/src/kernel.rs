//! The attention arithmetic shared by full and local attention: masked softmax over keys.

use burn::tensor::{activation::softmax, backend::Backend, Bool, Shape, Tensor, TensorData};

/// The reference masks with `-finfo(float32).max` (finite), never `-inf`: a row can never be all
/// `-inf`, and masked keys get exactly zero weight after the softmax.
pub const MASK_VALUE: f32 = f32::MIN;

/// `softmax(masked(sim)) @ v` over the last axis of `sim`.
///
/// * `sim`: `[..., queries, keys]` attention logits, already scaled.
/// * `mask`: broadcastable to `sim`, true where a key must not be seen.
/// * `v`: `[..., keys, dim_head]`.
pub fn masked_softmax_attend<B: Backend, const D: usize>(
    sim: Tensor<B, D>,
    mask: Tensor<B, D, Bool>,
    v: Tensor<B, D>,
) -> Tensor<B, D> {
    let sim = sim.clone().mask_fill(mask.expand(sim.shape()), MASK_VALUE);
    softmax(sim, D - 1).matmul(v)
}

/// A boolean mask `[shape]` built on the host from `masked(index)`.
pub fn host_mask<B: Backend, const D: usize>(
    shape: [usize; D],
    device: &B::Device,
    masked: impl Fn([usize; D]) -> bool,
) -> Tensor<B, D, Bool> {
    let len: usize = shape.iter().product();
    let mut values = Vec::with_capacity(len);
    let mut index = [0usize; D];
    for _ in 0..len {
        values.push(masked(index));
        for axis in (0..D).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Tensor::from_data(TensorData::new(values, Shape::new(shape)), device)
}

/// `[batch, seq, heads * dim_head] -> [batch, heads, seq, dim_head]`
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, inner] = x.dims();
    x.reshape([b, n, heads, inner / heads]).swap_dims(1, 2)
}

/// `[batch, seq, 3 * heads * dim_head]` (a fused q/k/v projection) -> `[q, k, v]`, each
/// `[batch, heads, seq, dim_head]`.
pub fn qkv_heads<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> [Tensor<B, 4>; 3] {
    let mut parts = qkv.chunk(3, 2).into_iter().map(|t| split_heads(t, heads));
    let mut next = || parts.next().expect("chunk(3) gives three parts");
    [next(), next(), next()]
}

/// `[batch, heads, seq, dim_head] -> [batch, seq, heads * dim_head]`
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
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

    #[test]
    fn masked_keys_get_no_weight() {
        let device = Default::default();
        let sim = Tensor::<Flex, 2>::from_floats([[1.0, 50.0], [1.0, 50.0]], &device);
        let v = Tensor::<Flex, 2>::from_floats([[1.0], [100.0]], &device);
        let mask = host_mask::<Flex, 2>([2, 2], &device, |[i, j]| j > i);
        let out: Vec<f32> = masked_softmax_attend(sim, mask, v)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 100.0).abs() < 1e-3);
    }

    #[test]
    fn heads_round_trip() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([2, 5, 12], burn::tensor::Distribution::Default, &device);
        let y = merge_heads(split_heads(x.clone(), 3));
        x.into_data().assert_eq(&y.into_data(), true);
    }
}
