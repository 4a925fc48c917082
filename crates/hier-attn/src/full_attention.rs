use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::kernel::{host_mask, masked_softmax_attend, merge_heads, qkv_heads};
use crate::rotary::{self, Layout};
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
    pub norm: RmsNorm<B>,
    pub to_qkv: Linear<B>,
    pub to_out: Linear<B>,
    pub heads: usize,
    pub dim_head: usize,
}

impl FullAttentionConfig {
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
        }
    }
}

impl<B: Backend> FullAttention<B> {
    /// `[batch, seq, dim] -> [batch, seq, dim]`; position `i` sees positions `0..=i`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let device = x.device();
        let n = x.dims()[1];
        let dh = self.dim_head;
        let [q, k, v] = qkv_heads(self.to_qkv.forward(self.norm.forward(x)), self.heads);

        // [n, dh] tables broadcast over batch and heads
        let (cos, sin) = rotary::cos_sin::<B>(dh, 0..n, Layout::Interleaved, &device);
        let scale: Tensor<B, 4> = rotary::xpos_scale::<B>(dh, 0..n, n, &device).unsqueeze();
        let (cos, sin): (Tensor<B, 4>, Tensor<B, 4>) = (cos.unsqueeze(), sin.unsqueeze());
        let q = rotary::apply(q, cos.clone(), sin.clone(), Layout::Interleaved) * scale.clone();
        let k = rotary::apply(k, cos, sin, Layout::Interleaved) / scale;

        let sim = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar((dh as f64).powf(-0.5)); // [b, h, n, n]
        let causal = host_mask::<B, 2>([n, n], &device, |[i, j]| j > i).unsqueeze();
        self.to_out
            .forward(merge_heads(masked_softmax_attend(sim, causal, v)))
    }
}
