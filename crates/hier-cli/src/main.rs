//! `hier`, the command-line tool of [hier](https://github.com/hier-rs/hier): initialise, train,
//! evaluate, sample and benchmark Simple Hierarchical Transformers (built on the `hier-model`
//! and `hier-train` crates).
//!
//! Subcommands: `init` (a fresh model directory), `forward` (logits and losses as
//! safetensors), `generate` (sampling, cached or recomputed), `train` (presets, config files,
//! checkpoints, `--resume`, data parallelism over threads, GPUs and nodes), `eval` (loss and
//! bits per character over a split), `data` (download and prepare enwik8), `compare` (several
//! configs on the same data, with a table and a plot), `orchestrator` (the all-reduce server of
//! a multi-node run) and `bench` (timings and peak memory). `hier <command> --help` lists the
//! options.
//!
//! The backend is a cargo feature: `flex` (default, pure-Rust CPU), `ndarray`, `cuda`, `wgpu`.
//! Install with `cargo install hier-cli` (or `cargo install hier-cli --features cuda`).

mod backend;
mod commands;
mod configs;
mod enwik8;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod gpu;
mod network;
mod plot;
mod resources;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Large blocks are cached rather than unmapped and faulted back in every step (see `alloc`).
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static ALLOCATOR: hier_train::alloc::CachingAllocator = hier_train::alloc::CachingAllocator::new();

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hier",
    version,
    about = "The Simple Hierarchical Transformer, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a freshly initialised model directory (config.json + model.safetensors).
    Init(commands::init::Args),
    /// Run a model on token ids and write logits (and losses) as safetensors.
    Forward(commands::forward::Args),
    /// Sample new tokens after a prompt.
    Generate(commands::generate::Args),
    /// Train a model (presets, config files, overrides; checkpoints and --resume).
    Train(Box<commands::train::Args>),
    /// Mean loss and bits per character over a whole split.
    Eval(commands::eval::Args),
    /// Download and prepare datasets.
    Data(commands::data::Args),
    /// Train several configs, once per seed, on the same data, optionally for equal wall-clock;
    /// tables, JSON and plots of validation bpc against steps, seconds and FLOPs.
    Compare(commands::compare::Args),
    /// Serve the gradient all-reduce of a multi-node training run (`hier train --nodes`).
    Orchestrator(commands::orchestrator::Args),
    /// Time training steps, inference and generation (cached and recomputed); peak memory.
    Bench(commands::bench::Args),
}

/// The allocation cache's limit: `HIER_ALLOC_CACHE_MIB`, else none on a GPU build (its tensors
/// live in device memory; the host would only hold freed blocks), else the default.
#[cfg(not(feature = "mimalloc"))]
fn set_allocation_cache() {
    if !backend::ON_CPU {
        ALLOCATOR.set_limit(0);
    }
    if let Ok(value) = std::env::var("HIER_ALLOC_CACHE_MIB") {
        match value.trim().parse::<usize>() {
            Ok(mib) => ALLOCATOR.set_limit(mib.saturating_mul(1 << 20)),
            Err(_) => {
                eprintln!(
                    "error: HIER_ALLOC_CACHE_MIB={value:?} is not a whole number of MiB \
                     (0 turns the allocation cache off; unset it for the default 2048)"
                );
                std::process::exit(2);
            }
        }
    }
}

fn main() {
    #[cfg(not(feature = "mimalloc"))]
    set_allocation_cache();
    let cli = Cli::parse();
    // `data` and `orchestrator` never touch the device, so they run on a machine without one
    let uses_device = !matches!(cli.command, Command::Data(_) | Command::Orchestrator(_));
    if uses_device {
        if let Err(e) = backend::check_device() {
            eprintln!("error: {}", message(&e));
            std::process::exit(1);
        }
    }
    let result: Result<()> = match cli.command {
        Command::Init(args) => commands::init::run(args),
        Command::Forward(args) => commands::forward::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Orchestrator(args) => commands::orchestrator::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, `: `-separated as anyhow's `{:#}` writes them, but a cause whose
/// text is already there (an error that prints its source and also returns it from `source()`,
/// as the `Io { path, source }` errors do) is not repeated.
fn message(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    /// An I/O error that prints its source and returns it as `source()` is told once.
    #[test]
    fn a_cause_is_printed_once() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let load = hier_model::LoadError::Io {
            path: "m/config.json".into(),
            source: os,
        };
        let e = Err::<(), _>(load).context("loading m").unwrap_err();
        let text = super::message(&e);
        assert_eq!(text, "loading m: m/config.json: entity not found");
        assert_eq!(text.matches("not found").count(), 1, "{text}");
    }
}
