//! Rotary position embeddings in the reference's two conventions.
//!
//! * [`Layout::Interleaved`] (GPT-J, rotary-embedding-torch): feature pairs `(2i, 2i+1)` rotate
//!   together; used with xPos by full attention.
//! * [`Layout::HalfSplit`] (GPT-NeoX, local-attention): features `i` and `i + d/2` rotate together;
//!   used without xPos by local attention.
//!
//! Tables are computed on the host in f32, the way the reference computes them (`t * inv_freq`
//! in f32, then `cos`/`sin`), and uploaded once per call.

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// The xPos decay base of the reference (`xpos_scale_base=512`).
pub const XPOS_SCALE_BASE: f32 = 512.0;

/// Which features rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Interleaved,
    HalfSplit,
}

/// `1 / 10000^(2i / dim_head)` for `i < dim_head / 2`: the constant the reference stores as
/// `rotary_emb.freqs` and `attn_fn.rel_pos.inv_freq`.
pub fn inv_freq(dim_head: usize) -> Vec<f32> {
    (0..dim_head / 2)
        .map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / dim_head as f32))
        .collect()
}

/// Angle table `[positions, dim_head]` in the given layout.
fn angles(dim_head: usize, positions: std::ops::Range<usize>, layout: Layout) -> Vec<f32> {
    let inv = inv_freq(dim_head);
    let half = dim_head / 2;
    let mut out = Vec::with_capacity(positions.len() * dim_head);
    for t in positions {
        let t = t as f32;
        for c in 0..dim_head {
            let f = match layout {
                Layout::Interleaved => inv[c / 2],
                Layout::HalfSplit => inv[c % half],
            };
            out.push(t * f);
        }
    }
    out
}

/// `(cos, sin)` tables, each `[positions, dim_head]`.
pub fn cos_sin<B: Backend>(
    dim_head: usize,
    positions: std::ops::Range<usize>,
    layout: Layout,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let n = positions.len();
    let a = angles(dim_head, positions, layout);
    let cos: Vec<f32> = a.iter().map(|x| x.cos()).collect();
    let sin: Vec<f32> = a.iter().map(|x| x.sin()).collect();
    (
        Tensor::from_data(TensorData::new(cos, [n, dim_head]), device),
        Tensor::from_data(TensorData::new(sin, [n, dim_head]), device),
    )
}

/// xPos scale `[positions, dim_head]` (interleaved) for a sequence of `seq_len` tokens centred at
/// `seq_len / 2`, as rotary-embedding-torch computes it. Queries are multiplied by it, keys divided,
/// so attention logit `(i, j)` decays with `scale_vec^((i - j) / 512)`.
pub fn xpos_scale<B: Backend>(
    dim_head: usize,
    positions: std::ops::Range<usize>,
    seq_len: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let n = positions.len();
    let d = dim_head as f32;
    let centre = (seq_len / 2) as f32;
    let mut out = Vec::with_capacity(n * dim_head);
    for t in positions {
        let power = (t as f32 - centre) / XPOS_SCALE_BASE;
        for c in 0..dim_head {
            let base = ((c / 2 * 2) as f32 + 0.4 * d) / (1.4 * d);
            out.push(base.powf(power));
        }
    }
    Tensor::from_data(TensorData::new(out, [n, dim_head]), device)
}

/// The partner of every feature with the sign of the rotation: interleaved `(x0, x1) -> (-x1, x0)`,
/// half-split `(a, b) -> (-b, a)`.
pub fn rotate_half<B: Backend, const D: usize>(x: Tensor<B, D>, layout: Layout) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    match layout {
        Layout::Interleaved => {
            let pairs: Tensor<B, 3> = x.reshape([-1, (d / 2) as i32, 2]);
            let even = pairs.clone().narrow(2, 0, 1);
            let odd = pairs.narrow(2, 1, 1);
            Tensor::cat(vec![odd.neg(), even], 2).reshape(dims)
        }
        Layout::HalfSplit => {
            let first = x.clone().narrow(D - 1, 0, d / 2);
            let second = x.narrow(D - 1, d / 2, d / 2);
            Tensor::cat(vec![second.neg(), first], D - 1)
        }
    }
}

/// `x * cos + rotate_half(x) * sin`; `cos` and `sin` broadcast over the leading dimensions of `x`.
pub fn apply<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cos: Tensor<B, D>,
    sin: Tensor<B, D>,
    layout: Layout,
) -> Tensor<B, D> {
    x.clone() * cos + rotate_half(x, layout) * sin
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn rotate_half_layouts() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0, 4.0]], &device);
        assert_eq!(
            values(rotate_half(x.clone(), Layout::Interleaved)),
            vec![-2.0, 1.0, -4.0, 3.0]
        );
        assert_eq!(
            values(rotate_half(x, Layout::HalfSplit)),
            vec![-3.0, -4.0, 1.0, 2.0]
        );
    }

    #[test]
    fn rotation_preserves_norm_and_depends_on_relative_position() {
        // <R(p) q, R(p') k> depends only on p - p'.
        let device = Default::default();
        for layout in [Layout::Interleaved, Layout::HalfSplit] {
            let q = Tensor::<Flex, 2>::from_floats([[0.3, -1.0, 0.5, 2.0]], &device);
            let k = Tensor::<Flex, 2>::from_floats([[1.5, 0.2, -0.7, 0.1]], &device);
            let dot = |pq: usize, pk: usize| {
                let (cq, sq) = cos_sin::<Flex>(4, pq..pq + 1, layout, &device);
                let (ck, sk) = cos_sin::<Flex>(4, pk..pk + 1, layout, &device);
                let rq = apply(q.clone(), cq, sq, layout);
                let rk = apply(k.clone(), ck, sk, layout);
                values((rq * rk).sum())[0]
            };
            assert!((dot(5, 2) - dot(13, 10)).abs() < 1e-5);
            assert!((dot(5, 2) - dot(2, 5)).abs() > 1e-3);
        }
    }

    #[test]
    fn xpos_scale_is_one_at_the_centre() {
        let device = Default::default();
        let s = values(xpos_scale::<Flex>(4, 0..8, 8, &device));
        assert!(s[4 * 4..5 * 4].iter().all(|v| (*v - 1.0).abs() < 1e-7));
        // base for pair 0 is 0.4/1.4 < 1, so earlier positions get a larger scale
        assert!(s[0] > 1.0);
    }
}
