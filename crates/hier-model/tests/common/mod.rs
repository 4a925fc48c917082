//! Fixtures generated from the PyTorch reference by `tools/gen_fixtures.py`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use hier_model::{HierarchicalTransformerConfig, PerHierarchy};
use safetensors::{Dtype, SafeTensors};

pub const CASES: &[&str] = &[
    "flat",
    "h12_local",
    "h124_stride",
    "predict_all",
    "merge_all",
    "window0",
    "odd_len",
    "rollouts",
];

pub fn fixture_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(case)
}

/// A tensor from `expected.safetensors`, as f64 values (ids included).
pub struct Expected {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

pub fn expected(case: &str) -> HashMap<String, Expected> {
    let bytes =
        std::fs::read(fixture_dir(case).join("expected.safetensors")).expect("fixture present");
    let file = SafeTensors::deserialize(&bytes).expect("valid fixture");
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("unexpected dtype {other:?} for {name}"),
        };
        out.insert(
            name,
            Expected {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    out
}

impl Expected {
    pub fn ids(&self) -> Vec<i64> {
        self.values.iter().map(|v| *v as i64).collect()
    }
    pub fn f32s(&self) -> Vec<f32> {
        self.values.iter().map(|v| *v as f32).collect()
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// 36 small configs: hierarchies [1,2], [1,4], [1,2,8], [2,1] × strides (all 1, half the factor,
/// the whole factor; the predicting 1x keeps 1) × windows rotating through null / 0 / 3 so that
/// mixed attention kinds meet, with `hierarchy_merge_all` and `predict_use_all_hierarchy` mixed in.
pub fn sweep_configs() -> Vec<HierarchicalTransformerConfig> {
    let windows: [Option<i64>; 3] = [None, Some(0), Some(3)];
    let mut out = Vec::new();
    for hierarchies in [vec![1, 2], vec![1, 4], vec![1, 2, 8], vec![2, 1]] {
        for stride_mode in 0..3 {
            for wi in 0..windows.len() {
                let strides = hierarchies
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
                config.window_sizes = PerHierarchy::Each(
                    (0..hierarchies.len())
                        .map(|i| windows[(wi + i) % 3])
                        .collect(),
                );
                config.hierarchies = PerHierarchy::Each(hierarchies.clone());
                config.hierarchical_stride = PerHierarchy::Each(strides);
                config.hierarchy_merge_all = stride_mode == 2 && wi == 1;
                config.predict_use_all_hierarchy = stride_mode == 1 && wi == 2;
                out.push(config);
            }
        }
    }
    out
}
