//! Incremental decoding equals the full forward pass: every step's logits (1e-4), the logits of
//! positions fed in passes of any length (a prompt in one pass), and greedy tokens, on every
//! fixture configuration and a hierarchy / stride / window sweep.
#![allow(clippy::disallowed_methods)] // tests read tensors freely

mod common;

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use hier_model::cache::{generate_cached, Cache};
use hier_model::generate::{generate_recompute, Sampler};
use hier_model::{model_dir, HierarchicalTransformer};

fn ids(n: usize, vocab: usize) -> Vec<i64> {
    (0..n)
        .map(|i| 1 + ((i * 7 + i * i) % (vocab - 1)) as i64)
        .collect()
}

fn check<B: Backend>(model: &HierarchicalTransformer<B>, label: &str) {
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
        let diff: f32 = (stepped - expected).abs().max().into_scalar().elem();
        assert!(
            diff < 1e-4,
            "{label}: position {t}: logits differ by {diff}"
        );
    }

    // the same positions fed in passes of any length give the same logits
    for pattern in [vec![n], vec![3, 1, 5, 2], vec![2], vec![1, 7]] {
        let mut cache = Cache::new(model, 2, &device);
        let (mut start, mut outs) = (0, Vec::new());
        for &len in pattern.iter().cycle() {
            let m = len.min(n - start);
            let part: Vec<Vec<i64>> = rows.iter().map(|r| r[start..start + m].to_vec()).collect();
            outs.push(cache.forward(model, &part).unwrap());
            start += m;
            if start == n {
                break;
            }
        }
        assert_eq!(cache.position(), n);
        let diff: f32 = (Tensor::cat(outs, 1) - full.clone())
            .abs()
            .max()
            .into_scalar()
            .elem();
        assert!(
            diff < 1e-4,
            "{label}: passes {pattern:?}: logits differ by {diff}"
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

fn fixture_configurations<B: Backend>() {
    for case in common::CASES {
        let model = model_dir::load::<B>(&common::fixture_dir(case), &Default::default()).unwrap();
        check(&model, case);
    }
}

fn hierarchy_stride_window_sweep<B: Backend>() {
    for config in common::sweep_configs() {
        let model = HierarchicalTransformer::<B>::init(&config, 1, &Default::default()).unwrap();
        let label = format!(
            "hierarchies {:?} strides {:?} windows {:?}",
            config.hierarchies, config.hierarchical_stride, config.window_sizes
        );
        check(&model, &label);
    }
}

#[cfg(any(feature = "test-wgpu", feature = "test-cuda"))]
fn greedy_cached<B: Backend>(
    model: &HierarchicalTransformer<B>,
    prompt: &[Vec<i64>],
    new: usize,
) -> Vec<Vec<i64>> {
    let mut greedy = Sampler::new(0.0, 0.9, 0).unwrap();
    generate_cached(model, prompt, new, &mut greedy, &Default::default()).unwrap()
}

/// Cached greedy decoding on `B` gives flex's tokens, past `seq_len`.
#[cfg(any(feature = "test-wgpu", feature = "test-cuda"))]
fn greedy_tokens_equal_flex<B: Backend>() {
    for case in common::CASES {
        let dir = common::fixture_dir(case);
        let flex = model_dir::load::<burn::backend::Flex>(&dir, &Default::default()).unwrap();
        let other = model_dir::load::<B>(&dir, &Default::default()).unwrap();
        let spec = flex.spec();
        let prompt = vec![ids(5, spec.num_tokens)];
        let new = spec.seq_len + 5;
        assert_eq!(
            greedy_cached(&other, &prompt, new),
            greedy_cached(&flex, &prompt, new),
            "{case}: greedy tokens differ from flex's"
        );
    }
}

macro_rules! on_backend {
    ($backend:ty) => {
        #[test]
        fn fixture_configurations() {
            super::fixture_configurations::<$backend>();
        }
        #[test]
        fn hierarchy_stride_window_sweep() {
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
    #[test]
    fn greedy_tokens_equal_flex() {
        super::greedy_tokens_equal_flex::<burn::backend::Wgpu>();
    }
}
#[cfg(feature = "test-cuda")]
mod cuda {
    on_backend!(burn::backend::Cuda);
    #[test]
    fn greedy_tokens_equal_flex() {
        super::greedy_tokens_equal_flex::<burn::backend::Cuda>();
    }
}
