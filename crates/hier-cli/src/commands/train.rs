use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use hier_model::files::read_text;
use hier_train::checkpoint;
use hier_train::{Cluster, Control, Corpus, Replicas, Start, TrainConfig};

use crate::backend::{replicas, Backend};
use crate::configs;

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
    /// Data-parallel replicas in this process: the first N GPUs, or N threads on the CPU;
    /// `--batch-size` is then per replica. Default: on the CPU one replica per core sharing
    /// each batch (the results of one replica, on every core); one GPU otherwise.
    #[arg(long)]
    devices: Option<usize>,
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
    /// Multi-node: how long to wait for the orchestrator to accept connections before giving up
    /// (default 60).
    #[arg(long, value_name = "SECONDS")]
    orchestrator_wait: Option<u64>,
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
        (_, Some(path)) => configs::train_config(path, false)?,
        (Some(name), None) => configs::preset(name)?,
        (None, None) => configs::preset(configs::DEFAULT_PRESET)?,
    };
    if let Some(path) = &args.model_config {
        config.model = configs::model_config(path)?;
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

/// The run's own config, with what `--resume` may change: `--max-steps` (extends the run),
/// `--data`, and how often to validate, sample and checkpoint (none of which changes the
/// training trajectory; they are saved to train.json). Anything that would change the
/// trajectory is refused rather than ignored.
fn resume_config(args: &Args, dir: &Path) -> Result<TrainConfig> {
    let file = dir.join(checkpoint::TRAIN_CONFIG_FILE);
    let changed = args.preset.is_some()
        || args.config.is_some()
        || args.model_config.is_some()
        || !args.sets.is_empty()
        || args.batch_size.is_some()
        || args.grad_accum.is_some()
        || args.lr.is_some()
        || args.seed.is_some();
    if changed {
        bail!("--resume continues the run's own config ({}); only --max-steps, --data, --validate-every, --sample-every, --checkpoint-every and --stop-at may be given with it", file.display());
    }
    let mut config = checkpoint::read_train_config(dir)?;
    let t = &mut config.train;
    if let Some(warmup) = args.warmup_steps.filter(|&w| w != t.warmup_steps) {
        bail!(
            "--warmup-steps {warmup}: the run in {} warms up over {} steps, and changing it would change the learning-rate schedule it is resumed on; drop --warmup-steps, or start a new run with --out",
            dir.display(),
            t.warmup_steps
        );
    }
    if let Some(steps) = args.max_steps {
        t.max_steps = steps;
    }
    if let Some(every) = args.validate_every {
        t.validate_every = every;
    }
    if let Some(every) = args.sample_every {
        t.sample_every = every;
    }
    if let Some(every) = args.checkpoint_every {
        t.checkpoint_every = every;
    }
    if args.data.is_some() {
        config.data = args.data.clone();
    }
    config.train.validate()?;
    Ok(config)
}

/// The step of the run's checkpoint, when its state can be read (otherwise loading it reports
/// why).
fn checkpoint_step(dir: &Path) -> Option<u64> {
    let path = dir.join(checkpoint::CHECKPOINT_DIR).join("state.json");
    let text = read_text(&path).ok()?;
    serde_json::from_str::<checkpoint::State>(&text)
        .ok()
        .map(|s| s.step)
}

/// `--stop-at` must name a step this run will reach: after its first step and at most
/// `max_steps` (a stop it never reaches would be ignored silently). A resumed run must also
/// have steps left.
fn check_stop_at(stop_at: Option<u64>, first_step: Option<u64>, max_steps: u64) -> Result<()> {
    let done = first_step.unwrap_or(0);
    if done > max_steps {
        bail!(
            "--max-steps {max_steps} is before the checkpoint's step {done}; give at least {done}"
        );
    }
    let Some(stop) = stop_at else {
        return Ok(());
    };
    if stop <= done {
        bail!("--stop-at {stop} is not after step {done}, where this run starts; give a step in {}..={max_steps}", done + 1);
    }
    if stop > max_steps {
        bail!("--stop-at {stop} is beyond --max-steps {max_steps}, so it would never be reached; give a step in {}..={max_steps}", done + 1);
    }
    Ok(())
}

/// Before any replica starts: this node's data port is free, and the orchestrator answers
/// within `--orchestrator-wait`.
fn check_cluster(args: &Args, cluster: Option<&Cluster>) -> Result<()> {
    let Some(cluster) = cluster else {
        if args.orchestrator_wait.is_some() {
            bail!("--orchestrator-wait is for multi-node runs (--nodes, --orchestrator, --node-address)");
        }
        return Ok(());
    };
    if cluster.node_rank >= cluster.nodes {
        return Ok(()); // Cluster::config names the problem
    }
    let port = crate::network::port_of(&cluster.node_address, "--node-address")?;
    crate::network::check_port_free(port, "--node-address")?;
    let wait = std::time::Duration::from_secs(args.orchestrator_wait.unwrap_or(60));
    crate::network::wait_for_orchestrator(&cluster.orchestrator, wait)
}

pub fn run(args: Args) -> Result<()> {
    let (config, run_dir, start) = match &args.resume {
        Some(dir) => (resume_config(&args, dir)?, dir.clone(), Start::Resume),
        None => {
            let dir = args
                .out
                .clone()
                .context("give --out DIR for a new run, or --resume DIR")?;
            // the run directory is claimed (new or empty, then locked) by hier_train's run_dir
            (build_config(&args)?, dir, Start::New)
        }
    };
    let first_step = match start {
        Start::Resume => checkpoint_step(&run_dir),
        Start::New => Some(0),
    };
    check_stop_at(args.stop_at, first_step, config.train.max_steps)?;
    if args.node_rank != 0 && args.nodes == 1 {
        bail!(
            "--node-rank {} needs --nodes greater than 1 (a multi-node run)",
            args.node_rank
        );
    }
    crate::resources::check_devices(args.devices)?;
    // a multi-node run keeps one replica with its own batch per node unless told otherwise
    let per_node = args.devices.or((args.nodes > 1).then_some(1));
    let (copies, rows) = crate::resources::replica_rows(per_node, config.train.batch_size);
    let crop = config.model.seq_len.saturating_add(1);
    let work = hier_model::memory::Workload {
        replicas: copies,
        ..crate::resources::work(hier_model::memory::Pass::Train, rows, crop)
    };
    crate::resources::check_memory(&config.model, work)?;
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
        budget: None,
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
    check_cluster(&args, cluster.as_ref())?;
    let (devices, split) = replicas(per_node, config.train.batch_size);
    let outcome = hier_train::train_parallel::<Autodiff<Backend>>(
        &config,
        &corpus,
        &run_dir,
        start,
        Replicas {
            devices: &devices,
            cluster: cluster.as_ref(),
            split,
        },
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
