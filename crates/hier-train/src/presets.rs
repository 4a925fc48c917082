//! Named training setups: `tiny` (CI smoke runs), `shakespeare` (the CPU default, 300 steps; under
//! a minute on two cores, see the README), `enwik8` (sized like the reference's `train.py`).

use hier_model::{HierarchicalTransformerConfig, PerHierarchy};

use crate::options::{TrainConfig, TrainOptions};

/// The names [`preset`] knows.
pub const NAMES: &[&str] = &["tiny", "shakespeare", "enwik8"];

/// The training config named `name` (one of [`NAMES`]), or `None`.
pub fn preset(name: &str) -> Option<TrainConfig> {
    match name {
        "tiny" => {
            let mut model = HierarchicalTransformerConfig::new(256, 32, 2);
            model.seq_len = 64;
            model.heads = PerHierarchy::All(2);
            model.dim_head = PerHierarchy::All(16);
            model.hierarchies = PerHierarchy::Each(vec![1, 2]);
            model.window_sizes = PerHierarchy::Each(vec![Some(16), Some(16)]);
            let train = TrainOptions {
                batch_size: 8,
                grad_accum: 1,
                lr: 3e-3,
                min_lr: 3e-4,
                warmup_steps: 5,
                max_steps: 60,
                validate_every: 20,
                valid_batches: 4,
                sample_every: 0,
                sample_prime: 16,
                sample_len: 32,
                checkpoint_every: 20,
                ..TrainOptions::default()
            };
            Some(TrainConfig {
                model,
                train,
                data: None,
            })
        }
        "shakespeare" => {
            let mut model = HierarchicalTransformerConfig::new(256, 128, 3);
            model.seq_len = 256;
            model.heads = PerHierarchy::All(4);
            model.dim_head = PerHierarchy::All(32);
            model.hierarchies = PerHierarchy::Each(vec![1, 2]);
            model.window_sizes = PerHierarchy::Each(vec![Some(64), Some(64)]);
            let train = TrainOptions {
                batch_size: 8,
                grad_accum: 1,
                lr: 2e-3,
                min_lr: 2e-4,
                warmup_steps: 30,
                max_steps: 300,
                validate_every: 50,
                valid_batches: 4,
                sample_every: 100,
                sample_prime: 64,
                sample_len: 200,
                checkpoint_every: 50,
                ..TrainOptions::default()
            };
            Some(TrainConfig {
                model,
                train,
                data: None,
            })
        }
        "enwik8" => {
            let mut model = HierarchicalTransformerConfig::new(256, 1024, 8);
            model.seq_len = 2048;
            model.hierarchies = PerHierarchy::Each(vec![1, 2]);
            model.window_sizes = PerHierarchy::Each(vec![Some(32), Some(64)]);
            let train = TrainOptions {
                sample_len: 1024,
                ..TrainOptions::default()
            };
            Some(TrainConfig {
                model,
                train,
                data: None,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in NAMES {
            let p = preset(name).unwrap();
            p.model.validate().unwrap();
            p.train.validate().unwrap();
        }
        assert!(preset("nope").is_none());
    }
}
