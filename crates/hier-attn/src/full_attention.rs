use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::decode::{rotate_new, KvCache};
use crate::kernel::{
    bias_values, fused_attend, masked_softmax_attend, project_heads_out, qkv_heads, AttentionImpl,
};
use crate::rotary::{self, Layout, Part};
use crate::tables::{device_table, TableKey};
use crate::{RmsNorm, RmsNormConfig};

/// Configuration of [`FullAttention`], the reference's `Attention`.
#[derive(Config, Debug)]
pub struct FullAttentionConfig {
    /// Model width of the hierarchy.
    pub dim: usize,
    /// Number of attention heads.
    #[config(default = 8)]
    pub heads: usize,
    /// Width of each head; must be even (rotary pairs).
    #[config(default = 64)]
    pub dim_head: usize,
}

/// Pre-RMSNorm causal multi-head attention over the whole sequence, with interleaved rotary
/// embeddings and xPos (scale base 512). State-dict names: `norm.gamma`, `to_qkv.weight`,
/// `to_out.weight` (plus the constant `rotary_emb.freqs`, recomputed, not stored here).
#[derive(Module, Debug)]
pub struct FullAttention<B: Backend> {
    /// The pre-norm.
    pub norm: RmsNorm<B>,
    /// Bias-free projection `dim -> 3 * heads * dim_head` (queries, keys, values).
    pub to_qkv: Linear<B>,
    /// Bias-free projection `heads * dim_head -> dim`.
    pub to_out: Linear<B>,
    /// Number of attention heads.
    pub heads: usize,
    /// Width of each head.
    pub dim_head: usize,
    /// Fused or explicit attention (not a parameter; [`AttentionImpl::Auto`] after `init`).
    #[module(skip)]
    pub implementation: AttentionImpl,
}

impl FullAttentionConfig {
    /// A layer with Burn's default initialisation of the projections (the reference's weights
    /// are loaded over it for parity).
    pub fn init<B: Backend>(&self, device: &B::Device) -> FullAttention<B> {
        let inner = self.heads * self.dim_head;
        FullAttention {
            norm: RmsNormConfig::new(self.dim).init(device),
            to_qkv: LinearConfig::new(self.dim, 3 * inner)
                .with_bias(false)
                .init(device),
            to_out: LinearConfig::new(inner, self.dim)
                .with_bias(false)
                .init(device),
            heads: self.heads,
            dim_head: self.dim_head,
            implementation: AttentionImpl::Auto,
        }
    }
}

impl<B: Backend> FullAttention<B> {
    /// `[batch, seq, dim] -> [batch, seq, dim]`; position `i` sees positions `0..=i`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let device = x.device();
        let n = x.dims()[1];
        let (h, dh) = (self.heads, self.dim_head);
        let [q, k, v] = qkv_heads(self.norm.forward(x), &self.to_qkv, h); // [b, h, n, dh]

        // rotary + xPos (+ the softmax scale on q, unless the fused op applies it), one
        // `[n · dh]` table shared by every head
        let fused = self.implementation.is_fused::<B>(&device);
        let query = if fused {
            Part::Query
        } else {
            Part::ScaledQuery
        };
        let rotation = rotary::rotation_matrix::<B>(dh, Layout::Interleaved, &device);
        let (cos, sin) = rotary::full_attention_tables::<B>(n, 1, dh, query, &device);
        let q = rotary::apply_frame(q, cos, sin, rotation.clone());
        let (cos, sin) = rotary::full_attention_tables::<B>(n, 1, dh, Part::Key, &device);
        let k = rotary::apply_frame(k, cos, sin, rotation);

        if fused {
            return project_heads_out(fused_attend(q, k, v, None, true), &self.to_out);
        }
        let sim = q.matmul(k.swap_dims(2, 3)); // [b, h, n, n]
        let causal =
            device_table::<B, 1>(TableKey::CausalBias { seq: n }, [n * n], &device, || {
                bias_values([n, n], |[i, j]| j > i)
            });
        project_heads_out(masked_softmax_attend(sim, causal, v), &self.to_out)
    }

    /// An empty decoding state for [`Self::forward_cache`], at position 0.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(None)
    }

    /// The attention of `m` new tokens `[batch, m, dim]` at positions `cache.position() ..`,
    /// given every earlier token through `cache`, which then holds these too: the same layer
    /// for a whole prompt at once and for one token at a time (`[batch, m, dim]` out).
    pub fn forward_cache(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let [q, k, v] = qkv_heads(self.norm.forward(x), &self.to_qkv, self.heads);
        let (q, k) = rotate_new(q, k, cache.position(), Layout::Interleaved, true);
        project_heads_out(cache.attend(q, k, v), &self.to_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn fused_equals_explicit() {
        let device = Default::default();
        let mut attn = FullAttentionConfig::new(16)
            .with_heads(2)
            .with_dim_head(8)
            .init::<Flex>(&device);
        let x = Tensor::<Flex, 3>::random([2, 9, 16], Distribution::Default, &device);
        attn.implementation = AttentionImpl::Explicit;
        let explicit = attn.forward(x.clone());
        attn.implementation = AttentionImpl::Fused;
        let fused = attn.forward(x);
        fused
            .into_data()
            .assert_approx_eq::<f32>(&explicit.into_data(), Tolerance::absolute(1e-5));
    }
}
