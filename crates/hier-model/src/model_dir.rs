//! A model directory: `config.json` (the reference's constructor arguments) and
//! `model.safetensors` (its state_dict). Both load in PyTorch:
//! `m = HierarchicalTransformer(**json.load(open("config.json")))`,
//! `m.load_state_dict(safetensors.torch.load_file("model.safetensors"))`.

use std::fs;
use std::path::Path;

use burn::tensor::backend::Backend;

use crate::config::HierarchicalTransformerConfig;
use crate::error::LoadError;
use crate::files::{self, PathIoError};
use crate::model::HierarchicalTransformer;
use crate::weights;

/// The model's [`HierarchicalTransformerConfig`] as JSON, inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The weights (the reference's state_dict layout), inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

impl PathIoError for LoadError {
    fn from_io(path: String, source: std::io::Error) -> Self {
        LoadError::Io { path, source }
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// torn one: write a temporary file beside it, flush it to disk, rename it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    files::write_atomic(path, bytes).map_err(LoadError::at(path))
}

/// The files of a model directory, and the temporary names a crashed write leaves of them.
pub const OWN_FILES: [&str; 2] = [CONFIG_FILE, WEIGHTS_FILE];

/// Save `model` into `dir` (created if needed).
pub fn save<B: Backend>(model: &HierarchicalTransformer<B>, dir: &Path) -> Result<(), LoadError> {
    fs::create_dir_all(dir).map_err(LoadError::at(dir))?;
    let tensors = weights::state_dict(model);
    write_atomic(&dir.join(WEIGHTS_FILE), &weights::to_safetensors(&tensors))?;
    write_atomic(&dir.join(CONFIG_FILE), model.config.to_json().as_bytes())
}

/// Read and validate `dir/config.json`.
pub fn load_config(dir: &Path) -> Result<HierarchicalTransformerConfig, LoadError> {
    let path = dir.join(CONFIG_FILE);
    let text = files::read_text(&path).map_err(LoadError::at(&path))?;
    let config =
        HierarchicalTransformerConfig::from_json(&text).map_err(|source| LoadError::Config {
            path: path.display().to_string(),
            source,
        })?;
    config.validate().map_err(|source| LoadError::Config {
        path: path.display().to_string(),
        source,
    })?;
    Ok(config)
}

/// Load the model saved in `dir` onto `device`.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<HierarchicalTransformer<B>, LoadError> {
    let config = load_config(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = files::read_file(&path, None).map_err(LoadError::at(&path))?;
    let tensors = weights::from_safetensors(&bytes, &path.display().to_string())?;
    let model =
        HierarchicalTransformer::new(&config, device).map_err(|source| LoadError::Config {
            path: dir.join(CONFIG_FILE).display().to_string(),
            source,
        })?;
    weights::load_state_dict(model, tensors)
}
