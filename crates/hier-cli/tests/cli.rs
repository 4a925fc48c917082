//! The CLI contract, checked from outside against the reference fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

mod common;
use common::{hier, run_err, run_ok};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(case)
}

fn f32s(bytes: &[u8], key: &str) -> Vec<f32> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(key).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn i64s(bytes: &[u8], key: &str) -> Vec<i64> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(key).unwrap();
    view.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Write the fixture's ids as IDS.json (all columns, or all but the last).
fn write_ids(dir: &Path, expected: &[u8], drop_last: bool) -> (PathBuf, usize) {
    let ids = i64s(expected, "ids");
    let rows = 2;
    let cols = ids.len() / rows;
    let keep = if drop_last { cols - 1 } else { cols };
    let rows: Vec<Vec<i64>> = ids.chunks(cols).map(|r| r[..keep].to_vec()).collect();
    let path = dir.join("ids.json");
    std::fs::write(&path, serde_json::to_string(&rows).unwrap()).unwrap();
    (path, keep)
}

#[test]
fn forward_matches_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = std::fs::read(fixture("h124_stride").join("expected.safetensors")).unwrap();
    let out = tmp.path().join("out.safetensors");

    let (ids, _) = write_ids(tmp.path(), &expected, true);
    run_ok(
        hier()
            .args(["forward", "--model"])
            .arg(fixture("h124_stride"))
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out),
    );
    let ours = f32s(&std::fs::read(&out).unwrap(), "logits");
    let reference = f32s(&expected, "logits");
    let diff = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(ours.len(), reference.len());
    assert!(diff < 1e-4, "logits differ by {diff}");

    let (ids, _) = write_ids(tmp.path(), &expected, false);
    let out = tmp.path().join("with_loss.safetensors");
    run_ok(
        hier()
            .args(["forward", "--with-loss", "--model"])
            .arg(fixture("h124_stride"))
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out),
    );
    let bytes = std::fs::read(&out).unwrap();
    for key in ["total_loss", "ce_loss", "next_latent_loss", "recon_loss"] {
        let (a, b) = (f32s(&bytes, key)[0], f32s(&expected, key)[0]);
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1e-6),
            "{key}: {a} vs {b}"
        );
    }
    assert_eq!(f32s(&bytes, "logits").len(), reference.len());
}

#[test]
fn greedy_generate_matches_the_reference() {
    let expected = std::fs::read(fixture("odd_len").join("expected.safetensors")).unwrap();
    let prompt: Vec<String> = i64s(&expected, "gen_prompt")
        .iter()
        .map(|i| i.to_string())
        .collect();
    let reference: Vec<String> = i64s(&expected, "gen_out")
        .iter()
        .map(|i| i.to_string())
        .collect();
    let greedy = |new_tokens: usize, extra: &[&str]| {
        run_ok(
            hier()
                .args(["generate", "--model"])
                .arg(fixture("odd_len"))
                .args([
                    "--prompt-ids",
                    &prompt.join(","),
                    "--temperature",
                    "0",
                    "--format",
                    "ids",
                ])
                .args(["--max-new-tokens", &new_tokens.to_string()])
                .args(extra),
        )
    };
    // the recompute path, past seq_len (the reference re-crops the context)
    assert_eq!(
        greedy(reference.len(), &["--no-cache"]).trim(),
        reference.join(",")
    );
    // the default cached path agrees with the reference while the context fits seq_len (32)
    let within = 32 - prompt.len();
    assert_eq!(greedy(within, &[]).trim(), reference[..within].join(","));
}

#[test]
fn init_writes_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, r#"{"num_tokens": 256, "dim": [32, 16], "depth": 1, "seq_len": 64, "heads": 2, "dim_head": 8,
        "hierarchies": [1, 4], "window_sizes": [16, null], "hierarchical_stride": [1, 2]}"#)
    .unwrap();
    let model = tmp.path().join("model");
    run_ok(
        hier()
            .args(["init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&model)
            .args(["--seed", "3"]),
    );
    let a = std::fs::read(model.join("model.safetensors")).unwrap();
    let text = run_ok(hier().args(["generate", "--model"]).arg(&model).args([
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
    ]));
    assert!(!text.is_empty());
    // same seed, same weights
    let again = tmp.path().join("again");
    run_ok(
        hier()
            .args(["init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&again)
            .args(["--seed", "3"]),
    );
    assert_eq!(a, std::fs::read(again.join("model.safetensors")).unwrap());
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = tmp.path().join("ids.json");
    let out = tmp.path().join("out.safetensors");
    let forward = |model: &Path| {
        let mut cmd = hier();
        cmd.args(["forward", "--model"]).arg(model);
        cmd.arg("--ids").arg(&ids).arg("--out").arg(&out);
        cmd
    };
    std::fs::write(&ids, "[[1, 2, 3], [4, 5]]").unwrap();
    let e = run_err(&mut forward(&fixture("flat")));
    assert!(e.contains("same length"), "{e}");
    std::fs::write(&ids, "[[1, 2, 300]]").unwrap();
    let e = run_err(&mut forward(&fixture("flat")));
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = run_err(&mut forward(&tmp.path().join("nope")));
    assert!(e.contains("config.json"), "{e}");
    let generate = || {
        let mut cmd = hier();
        cmd.args(["generate", "--model"]).arg(fixture("flat"));
        cmd
    };
    let e = run_err(generate().args(["--prompt-ids", "1,x"]));
    assert!(e.contains("not an integer"), "{e}");
    let e = run_err(generate().args(["--prompt", ""]));
    assert!(e.contains("the prompt is empty"), "{e}");
    use std::os::unix::ffi::OsStrExt;
    let e = run_err(
        generate()
            .arg("--prompt")
            .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe")),
    );
    assert!(e.contains("invalid UTF-8"), "{e}");
    let e = run_err(generate().args(["--prompt-ids", "1", "--filter-thres", "1.5"]));
    assert!(e.contains("filter_thres"), "{e}");
    let e = run_err(hier().arg("--version").env("HIER_ALLOC_CACHE_MIB", "2GB"));
    assert!(
        e.contains("HIER_ALLOC_CACHE_MIB") && e.contains("whole number"),
        "{e}"
    );
    run_ok(hier().arg("--version").env("HIER_ALLOC_CACHE_MIB", "0"));
}

/// A missing model directory is named once, with the fix (the OS error was printed twice); a
/// missing prompt names both ways to give one; the usage marks as required only --model.
#[test]
fn missing_models_and_prompts_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-model");
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[[1, 2]]").unwrap();
    let commands: [&[&str]; 3] = [
        &["generate", "--prompt", "x"],
        &["eval"],
        &[
            "forward",
            "--ids",
            ids.to_str().unwrap(),
            "--out",
            "unused.safetensors",
        ],
    ];
    for args in commands {
        let e = run_err(
            hier()
                .current_dir(tmp.path())
                .args(args)
                .arg("--model")
                .arg(&missing),
        );
        assert!(e.contains(&format!("--model {}", missing.display())), "{e}");
        assert!(e.contains("hier init") && e.contains("config.json"), "{e}");
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    }
    // a directory without config.json: the OS error once too
    let e = run_err(hier().args(["eval", "--model"]).arg(tmp.path()));
    assert!(e.contains("config.json"), "{e}");
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");

    let e = run_err(hier().args(["generate", "--model"]).arg(fixture("flat")));
    assert!(
        e.contains("give --prompt TEXT or --prompt-ids 3,17,42"),
        "{e}"
    );
    let help = run_ok(hier().args(["generate", "--help"]));
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert_eq!(
        usage, "Usage: hier generate [OPTIONS] --model <MODEL>",
        "{help}"
    );
    assert!(help.contains("[default: 256]"), "{help}");
}

#[test]
fn bench_reports_every_mode_as_json() {
    for mode in ["train", "infer", "generate"] {
        let stdout = run_ok(hier().args([
            "bench", "--preset", "tiny", "--mode", mode, "--batch", "2", "--steps", "3",
            "--warmup", "1", "--json",
        ]));
        let rows: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows.len(),
            if mode == "generate" { 2 } else { 1 },
            "{stdout}"
        );
        for row in rows {
            assert!(row["mode"].as_str().unwrap().starts_with(mode), "{row}");
            assert!(row["median_ms"].as_f64().unwrap() > 0.0, "{row}");
            assert!(row["tokens_per_s"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
}

/// Run `cmd`, which must fail within 30 s (a FIFO read would block it forever); its stderr.
fn run_err_soon(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running after 30 s: it waits on the file instead of refusing it");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "unexpectedly succeeded");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    stderr
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

fn tiny_train(out: &Path, steps: &str) -> Command {
    let mut cmd = hier();
    cmd.args(["train", "--preset", "tiny", "--max-steps", steps, "--out"])
        .arg(out);
    cmd
}

/// Every file of a directory, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// `--out` never overwrites: train and init write only into a new or empty directory, forward
/// only a new file; otherwise they refuse, naming what is there and the fix.
#[test]
fn out_never_overwrites_a_model_or_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    run_ok(
        hier()
            .args(["init", "--config"])
            .arg(fixture("flat").join("config.json"))
            .arg("--out")
            .arg(&model),
    );
    let before = snapshot(&model);
    let e = run_err(&mut tiny_train(&model, "2"));
    assert!(
        e.contains("not empty") && e.contains("model.safetensors") && e.contains("--resume"),
        "{e}"
    );
    let e = run_err(
        hier()
            .args(["init", "--config"])
            .arg(fixture("flat").join("config.json"))
            .arg("--out")
            .arg(&model)
            .args(["--seed", "1"]),
    );
    assert!(
        e.contains("not empty") && e.contains("another --out"),
        "{e}"
    );
    assert!(before == snapshot(&model), "the model directory changed");

    // a finished run whose checkpoint/ was removed
    let run = tmp.path().join("run");
    run_ok(&mut tiny_train(&run, "2"));
    std::fs::remove_dir_all(run.join("checkpoint")).unwrap();
    let before = snapshot(&run);
    let e = run_err(&mut tiny_train(&run, "2"));
    assert!(e.contains("not empty"), "{e}");
    assert!(before == snapshot(&run), "the run directory changed");

    // forward never replaces an existing file
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[[1, 2, 3]]").unwrap();
    let out = tmp.path().join("logits.safetensors");
    std::fs::write(&out, b"precious").unwrap();
    let forward = |with_loss: bool| {
        let mut cmd = hier();
        cmd.args(["forward", "--model"])
            .arg(&model)
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out);
        if with_loss {
            cmd.arg("--with-loss");
        }
        cmd
    };
    for with_loss in [false, true] {
        let e = run_err(&mut forward(with_loss));
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    }
    std::fs::remove_file(&out).unwrap();
    run_ok(&mut forward(false));
}

/// A run directory is locked while a job writes it: a second `hier train` into it (new or
/// --resume) fails at once, naming the directory and the other process.
#[test]
fn a_second_job_into_a_running_jobs_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut first = tiny_train(&run, "100000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !run.join("train.json").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // both run while the first holds the directory; the first is stopped before any assert
    let second = tiny_train(&run, "5").output().unwrap();
    let resume = hier()
        .args(["train", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        run.join("train.json").exists(),
        "the first job never started"
    );
    for out in [second, resume] {
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && e.contains("another process")
                && e.contains(&run.display().to_string()),
            "{e}"
        );
    }
}

/// `--resume` after the run's train.json model section was edited: refused, naming the key;
/// config.json still matches the weights.
#[test]
fn resume_refuses_an_edited_model_config() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(tiny_train(&run, "4").args(["--checkpoint-every", "2"]));
    let path = run.join("train.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model"]["window_sizes"] = serde_json::json!([8, 8]);
    std::fs::write(&path, config.to_string()).unwrap();
    let before = snapshot(&run);
    let e = run_err(
        hier()
            .args(["train", "--resume"])
            .arg(&run)
            .args(["--max-steps", "6"]),
    );
    assert!(e.contains("window_sizes") && e.contains("differs"), "{e}");
    assert!(before == snapshot(&run), "the run directory changed");
}

/// FIFOs and devices where hier reads a file are refused at once, not waited on or read
/// without end.
#[test]
fn fifos_and_devices_are_refused_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    mkfifo(&model.join("config.json"));
    let e = run_err_soon(
        hier()
            .args(["generate", "--model"])
            .arg(&model)
            .args(["--prompt", "a"]),
    );
    assert!(e.contains("FIFO") && e.contains("config.json"), "{e}");

    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    let e = run_err_soon(
        tiny_train(&tmp.path().join("a"), "2")
            .arg("--data")
            .arg(&fifo),
    );
    assert!(e.contains("FIFO"), "{e}");
    let e = run_err_soon(
        hier()
            .args(["train", "--out"])
            .arg(tmp.path().join("b"))
            .arg("--config")
            .arg(&fifo),
    );
    assert!(e.contains("FIFO"), "{e}");
    let e = run_err_soon(
        hier()
            .args(["forward", "--model"])
            .arg(fixture("flat"))
            .arg("--ids")
            .arg("/dev/zero")
            .arg("--out")
            .arg(tmp.path().join("out.safetensors")),
    );
    assert!(e.contains("character device"), "{e}");

    let linked = tmp.path().join("linked");
    std::fs::create_dir(&linked).unwrap();
    std::fs::copy(
        fixture("flat").join("config.json"),
        linked.join("config.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/urandom", linked.join("model.safetensors")).unwrap();
    let e = run_err_soon(
        hier()
            .args(["generate", "--model"])
            .arg(&linked)
            .args(["--prompt", "a"]),
    );
    assert!(e.contains("character device"), "{e}");
}
