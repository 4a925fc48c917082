//! `cargo xtask <task>`: project chores that are more than one cargo command.

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  train [--features F] [-- HIER-TRAIN-ARGS]
                   train with the hier CLI (release build); with no arguments, the shakespeare
                   preset on the CPU into runs/shakespeare (about 20 minutes on two cores)
  data enwik8 [--dir D]
                   download and split enwik8 (hier data enwik8)
  check-backends   cargo check the CLI with the cuda and the wgpu backend (no GPU needed)
  fixtures [PY]    regenerate tests/fixtures with the PyTorch reference (PY: a venv's python,
                   default `python3`; see tools/README.md)";

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo run --release -p hier-cli [cargo flags] -- <command> <args>`: cargo flags are those
/// before `--` (e.g. `--features cuda`), hier arguments those after it (or `defaults` if none).
fn hier(args: &[String], command: &[&str], defaults: &[&str]) -> Result<(), String> {
    let split = args.iter().position(|a| a == "--");
    let (cargo_flags, hier_args): (&[String], Vec<String>) = match split {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None if command == ["data"] => (&[], args.to_vec()),
        None => (args, Vec::new()),
    };
    let hier_args = if hier_args.is_empty() {
        defaults.iter().map(|s| s.to_string()).collect()
    } else {
        hier_args
    };
    run(cargo()
        .args(["run", "--release", "-p", "hier-cli"])
        .args(cargo_flags)
        .arg("--")
        .args(command)
        .args(hier_args))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check-backends") => ["cuda", "wgpu"].iter().try_for_each(|backend| {
            run(cargo().args([
                "check",
                "--release",
                "-p",
                "hier-cli",
                "--no-default-features",
                "--features",
                backend,
            ]))
        }),
        Some("train") => hier(
            &args[1..],
            &["train"],
            &["--preset", "shakespeare", "--out", "runs/shakespeare"],
        ),
        Some("data") => hier(&args[1..], &["data"], &[]),
        Some("fixtures") => {
            let python = args.get(1).cloned().unwrap_or_else(|| "python3".into());
            run(Command::new(python).arg("tools/gen_fixtures.py"))
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
