use std::path::PathBuf;

use anyhow::{Context, Result};
use hier_model::{model_dir, HierarchicalTransformer};

use crate::backend::{device, Backend};

#[derive(clap::Args)]
pub struct Args {
    /// Model config (JSON with the reference's constructor keyword names).
    #[arg(long)]
    config: PathBuf,
    /// Directory to write config.json and model.safetensors into.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let config = crate::configs::model_config(&args.config)?;
    let spec = config
        .validate()
        .with_context(|| format!("in {}", args.config.display()))?;
    for (factor, window) in &spec.replaced_windows {
        eprintln!("note: window {window} of hierarchy {factor}x exceeds seq_len / {factor}; it uses full attention (as the reference does)");
    }
    crate::resources::check_memory(
        &config,
        crate::resources::work(hier_model::memory::Pass::Init, 0, 0),
    )?;
    // a new or empty directory only (never overwrite a model), locked while it is written
    let _lock = hier_model::files::claim_out_dir(&args.out, &model_dir::OWN_FILES)?;
    let device = device();
    let model = HierarchicalTransformer::<Backend>::init(&config, args.seed, &device)?;
    model_dir::save(&model, &args.out)
        .with_context(|| format!("writing the model to {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} parameters)",
        args.out.display(),
        burn::module::Module::num_params(&model)
    );
    Ok(())
}
