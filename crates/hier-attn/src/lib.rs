//! Attention for [hier](https://github.com/hier-rs/hier), the Simple Hierarchical Transformer
//! on Burn: the two rotary conventions of the PyTorch reference, its two pre-norms, and causal
//! full and local (windowed) attention, generic over Burn backends.
//!
//! Main types:
//!
//! - [`FullAttention`] ([`FullAttentionConfig`]): pre-RMSNorm causal multi-head attention over
//!   the whole sequence with interleaved rotary embeddings and xPos (the reference's
//!   `Attention`).
//! - [`LocalAttention`] ([`LocalAttentionConfig`]): pre-LayerNorm causal attention over a
//!   sliding window, half-split rotary embeddings, computed in blocks (the reference's
//!   `LocalMHA`).
//! - [`RmsNorm`] and [`LayerNorm`] with the reference's arithmetic and parameter names.
//! - [`AttentionImpl`]: Burn's fused attention op or the explicit matmul/softmax form;
//!   [`kernel`] and [`rotary`] hold the shared arithmetic.
//!
//! Shapes follow Burn's convention: `[batch, seq, dim]` for token streams and
//! `[batch, heads, seq, dim_head]` inside attention.
//!
//! # Example
//!
//! With `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! hier-attn = "0.1"
//! burn = { version = "=0.21.0", features = ["flex"] }
//! ```
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, ElementConversion, Tensor};
//! use hier_attn::{FullAttentionConfig, LocalAttentionConfig};
//!
//! let device = Default::default();
//! let full = FullAttentionConfig::new(32) // dim
//!     .with_heads(2)
//!     .with_dim_head(16)
//!     .init::<Flex>(&device);
//! let local = LocalAttentionConfig::new(32, 8) // dim, window
//!     .with_heads(2)
//!     .with_dim_head(16)
//!     .init::<Flex>(&device);
//!
//! let x = Tensor::<Flex, 3>::random([2, 16, 32], Distribution::Normal(0.0, 1.0), &device);
//! let y_full = full.forward(x.clone()); // [batch, seq, dim] -> [batch, seq, dim]
//! let y_local = local.forward(x.clone());
//! assert_eq!(y_full.dims(), [2, 16, 32]);
//! assert_eq!(y_local.dims(), [2, 16, 32]);
//!
//! // causal: changing the last position leaves every earlier output unchanged
//! let x2 = x.slice_assign([0..2, 15..16, 0..32], Tensor::ones([2, 1, 32], &device));
//! let max_diff = |a: Tensor<Flex, 3>, b: Tensor<Flex, 3>| -> f32 {
//!     (a.narrow(1, 0, 15) - b.narrow(1, 0, 15)).abs().max().into_scalar().elem()
//! };
//! assert!(max_diff(y_full, full.forward(x2.clone())) < 1e-5);
//! assert!(max_diff(y_local, local.forward(x2)) < 1e-5);
//! ```

#![warn(missing_docs)]
// unit tests read tensors freely; the library reads nothing back to the host (clippy.toml)
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod decode;
mod full_attention;
pub mod kernel;
mod layer_norm;
mod local_attention;
pub mod ops;
mod rms_norm;
pub mod rotary;
mod tables;

pub use decode::KvCache;
pub use full_attention::{FullAttention, FullAttentionConfig};
pub use kernel::AttentionImpl;
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use local_attention::{LocalAttention, LocalAttentionConfig};
pub use rms_norm::{RmsNorm, RmsNormConfig};
