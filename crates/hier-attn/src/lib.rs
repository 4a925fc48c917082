//! Attention for hier: the two rotary conventions of the reference, the two pre-norms, and
//! causal full and local (windowed) attention.
//!
//! Shapes follow Burn's convention: `[batch, seq, dim]` for token streams and
//! `[batch, heads, seq, dim_head]` inside attention.

mod full_attention;
pub mod kernel;
mod layer_norm;
mod local_attention;
mod rms_norm;
pub mod rotary;
mod tables;

pub use full_attention::{FullAttention, FullAttentionConfig};
pub use kernel::AttentionImpl;
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use local_attention::{LocalAttention, LocalAttentionConfig};
pub use rms_norm::{RmsNorm, RmsNormConfig};
