//! Named training setups: `tiny` (CI smoke runs), `shakespeare` (the CPU default: the study's
//! hierarchical config from docs/experiments.md, 2,900 steps, about 20 minutes on two cores),
//! `enwik8` (sized like the reference's `train.py`).

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
            // docs/experiments.md's h12-narrow-wide, the hierarchical config closest to the best
            // flat one at equal time: a narrow 1x hierarchy beside a wide 2x one that runs on
            // every second position.
            let mut model = HierarchicalTransformerConfig::new(256, 128, 4);
            model.seq_len = 512;
            model.dim = PerHierarchy::Each(vec![128, 256]);
            model.heads = PerHierarchy::Each(vec![2, 4]);
            model.dim_head = PerHierarchy::All(64);
            model.hierarchies = PerHierarchy::Each(vec![1, 2]);
            model.window_sizes = PerHierarchy::Each(vec![Some(32), Some(64)]);
            model.hierarchical_stride = PerHierarchy::Each(vec![1, 2]);
            // The study's schedule: a constant rate after the warm-up; its 20-minute runs on two
            // cores reached 2,846-2,899 steps.
            let train = TrainOptions {
                batch_size: 4,
                grad_accum: 1,
                lr: 1e-3,
                min_lr: 1e-3,
                warmup_steps: 100,
                max_steps: 2900,
                validate_every: 200,
                valid_batches: 16,
                sample_every: 1000,
                sample_prime: 64,
                sample_len: 200,
                checkpoint_every: 200,
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

    /// The shakespeare preset is the study's config, so `cargo xtask train` trains what
    /// docs/experiments.md measured.
    #[test]
    fn shakespeare_is_the_study_config() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/experiments/study/h12-narrow-wide.json"
        );
        let text = std::fs::read_to_string(path).expect("the study's config, in the workspace");
        let study: TrainConfig = serde_json::from_str(&text).unwrap();
        let preset = preset("shakespeare").unwrap();
        assert_eq!(preset.model, study.model);
        let schedule =
            |t: &TrainOptions| (t.batch_size, t.grad_accum, t.lr, t.min_lr, t.warmup_steps);
        assert_eq!(schedule(&preset.train), schedule(&study.train));
        assert_eq!(preset.train.clip_grad_norm, study.train.clip_grad_norm);
        assert_eq!(preset.train.valid_batches, study.train.valid_batches);
    }
}
