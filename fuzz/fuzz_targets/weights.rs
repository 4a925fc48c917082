//! The weights loader on arbitrary bytes: `from_safetensors` then `load_state_dict` into a small
//! model must return an error or a model, never panic.
#![no_main]

use std::sync::OnceLock;

use burn::backend::Flex;
use hier_model::weights::{from_safetensors, load_state_dict};
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static HierarchicalTransformerConfig {
    static CONFIG: OnceLock<HierarchicalTransformerConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut c = HierarchicalTransformerConfig::new(8, 4, 1);
        c.seq_len = 8;
        c.heads = PerHierarchy::All(1);
        c.dim_head = PerHierarchy::All(2);
        c.hierarchies = PerHierarchy::Each(vec![1, 2]);
        c.window_sizes = PerHierarchy::Each(vec![Some(2), None]);
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = from_safetensors(data, "fuzz") else {
        return;
    };
    let model = HierarchicalTransformer::<Flex>::new(config(), &Default::default()).unwrap();
    let _ = load_state_dict(model, tensors);
});
