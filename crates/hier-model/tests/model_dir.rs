//! Model directories: save/load round trip, and a clear error for every way a file can be wrong.
#![allow(clippy::disallowed_methods)] // tests read tensors freely

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

/// `load` on a thread, failing the test if it does not return within 20 s (a FIFO would block).
fn load_within_a_deadline(dir: &std::path::Path) -> Result<(), String> {
    let dir = dir.to_path_buf();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = model_dir::load::<B>(&dir, &Default::default()).map(|_| ());
        let _ = send.send(result.map_err(|e| e.to_string()));
    });
    receive
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("loading blocked instead of refusing the file")
}

fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success());
}

/// Only regular files are read: a FIFO is refused (not waited on), a symlink to an endless
/// device is refused (not read without end), a directory is named as such.
#[test]
fn only_regular_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = HierarchicalTransformer::<B>::new(&config(), &Default::default()).unwrap();
    model_dir::save(&model, dir.path()).unwrap();
    let weights = dir.path().join(model_dir::WEIGHTS_FILE);
    let config = dir.path().join(model_dir::CONFIG_FILE);
    let saved = std::fs::read(&weights).unwrap();

    for device in ["/dev/zero", "/dev/urandom"] {
        std::fs::remove_file(&weights).unwrap();
        std::os::unix::fs::symlink(device, &weights).unwrap();
        let e = load_within_a_deadline(dir.path()).unwrap_err();
        assert!(
            e.contains("character device") && e.contains("regular file"),
            "{e}"
        );
    }
    std::fs::remove_file(&weights).unwrap();
    mkfifo(&weights);
    let e = load_within_a_deadline(dir.path()).unwrap_err();
    assert!(e.contains("FIFO") && e.contains("model.safetensors"), "{e}");
    std::fs::remove_file(&weights).unwrap();
    std::fs::write(&weights, &saved).unwrap();

    let text = std::fs::read(&config).unwrap();
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    let e = load_within_a_deadline(dir.path()).unwrap_err();
    assert!(e.contains("FIFO") && e.contains("config.json"), "{e}");
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    let e = load_within_a_deadline(dir.path()).unwrap_err();
    assert!(e.contains("a directory"), "{e}");
    std::fs::remove_dir(&config).unwrap();
    std::fs::write(&config, text).unwrap();
    load_within_a_deadline(dir.path()).unwrap();
}

/// A safetensors header whose length or data offsets point past the end of the file is an
/// error (checked against the file's length), never a read past it or a panic.
#[test]
fn safetensors_sizes_are_checked_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = HierarchicalTransformer::<B>::new(&config(), &Default::default()).unwrap();
    model_dir::save(&model, dir.path()).unwrap();
    let path = dir.path().join(model_dir::WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let mut huge_header = bytes.clone();
    huge_header[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    // the first tensor's end offset moved a gigabyte past the end of the file
    let offsets = header.find("data_offsets").unwrap();
    let end = offsets + header[offsets..].find(']').unwrap();
    let start = header[..end].rfind(',').unwrap() + 1;
    let mut far = header.clone();
    far.replace_range(start..end, "1000000000");
    let mut far_offsets = (far.len() as u64).to_le_bytes().to_vec();
    far_offsets.extend(far.as_bytes());
    far_offsets.extend(&bytes[8 + header_len..]);
    for broken in [huge_header, far_offsets, bytes[..4].to_vec()] {
        std::fs::write(&path, &broken).unwrap();
        let e = model_dir::load::<B>(dir.path(), &Default::default()).unwrap_err();
        assert!(matches!(e, LoadError::Format { .. }), "{e}");
    }
}

/// An output directory is claimed only when new or empty, and locked while it is written.
#[test]
fn output_directories_are_new_or_empty_and_locked() {
    use hier_model::files::{claim_out_dir, write_new, OutDirError};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let lock = claim_out_dir(&out, &model_dir::OWN_FILES).unwrap();
    assert!(matches!(
        claim_out_dir(&out, &model_dir::OWN_FILES),
        Err(OutDirError::Locked { .. })
    ));
    let model = HierarchicalTransformer::<B>::new(&config(), &Default::default()).unwrap();
    model_dir::save(&model, &out).unwrap();
    drop(lock);
    let e = claim_out_dir(&out, &model_dir::OWN_FILES).unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, OutDirError::NotEmpty { .. })
            && message.contains("config.json, model.safetensors"),
        "{message}"
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, b"mine").unwrap();
    assert!(matches!(
        claim_out_dir(&file, &[]),
        Err(OutDirError::NotADirectory { .. })
    ));
    let e = write_new(&file, b"other").unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    // a stale temporary of a dead process is removed; the new file is written whole
    let new = tmp.path().join("new.bin");
    std::fs::write(tmp.path().join(".new.bin.tmp-4000001"), b"part").unwrap();
    write_new(&new, b"data").unwrap();
    assert_eq!(std::fs::read(&new).unwrap(), b"data");
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(names.len(), 3, "{names:?}"); // model, file, new.bin
}
