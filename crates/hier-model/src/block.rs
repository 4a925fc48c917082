use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use hier_attn::kernel::pad_end;
use hier_attn::ops::{narrow, swap_dims};
use hier_attn::{
    FullAttention, FullAttentionConfig, KvCache, LocalAttention, LocalAttentionConfig,
};

use crate::feed_forward::{FeedForward, FeedForwardConfig};
use crate::spec::{AttentionKind, HierarchySpec};
use crate::token_shift::token_shift;

/// The attention of one hierarchical block.
#[derive(Module, Debug)]
pub enum Attention<B: Backend> {
    /// Sliding-window causal attention ([`AttentionKind::Local`]).
    Local(LocalAttention<B>),
    /// Full causal attention with xPos ([`AttentionKind::Full`]).
    Full(FullAttention<B>),
}

impl<B: Backend> Attention<B> {
    /// `[batch, n, dim] -> [batch, n, dim]`, causal; the residual is added by the caller.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Attention::Local(a) => a.forward(x),
            Attention::Full(a) => a.forward(x),
        }
    }

    /// An empty decoding state for [`Self::forward_cache`].
    pub fn new_cache(&self) -> KvCache<B> {
        match self {
            Attention::Local(a) => a.new_cache(),
            Attention::Full(a) => a.new_cache(),
        }
    }

    /// New tokens `[batch, m, dim]` after those in `cache` (which then holds them too).
    pub fn forward_cache(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        match self {
            Attention::Local(a) => a.forward_cache(x, cache),
            Attention::Full(a) => a.forward_cache(x, cache),
        }
    }
}

/// One layer of one hierarchy: token-shifted attention and feed-forward with residuals, run
/// axially for `c > 1`. The stream is split into `a = c / s` interleaved sub-sequences (rows
/// `k, k + a, k + 2a, ...`), so a compressed token only meets tokens whole chunks (`c` original
/// tokens) away, and one attention step spans `c` original tokens.
#[derive(Module, Debug)]
pub struct HierarchicalBlock<B: Backend> {
    /// `None` when the hierarchy's window is 0 ([`AttentionKind::None`]).
    pub attn: Option<Attention<B>>,
    /// The feed-forward sub-layer.
    pub ff: FeedForward<B>,
    /// Compression factor `c` of the hierarchy.
    pub factor: usize,
    /// Compressor stride `s` of the hierarchy; `c / s` is the number of axial sub-sequences.
    pub stride: usize,
}

impl<B: Backend> HierarchicalBlock<B> {
    /// A freshly initialised block for hierarchy `h`, with the attention its spec resolved to.
    pub fn new(h: &HierarchySpec, device: &B::Device) -> Self {
        let attn = match h.attention {
            AttentionKind::None => None,
            AttentionKind::Local { window } => Some(Attention::Local(LocalAttention {
                implementation: h.attention_implementation,
                ..LocalAttentionConfig::new(h.dim, window)
                    .with_heads(h.heads)
                    .with_dim_head(h.dim_head)
                    .init(device)
            })),
            AttentionKind::Full => Some(Attention::Full(FullAttention {
                implementation: h.attention_implementation,
                ..FullAttentionConfig::new(h.dim)
                    .with_heads(h.heads)
                    .with_dim_head(h.dim_head)
                    .init(device)
            })),
        };
        HierarchicalBlock {
            attn,
            ff: FeedForwardConfig::new(h.dim)
                .with_mult(h.ff_mult)
                .init(device),
            factor: h.factor,
            stride: h.stride,
        }
    }

    /// `[batch, n, dim] -> [batch, n, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let axial = self.factor / self.stride;
        let [b, n, d] = x.dims();
        let rows = n.div_ceil(axial);
        // 'b (n a) d -> (b a) n d'; the zero padding sits at the end, after every real token
        let x = pad_end(x, 1, rows * axial).reshape([b, rows, axial, d]);
        let x = swap_dims(x, 1, 2).reshape([b * axial, rows, d]);
        let x = match &self.attn {
            Some(attn) => attn.forward(token_shift(x.clone())) + x,
            None => x,
        };
        let x = self.ff.forward(token_shift(x.clone())) + x;
        let x = swap_dims(x.reshape([b, axial, rows, d]), 1, 2);
        narrow(x.reshape([b, rows * axial, d]), 1, 0, n)
    }
}
