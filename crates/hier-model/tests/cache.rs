//! Incremental decoding equals the full forward pass: every step's logits (1e-4) and greedy
//! tokens, on every fixture configuration and a hierarchy / stride / window sweep.
#![allow(clippy::disallowed_methods)] // tests read tensors freely

mod common;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::cache::{generate_cached, Cache};
use hier_model::generate::{generate_recompute, Sampler};
use hier_model::{model_dir, HierarchicalTransformer};

type B = Flex;

fn ids(n: usize, vocab: usize) -> Vec<i64> {
    (0..n)
        .map(|i| 1 + ((i * 7 + i * i) % (vocab - 1)) as i64)
        .collect()
}

fn check(model: &HierarchicalTransformer<B>, label: &str) {
    let spec = model.spec();
    let n = spec.seq_len;
    let tokens = ids(2 * n, spec.num_tokens);
    let device = Default::default();
    // batch of two different rows
    let rows = [tokens[..n].to_vec(), tokens[n..].to_vec()];
    let flat: Vec<i64> = rows.concat();
    let full = model
        .forward(Tensor::<B, 2, Int>::from_data(
            TensorData::new(flat, [2, n]),
            &device,
        ))
        .unwrap(); // [2, n, V]
    let mut cache = Cache::new(model, 2, &device);
    for (t, (&a, &b)) in rows[0].iter().zip(&rows[1]).enumerate() {
        let stepped = cache.step(model, &[a, b]).unwrap();
        let expected = full.clone().narrow(1, t, 1).reshape([2, spec.num_tokens]);
        let diff: f32 = (stepped - expected).abs().max().into_scalar();
        assert!(
            diff < 1e-4,
            "{label}: position {t}: logits differ by {diff}"
        );
    }

    let prompt = vec![rows[0][..5].to_vec()];
    let new = n - 5;
    let recompute = generate_recompute(
        model,
        &prompt,
        new,
        &mut Sampler::new(0.0, 0.9, 0).unwrap(),
        &device,
    )
    .unwrap();
    let cached = generate_cached(
        model,
        &prompt,
        new,
        &mut Sampler::new(0.0, 0.9, 0).unwrap(),
        &device,
    )
    .unwrap();
    assert_eq!(recompute, cached, "{label}: greedy tokens differ");
    // past seq_len it keeps streaming
    let long = generate_cached(
        model,
        &prompt,
        n + 10,
        &mut Sampler::new(1.0, 0.9, 3).unwrap(),
        &device,
    )
    .unwrap();
    assert_eq!(long[0].len(), n + 10);
}

#[test]
fn fixture_configurations() {
    for case in common::CASES {
        let model = model_dir::load::<B>(&common::fixture_dir(case), &Default::default()).unwrap();
        check(&model, case);
    }
}

#[test]
fn hierarchy_stride_window_sweep() {
    for config in common::sweep_configs() {
        let model = HierarchicalTransformer::<B>::init(&config, 1, &Default::default()).unwrap();
        let label = format!(
            "hierarchies {:?} strides {:?} windows {:?}",
            config.hierarchies, config.hierarchical_stride, config.window_sizes
        );
        check(&model, &label);
    }
}
