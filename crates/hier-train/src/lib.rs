//! hier-train: byte-level datasets, the training loop (Adam, warm-up + cosine, global-norm
//! clipping, gradient accumulation), evaluation in bits per character, atomic checkpoints and
//! bit-exact resume, data parallelism over devices and nodes. Generic over `B: AutodiffBackend`.

pub mod checkpoint;
pub mod clip;
pub mod compare;
pub mod data;
pub mod enwik8;
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
