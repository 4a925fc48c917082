//! The Simple Hierarchical Transformer of [hier](https://github.com/hier-rs/hier): a
//! byte-level GPT whose token stream is also compressed into coarser hierarchies (1x, 2x, 8x,
//! ... by causal strided convolutions) that run side by side, each with its own local or full
//! causal attention, and are merged back into the predicting hierarchy after every layer. A
//! numerically identical port of the PyTorch reference `simple-hierarchical-transformer` 0.4.0,
//! generic over Burn backends.
//!
//! Main types and modules:
//!
//! - [`HierarchicalTransformerConfig`]: the reference's constructor arguments, with the same
//!   JSON names (a value may be given once or per hierarchy, [`PerHierarchy`]);
//!   [`HierarchicalTransformerConfig::validate`] checks it.
//! - [`HierarchicalTransformer`]: the model. [`forward`](HierarchicalTransformer::forward)
//!   gives logits `[batch, n, num_tokens]`, [`forward_loss`](HierarchicalTransformer::forward_loss)
//!   the reference's losses ([`Losses`]: cross-entropy, next-latent, reconstruction, total).
//! - [`generate`]: the reference's sampler ([`generate::Sampler`]: top-k + Gumbel, seeded) and
//!   generation by recomputing the context; [`cache`]: incremental decoding (one cached step
//!   per new token, [`cache::generate_cached`]).
//! - [`model_dir`]: a model directory (`config.json` + `model.safetensors`) that also loads in
//!   PyTorch; [`weights`]: the state_dict in the reference's layout.
//! - [`memory`]: an estimate of the memory a model needs, to refuse a job before it starts.
//!
//! # Example
//!
//! With `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! hier-model = "0.1"
//! burn = { version = "=0.21.0", features = ["flex"] }
//! ```
//!
//! A tiny two-hierarchy model: logits, losses, greedy generation, and a model directory saved
//! and loaded again.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Int, Tensor, TensorData};
//! use hier_model::cache::generate_cached;
//! use hier_model::generate::Sampler;
//! use hier_model::{model_dir, HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};
//!
//! let device = Default::default();
//! let mut config = HierarchicalTransformerConfig::new(256, 32, 1); // num_tokens, dim, depth
//! config.seq_len = 32;
//! config.heads = PerHierarchy::All(2);
//! config.dim_head = PerHierarchy::All(16);
//! config.hierarchies = PerHierarchy::Each(vec![1, 2]); // full resolution and 2x compressed
//! config.window_sizes = PerHierarchy::Each(vec![Some(8), Some(8)]); // local attention
//! let model = HierarchicalTransformer::<Flex>::new(&config, &device)?;
//!
//! let text = b"To be, or not to be, that is the question:";
//! let ids: Vec<i64> = text[..17].iter().map(|&b| b as i64).collect();
//! let ids = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, 17]), &device);
//!
//! let logits = model.forward(ids.clone().narrow(1, 0, 16))?;
//! assert_eq!(logits.dims(), [1, 16, 256]);
//! // the reference's losses on ids of length n + 1 (inputs ids[..n], targets ids[1..])
//! let losses = model.forward_loss(ids)?;
//! let total: f32 = losses.total.into_scalar();
//! assert!(total.is_finite());
//!
//! // temperature 0: greedy
//! let mut sampler = Sampler::new(0.0, 0.9, 0)?;
//! let prompt = vec![b"To be".iter().map(|&b| b as i64).collect::<Vec<i64>>()];
//! let new = generate_cached(&model, &prompt, 8, &mut sampler, &device)?;
//! assert_eq!(new[0].len(), 8);
//!
//! let dir = std::env::temp_dir().join(format!("hier-model-doc-{}", std::process::id()));
//! model_dir::save(&model, &dir)?;
//! let loaded = model_dir::load::<Flex>(&dir, &device)?;
//! assert_eq!(generate_cached(&loaded, &prompt, 8, &mut sampler, &device)?, new);
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
// unit tests read tensors freely; the library reads only through `host` (clippy.toml)
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod block;
pub mod cache;
mod compressor;
pub mod config;
mod error;
mod feed_forward;
pub mod files;
pub mod flops;
pub mod generate;
pub mod host;
mod init;
pub mod loss;
pub mod memory;
mod merge;
mod model;
pub mod model_dir;
mod next_latent;
pub mod objectives;
pub mod spec;
pub mod synthetic;
mod token_shift;
pub mod weights;

pub use block::{Attention, HierarchicalBlock};
pub use compressor::Compressor;
pub use config::{
    AttentionImplementation, HierarchicalTransformerConfig, NextLatentLossType, PerHierarchy,
};
pub use error::{ConfigError, InputError, LoadError};
pub use feed_forward::{FeedForward, FeedForwardConfig};
pub use merge::{hierarchical_cat, HierarchicalMerge};
pub use model::{check_vocabulary, ForwardOptions, ForwardOutput, HierarchicalTransformer, Losses};
pub use next_latent::{latent_distance, ChunkSummarizer, NextLatDynamics};
pub use spec::{AttentionKind, HierarchySpec, ModelSpec};
pub use token_shift::token_shift;
