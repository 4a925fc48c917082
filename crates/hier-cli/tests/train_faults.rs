//! Interrupted training: a run killed with SIGKILL resumes from its last checkpoint and ends
//! bit-identical to an uninterrupted run; Ctrl-C (SIGINT) writes a checkpoint and exits cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{hier, run_ok};

const STEPS: &str = "40";

fn train(out: &Path) -> Command {
    let mut cmd = hier();
    cmd.args([
        "train",
        "--preset",
        "tiny",
        "--max-steps",
        STEPS,
        "--checkpoint-every",
        "5",
        "--validate-every",
        "20",
        "--out",
    ])
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn checkpoint_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoint/state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state["step"].as_u64()
}

/// Wait until the child has checkpointed at least `step`.
fn wait_for_checkpoint(child: &mut Child, run: &Path, step: u64) {
    let start = Instant::now();
    while checkpoint_step(run).is_none_or(|s| s < step) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before step {step}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint at step {step} after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("model.safetensors")).unwrap()
}

#[test]
fn sigkill_then_resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    assert!(train(&straight).status().unwrap().success());

    let killed = tmp.path().join("killed");
    let mut child = train(&killed).spawn().unwrap();
    wait_for_checkpoint(&mut child, &killed, 10);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at = checkpoint_step(&killed).unwrap();
    assert!(at < 40, "the run finished before it was killed");

    run_ok(hier().args(["train", "--resume"]).arg(&killed));
    assert_eq!(checkpoint_step(&killed), Some(40));
    assert!(
        weights(&straight) == weights(&killed),
        "resumed run (killed at checkpoint {at}) differs"
    );
    let (a, b) = (
        metrics_without_timing(&straight),
        metrics_without_timing(&killed),
    );
    assert_eq!(a.len(), 40 + 2);
    assert!(a == b, "resumed metrics differ:\n{a:?}\n{b:?}");
}

/// The lines of `metrics.jsonl` as text (not parsed: the floats' last digits count), without
/// the timing fields `tokens_per_s` and `elapsed_s`, the only ones allowed to differ.
fn metrics_without_timing(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let timing = |f: &&str| f.starts_with("\"tokens_per_s\"") || f.starts_with("\"elapsed_s\"");
    text.lines()
        .map(|line| {
            let fields = line.trim_start_matches('{').trim_end_matches('}');
            fields
                .split(',')
                .filter(|f| !timing(f))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn sigint_checkpoints_and_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut child = train(&run).spawn().unwrap();
    wait_for_checkpoint(&mut child, &run, 5);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("checkpoint written"), "{stderr}");
    let step = checkpoint_step(&run).unwrap();
    assert!((5..40).contains(&step));
    // the interrupted run's directory is a usable model and resumes
    run_ok(hier().args(["train", "--resume"]).arg(&run));
}

/// A full disk while a checkpoint is written (simulated with a file-size limit, so that writing
/// the new checkpoint fails with EFBIG): the run stops with an error naming the file, and the
/// previous checkpoint is intact and resumable.
#[test]
fn a_failed_checkpoint_write_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(train(&run).args(["--stop-at", "10"]));
    assert_eq!(checkpoint_step(&run), Some(10));
    let before = std::fs::read(run.join("checkpoint/model.mpk")).unwrap();

    // ignore SIGXFSZ so that the write returns EFBIG; limit files to 64 KiB (the records are larger)
    let out = Command::new("bash")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 64; exec \"$0\" train --resume \"$1\" --max-steps 20",
        ])
        .arg(env!("CARGO_BIN_EXE_hier"))
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the write should have failed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(".checkpoint.tmp") && stderr.to_lowercase().contains("file too large"),
        "{stderr}"
    );
    assert!(
        !run.join(".checkpoint.tmp").exists(),
        "the failed write left its partial checkpoint"
    );
    assert_eq!(
        checkpoint_step(&run),
        Some(10),
        "the previous checkpoint must stay"
    );
    assert_eq!(
        before,
        std::fs::read(run.join("checkpoint/model.mpk")).unwrap()
    );

    run_ok(
        hier()
            .args(["train", "--resume"])
            .arg(&run)
            .args(["--max-steps", "20"]),
    );
    assert_eq!(checkpoint_step(&run), Some(20));
}
