use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use hier_model::files::read_text;
use hier_model::HierarchicalTransformerConfig;
use hier_train::checkpoint;
use hier_train::presets::{preset, NAMES};
use hier_train::{Cluster, Control, Corpus, Start, TrainConfig};

use crate::backend::{devices, Backend};

#[derive(clap::Args)]
pub struct Args {
    /// A named setup: tiny (CI smoke run), shakespeare (the CPU default), enwik8 (the reference's train.py).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// A training config file: {"model": {...}, "train": {...}, "data": ...}.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Replace the model with this config (the keys of a model directory's config.json).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Training data: a file (raw or .gz), or a directory with enwik8 (see `hier data enwik8`).
    /// Default: the embedded Shakespeare corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory to create (a model directory plus checkpoint, metrics and config).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Total optimizer steps; the learning-rate schedule spans them (also allowed with --resume,
    /// to extend a run).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Checkpoint and stop after this step without changing the schedule; continue with --resume.
    #[arg(long)]
    stop_at: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup_steps: Option<u64>,
    #[arg(long)]
    validate_every: Option<u64>,
    #[arg(long)]
    sample_every: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Data-parallel replicas in this process: the first N GPUs, or N threads on the CPU.
    /// `--batch-size` is per replica.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Processes (machines) in a multi-node run; needs --orchestrator and --node-address.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// This process's rank in 0..--nodes; rank 0 writes the run directory.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// The orchestrator of a multi-node run (`hier orchestrator --port P`): ws://HOST:P.
    #[arg(long)]
    orchestrator: Option<String>,
    /// Where the other nodes reach this one: ws://HOST:PORT (PORT is served by this process).
    #[arg(long)]
    node_address: Option<String>,
    /// Override any key: `--set train.lr=3e-4`, `--set model.depth=6`, `--set model.window_sizes=[32,null]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// Apply `section.key=value` (value as JSON, or a bare string) to the config's JSON form.
fn apply_set(config: &TrainConfig, assignment: &str) -> Result<TrainConfig> {
    let (path, value) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected KEY=VALUE, e.g. train.lr=3e-4"))?;
    let (section, key) = path
        .split_once('.')
        .with_context(|| format!("--set {assignment}: the key must start with model. or train."))?;
    if section != "model" && section != "train" {
        bail!("--set {assignment}: the key must start with model. or train.");
    }
    let value: serde_json::Value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
    let mut json = serde_json::to_value(config)?;
    json[section][key] = value;
    serde_json::from_value(json).with_context(|| format!("--set {assignment}"))
}

fn build_config(args: &Args) -> Result<TrainConfig> {
    let mut config = match (&args.preset, &args.config) {
        (_, Some(path)) => {
            let text = read_text(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: expected {{\"model\": {{...}}, \"train\": {{...}}}}",
                    path.display()
                )
            })?
        }
        (Some(name), None) => preset(name).with_context(|| {
            format!(
                "unknown preset `{name}`; choose one of {}",
                NAMES.join(", ")
            )
        })?,
        (None, None) => preset("shakespeare").expect("built-in preset"),
    };
    if let Some(path) = &args.model_config {
        let text = read_text(path).with_context(|| format!("reading {}", path.display()))?;
        config.model = HierarchicalTransformerConfig::from_json(&text)
            .with_context(|| format!("in {}", path.display()))?;
    }
    if args.data.is_some() {
        config.data = args.data.clone();
    }
    let t = &mut config.train;
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field { t.$field = v; } )* };
    }
    set!(
        max_steps,
        batch_size,
        grad_accum,
        lr,
        warmup_steps,
        validate_every,
        sample_every,
        checkpoint_every,
        seed
    );
    for s in &args.sets {
        config = apply_set(&config, s)?;
    }
    config.model.validate().context("model config")?;
    config.train.validate()?;
    Ok(config)
}

pub fn run(args: Args) -> Result<()> {
    let (config, run_dir, start) = match &args.resume {
        Some(dir) => {
            let changed = args.preset.is_some()
                || args.config.is_some()
                || args.model_config.is_some()
                || !args.sets.is_empty();
            let changed = changed
                || args.batch_size.is_some()
                || args.grad_accum.is_some()
                || args.lr.is_some()
                || args.seed.is_some();
            if changed {
                bail!("--resume continues the run's own config ({}); only --max-steps (and --data) may be given with it", dir.join(checkpoint::TRAIN_CONFIG_FILE).display());
            }
            let mut config = checkpoint::read_train_config(dir)?;
            if let Some(steps) = args.max_steps {
                config.train.max_steps = steps;
            }
            if args.data.is_some() {
                config.data = args.data.clone();
            }
            (config, dir.clone(), Start::Resume)
        }
        None => {
            let dir = args
                .out
                .clone()
                .expect("clap requires --out without --resume");
            // the run directory is claimed (new or empty, then locked) by hier_train's run_dir
            (build_config(&args)?, dir, Start::New)
        }
    };
    let corpus = Corpus::from_source(config.data.as_deref())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // first Ctrl-C: finish the step, checkpoint, exit; second: exit at once
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: writing a checkpoint after this step (Ctrl-C again to quit at once)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }
    let control = Control {
        interrupt: Some(&stop),
        stop_at: args.stop_at,
    };
    let cluster = match (args.nodes, &args.orchestrator, &args.node_address) {
        (1, None, None) => None,
        (nodes, Some(orchestrator), Some(node_address)) => Some(Cluster {
            nodes,
            node_rank: args.node_rank,
            orchestrator: orchestrator.clone(),
            node_address: node_address.clone(),
        }),
        _ => bail!("a multi-node run needs --nodes N, --node-rank R, --orchestrator ws://HOST:PORT and --node-address ws://THIS_HOST:PORT (see the README)"),
    };
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let outcome = hier_train::train_parallel::<Autodiff<Backend>>(
        &config,
        &corpus,
        &run_dir,
        start,
        &devices(args.devices),
        cluster.as_ref(),
        &control,
    )?;
    if let Some((loss, bpc)) = outcome.last_valid {
        eprintln!(
            "done: step {}, validation loss {loss:.4}, {bpc:.4} bpc, {:.0} tokens/s",
            outcome.steps, outcome.tokens_per_s
        );
    }
    if args.node_rank == 0 {
        eprintln!(
            "model directory: {} (try: hier generate --model {0} --prompt \"ROMEO:\")",
            run_dir.display()
        );
    } else {
        eprintln!("done: node {} of {}", args.node_rank, args.nodes);
    }
    if outcome.interrupted {
        std::process::exit(130);
    }
    Ok(())
}
