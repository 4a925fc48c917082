//! hier-model: the Simple Hierarchical Transformer (a port of the PyTorch reference
//! `simple-hierarchical-transformer` 0.4.0, numerically identical), generic over Burn backends.
//!
//! ```no_run
//! # use burn::backend::Flex;
//! use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig};
//! let config = HierarchicalTransformerConfig::new(256, 64, 2);
//! let model = HierarchicalTransformer::<Flex>::new(&config, &Default::default()).unwrap();
//! ```

mod block;
pub mod cache;
mod compressor;
pub mod config;
mod error;
mod feed_forward;
pub mod files;
pub mod generate;
mod init;
pub mod loss;
pub mod memory;
mod merge;
mod model;
pub mod model_dir;
mod next_latent;
pub mod objectives;
pub mod spec;
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
