//! `hier`: initialise, run, sample (and, later, train and benchmark) hierarchical transformers.

mod backend;
mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Init(args) => commands::init::run(args),
        Command::Forward(args) => commands::forward::run(args),
        Command::Generate(args) => commands::generate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
