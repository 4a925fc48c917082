//! Model directories: save/load round trip, and a clear error for every way a file can be wrong.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::weights::{from_safetensors, state_dict, to_safetensors};
use hier_model::{
    model_dir, HierarchicalTransformer, HierarchicalTransformerConfig, LoadError, PerHierarchy,
};

type B = Flex;

fn config() -> HierarchicalTransformerConfig {
    let mut c = HierarchicalTransformerConfig::new(40, 16, 2);
    c.seq_len = 16;
    c.heads = PerHierarchy::All(2);
    c.dim_head = PerHierarchy::All(8);
    c.hierarchies = PerHierarchy::Each(vec![1, 2]);
    c.dim = PerHierarchy::Each(vec![16, 8]);
    c.window_sizes = PerHierarchy::Each(vec![Some(4), None]);
    c
}

fn logits(model: &HierarchicalTransformer<B>) -> Vec<f32> {
    let ids: Vec<i64> = (0..12).map(|i| 1 + (i * 7) % 39).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, 12]), &Default::default());
    model.forward(ids).unwrap().into_data().to_vec().unwrap()
}

#[test]
fn save_then_load_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let model = HierarchicalTransformer::<B>::new(&config(), &Default::default()).unwrap();
    model_dir::save(&model, dir.path()).unwrap();
    let loaded = model_dir::load::<B>(dir.path(), &Default::default()).unwrap();
    assert_eq!(state_dict(&model), state_dict(&loaded));
    assert_eq!(logits(&model), logits(&loaded));
    assert_eq!(loaded.config, config());
    // the reference's key names and layouts
    let keys = state_dict(&model);
    assert_eq!(keys["token_emb.weight"].shape, vec![40, 16]);
    assert_eq!(
        keys["compressors.1.compress_fn.1.conv.weight"].shape,
        vec![64, 16, 2]
    );
    assert_eq!(
        keys["compressors.1.compress_fn.3.weight"].shape,
        vec![8, 64, 1]
    );
    assert_eq!(keys["compressors.1.to_recon.weight"].shape, vec![80, 8]);
    assert_eq!(keys["layers.0.0.attn.to_qkv.weight"].shape, vec![48, 16]);
    assert_eq!(
        keys["layers.0.0.attn.attn_fn.rel_pos.inv_freq"].shape,
        vec![4]
    );
    assert_eq!(keys["layers.1.1.attn.rotary_emb.freqs"].shape, vec![4]);
    assert_eq!(keys["layers.1.1.attn.norm.gamma"].shape, vec![8]);
    assert_eq!(keys["layers.0.0.ff.net.1.weight"].shape, vec![64, 16]);
    assert_eq!(
        keys["hierarchical_merges.0.net.1.weight"].shape,
        vec![32, 24]
    );
    assert_eq!(keys["latent_dynamics.1.net.5.weight"].shape, vec![8, 8]);
    assert_eq!(keys["chunk_summarizers.1.proj.bias"].shape, vec![8]);
    assert_eq!(keys["to_logits.weight"].shape, vec![40, 16]);
}

fn corrupt(
    edit: impl FnOnce(&mut std::collections::HashMap<String, hier_model::weights::HostTensor>),
) -> LoadError {
    let dir = tempfile::tempdir().unwrap();
    let model = HierarchicalTransformer::<B>::new(&config(), &Default::default()).unwrap();
    model_dir::save(&model, dir.path()).unwrap();
    let path = dir.path().join(model_dir::WEIGHTS_FILE);
    let mut tensors = from_safetensors(&std::fs::read(&path).unwrap(), "x").unwrap();
    edit(&mut tensors);
    std::fs::write(&path, to_safetensors(&tensors.into_iter().collect())).unwrap();
    model_dir::load::<B>(dir.path(), &Default::default()).unwrap_err()
}

#[test]
fn wrong_weights_name_the_tensor() {
    let e = corrupt(|t| {
        t.remove("norms.1.bias");
    });
    assert!(
        matches!(&e, LoadError::Missing { key, .. } if key == "norms.1.bias"),
        "{e}"
    );
    let e = corrupt(|t| {
        let x = t["norms.1.bias"].clone();
        t.insert("norms.2.bias".into(), x);
    });
    assert!(
        matches!(&e, LoadError::Unexpected { keys } if keys == &["norms.2.bias".to_string()]),
        "{e}"
    );
    let e = corrupt(|t| {
        let x = t.get_mut("to_logits.weight").unwrap();
        x.shape = vec![16, 40];
    });
    assert!(
        matches!(&e, LoadError::Shape { key, .. } if key == "to_logits.weight"),
        "{e}"
    );
    let e = corrupt(|t| {
        t.get_mut("layers.0.0.attn.attn_fn.rel_pos.inv_freq")
            .unwrap()
            .values[1] = 0.5;
    });
    assert!(matches!(&e, LoadError::Constant { .. }), "{e}");
    assert!(e.to_string().contains("inv_freq"));
}

#[test]
fn broken_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let e = model_dir::load::<B>(dir.path(), &Default::default()).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");

    let model = HierarchicalTransformer::<B>::new(&config(), &Default::default()).unwrap();
    model_dir::save(&model, dir.path()).unwrap();
    let path = dir.path().join(model_dir::WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = model_dir::load::<B>(dir.path(), &Default::default()).unwrap_err();
    assert!(matches!(e, LoadError::Format { .. }), "{e}");

    std::fs::write(
        dir.path().join(model_dir::CONFIG_FILE),
        r#"{"num_tokens": 40, "dim": 16}"#,
    )
    .unwrap();
    let e = model_dir::load::<B>(dir.path(), &Default::default()).unwrap_err();
    assert!(e.to_string().contains("depth"), "{e}");
}
