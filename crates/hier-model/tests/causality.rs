//! Causality: changing the token at position t never changes the logits at positions < t,
//! bitwise, for every hierarchy / stride / window combination (fixture configs plus a sweep).

mod common;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::{model_dir, HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};

type B = Flex;

fn logits(model: &HierarchicalTransformer<B>, ids: &[i64]) -> Vec<f32> {
    let t = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.to_vec(), [1, ids.len()]),
        &Default::default(),
    );
    model.forward(t).unwrap().into_data().to_vec().unwrap()
}

/// Simple deterministic ids in 1..vocab.
fn ids(n: usize, vocab: usize, salt: u64) -> Vec<i64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % (vocab as u64 - 1)) as i64
        })
        .collect()
}

fn assert_causal(model: &HierarchicalTransformer<B>, n: usize, label: &str) {
    let vocab = model.spec().num_tokens;
    let base = ids(n, vocab, n as u64);
    let reference = logits(model, &base);
    for t in 0..n {
        let mut changed = base.clone();
        changed[t] = 1 + (changed[t] % (vocab as i64 - 1));
        let out = logits(model, &changed);
        let prefix = t * vocab;
        assert!(
            out[..prefix] == reference[..prefix],
            "{label}: changing position {t} changed earlier logits"
        );
        assert!(
            out[prefix..] != reference[prefix..],
            "{label}: changing position {t} changed nothing at all"
        );
    }
}

#[test]
fn fixture_configurations_are_causal() {
    for case in common::CASES {
        let model = model_dir::load::<B>(&common::fixture_dir(case), &Default::default()).unwrap();
        let n = model.spec().seq_len;
        assert_causal(&model, n, case);
        assert_causal(&model, n - 5, case); // a length that is not a multiple of anything
    }
}

#[test]
fn hierarchy_stride_window_sweep_is_causal() {
    let windows: [Option<i64>; 3] = [None, Some(0), Some(3)];
    let mut checked = 0;
    for hierarchies in [vec![1, 2], vec![1, 4], vec![1, 2, 8], vec![2, 1]] {
        for stride_mode in 0..3 {
            for (wi, window) in windows.iter().enumerate() {
                // stride: all 1, half the factor, or the whole factor (predicting 1x keeps 1)
                let strides: Vec<usize> = hierarchies
                    .iter()
                    .map(|&c| match stride_mode {
                        0 => 1,
                        1 => (c / 2).max(1),
                        _ => c,
                    })
                    .collect();
                let mut config = HierarchicalTransformerConfig::new(17, 8, 2);
                config.seq_len = 24;
                config.heads = PerHierarchy::All(2);
                config.dim_head = PerHierarchy::All(4);
                config.hierarchies = PerHierarchy::Each(hierarchies.clone());
                config.hierarchical_stride = PerHierarchy::Each(strides.clone());
                // vary the window per hierarchy so that mixed kinds meet
                config.window_sizes = PerHierarchy::Each(
                    (0..hierarchies.len())
                        .map(|i| windows[(wi + i) % windows.len()])
                        .collect(),
                );
                config.hierarchy_merge_all = stride_mode == 2 && wi == 1;
                let model =
                    HierarchicalTransformer::<B>::new(&config, &Default::default()).unwrap();
                let label =
                    format!("hierarchies {hierarchies:?} strides {strides:?} window {window:?}");
                assert_causal(&model, 21, &label);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 36);
}
