use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use hier_model::cache::generate_cached_with;
use hier_model::generate::{generate_recompute_with, Sampler};
use hier_model::memory::Pass;

use crate::backend::device;
use crate::resources;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// New token ids, comma-separated, on one line.
    Ids,
    /// New tokens as raw bytes, written as they are sampled.
    Text,
}

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Prompt as comma-separated token ids, e.g. 3,17,42 (or give --prompt).
    #[arg(long, conflicts_with = "prompt")]
    prompt_ids: Option<String>,
    /// Prompt as UTF-8 text, fed as bytes (byte-level models) (or give --prompt-ids).
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
        (None, None) => bail!("no prompt: give --prompt TEXT or --prompt-ids 3,17,42"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty; give at least one token");
    }
    let config = resources::model_config(&args.model)?;
    let context = prompt.len().saturating_add(args.max_new_tokens);
    let work = if args.no_cache {
        // recomputing feeds at most seq_len tokens at a time
        resources::work(Pass::Infer, 1, context.min(config.seq_len))
    } else {
        resources::work(Pass::Decode, 1, context)
    };
    resources::check_memory(&config, work)?;
    let device = device();
    let model = crate::resources::load_model(&args.model, &device)?;
    let mut sampler = Sampler::new(args.temperature, args.filter_thres, args.seed)?;
    let mut stdout = std::io::stdout().lock();
    let mut count = 0usize;
    // each token is written and flushed as soon as it is sampled
    let on_token = |next: &[i64]| -> Result<()> {
        write_token(&mut stdout, args.format, next[0], count)?;
        count += 1;
        stdout.flush().context("writing to stdout")
    };
    let (model, prompt, new) = (&model, &[prompt], args.max_new_tokens);
    if args.no_cache {
        generate_recompute_with(model, prompt, new, &mut sampler, &device, on_token)?;
    } else {
        generate_cached_with(model, prompt, new, &mut sampler, &device, on_token)?;
    }
    writeln!(std::io::stdout()).context("writing to stdout")?;
    Ok(())
}

/// One new token: an id (comma-separated after the first) or its byte, raw, so that UTF-8
/// characters split over several tokens come out whole on the terminal.
fn write_token(out: &mut impl Write, format: Format, token: i64, index: usize) -> Result<()> {
    match format {
        Format::Ids if index == 0 => write!(out, "{token}"),
        Format::Ids => write!(out, ",{token}"),
        Format::Text => {
            let byte = u8::try_from(token).with_context(|| {
                format!("the model produced id {token}, above 255, which is not a byte; use --format ids")
            })?;
            out.write_all(&[byte])
        }
    }
    .context("writing to stdout")
}
