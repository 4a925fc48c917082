//! Rotary position embeddings in the reference's two conventions.
//!
//! * [`Layout::Interleaved`] (GPT-J, rotary-embedding-torch): feature pairs `(2i, 2i+1)` rotate
//!   together; used with xPos by full attention.
//! * [`Layout::HalfSplit`] (GPT-NeoX, local-attention): features `i` and `i + d/2` rotate together;
//!   used without xPos by local attention.
//!
//! Full attention's tables are computed on the host in f32, the way the reference computes them
//! (`t * inv_freq` in f32, then `cos`/`sin`); local attention's in f64 at absolute positions
//! ([`local_attention_tables`] says why). The attention layers use tables with the xPos and
//! softmax scales folded in ([`full_attention_tables`], [`local_attention_tables`]), uploaded
//! once per backend and device and shared, and rotate contiguous rows with [`apply_frame`].

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::tables::{device_table, TableKey};

/// The xPos decay base of the reference (`xpos_scale_base=512`).
pub const XPOS_SCALE_BASE: f32 = 512.0;

/// Which features rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Pairs `(2i, 2i + 1)` rotate together (the reference's `Attention`, with xPos).
    Interleaved,
    /// Feature `i` rotates with `i + dim_head / 2` (the reference's `LocalMHA`).
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
    let out = xpos_values(dim_head, positions, seq_len);
    Tensor::from_data(TensorData::new(out, [n, dim_head]), device)
}

fn xpos_values(dim_head: usize, positions: std::ops::Range<usize>, seq_len: usize) -> Vec<f32> {
    let d = dim_head as f32;
    let centre = (seq_len / 2) as f32;
    let mut out = Vec::with_capacity(positions.len() * dim_head);
    for t in positions {
        let power = (t as f32 - centre) / XPOS_SCALE_BASE;
        for c in 0..dim_head {
            let base = ((c / 2 * 2) as f32 + 0.4 * d) / (1.4 * d);
            out.push(base.powf(power));
        }
    }
    out
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

/// The signed permutation `P` (`[dim_head, dim_head]`) with `x @ P == rotate_half(x)`.
///
/// A matmul by a constant is how the rotation runs on contiguous rows: the slicing and
/// concatenation of [`rotate_half`] walk strided views element by element on CPU backends.
pub fn rotation_matrix<B: Backend>(
    dim_head: usize,
    layout: Layout,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half_split = layout == Layout::HalfSplit;
    let key = TableKey::Rotation {
        dim_head,
        half_split,
    };
    device_table(key, [dim_head, dim_head], device, || {
        let mut p = vec![0.0; dim_head * dim_head];
        let mut set = |from: usize, to: usize, sign: f32| p[from * dim_head + to] = sign;
        for i in 0..dim_head / 2 {
            // (x @ P)[to] = sign * x[from]
            let (a, b) = match layout {
                Layout::Interleaved => (2 * i, 2 * i + 1),
                Layout::HalfSplit => (i, i + dim_head / 2),
            };
            set(b, a, -1.0);
            set(a, b, 1.0);
        }
        p
    })
}

/// `x * cos + rotate_half(x) * sin` where the 1-D tables `cos` and `sin` (`[frame]`, a multiple
/// of `dim_head`) repeat over the leading elements of `x`, e.g. `[seq · features]` for a
/// `[batch, seq, features]` stream. Scales (xPos, `dim_head^-0.5`) can be folded into the tables.
pub fn apply_frame<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cos: Tensor<B, 1>,
    sin: Tensor<B, 1>,
    rotation: Tensor<B, 2>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let [frame] = cos.dims();
    let dim_head = rotation.dims()[0];
    let numel: usize = dims.iter().product();
    // rows of one frame each: the tables broadcast as one shared row
    let x = x.reshape([numel / frame, frame]);
    let partner = x
        .clone()
        .reshape([numel / dim_head, dim_head])
        .matmul(rotation)
        .reshape([numel / frame, frame]);
    (x * cos.unsqueeze() + partner * sin.unsqueeze()).reshape(dims)
}

/// Which projection a table of [`full_attention_tables`] rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Times the xPos scale and `dim_head^-0.5` (the softmax scale folded in).
    ScaledQuery,
    /// Times the xPos scale (for attention that applies the softmax scale itself).
    Query,
    /// Divided by the xPos scale.
    Key,
}

/// Full attention's interleaved rotation with xPos for a `[batch, seq, heads · dim_head]` query
/// or key projection: `[seq · heads · dim_head]` cos and sin tables for [`apply_frame`].
pub fn full_attention_tables<B: Backend>(
    seq: usize,
    heads: usize,
    dim_head: usize,
    part: Part,
    device: &B::Device,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let build = |sin: bool| {
        let angles = angles(dim_head, 0..seq, Layout::Interleaved);
        let scale = xpos_values(dim_head, 0..seq, seq);
        let softmax_scale = (dim_head as f32).powf(-0.5);
        let mut out = Vec::with_capacity(seq * heads * dim_head);
        for t in 0..seq {
            let row = t * dim_head..(t + 1) * dim_head;
            let values: Vec<f32> = angles[row.clone()]
                .iter()
                .zip(&scale[row])
                .map(|(a, s)| {
                    let r = if sin { a.sin() } else { a.cos() };
                    match part {
                        Part::ScaledQuery => r * s * softmax_scale,
                        Part::Query => r * s,
                        Part::Key => r / s,
                    }
                })
                .collect();
            for _ in 0..heads {
                out.extend_from_slice(&values);
            }
        }
        out
    };
    let key = |sin| TableKey::FullRotary {
        seq,
        heads,
        dim_head,
        part,
        sin,
    };
    let shape = [seq * heads * dim_head];
    (
        device_table(key(false), shape, device, || build(false)),
        device_table(key(true), shape, device, || build(true)),
    )
}

/// Local attention's half-split tables for positions `0..seq` (with `dim_head^-0.5` folded in
/// for [`Part::ScaledQuery`]): `[seq · dim_head]`.
///
/// local-attention rotates queries and keys at their positions inside each two-block frame;
/// rotary scores depend on the query-key distance only, so absolute positions give the same
/// scores and let every key be rotated once, before the look-around duplicates it. The angles
/// are computed in f64 (exact to f32 rounding at any position), where the frame's f32 angles
/// (positions below `2w`) are off by at most half an ulp of `2w`.
pub fn local_attention_tables<B: Backend>(
    seq: usize,
    dim_head: usize,
    part: Part,
    device: &B::Device,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let scale = match part {
        Part::ScaledQuery => (dim_head as f64).powf(-0.5),
        Part::Query | Part::Key => 1.0,
    };
    let half = dim_head / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| 1.0 / 10000f64.powf((2 * i) as f64 / dim_head as f64))
        .collect();
    let build = |sin: bool| {
        let mut out = Vec::with_capacity(seq * dim_head);
        for t in 0..seq {
            for c in 0..dim_head {
                let a = t as f64 * inv[c % half];
                out.push((scale * if sin { a.sin() } else { a.cos() }) as f32);
            }
        }
        out
    };
    let key = |sin| TableKey::LocalRotary {
        seq,
        dim_head,
        part,
        sin,
    };
    let len = seq * dim_head;
    (
        device_table(key(false), [len], device, || build(false)),
        device_table(key(true), [len], device, || build(true)),
    )
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
    fn rotation_matrix_is_rotate_half() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::random([5, 8], burn::tensor::Distribution::Default, &device);
        for layout in [Layout::Interleaved, Layout::HalfSplit] {
            let p = rotation_matrix::<Flex>(8, layout, &device);
            assert_eq!(
                values(x.clone().matmul(p)),
                values(rotate_half(x.clone(), layout))
            );
        }
    }

    #[test]
    fn full_tables_fold_xpos_and_scale_into_one_rotation() {
        // the row-wise path against rotating per head, then scaling
        let device = Default::default();
        let (b, n, h, dh) = (2, 6, 3, 4);
        let x =
            Tensor::<Flex, 3>::random([b, n, h * dh], burn::tensor::Distribution::Default, &device);
        let p = rotation_matrix::<Flex>(dh, Layout::Interleaved, &device);
        let heads = |t: Tensor<Flex, 3>| t.reshape([b, n, h, dh]).swap_dims(1, 2);
        let (c, s) = cos_sin::<Flex>(dh, 0..n, Layout::Interleaved, &device);
        let (c, s): (Tensor<Flex, 4>, Tensor<Flex, 4>) = (c.unsqueeze(), s.unsqueeze());
        let scale: Tensor<Flex, 4> = xpos_scale::<Flex>(dh, 0..n, n, &device).unsqueeze();
        let rotated = apply(heads(x.clone()), c, s, Layout::Interleaved);
        for (part, expected) in [
            (
                Part::ScaledQuery,
                rotated.clone() * scale.clone() * (dh as f32).powf(-0.5),
            ),
            (Part::Query, rotated.clone() * scale.clone()),
            (Part::Key, rotated / scale),
        ] {
            let (cos, sin) = full_attention_tables::<Flex>(n, h, dh, part, &device);
            let rows = apply_frame(x.clone(), cos, sin, p.clone());
            heads(rows).into_data().assert_approx_eq::<f32>(
                &expected.into_data(),
                burn::tensor::Tolerance::absolute(1e-6),
            );
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
