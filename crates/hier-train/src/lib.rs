//! Training for [hier](https://github.com/hier-rs/hier)'s Simple Hierarchical Transformer
//! ([`hier_model`]): byte-level datasets, the training loop (Adam, warm-up + cosine, global-norm
//! clipping, gradient accumulation), evaluation in bits per character, atomic checkpoints and
//! bit-exact resume, data parallelism over devices and nodes. Generic over
//! `B: AutodiffBackend`.
//!
//! Main types and modules:
//!
//! - [`TrainConfig`]: a model config, [`TrainOptions`] (batch, learning rate schedule,
//!   clipping, validation, samples, checkpoints, seed) and the data; [`presets`] holds the named
//!   ones (`tiny`, `shakespeare`, `enwik8`).
//! - [`Corpus`]: bytes with train/valid(/test) [`Split`]s: the embedded Shakespeare corpus, any
//!   file (raw or `.gz`), or an unpacked enwik8.
//! - [`train`] (one device) and [`train_parallel`] (replicas over devices and nodes,
//!   [`Replicas`]): train into a run directory, starting or resuming ([`Start`]), stoppable
//!   ([`Control`]); they return a [`TrainOutcome`]. A run directory is a model directory
//!   ([`hier_model::model_dir`]) plus `train.json`, `metrics.jsonl` ([`metrics`]) and
//!   `checkpoint/` ([`checkpoint`]).
//! - [`eval::evaluate`]: mean loss and bits per character over every byte of a split.
//!
//! # Example
//!
//! With `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! hier-train = "0.1"
//! hier-model = "0.1"
//! burn = { version = "=0.21.0", features = ["flex", "autodiff"] }
//! ```
//!
//! Four steps of a tiny two-hierarchy model on the embedded corpus, stopped after step 2 and
//! resumed, then evaluated:
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use hier_model::{model_dir, HierarchicalTransformerConfig, PerHierarchy};
//! use hier_train::eval::evaluate;
//! use hier_train::{train, Control, Corpus, Split, Start, TrainConfig, TrainOptions};
//!
//! let mut model = HierarchicalTransformerConfig::new(256, 32, 1); // num_tokens, dim, depth
//! model.seq_len = 32;
//! model.heads = PerHierarchy::All(2);
//! model.dim_head = PerHierarchy::All(16);
//! model.hierarchies = PerHierarchy::Each(vec![1, 2]);
//! model.window_sizes = PerHierarchy::Each(vec![Some(16), Some(16)]);
//! let train_options = TrainOptions {
//!     batch_size: 4,
//!     grad_accum: 1,
//!     lr: 3e-3,
//!     min_lr: 3e-4,
//!     warmup_steps: 1,
//!     max_steps: 4,
//!     validate_every: 2,
//!     valid_batches: 1,
//!     sample_every: 0,
//!     checkpoint_every: 2,
//!     ..TrainOptions::default()
//! };
//! let config = TrainConfig { model, train: train_options, data: None };
//! let corpus = Corpus::shakespeare();
//! let run_dir = std::env::temp_dir().join(format!("hier-train-doc-{}", std::process::id()));
//! let device = Default::default();
//!
//! // stop after step 2 with a checkpoint (the schedule still spans 4 steps), then resume
//! let pause = Control { stop_at: Some(2), ..Control::default() };
//! let first = train::<Autodiff<Flex>>(&config, &corpus, &run_dir, Start::New, &device, &pause)?;
//! assert_eq!(first.steps, 2);
//! let done = train::<Autodiff<Flex>>(
//!     &config, &corpus, &run_dir, Start::Resume, &device, &Control::default(),
//! )?;
//! assert_eq!(done.steps, 4);
//! let (_loss, bpc) = done.last_valid.expect("validated at step 4");
//! assert!(bpc.is_finite());
//!
//! // the run directory is a model directory: load it for inference and evaluate
//! let trained = model_dir::load::<Flex>(&run_dir, &device)?;
//! let valid = corpus.split(Split::Valid)?;
//! let evaluation = evaluate(&trained, &valid[..1000], 8, &device, |_done, _total| {})?;
//! assert_eq!(evaluation.tokens, 999);
//! std::fs::remove_dir_all(&run_dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
// unit tests read tensors freely; the library reads only through `hier_model::host` (clippy.toml)
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod adam;
pub mod alloc;
pub mod checkpoint;
pub mod clip;
pub mod compare;
pub mod data;
pub mod digest;
pub mod eval;
pub mod eval_threads;
pub mod metrics;
pub mod options;
pub mod parallel;
pub mod presets;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod trainer;

pub use data::{Corpus, DataError, Split};
pub use options::{TrainConfig, TrainOptions};
pub use parallel::{cpu_replicas, BatchSplit, Cluster, ParallelError, Replicas};
pub use trainer::{train, train_parallel, Control, Start, TrainError, TrainOutcome};
