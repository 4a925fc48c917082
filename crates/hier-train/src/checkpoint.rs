//! Checkpoints inside a run directory, written so that a crash or a full disk never leaves a
//! torn one: the new checkpoint is written completely into `.checkpoint.tmp/` (every file
//! flushed to disk), and only then renamed over `checkpoint/`.
//!
//! ```text
//! RUN_DIR/
//!   config.json, model.safetensors   the latest weights as a model directory (hier generate --model RUN_DIR)
//!   train.json                       the training config of the run
//!   metrics.jsonl                    per-step metrics
//!   checkpoint/
//!     model.mpk, optimizer.mpk       Burn records (parameter ids tie the optimizer state to the weights)
//!     state.json                     step, the sha256 of both records, the model config
//! ```
//!
//! `--resume` refuses a checkpoint whose model config differs from the run's `train.json`
//! (its weights would not fit), and removes a crash's leftovers (`.checkpoint.tmp/`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use hier_model::files::{self, PathIoError};
use hier_model::HierarchicalTransformerConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::digest::sha256_hex;
use crate::options::TrainConfig;

/// The checkpoint's directory inside a run directory: `model.mpk`, `optimizer.mpk` and
/// `state.json` ([`State`]), replaced as a whole on every save.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const TMP_DIR: &str = ".checkpoint.tmp";
const OLD_DIR: &str = ".checkpoint.old";
/// The run's [`TrainConfig`] inside a run directory, read back by `--resume`.
pub const TRAIN_CONFIG_FILE: &str = "train.json";

/// What a checkpoint records besides the weights and the optimizer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// Optimizer steps done.
    pub step: u64,
    /// SHA-256 (hex) of `model.mpk`, checked on load.
    pub model_sha256: String,
    /// SHA-256 (hex) of `optimizer.mpk`, checked on load.
    pub optimizer_sha256: String,
    /// The model config the weights belong to (absent in checkpoints of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<HierarchicalTransformerConfig>,
}

/// A checkpoint or run directory that cannot be saved or resumed from.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a run directory with a checkpoint (no {CHECKPOINT_DIR}/state.json); start a new run with --out instead of --resume")]
    /// The run directory has no `train.json`, or no checkpoint to resume from.
    NotFound {
        /// The run directory.
        path: String,
    },
    #[error("checkpoint {path} is corrupted ({what}); it cannot be resumed from — restore it from a backup or start a new run")]
    /// Unreadable state or config, a checksum mismatch, or records that do not decode.
    Corrupt {
        /// The checkpoint or run directory, or the file at fault.
        path: String,
        /// What is wrong.
        what: String,
    },
    #[error("{path}: the model config in {TRAIN_CONFIG_FILE} differs from the one the checkpoint was trained with (key(s) {keys}); the checkpoint's weights fit only their own config — undo the edit to the \"model\" section of {TRAIN_CONFIG_FILE} (the checkpoint's config is in {CHECKPOINT_DIR}/state.json), or start a new run with --out")]
    /// `train.json`'s model config was edited after the checkpoint was written.
    ConfigMismatch {
        /// The run directory.
        path: String,
        /// The differing keys, comma-separated.
        keys: String,
    },
}

impl PathIoError for CheckpointError {
    fn from_io(path: String, source: std::io::Error) -> Self {
        CheckpointError::Io { path, source }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    files::read_file(path, None).map_err(CheckpointError::at(path))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = fs::File::create(path).map_err(CheckpointError::at(path))?;
    f.write_all(bytes).map_err(CheckpointError::at(path))?;
    f.sync_all().map_err(CheckpointError::at(path))
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

/// Write the run's training config (once, at the start of a run).
pub fn write_train_config(run_dir: &Path, config: &TrainConfig) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(config).expect("config serialises");
    let path = run_dir.join(TRAIN_CONFIG_FILE);
    files::write_atomic(&path, text.as_bytes()).map_err(CheckpointError::at(&path))
}

/// Read the run's training config.
pub fn read_train_config(run_dir: &Path) -> Result<TrainConfig, CheckpointError> {
    let path = run_dir.join(TRAIN_CONFIG_FILE);
    let text = files::read_text(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::NotFound {
            path: run_dir.display().to_string(),
        },
        _ => CheckpointError::at(&path)(e),
    })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
        path: path.display().to_string(),
        what: e.to_string(),
    })
}

/// Save model (built from `config`), optimizer and step as the run's checkpoint.
pub fn save<B, M, O>(
    run_dir: &Path,
    config: &HierarchicalTransformerConfig,
    model: &M,
    optim: &O,
    step: u64,
) -> Result<(), CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let corrupt = |what: String| CheckpointError::Corrupt {
        path: run_dir.display().to_string(),
        what,
    };
    let model_bytes = Recorder::<B>::record(&recorder(), model.clone().into_record(), ())
        .map_err(|e| corrupt(e.to_string()))?;
    let optim_bytes = Recorder::<B>::record(&recorder(), optim.to_record(), ())
        .map_err(|e| corrupt(e.to_string()))?;
    let state = State {
        step,
        model_sha256: sha256_hex(&model_bytes),
        optimizer_sha256: sha256_hex(&optim_bytes),
        model: Some(config.clone()),
    };
    let state = serde_json::to_string_pretty(&state).expect("state serialises");
    let contents = [
        ("model.mpk", model_bytes.as_slice()),
        ("optimizer.mpk", optim_bytes.as_slice()),
        ("state.json", state.as_bytes()),
    ];
    let tmp = run_dir.join(TMP_DIR);
    if let Err(e) = write_tmp_dir(&tmp, &contents) {
        // a failed write (a full disk) leaves no partial checkpoint behind
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    let current = run_dir.join(CHECKPOINT_DIR);
    let old = run_dir.join(OLD_DIR);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(CheckpointError::at(&old))?;
    }
    if current.exists() {
        fs::rename(&current, &old).map_err(CheckpointError::at(&current))?;
    }
    fs::rename(&tmp, &current).map_err(CheckpointError::at(&tmp))?;
    sync_dir(run_dir);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(CheckpointError::at(&old))?;
    }
    Ok(())
}

/// Write `files` into the fresh directory `tmp`, every file and the directory flushed to disk.
fn write_tmp_dir(tmp: &Path, files: &[(&str, &[u8])]) -> Result<(), CheckpointError> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(CheckpointError::at(tmp))?;
    }
    fs::create_dir_all(tmp).map_err(CheckpointError::at(tmp))?;
    for (name, bytes) in files {
        write_synced(&tmp.join(name), bytes)?;
    }
    sync_dir(tmp);
    Ok(())
}

/// Remove what a crash left in `run_dir`: a partial `.checkpoint.tmp/`, and `.checkpoint.old/`
/// once `checkpoint/` is complete (otherwise it is the checkpoint to resume from). The caller
/// holds the run directory's lock.
pub fn remove_leftovers(run_dir: &Path) -> Result<(), CheckpointError> {
    let tmp = run_dir.join(TMP_DIR);
    if tmp.is_dir() {
        fs::remove_dir_all(&tmp).map_err(CheckpointError::at(&tmp))?;
    }
    let old = run_dir.join(OLD_DIR);
    if old.is_dir() && run_dir.join(CHECKPOINT_DIR).join("state.json").is_file() {
        fs::remove_dir_all(&old).map_err(CheckpointError::at(&old))?;
    }
    Ok(())
}

/// The names of the top-level keys on which two model configs differ.
fn differing_keys(a: &HierarchicalTransformerConfig, b: &HierarchicalTransformerConfig) -> String {
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else {
        return "?".into();
    };
    let mut keys: Vec<&str> = a.keys().chain(b.keys()).map(String::as_str).collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| a.get(*k) != b.get(*k));
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuse to resume `state` with `config` unless it is the model config the checkpoint was
/// trained with (older checkpoints, without one, are compared with the run's `config.json`).
fn check_model_config(
    run_dir: &Path,
    state: &State,
    config: &HierarchicalTransformerConfig,
) -> Result<(), CheckpointError> {
    let saved = match &state.model {
        Some(saved) => saved.clone(),
        None => match hier_model::model_dir::load_config(run_dir) {
            Ok(saved) => saved,
            Err(_) => return Ok(()),
        },
    };
    if &saved == config {
        return Ok(());
    }
    Err(CheckpointError::ConfigMismatch {
        path: run_dir.display().to_string(),
        keys: differing_keys(&saved, config),
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Whether `run_dir` is a run that crashed or was killed before its first checkpoint: its
/// `train.json` is there, no checkpoint is. Resuming it starts again from step 0.
pub fn started_without_checkpoint(run_dir: &Path) -> bool {
    run_dir.join(TRAIN_CONFIG_FILE).is_file() && checkpoint_dir(run_dir).is_err()
}

/// The checkpoint directory to resume from: `checkpoint/`, or the previous one if a crash hit
/// between the two renames of [`save`].
fn checkpoint_dir(run_dir: &Path) -> Result<PathBuf, CheckpointError> {
    for name in [CHECKPOINT_DIR, OLD_DIR] {
        let dir = run_dir.join(name);
        if dir.join("state.json").exists() {
            return Ok(dir);
        }
    }
    Err(CheckpointError::NotFound {
        path: run_dir.display().to_string(),
    })
}

/// Load the checkpoint of `run_dir` into freshly built `model` (of `config`) and `optim`.
pub fn load<B, M, O>(
    run_dir: &Path,
    config: &HierarchicalTransformerConfig,
    model: M,
    optim: O,
    device: &B::Device,
) -> Result<(M, O, State), CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let dir = checkpoint_dir(run_dir)?;
    let corrupt = |what: String| CheckpointError::Corrupt {
        path: dir.display().to_string(),
        what,
    };
    let state_path = dir.join("state.json");
    let text = files::read_text(&state_path).map_err(CheckpointError::at(&state_path))?;
    let state: State =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("state.json: {e}")))?;
    check_model_config(run_dir, &state, config)?;
    let read = |name: &str, sha: &str| -> Result<Vec<u8>, CheckpointError> {
        let bytes = read(&dir.join(name))?;
        if sha256_hex(&bytes) != sha {
            return Err(corrupt(format!("{name} does not match its checksum")));
        }
        Ok(bytes)
    };
    let model_bytes = read("model.mpk", &state.model_sha256)?;
    let optim_bytes = read("optimizer.mpk", &state.optimizer_sha256)?;
    let model_record = Recorder::<B>::load(&recorder(), model_bytes, device)
        .map_err(|e| corrupt(format!("model.mpk: {e}")))?;
    let optim_record = Recorder::<B>::load(&recorder(), optim_bytes, device)
        .map_err(|e| corrupt(format!("optimizer.mpk: {e}")))?;
    Ok((
        model.load_record(model_record),
        optim.load_record(optim_record),
        state,
    ))
}
