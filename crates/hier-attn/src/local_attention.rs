use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::decode::{rotate_new, KvCache};
use crate::kernel::{
    bias_values, fused_attend, masked_softmax_attend, pad_end, project_heads_out, qkv_heads,
    AttentionImpl,
};
use crate::ops::narrow;
use crate::rotary::{self, Layout, Part};
use crate::tables::{device_table, TableKey};
use crate::{LayerNorm, LayerNormConfig};

/// Configuration of [`LocalAttention`], the reference's `LocalMHA(causal=True, prenorm=True)`.
#[derive(Config, Debug)]
pub struct LocalAttentionConfig {
    /// Model width of the hierarchy.
    pub dim: usize,
    /// How far back a query looks: query `i` attends to keys `i - window ..= i`.
    pub window: usize,
    /// Number of attention heads.
    #[config(default = 8)]
    pub heads: usize,
    /// Width of each head; must be even (rotary halves).
    #[config(default = 64)]
    pub dim_head: usize,
}

/// Pre-LayerNorm causal attention over a sliding window of `window + 1` keys, with half-split
/// rotary embeddings (no xPos). State-dict names: `norm.weight`, `norm.bias`, `to_qkv.weight`,
/// `to_out.weight` (plus the constant `attn_fn.rel_pos.inv_freq`, recomputed, not stored here).
#[derive(Module, Debug)]
pub struct LocalAttention<B: Backend> {
    /// The pre-norm.
    pub norm: LayerNorm<B>,
    /// Bias-free projection `dim -> 3 * heads * dim_head` (queries, keys, values).
    pub to_qkv: Linear<B>,
    /// Bias-free projection `heads * dim_head -> dim`.
    pub to_out: Linear<B>,
    /// Number of attention heads.
    pub heads: usize,
    /// Width of each head.
    pub dim_head: usize,
    /// Query `i` attends to keys `i - window ..= i`.
    pub window: usize,
    /// Fused or explicit attention (not a parameter; [`AttentionImpl::Auto`] after `init`).
    #[module(skip)]
    pub implementation: AttentionImpl,
}

impl LocalAttentionConfig {
    /// A layer with Burn's default initialisation of the projections (the reference's weights
    /// are loaded over it for parity).
    pub fn init<B: Backend>(&self, device: &B::Device) -> LocalAttention<B> {
        let inner = self.heads * self.dim_head;
        LocalAttention {
            norm: LayerNormConfig::new(self.dim).init(device),
            to_qkv: LinearConfig::new(self.dim, 3 * inner)
                .with_bias(false)
                .init(device),
            to_out: LinearConfig::new(inner, self.dim)
                .with_bias(false)
                .init(device),
            heads: self.heads,
            dim_head: self.dim_head,
            window: self.window,
            implementation: AttentionImpl::Auto,
        }
    }
}

impl<B: Backend> LocalAttention<B> {
    /// `[batch, seq, dim] -> [batch, seq, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [q, k, v] = qkv_heads(self.norm.forward(x), &self.to_qkv, self.heads);
        // `auto` keeps the blocked explicit kernel here: Burn's fused op with a band mask was
        // slower on Flex (docs/performance.md)
        let fused = self.implementation == AttentionImpl::Fused;
        let out = local_causal_attention(q, k, v, self.window, fused);
        project_heads_out(out, &self.to_out)
    }

    /// An empty decoding state for [`Self::forward_cache`], at position 0.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(Some(self.window))
    }

    /// The attention of `m` new tokens `[batch, m, dim]` at positions `cache.position() ..`,
    /// given every earlier token through `cache`, which then holds these too: the same layer
    /// for a whole prompt at once and for one token at a time (`[batch, m, dim]` out).
    pub fn forward_cache(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let [q, k, v] = qkv_heads(self.norm.forward(x), &self.to_qkv, self.heads);
        let (q, k) = rotate_new(q, k, cache.position(), Layout::HalfSplit, false);
        project_heads_out(cache.attend(q, k, v), &self.to_out)
    }
}

/// Causal sliding-window attention computed in blocks of `window` queries, each looking at its
/// own block and the one before (memory `O(n * window)`).
///
/// `q, k, v`: `[batch, heads, n, dim_head]` -> `[batch, heads, n, dim_head]`, with half-split
/// rotary embeddings applied here. The rotation is at absolute positions, before the keys are
/// blocked ([`rotary::local_attention_tables`]): local-attention's frame positions give the
/// same scores, since only the query-key distance matters.
pub fn local_causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    window: usize,
    fused: bool,
) -> Tensor<B, 4> {
    let device = q.device();
    let [b, h, n, dh] = q.dims();
    let w = window;
    let blocks = n.div_ceil(w);
    let padded = blocks * w;

    // queries carry the softmax scale unless the fused op applies it
    let query = if fused {
        Part::Query
    } else {
        Part::ScaledQuery
    };
    let rotation = rotary::rotation_matrix::<B>(dh, Layout::HalfSplit, &device);
    let (cos, sin) = rotary::local_attention_tables::<B>(n, dh, query, &device);
    let q = rotary::apply_frame(q, cos, sin, rotation.clone());
    let (cos, sin) = rotary::local_attention_tables::<B>(n, dh, Part::Key, &device);
    let k = rotary::apply_frame(k, cos, sin, rotation);

    let to_blocks = |t: Tensor<B, 4>| pad_end(t, 2, padded).reshape([b, h, blocks, w, dh]);
    // [b, h, blocks, 2w, dh]: the previous block (zeros before the first) then the block itself
    let look_around = |t: Tensor<B, 5>| {
        let zeros = Tensor::zeros([b, h, 1, w, dh], &device);
        let prev = if blocks > 1 {
            Tensor::cat(vec![zeros, narrow(t.clone(), 2, 0, blocks - 1)], 2)
        } else {
            zeros
        };
        Tensor::cat(vec![prev, t], 3)
    };
    let bq = to_blocks(q);
    let bk = look_around(to_blocks(k));
    let bv = look_around(to_blocks(v));

    let key = TableKey::LocalBias { blocks, window: w };
    let band = || {
        bias_values([blocks, w, 2 * w], |[u, i, j]| {
            let before_start = u == 0 && j < w;
            let (q_pos, k_pos) = (u * w + i + w, u * w + j); // shifted by w to stay unsigned
            before_start || k_pos > q_pos || q_pos > k_pos + w
        })
    };
    let band = device_table::<B, 1>(key, [blocks * w * 2 * w], &device, band);
    let out = if fused {
        // blocks as extra heads: [b, h * blocks, w | 2w, dh], the band repeated over heads
        let masked = band
            .not_equal_elem(0.0)
            .reshape([1, 1, blocks, w, 2 * w])
            .expand([b, h, blocks, w, 2 * w])
            .reshape([b, h * blocks, w, 2 * w]);
        let heads = |t: Tensor<B, 5>, rows| t.reshape([b, h * blocks, rows, dh]);
        fused_attend(
            heads(bq, w),
            heads(bk, 2 * w),
            heads(bv, 2 * w),
            Some(masked),
            false,
        )
    } else {
        let sim = bq.matmul(bk.swap_dims(3, 4)); // [b, h, blocks, w, 2w]
        masked_softmax_attend(sim, band, bv).reshape([b, h * blocks, w, dh])
    };
    narrow(out.reshape([b, h, padded, dh]), 2, 0, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::host_bias;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    /// The blocked computation equals dense attention with a band mask and absolute rotary.
    #[test]
    fn blocked_equals_dense_band() {
        let device = Default::default();
        for (n, w) in [(1, 4), (7, 3), (12, 4), (13, 5), (9, 16)] {
            let shape = [2, 3, n, 8];
            let q = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
            let k = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
            let v = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
            let blocked = local_causal_attention(q.clone(), k.clone(), v.clone(), w, false);
            let fused = local_causal_attention(q.clone(), k.clone(), v.clone(), w, true);
            fused.into_data().assert_approx_eq::<f32>(
                &blocked.clone().into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );

            let (cos, sin) = rotary::cos_sin::<Flex>(8, 0..n, Layout::HalfSplit, &device);
            let (cos, sin): (Tensor<Flex, 4>, Tensor<Flex, 4>) = (cos.unsqueeze(), sin.unsqueeze());
            let q = rotary::apply(q, cos.clone(), sin.clone(), Layout::HalfSplit);
            let k = rotary::apply(k, cos, sin, Layout::HalfSplit);
            let sim = q.matmul(k.swap_dims(2, 3)).mul_scalar(8f64.powf(-0.5));
            let band = host_bias::<Flex, 2>([n, n], &device, |[i, j]| j > i || i > j + w);
            let dense = masked_softmax_attend(sim, band, v);
            blocked.into_data().assert_approx_eq::<f32>(
                &dense.into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        }
    }
}
