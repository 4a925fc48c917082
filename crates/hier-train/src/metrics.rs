//! Per-step metrics as JSON lines (`RUN_DIR/metrics.jsonl`): one object per optimizer step, and
//! one per validation.
//!
//! `tokens_per_s` and `elapsed_s` are timings; every other field of a run resumed from a
//! checkpoint is identical, as text, to an uninterrupted run's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use hier_model::files;
use serde::{Deserialize, Serialize};

/// The metrics file of a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One training step.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// Optimizer steps done, this one included (1-based).
    pub step: u64,
    /// Total weighted loss, the quantity differentiated.
    pub loss: f64,
    /// Next-token cross-entropy (nats).
    pub ce_loss: f64,
    /// Next-latent loss (0 when no hierarchy has one).
    pub next_latent_loss: f64,
    /// Reconstruction loss (0 unless `recon_loss_weight > 0`).
    pub recon_loss: f64,
    /// Future-token loss (0 unless `prophet_loss_weight > 0`).
    #[serde(default)]
    pub prophet_loss: f64,
    /// Hierarchical autoregressive loss (0 unless `hierarchical_ar_loss_weight > 0`).
    #[serde(default)]
    pub hierarchical_ar_loss: f64,
    /// Learning rate the step was taken with.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens trained per second in this step, all replicas together.
    pub tokens_per_s: f64,
}

/// One validation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ValidMetrics {
    /// The optimizer step after which it ran.
    pub step: u64,
    /// Mean cross-entropy (nats) over the validation crops.
    pub valid_loss: f64,
    /// `valid_loss / ln 2`: bits per character.
    pub valid_bpc: f64,
    /// Seconds of training since this process started the run (or resumed it).
    #[serde(default)]
    pub elapsed_s: f64,
}

/// A line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// `"kind": "train"`: an optimizer step.
    Train(StepMetrics),
    /// `"kind": "valid"`: a validation.
    Valid(ValidMetrics),
}

impl Record {
    /// The step the record belongs to.
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(m) => m.step,
            Record::Valid(m) => m.step,
        }
    }
}

/// `metrics.jsonl` open for appending; each record is flushed as it is written.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `dir/metrics.jsonl` for appending, first dropping records of steps after `keep_until`
    /// (steps a resumed run will redo).
    pub fn open(dir: &Path, keep_until: Option<u64>) -> std::io::Result<Self> {
        let path = dir.join(METRICS_FILE);
        if let Some(limit) = keep_until {
            // the kept lines are copied as they are: parsing and re-printing a float can change
            // its last digits (serde_json parses floats to within one ulp)
            let mut text = String::new();
            for (line, record) in lines(&path)? {
                if record.step() <= limit {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            files::write_atomic(&path, text.as_bytes())?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(MetricsLog { path, file })
    }

    /// Append `record` as one JSON line.
    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        writeln!(
            self.file,
            "{}",
            serde_json::to_string(record).expect("metrics serialise")
        )?;
        self.file.flush()
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// All records of a metrics file (a missing file has none; a torn last line is skipped).
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    Ok(lines(path)?.into_iter().map(|(_, r)| r).collect())
}

/// The lines of a metrics file that hold a record, each with its record.
fn lines(path: &Path) -> std::io::Result<Vec<(String, Record)>> {
    let bytes = match files::read_file(path, None) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter_map(|line| Some((line.to_string(), serde_json::from_str(line).ok()?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Dropping the records past a checkpoint leaves the kept lines byte for byte: many random
    /// floats include some that serde_json's parser does not round-trip exactly.
    #[test]
    fn kept_lines_are_unchanged_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for step in 1..=2000 {
            let mut x = || rng.random::<f64>() * 10f64.powi(rng.random_range(-8..8));
            let record = StepMetrics {
                step,
                loss: x(),
                ce_loss: x(),
                next_latent_loss: x(),
                recon_loss: x(),
                prophet_loss: x(),
                hierarchical_ar_loss: x(),
                lr: x(),
                grad_norm: x(),
                tokens_per_s: x(),
            };
            log.write(&Record::Train(record)).unwrap();
        }
        drop(log);
        let path = dir.path().join(METRICS_FILE);
        let before = std::fs::read_to_string(&path).unwrap();
        MetricsLog::open(dir.path(), Some(1500)).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        let expected: String = before
            .lines()
            .take(1500)
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(after == expected, "kept lines were rewritten");
    }
}
