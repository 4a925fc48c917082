//! Device-to-host reads, counted by `hier_model::host` (clippy.toml forbids Burn's reading
//! methods elsewhere, so every read of the library is counted): a training step (forward, every
//! loss, backward, Adam) reads nothing; decoding reads once per generated token (the ids).

use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::cache::generate_cached;
use hier_model::generate::{generate_recompute, Sampler};
use hier_model::host::{count_reads, read_f64};
use hier_model::synthetic::token_ids;
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};

/// Two compressed hierarchies with every objective on: cross-entropy, next-latent rollouts,
/// reconstruction, future tokens, hierarchical AR.
fn config() -> HierarchicalTransformerConfig {
    let mut c = HierarchicalTransformerConfig::new(23, 16, 2);
    c.seq_len = 16;
    c.heads = PerHierarchy::All(2);
    c.dim_head = PerHierarchy::All(8);
    c.hierarchies = PerHierarchy::Each(vec![1, 2, 4]);
    c.hierarchical_stride = PerHierarchy::Each(vec![1, 1, 2]);
    c.window_sizes = PerHierarchy::Each(vec![Some(4), Some(4), None]);
    c.num_rollouts = 2;
    c.prophet_loss_weight = 0.5;
    c.hierarchical_ar_loss_weight = 0.5;
    c
}

#[test]
fn a_training_step_reads_nothing() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let model = HierarchicalTransformer::<B>::new(&config(), &device).unwrap();
    let mut optim = AdamConfig::new().init::<B, HierarchicalTransformer<B>>();
    // ignore_index (0) among the labels: the masks are built on the device too
    let ids = token_ids(3 * 17, 23, 5);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [3, 17]), &device);
    let ((model, total), reads) = count_reads(|| {
        let losses = model.forward_loss(ids.clone()).unwrap();
        let total = losses.total.clone();
        let grads = GradientsParams::from_grads(losses.total.backward(), &model);
        (optim.step(1e-3, model, grads), total)
    });
    assert_eq!(
        reads, 0,
        "reads in forward_loss, backward or the optimizer step"
    );
    // the step really ran every loss: one read, outside the step, sees a finite total
    let (value, reads) = count_reads(|| read_f64(total).unwrap());
    assert!(value.is_finite() && value > 0.0, "{value}");
    assert_eq!(reads, 1, "the counter sees reads");
    let (_, reads) = count_reads(|| model.forward_loss(ids).unwrap());
    assert_eq!(reads, 0, "the trained model's losses read nothing either");
}

#[test]
fn decoding_reads_once_per_generated_token() {
    let device = Default::default();
    let model = HierarchicalTransformer::<Flex>::new(&config(), &device).unwrap();
    let prompt: Vec<Vec<i64>> = vec![vec![3, 1, 4, 1, 5], vec![9, 2, 6, 5, 3]];
    let new_tokens = 20; // past seq_len (16): the cache keeps streaming
    for temperature in [0.0, 1.0] {
        let mut sampler = Sampler::new(temperature, 0.5, 7).unwrap();
        let (new, reads) = count_reads(|| {
            generate_cached(&model, &prompt, new_tokens, &mut sampler, &device).unwrap()
        });
        assert!(new.iter().all(|row| row.len() == new_tokens));
        assert_eq!(
            reads, new_tokens as u64,
            "cached, temperature {temperature}"
        );
        let mut sampler = Sampler::new(temperature, 0.5, 7).unwrap();
        let (_, reads) =
            count_reads(|| generate_recompute(&model, &prompt, 6, &mut sampler, &device).unwrap());
        assert_eq!(reads, 6, "recomputed, temperature {temperature}");
    }
}
