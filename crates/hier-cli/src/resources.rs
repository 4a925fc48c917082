//! The checks every command runs before it builds a model: memory (one estimate,
//! `hier_model::memory`, against what this machine has free) and replicas.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hier_model::memory::{self, Pass, Workload};
use hier_model::{model_dir, HierarchicalTransformer, HierarchicalTransformerConfig};

use crate::backend::{Backend, Device, ON_CPU};

/// Refuse `work` on `config` when it cannot fit in the memory available now, before anything
/// is allocated. `HIER_MEMORY_CHECK=off` skips the check (the estimate is an upper bound).
pub fn check_memory(config: &HierarchicalTransformerConfig, work: Workload) -> Result<()> {
    let spec = config.validate().context("model config")?;
    let mut estimate = memory::estimate(&spec, &work);
    if !ON_CPU {
        // accelerator builds keep parameters and activations in device memory; the host only
        // holds one copy of the weights at a time while loading or saving them
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
/// check runs before anything large is read or allocated. A `--model` that is no directory is
/// named with the fix.
pub fn model_config(dir: &Path) -> Result<HierarchicalTransformerConfig> {
    let fix = "give the directory of a model written by `hier init` or `hier train` (it holds config.json and model.safetensors)";
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("--model {}: not a directory; {fix}", dir.display()),
        Err(e) => bail!("--model {}: {e}; {fix}", dir.display()),
    }
    model_dir::load_config(dir).with_context(|| format!("loading {}", dir.display()))
}

/// The model in `dir` (after [`model_config`] and the memory check).
pub fn load_model(dir: &Path, device: &Device) -> Result<HierarchicalTransformer<Backend>> {
    model_dir::load(dir, device).with_context(|| format!("loading {}", dir.display()))
}

/// Refuse `--devices 0`, and on the CPU more replicas than cores: each replica is a thread
/// holding the whole model, so more of them only add memory and contention.
pub fn check_devices(devices: Option<usize>) -> Result<()> {
    match devices {
        Some(0) => bail!("--devices must be at least 1"),
        Some(n) if ON_CPU => {
            let cores = hier_train::parallel::cpu_cores();
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
    match crate::backend::replica_plan(devices, batch) {
        (n, hier_train::BatchSplit::PerReplica) => (n.max(1), batch),
        (n, hier_train::BatchSplit::Shared) => (n, batch.div_ceil(n.max(1))),
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
