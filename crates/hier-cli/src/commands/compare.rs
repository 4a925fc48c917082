use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::Module;
use hier_model::{flops, HierarchicalTransformer};
use hier_train::compare::{json, runs_table, table, Run, RunSummary};
use hier_train::{BatchSplit, Control, Corpus, Replicas, Start, TrainConfig};

use crate::backend::{device, replicas, Backend};
use crate::plot::{svg, Axis};

#[derive(clap::Args)]
pub struct Args {
    /// Configs to compare: training configs ({"model": ..., "train": ...}) or bare model configs
    /// (trained with the shakespeare preset's options).
    #[arg(long, num_args = 1.., required_unless_present = "from")]
    configs: Vec<PathBuf>,
    /// Optimizer steps of every run's schedule (warm-up and cosine decay span them), and the
    /// most any run takes.
    #[arg(long, required_unless_present = "from")]
    steps: Option<u64>,
    /// Stop each run after the first step whose forward and backward pass end this many seconds
    /// or more into its training loop (validations included, start-up not: the seconds of the
    /// plots), with a validation and a checkpoint there. The schedule still spans --steps.
    #[arg(long, allow_negative_numbers = true)]
    budget_seconds: Option<f64>,
    /// Validate every N steps (default: steps / 10), and at the last step.
    #[arg(long)]
    validate_every: Option<u64>,
    /// Directory for the runs (NAME/seed-S/), compare.md, compare.json and the plots.
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Training data for every run (default: the embedded corpus).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seeds: every config is trained once per seed (initialisation and batch order; runs with
    /// the same seed see the same batches).
    #[arg(long, alias = "seed", num_args = 1.., default_values_t = [0])]
    seeds: Vec<u64>,
    /// Data-parallel replicas per run, as `hier train --devices`. Default: one per core on the
    /// CPU sharing each batch, one GPU otherwise.
    #[arg(long)]
    devices: Option<usize>,
    /// Train nothing: tabulate and plot together the runs recorded in these `compare.json` files
    /// of earlier comparisons (e.g. a study run in several sessions, one --out each), into --out.
    #[arg(long, num_args = 1.., conflicts_with_all = ["configs", "steps", "budget_seconds",
        "validate_every", "data", "devices"])]
    from: Vec<PathBuf>,
}

/// A config ready to train: its name (the file stem) and facts for the tables.
struct Entry {
    name: String,
    config: TrainConfig,
    parameters: usize,
    flops_per_token: f64,
}

pub fn run(args: Args) -> Result<()> {
    if !args.from.is_empty() {
        return replot(&args.from, &args.out);
    }
    let Some(steps) = args.steps else {
        bail!("give --steps N (or --from A/compare.json ... to re-plot earlier comparisons)");
    };
    let budget = budget(args.budget_seconds)?;
    check_seeds(&args.seeds)?;
    crate::resources::check_devices(args.devices)?;
    // every config is read and checked before anything trains
    let mut entries: Vec<Entry> = Vec::new();
    for path in &args.configs {
        let entry = prepare(&args, path, steps)?;
        if entries.iter().any(|e| e.name == entry.name) {
            bail!(
                "two configs are named `{}`; give them distinct file names",
                entry.name
            );
        }
        entries.push(entry);
    }
    // a new or empty directory only (earlier runs and tables are never overwritten), locked
    let _lock = hier_model::files::claim_out_dir(&args.out, &[])?;
    let corpus = Corpus::from_source(args.data.as_deref())?;
    let mut runs = Vec::new();
    for entry in &entries {
        for &seed in &args.seeds {
            runs.push(train_one(&args, &corpus, entry, seed, budget)?);
        }
    }
    write_results(&args.out, &runs)
}

/// `--budget-seconds` as a duration: a positive, finite number of seconds.
fn budget(seconds: Option<f64>) -> Result<Option<Duration>> {
    let Some(s) = seconds else {
        return Ok(None);
    };
    // 1e300 as written, not as its 301 digits
    let shown = match s.abs() < 1e9 || !s.is_finite() {
        true => s.to_string(),
        false => format!("{s:e}"),
    };
    match Duration::try_from_secs_f64(s) {
        Ok(d) if s > 0.0 => Ok(Some(d)),
        _ => bail!("--budget-seconds {shown} must be a positive number of seconds (e.g. --budget-seconds 60), or left out to train --steps steps"),
    }
}

fn check_seeds(seeds: &[u64]) -> Result<()> {
    for (i, seed) in seeds.iter().enumerate() {
        if seeds[..i].contains(seed) {
            bail!(
                "seed {seed} is given twice in --seeds; give each seed once (e.g. --seeds 0 1 2)"
            );
        }
    }
    Ok(())
}

/// Read a config, apply the comparison's options, and check it and its memory.
fn prepare(args: &Args, path: &Path, steps: u64) -> Result<Entry> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut config = crate::configs::train_config(path, true)?;
    let t = &mut config.train;
    t.max_steps = steps;
    t.warmup_steps = t.warmup_steps.min(steps);
    t.validate_every = args.validate_every.unwrap_or((steps / 10).max(1));
    t.checkpoint_every = steps;
    t.sample_every = 0;
    config.data = args.data.clone();
    let context = || format!("in {}", path.display());
    let spec = config.model.validate().with_context(context)?;
    config.train.validate().with_context(context)?;
    let (copies, rows) = crate::resources::replica_rows(args.devices, config.train.batch_size);
    let work = hier_model::memory::Workload {
        replicas: copies,
        ..crate::resources::work(
            hier_model::memory::Pass::Train,
            rows,
            config.model.seq_len.saturating_add(1),
        )
    };
    crate::resources::check_memory(&config.model, work).with_context(context)?;
    let parameters =
        HierarchicalTransformer::<Backend>::new(&config.model, &device())?.num_params();
    Ok(Entry {
        name,
        parameters,
        flops_per_token: flops::training_per_token(&spec, spec.seq_len),
        config,
    })
}

/// Train `entry` with `seed` into `OUT/NAME/seed-SEED/` and read its metrics back.
fn train_one(
    args: &Args,
    corpus: &Corpus,
    entry: &Entry,
    seed: u64,
    budget: Option<Duration>,
) -> Result<RunSummary> {
    let mut config = entry.config.clone();
    config.train.seed = seed;
    // --out was claimed new or empty, names and seeds are distinct: no run is overwritten
    let dir = args.out.join(&entry.name).join(format!("seed-{seed}"));
    eprintln!("== {} seed {seed}", entry.name);
    let (devices, split) = replicas(args.devices, config.train.batch_size);
    hier_train::train_parallel::<Autodiff<Backend>>(
        &config,
        corpus,
        &dir,
        Start::New,
        Replicas {
            devices: &devices,
            cluster: None,
            split,
        },
        &Control {
            budget,
            ..Control::default()
        },
    )?;
    // as the trainer counts them: replicas with a batch each multiply the rows of a step
    let rows = match split {
        BatchSplit::PerReplica => devices.len() * config.train.batch_size,
        BatchSplit::Shared => config.train.batch_size,
    };
    let run = Run {
        name: entry.name.clone(),
        seed,
        parameters: entry.parameters,
        flops_per_token: entry.flops_per_token,
        tokens_per_step: (rows * config.train.grad_accum * config.model.seq_len) as f64,
    };
    RunSummary::read(run, &dir).with_context(|| format!("reading the metrics of {}", dir.display()))
}

/// compare.md (per config, then per run), compare.json and the three plots.
/// The runs recorded in earlier comparisons' `compare.json` files, tabulated and plotted
/// together into `out` (a new or empty directory), each run once.
fn replot(files: &[PathBuf], out: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Recorded {
        runs: Vec<RunSummary>,
    }
    let mut runs: Vec<RunSummary> = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let recorded: Recorded = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a compare.json written by `hier compare`",
                file.display()
            )
        })?;
        for run in recorded.runs {
            let (name, seed) = (&run.run.name, run.run.seed);
            if runs
                .iter()
                .any(|r| &r.run.name == name && r.run.seed == seed)
            {
                bail!(
                    "run `{name}` seed {seed} is in two of the --from files (again in {}); give each comparison's compare.json once",
                    file.display()
                );
            }
            runs.push(run);
        }
    }
    if runs.is_empty() {
        bail!("the --from files hold no runs; give compare.json files of finished comparisons");
    }
    let _lock = hier_model::files::claim_out_dir(out, &[])?;
    write_results(out, &runs)
}

fn write_results(out: &Path, runs: &[RunSummary]) -> Result<()> {
    let md = format!(
        "{}\nfinal and best valid bpc: mean ± sample standard deviation over the seeds; seconds: mean of the training loops.\n\n{}",
        table(runs),
        runs_table(runs)
    );
    let write = |file: &str, text: &str| {
        let path = out.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("compare.md", &md)?;
    write("compare.json", &json(runs))?;
    for axis in Axis::ALL {
        write(axis.file(), &svg(runs, axis))?;
    }
    println!("{md}");
    eprintln!(
        "wrote {0}/compare.md, {0}/compare.json and {0}/compare-{{steps,seconds,flops}}.svg",
        out.display()
    );
    Ok(())
}
