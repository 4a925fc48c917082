use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::ValueEnum;
use hier_train::eval_threads::evaluate_on_threads;
use hier_train::{Corpus, Split};

use crate::backend::{device, replica_plan};

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Valid,
    Test,
}

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (or a run directory).
    #[arg(long)]
    model: PathBuf,
    /// Data: a file (raw or .gz) or a directory with enwik8. Default: the embedded Shakespeare corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value_t = SplitArg::Valid)]
    split: SplitArg,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Model copies evaluating parts of the split at once (threads on the CPU). Default: one
    /// per core on the CPU, one GPU otherwise.
    #[arg(long)]
    devices: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let corpus = Corpus::from_source(args.data.as_deref())?;
    let split = match args.split {
        SplitArg::Valid => Split::Valid,
        SplitArg::Test => Split::Test,
    };
    let data = corpus.split(split)?;
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    crate::resources::check_devices(args.devices)?;
    // the replicas share windows, not rows: no batch caps their number
    let (threads, _) = replica_plan(args.devices, usize::MAX);
    // memory: one estimate for the windows this split gives, checked before loading the model
    let config = crate::resources::model_config(&args.model)?;
    let window = data.len().min(config.seq_len.saturating_add(1));
    let work = hier_model::memory::Workload {
        replicas: threads,
        ..crate::resources::work(hier_model::memory::Pass::Infer, args.batch_size, window)
    };
    crate::resources::check_memory(&config, work)?;
    let device = device();
    let model = crate::resources::load_model(&args.model, &device)?;
    let windows = data.len().saturating_sub(1).div_ceil(model.spec().seq_len) as u64;
    let progress = hier_train::progress::Progress::new(0, windows, (windows / 10).max(1));
    let result = evaluate_on_threads(
        &model,
        data,
        args.batch_size,
        threads,
        &device,
        |done, total| progress.step(done as u64, &format!("{done}/{total} windows")),
    )
    .with_context(|| {
        format!(
            "evaluating the {} split of {} ({} bytes)",
            split.name(),
            corpus.name(),
            data.len()
        )
    })?;
    progress.finish();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"split": split.name(), "loss": result.loss, "bpc": result.bpc, "tokens": result.tokens, "data": corpus.name()})
        );
    } else {
        println!(
            "{} split of {}: loss {:.4} nats/byte, {:.4} bits per character over {} bytes",
            split.name(),
            corpus.name(),
            result.loss,
            result.bpc,
            result.tokens
        );
    }
    Ok(())
}
