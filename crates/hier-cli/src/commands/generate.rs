use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use hier_model::cache::generate_cached;
use hier_model::generate::{generate_recompute, Sampler};
use hier_model::model_dir;

use crate::backend::{device, Backend};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// New token ids, comma-separated, on one line.
    Ids,
    /// New tokens as bytes (lossy UTF-8).
    Text,
}

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Prompt as comma-separated token ids, e.g. 3,17,42.
    #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
    prompt_ids: Option<String>,
    /// Prompt as UTF-8 text, fed as bytes (byte-level models).
    #[arg(long)]
    prompt: Option<String>,
    /// Number of tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Keep the top (1 - filter_thres) of the vocabulary before sampling.
    #[arg(long, default_value_t = 0.9)]
    filter_thres: f64,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Recompute the whole (cropped) context for every token, exactly as the reference does,
    /// instead of decoding incrementally with caches. The two agree within seq_len; past it the
    /// reference re-crops the context while the cache keeps streaming.
    #[arg(long)]
    no_cache: bool,
}

fn parse_ids(text: &str) -> Result<Vec<i64>> {
    text.split(',')
        .map(|s| {
            s.trim().parse::<i64>().with_context(|| {
                format!("--prompt-ids: `{s}` is not an integer; give ids like 3,17,42")
            })
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let prompt = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => parse_ids(ids)?,
        (None, Some(text)) => text.bytes().map(i64::from).collect(),
        (None, None) => bail!("give a prompt with --prompt TEXT or --prompt-ids 3,17,42"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty; give at least one token");
    }
    let device = device();
    let model = model_dir::load::<Backend>(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let mut sampler = Sampler::new(args.temperature, args.filter_thres, args.seed)?;
    let generate = if args.no_cache {
        generate_recompute
    } else {
        generate_cached
    };
    let new = generate(
        &model,
        &[prompt],
        args.max_new_tokens,
        &mut sampler,
        &device,
    )?;
    let mut stdout = std::io::stdout().lock();
    match args.format {
        Format::Ids => {
            let ids: Vec<String> = new[0].iter().map(|t| t.to_string()).collect();
            writeln!(stdout, "{}", ids.join(","))?;
        }
        Format::Text => {
            let bytes = new[0]
                .iter()
                .map(|&t| u8::try_from(t))
                .collect::<Result<Vec<u8>, _>>()
                .context(
                    "the model produced ids above 255, which are not bytes; use --format ids",
                )?;
            writeln!(stdout, "{}", String::from_utf8_lossy(&bytes))?;
        }
    }
    Ok(())
}
