use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::Module;
use hier_model::HierarchicalTransformer;
use hier_train::compare::{table, RunSummary};
use hier_train::{Control, Corpus, Replicas, Start};

use crate::backend::{device, replicas, Backend};
use crate::plot::svg;

#[derive(clap::Args)]
pub struct Args {
    /// Configs to compare: training configs ({"model": ..., "train": ...}) or bare model configs
    /// (trained with the shakespeare preset's options).
    #[arg(long, num_args = 1.., required = true)]
    configs: Vec<PathBuf>,
    /// Optimizer steps for every run.
    #[arg(long)]
    steps: u64,
    /// Validate every N steps (default: steps / 10).
    #[arg(long)]
    validate_every: Option<u64>,
    /// Directory for the runs, compare.md and compare.svg.
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Training data for every run (default: the embedded corpus).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed shared by every run (same initialisation stream and batch order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Data-parallel replicas per run, as `hier train --devices`. Default: one per core on the
    /// CPU sharing each batch, one GPU otherwise.
    #[arg(long)]
    devices: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    // a new or empty directory only (earlier runs and tables are never overwritten), locked
    let _lock = hier_model::files::claim_out_dir(&args.out, &[])?;
    let corpus = Corpus::from_source(args.data.as_deref())?;
    let mut names = Vec::new();
    let mut runs = Vec::new();
    for path in &args.configs {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if names.contains(&name) {
            bail!("two configs are named `{name}`; give them distinct file names");
        }
        names.push(name.clone());
        let mut config = crate::configs::train_config(path, true)?;
        config.train.max_steps = args.steps;
        config.train.warmup_steps = config.train.warmup_steps.min(args.steps);
        config.train.validate_every = args.validate_every.unwrap_or((args.steps / 10).max(1));
        config.train.checkpoint_every = args.steps;
        config.train.sample_every = 0;
        config.train.seed = args.seed;
        config.data = args.data.clone();
        config
            .model
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        crate::resources::check_devices(args.devices)?;
        let (copies, rows) = crate::resources::replica_rows(args.devices, config.train.batch_size);
        let work = hier_model::memory::Workload {
            replicas: copies,
            ..crate::resources::work(
                hier_model::memory::Pass::Train,
                rows,
                config.model.seq_len.saturating_add(1),
            )
        };
        crate::resources::check_memory(&config.model, work)
            .with_context(|| format!("in {}", path.display()))?;
        // --out was claimed new or empty above and the names are distinct: no run is overwritten
        let dir = args.out.join(&name);
        eprintln!("== {name}");
        let control = Control {
            interrupt: None::<&AtomicBool>,
            stop_at: None,
        };
        let (devices, split) = replicas(args.devices, config.train.batch_size);
        hier_train::train_parallel::<Autodiff<Backend>>(
            &config,
            &corpus,
            &dir,
            Start::New,
            Replicas {
                devices: &devices,
                cluster: None,
                split,
            },
            &control,
        )?;
        let parameters =
            HierarchicalTransformer::<Backend>::new(&config.model, &device())?.num_params();
        runs.push(RunSummary::read(&name, parameters, &dir)?);
    }
    let md = table(&runs);
    std::fs::write(args.out.join("compare.md"), &md)?;
    std::fs::write(args.out.join("compare.svg"), svg(&runs))?;
    println!("{md}");
    eprintln!(
        "wrote {0}/compare.md and {0}/compare.svg",
        args.out.display()
    );
    Ok(())
}
