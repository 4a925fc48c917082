//! `cargo xtask <task>`: project chores that are more than one cargo command.

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
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
