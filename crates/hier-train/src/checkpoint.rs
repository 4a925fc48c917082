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
//!     state.json                     step, and the sha256 of both records
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::options::TrainConfig;

pub const CHECKPOINT_DIR: &str = "checkpoint";
const TMP_DIR: &str = ".checkpoint.tmp";
const OLD_DIR: &str = ".checkpoint.old";
pub const TRAIN_CONFIG_FILE: &str = "train.json";

/// What a checkpoint records besides the weights and the optimizer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// Optimizer steps done.
    pub step: u64,
    pub model_sha256: String,
    pub optimizer_sha256: String,
}

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a run directory with a checkpoint (no {CHECKPOINT_DIR}/state.json); start a new run with --out instead of --resume")]
    NotFound { path: String },
    #[error("checkpoint {path} is corrupted ({what}); it cannot be resumed from — restore it from a backup or start a new run")]
    Corrupt { path: String, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

/// Write the run's training config (once, at the start of a run).
pub fn write_train_config(run_dir: &Path, config: &TrainConfig) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(config).expect("config serialises");
    hier_model::model_dir::write_atomic(&run_dir.join(TRAIN_CONFIG_FILE), text.as_bytes()).map_err(
        |e| CheckpointError::Io {
            path: run_dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        },
    )
}

/// Read the run's training config.
pub fn read_train_config(run_dir: &Path) -> Result<TrainConfig, CheckpointError> {
    let path = run_dir.join(TRAIN_CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(|_| CheckpointError::NotFound {
        path: run_dir.display().to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
        path: path.display().to_string(),
        what: e.to_string(),
    })
}

/// Save model, optimizer and step as the run's checkpoint.
pub fn save<B, M, O>(run_dir: &Path, model: &M, optim: &O, step: u64) -> Result<(), CheckpointError>
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
        model_sha256: sha256(&model_bytes),
        optimizer_sha256: sha256(&optim_bytes),
    };

    let tmp = run_dir.join(TMP_DIR);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    write_synced(&tmp.join("model.mpk"), &model_bytes)?;
    write_synced(&tmp.join("optimizer.mpk"), &optim_bytes)?;
    write_synced(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(&state)
            .expect("state serialises")
            .as_bytes(),
    )?;
    sync_dir(&tmp);

    let current = run_dir.join(CHECKPOINT_DIR);
    let old = run_dir.join(OLD_DIR);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if current.exists() {
        fs::rename(&current, &old).map_err(io(&current))?;
    }
    fs::rename(&tmp, &current).map_err(io(&tmp))?;
    sync_dir(run_dir);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
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

/// Load the checkpoint of `run_dir` into freshly built `model` and `optim`.
pub fn load<B, M, O>(
    run_dir: &Path,
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
    let text = fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: State =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("state.json: {e}")))?;
    let read = |name: &str, sha: &str| -> Result<Vec<u8>, CheckpointError> {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(io(&path))?;
        if sha256(&bytes) != sha {
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
