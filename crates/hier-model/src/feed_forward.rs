use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use hier_attn::ops::{apply_linear, gelu};
use hier_attn::{RmsNorm, RmsNormConfig};

/// Configuration of [`FeedForward`].
#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    /// Width of the hierarchy.
    pub dim: usize,
    /// Hidden width is `mult * dim`.
    #[config(default = 4)]
    pub mult: usize,
}

/// `RMSNorm -> Linear -> GELU -> Linear`, bias-free (the reference's `ff.net.{0,1,3}`).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// Pre-norm over `dim`.
    pub norm: RmsNorm<B>,
    /// `Linear(dim, mult * dim)`.
    pub proj_in: Linear<B>,
    /// `Linear(mult * dim, dim)`.
    pub proj_out: Linear<B>,
}

impl FeedForwardConfig {
    /// A freshly initialised feed-forward.
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeedForward<B> {
        let hidden = self.dim * self.mult;
        FeedForward {
            norm: RmsNormConfig::new(self.dim).init(device),
            proj_in: LinearConfig::new(self.dim, hidden)
                .with_bias(false)
                .init(device),
            proj_out: LinearConfig::new(hidden, self.dim)
                .with_bias(false)
                .init(device),
        }
    }
}

impl<B: Backend> FeedForward<B> {
    /// `[batch, seq, dim] -> [batch, seq, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = gelu(apply_linear(&self.proj_in, self.norm.forward(x)));
        apply_linear(&self.proj_out, hidden)
    }
}
