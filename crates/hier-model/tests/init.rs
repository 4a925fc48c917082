//! Initialisation as in the reference: parameter counts from REFERENCE.md, PyTorch's default
//! bounds, and the zero-initialised last dynamics layer.

use burn::backend::Flex;
use burn::module::Module;
use hier_model::weights::state_dict;
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};

type B = Flex;

fn count(config: &HierarchicalTransformerConfig) -> usize {
    HierarchicalTransformer::<B>::new(config, &Default::default())
        .unwrap()
        .num_params()
}

#[test]
fn parameter_counts_match_the_reference() {
    let mut flat = HierarchicalTransformerConfig::new(256, 256, 4);
    flat.seq_len = 512;
    flat.heads = PerHierarchy::All(4);
    assert_eq!(count(&flat), 3_543_808);

    let mut two = flat.clone();
    two.hierarchies = PerHierarchy::Each(vec![1, 2]);
    two.window_sizes = PerHierarchy::Each(vec![Some(32), Some(64)]);
    assert_eq!(count(&two), 9_455_360);

    let mut three = HierarchicalTransformerConfig::new(256, 0, 4);
    three.dim = PerHierarchy::Each(vec![128, 256, 256]);
    three.dim_head = PerHierarchy::All(32);
    three.heads = PerHierarchy::All(4);
    three.seq_len = 1024;
    three.hierarchies = PerHierarchy::Each(vec![1, 2, 8]);
    three.window_sizes = PerHierarchy::Each(vec![Some(32), Some(64), None]);
    assert_eq!(count(&three), 11_390_976);
}

#[test]
fn default_initialisation_bounds() {
    let mut c = HierarchicalTransformerConfig::new(64, 32, 1);
    c.seq_len = 16;
    c.heads = PerHierarchy::All(2);
    c.dim_head = PerHierarchy::All(8);
    c.hierarchies = PerHierarchy::Each(vec![1, 2]);
    let model = HierarchicalTransformer::<B>::init(&c, 7, &Default::default()).unwrap();
    let tensors = state_dict(&model);
    // seeded: the same seed gives the same weights, another seed others (on any backend)
    let again = HierarchicalTransformer::<burn::backend::NdArray>::init(&c, 7, &Default::default())
        .unwrap();
    assert_eq!(tensors, state_dict(&again));
    let other = HierarchicalTransformer::<B>::init(&c, 8, &Default::default()).unwrap();
    assert_ne!(
        tensors["token_emb.weight"],
        state_dict(&other)["token_emb.weight"]
    );
    let max_abs = |k: &str| tensors[k].values.iter().fold(0f32, |m, v| m.max(v.abs()));
    // kaiming-uniform(a = sqrt(5)): |w| <= 1 / sqrt(fan_in)
    assert!(max_abs("layers.0.0.attn.to_qkv.weight") <= 1.0 / 32f32.sqrt());
    assert!(max_abs("layers.0.0.attn.to_qkv.weight") > 0.8 / 32f32.sqrt());
    assert!(max_abs("compressors.1.compress_fn.1.conv.weight") <= 1.0 / 64f32.sqrt());
    assert!(max_abs("compressors.1.compress_fn.1.conv.bias") <= 1.0 / 64f32.sqrt());
    assert!(max_abs("compressors.1.compress_fn.1.conv.bias") > 0.5 / 64f32.sqrt());
    assert!(max_abs("hierarchical_merges.0.net.3.bias") <= 1.0 / 64f32.sqrt());
    // N(0, 1) embedding
    let emb = &tensors["token_emb.weight"].values;
    let var = emb.iter().map(|v| v * v).sum::<f32>() / emb.len() as f32;
    assert!((var - 1.0).abs() < 0.1, "embedding variance {var}");
    // norms start at one / zero, the dynamics' last layer at zero
    assert!(tensors["norms.0.weight"].values.iter().all(|&v| v == 1.0));
    assert!(tensors["layers.0.1.ff.net.0.gamma"]
        .values
        .iter()
        .all(|&v| v == 1.0));
    assert!(tensors["latent_dynamics.1.net.5.weight"]
        .values
        .iter()
        .all(|&v| v == 0.0));
    assert!(tensors["latent_dynamics.1.net.5.bias"]
        .values
        .iter()
        .all(|&v| v == 0.0));
    assert!(max_abs("latent_dynamics.1.net.3.weight") > 0.0);
}
