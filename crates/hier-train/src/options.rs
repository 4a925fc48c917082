//! Training options and the training config file (`{"model": {...}, "train": {...}}`).

use hier_model::HierarchicalTransformerConfig;
use serde::{Deserialize, Serialize};

/// How to train. Defaults follow the reference's `train.py` where it has one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainOptions {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate (Adam).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Optimizer steps in total (the cosine decays over them).
    pub max_steps: u64,
    /// Clip the global gradient norm to this value (0 disables), as `clip_grad_norm_`.
    pub clip_grad_norm: f64,
    /// Validate every N steps (and at the end).
    pub validate_every: u64,
    /// Micro-batches per validation.
    pub valid_batches: usize,
    /// Print a sample every N steps (0 disables).
    pub sample_every: u64,
    /// Prompt length of the samples, taken from the validation split.
    pub sample_prime: usize,
    /// New tokens per sample.
    pub sample_len: usize,
    /// Checkpoint every N steps (and at the end).
    pub checkpoint_every: u64,
    /// Seed of initialisation, batches and sampling.
    pub seed: u64,
    /// Skip every hierarchical merge (the reference's ablation switch).
    pub ablate_hierarchical_merge: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 2,
            grad_accum: 8,
            lr: 1e-4,
            min_lr: 1e-5,
            warmup_steps: 100,
            max_steps: 100_000,
            clip_grad_norm: 0.5,
            validate_every: 100,
            valid_batches: 4,
            sample_every: 500,
            sample_prime: 128,
            sample_len: 256,
            checkpoint_every: 500,
            seed: 0,
            ablate_hierarchical_merge: false,
        }
    }
}

/// A training config file: the model (same keys as a model directory's `config.json`) and the
/// training options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model to train, as in a model directory's `config.json`.
    pub model: HierarchicalTransformerConfig,
    /// Batch, schedule, validation, checkpoints (defaults when absent).
    #[serde(default)]
    pub train: TrainOptions,
    /// Training data: a file (raw bytes or `.gz`), a directory holding `enwik8`, or `null` for
    /// the embedded Shakespeare corpus.
    #[serde(default)]
    pub data: Option<std::path::PathBuf>,
}

/// Problems with training options.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("training option `{key}`: {problem}")]
pub struct OptionsError {
    /// The option at fault.
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl TrainOptions {
    /// Check the options, reporting the first problem: `batch_size`, `grad_accum`, `max_steps`,
    /// `validate_every`, `checkpoint_every` and `valid_batches` at least 1, `lr` positive,
    /// `0 <= min_lr <= lr`, `clip_grad_norm >= 0`, all finite.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let err = |key, problem: &str| {
            Err(OptionsError {
                key,
                problem: problem.to_string(),
            })
        };
        if self.batch_size == 0 {
            return err("batch_size", "must be at least 1");
        }
        if self.grad_accum == 0 {
            return err("grad_accum", "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err("lr", "must be a positive number");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return err("min_lr", "must be between 0 and lr");
        }
        if !(self.clip_grad_norm.is_finite() && self.clip_grad_norm >= 0.0) {
            return err("clip_grad_norm", "must be >= 0 (0 disables clipping)");
        }
        if self.max_steps == 0 {
            return err("max_steps", "must be at least 1");
        }
        if self.validate_every == 0 || self.checkpoint_every == 0 {
            return err(
                "validate_every",
                "validate_every and checkpoint_every must be at least 1",
            );
        }
        if self.valid_batches == 0 {
            return err("valid_batches", "must be at least 1");
        }
        Ok(())
    }
}
