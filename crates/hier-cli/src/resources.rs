//! The checks every command runs before it builds a model: memory (one estimate,
//! `hier_model::memory`, against what this machine has free) and replicas.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hier_model::memory::{self, Pass, Workload};
use hier_model::{model_dir, HierarchicalTransformerConfig};

/// Accelerator builds keep parameters and activations in device memory; the host only holds
/// one copy of the weights at a time while loading or saving them.
const ACCELERATOR: bool = cfg!(any(feature = "cuda", feature = "wgpu"));

/// Refuse `work` on `config` when it cannot fit in the memory available now, before anything
/// is allocated. `HIER_MEMORY_CHECK=off` skips the check (the estimate is an upper bound).
pub fn check_memory(config: &HierarchicalTransformerConfig, work: Workload) -> Result<()> {
    let spec = config.validate().context("model config")?;
    let mut estimate = memory::estimate(&spec, &work);
    if ACCELERATOR {
        estimate.activation_bytes = 0.0;
        estimate.replicas = 1;
    }
    if std::env::var("HIER_MEMORY_CHECK").is_ok_and(|v| v == "off") {
        return Ok(());
    }
    let what = match work.pass {
        Pass::Init => "building the model".to_string(),
        Pass::Infer => format!("running {} × {} tokens", work.batch, work.len),
        Pass::Decode => format!("generating up to {} tokens of context", work.len),
        Pass::Train => format!(
            "training on batches of {} × {} tokens",
            work.batch, work.len
        ),
    };
    memory::check(&estimate, memory::available_bytes()).with_context(|| {
        format!("not enough memory for {what} (set HIER_MEMORY_CHECK=off to try anyway)")
    })
}

/// A model directory's config, read (and validated) before its weights, so that the memory
/// check runs before anything large is read or allocated.
pub fn model_config(dir: &Path) -> Result<HierarchicalTransformerConfig> {
    model_dir::load_config(dir).with_context(|| format!("loading {}", dir.display()))
}

/// Whether this build runs replicas as CPU threads.
const ON_CPU: bool = !ACCELERATOR;

/// Refuse `--devices 0`, and on the CPU more replicas than cores: each replica is a thread
/// holding the whole model, so more of them only add memory and contention.
pub fn check_devices(devices: Option<usize>) -> Result<()> {
    match devices {
        Some(0) => bail!("--devices must be at least 1"),
        Some(n) if ON_CPU => {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            if n > cores {
                bail!(
                    "--devices {n}: the CPU backend runs one replica per thread, each holding the \
                     whole model, and this machine has {cores} cores; use --devices {cores} or fewer"
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Replicas a command runs and the rows each takes of a `batch`: `--devices N` gives N
/// replicas with the whole batch each; by default the CPU runs one per core sharing the batch.
pub fn replica_rows(devices: Option<usize>, batch: usize) -> (usize, usize) {
    match devices {
        Some(n) => (n.max(1), batch),
        None if ON_CPU => {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            let copies = cores.min(batch).max(1);
            (copies, batch.div_ceil(copies))
        }
        None => (1, batch),
    }
}

/// A workload on one replica.
pub fn work(pass: Pass, batch: usize, len: usize) -> Workload {
    Workload {
        pass,
        batch,
        len,
        replicas: 1,
    }
}
