//! Causality: changing the token at position t never changes the logits at positions < t,
//! bitwise, for every hierarchy / stride / window combination (fixture configs plus a sweep).
#![allow(clippy::disallowed_methods)] // tests read tensors freely

mod common;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::synthetic::token_ids;
use hier_model::{model_dir, HierarchicalTransformer};

fn logits<B: Backend>(model: &HierarchicalTransformer<B>, ids: &[i64]) -> Vec<f32> {
    let t = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.to_vec(), [1, ids.len()]),
        &Default::default(),
    );
    model
        .forward(t)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

fn assert_causal<B: Backend>(model: &HierarchicalTransformer<B>, n: usize, label: &str) {
    let vocab = model.spec().num_tokens;
    let base = token_ids(n, vocab, n as u64);
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

fn fixture_configurations<B: Backend>() {
    for case in common::CASES {
        let model = model_dir::load::<B>(&common::fixture_dir(case), &Default::default()).unwrap();
        let n = model.spec().seq_len;
        assert_causal(&model, n, case);
        assert_causal(&model, n - 5, case); // a length that is not a multiple of anything
    }
}

fn hierarchy_stride_window_sweep<B: Backend>() {
    let configs = common::sweep_configs();
    assert_eq!(configs.len(), 36);
    for config in configs {
        let model = HierarchicalTransformer::<B>::init(&config, 1, &Default::default()).unwrap();
        let label = format!(
            "hierarchies {:?} strides {:?} windows {:?}",
            config.hierarchies, config.hierarchical_stride, config.window_sizes
        );
        assert_causal(&model, 21, &label);
    }
}

macro_rules! on_backend {
    ($backend:ty) => {
        #[test]
        fn fixture_configurations_are_causal() {
            super::fixture_configurations::<$backend>();
        }
        #[test]
        fn hierarchy_stride_window_sweep_is_causal() {
            super::hierarchy_stride_window_sweep::<$backend>();
        }
    };
}

mod flex {
    on_backend!(burn::backend::Flex);
}
#[cfg(feature = "test-wgpu")]
mod wgpu {
    on_backend!(burn::backend::Wgpu);
}
#[cfg(feature = "test-cuda")]
mod cuda {
    on_backend!(burn::backend::Cuda);
}
