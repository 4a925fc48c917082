//! Per-step metrics as JSON lines (`RUN_DIR/metrics.jsonl`): one object per optimizer step, and
//! one per validation.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One training step.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub ce_loss: f64,
    pub next_latent_loss: f64,
    pub recon_loss: f64,
    /// Future-token loss (0 unless `prophet_loss_weight > 0`).
    #[serde(default)]
    pub prophet_loss: f64,
    /// Hierarchical autoregressive loss (0 unless `hierarchical_ar_loss_weight > 0`).
    #[serde(default)]
    pub hierarchical_ar_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
}

/// One validation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ValidMetrics {
    pub step: u64,
    pub valid_loss: f64,
    pub valid_bpc: f64,
    /// Seconds of training since this process started the run (or resumed it).
    #[serde(default)]
    pub elapsed_s: f64,
}

/// A line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Train(StepMetrics),
    Valid(ValidMetrics),
}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(m) => m.step,
            Record::Valid(m) => m.step,
        }
    }
}

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `dir/metrics.jsonl` for appending, first dropping records of steps after `keep_until`
    /// (steps a resumed run will redo).
    pub fn open(dir: &Path, keep_until: Option<u64>) -> std::io::Result<Self> {
        let path = dir.join("metrics.jsonl");
        if let Some(limit) = keep_until {
            let kept: Vec<String> = read(&path)?
                .into_iter()
                .filter(|r| r.step() <= limit)
                .map(|r| serde_json::to_string(&r).expect("metrics serialise"))
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            std::fs::write(&path, text)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(MetricsLog { path, file })
    }

    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        writeln!(
            self.file,
            "{}",
            serde_json::to_string(record).expect("metrics serialise")
        )?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// All records of a metrics file (a missing file has none; a torn last line is skipped).
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        if let Ok(record) = serde_json::from_str(&line?) {
            out.push(record);
        }
    }
    Ok(out)
}
