use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::ValueEnum;
use hier_model::model_dir;
use hier_train::eval::evaluate;
use hier_train::{Corpus, Split};

use crate::backend::{device, Backend};

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
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let device = device();
    let model = model_dir::load::<Backend>(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let corpus = Corpus::from_source(args.data.as_deref())?;
    let split = match args.split {
        SplitArg::Valid => Split::Valid,
        SplitArg::Test => Split::Test,
    };
    let data = corpus.split(split)?;
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let progress = hier_train::progress::Progress::new(0, 100, 10);
    let result = evaluate(&model, data, args.batch_size, &device, |done, total| {
        progress.step(
            (done * 100 / total.max(1)) as u64,
            &format!("{done}/{total} windows"),
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
