//! Claiming a run directory for one training job: a new run only starts in a new or empty
//! directory (a model or a run already there is never overwritten), a resumed run only in its
//! own; either way the directory is locked while the job writes it, so that a second job into
//! the same directory fails at once instead of interleaving its writes with the first's.

use std::path::Path;

use hier_model::files::{self, DirLock, OutDirError, PathIoError};
use hier_model::model_dir;

use crate::checkpoint::{self, CheckpointError, TRAIN_CONFIG_FILE};
use crate::metrics::METRICS_FILE;
use crate::trainer::{Start, TrainError};

/// The files a run writes atomically (a crash can leave `.NAME.tmp-PID` beside each).
const OWN_FILES: [&str; 4] = [
    model_dir::CONFIG_FILE,
    model_dir::WEIGHTS_FILE,
    TRAIN_CONFIG_FILE,
    METRICS_FILE,
];

/// Lock `run_dir` for a job that starts as `start`, and remove a crash's leftovers in it. The
/// lock is held until the returned guard is dropped.
pub fn claim(run_dir: &Path, start: &Start) -> Result<DirLock, TrainError> {
    match start {
        Start::New => Ok(files::claim_out_dir(run_dir, &OWN_FILES)?),
        Start::Resume => {
            if !run_dir.is_dir() {
                return Err(CheckpointError::NotFound {
                    path: run_dir.display().to_string(),
                }
                .into());
            }
            let lock = files::lock_dir(run_dir)?;
            files::remove_leftovers(run_dir, &OWN_FILES, false)
                .map_err(OutDirError::at(run_dir))?;
            checkpoint::remove_leftovers(run_dir)?;
            Ok(lock)
        }
    }
}
