//! Bounded resources, streaming output, no ignored flags and network faults, checked from
//! outside the binary (docs/reliability.md).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, hier, run_err, run_ok};

const TINY: &str = r#"{"num_tokens": 256, "dim": 16, "depth": 1, "seq_len": 32, "heads": 2, "dim_head": 8, "hierarchies": [1, 2], "window_sizes": [8, null]}"#;

/// A fresh tiny model directory.
fn tiny_model(dir: &Path) -> PathBuf {
    let config = dir.join("tiny.json");
    std::fs::write(&config, TINY).unwrap();
    let model = dir.join("model");
    run_ok(
        hier()
            .args(["init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&model),
    );
    model
}

const ABSURD: [&str; 5] = [
    r#"{"num_tokens": 256, "dim": 1000000000, "depth": 2}"#,
    r#"{"num_tokens": 256, "dim": 512, "depth": 1000000}"#,
    r#"{"num_tokens": 1000000000, "dim": 512, "depth": 2}"#,
    r#"{"num_tokens": 256, "dim": 512, "depth": 2, "heads": 1000000}"#,
    r#"{"num_tokens": 256, "dim": 64, "depth": 2, "ff_mult": 100000000}"#,
];

fn assert_memory_error(e: &str) {
    assert!(
        e.contains("not enough memory") && e.contains("available") && e.contains("too large"),
        "{e}"
    );
}

#[test]
fn every_command_checks_memory_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_model(tmp.path()).join("model.safetensors");
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[[1, 2, 3]]").unwrap();
    let data = tmp.path().join("data.txt");
    std::fs::write(&data, "some text to evaluate on. ".repeat(40)).unwrap();
    for (i, json) in ABSURD.iter().enumerate() {
        let config = tmp.path().join(format!("absurd{i}.json"));
        std::fs::write(&config, json).unwrap();
        let dir = tmp.path().join(format!("absurd{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&config, dir.join("config.json")).unwrap();
        std::fs::copy(&weights, dir.join("model.safetensors")).unwrap();
        let out = tmp.path().join(format!("out{i}"));
        let commands: Vec<Vec<&std::ffi::OsStr>> = vec![
            vec![
                "init".as_ref(),
                "--config".as_ref(),
                config.as_ref(),
                "--out".as_ref(),
                out.as_ref(),
            ],
            vec![
                "forward".as_ref(),
                "--model".as_ref(),
                dir.as_ref(),
                "--ids".as_ref(),
                ids.as_ref(),
                "--out".as_ref(),
                out.as_ref(),
            ],
            vec![
                "generate".as_ref(),
                "--model".as_ref(),
                dir.as_ref(),
                "--prompt".as_ref(),
                "a".as_ref(),
            ],
            vec![
                "generate".as_ref(),
                "--model".as_ref(),
                dir.as_ref(),
                "--prompt".as_ref(),
                "a".as_ref(),
                "--no-cache".as_ref(),
            ],
            vec![
                "eval".as_ref(),
                "--model".as_ref(),
                dir.as_ref(),
                "--data".as_ref(),
                data.as_ref(),
            ],
            vec![
                "train".as_ref(),
                "--model-config".as_ref(),
                config.as_ref(),
                "--out".as_ref(),
                out.as_ref(),
                "--data".as_ref(),
                data.as_ref(),
            ],
            vec![
                "bench".as_ref(),
                "--config".as_ref(),
                config.as_ref(),
                "--mode".as_ref(),
                "infer".as_ref(),
            ],
            vec![
                "compare".as_ref(),
                "--configs".as_ref(),
                config.as_ref(),
                "--steps".as_ref(),
                "1".as_ref(),
                "--out".as_ref(),
                out.as_ref(),
                "--data".as_ref(),
                data.as_ref(),
            ],
        ];
        for args in commands {
            let e = run_err(hier().args(&args));
            assert_memory_error(&e);
            assert!(!out.join("model.safetensors").exists());
        }
    }
}

#[test]
fn more_cpu_replicas_than_cores_and_zero_devices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let e = run_err(
        hier()
            .args(["train", "--preset", "tiny", "--devices", "1000", "--out"])
            .arg(&out),
    );
    assert!(e.contains("--devices 1000") && e.contains("cores"), "{e}");
    for devices in ["0", "1000"] {
        let e = run_err(hier().args([
            "bench",
            "--preset",
            "tiny",
            "--mode",
            "train",
            "--batch",
            "1000",
            "--devices",
            devices,
        ]));
        assert!(e.contains("--devices"), "{e}");
    }
}

/// Read `child`'s stdout until `enough` says so, while it is still running; kill it then.
fn read_while_running(
    cmd: &mut Command,
    enough: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Vec<u8> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // the pipe stays open (returned by the reader) until the check: closing it ends the child
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !enough(&seen) && stdout.read(&mut byte).unwrap_or(0) == 1 {
            seen.push(byte[0]);
        }
        (seen, stdout)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // (before the pipe closes)
    let _ = child.wait();
    let (seen, _pipe) = reader.join().unwrap();
    assert!(
        running,
        "the output came only when the process ended: {seen:?}"
    );
    seen
}

#[test]
fn generate_streams_tokens_as_they_are_sampled() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    for format in ["ids", "text"] {
        for cache in [None, Some("--no-cache")] {
            let mut cmd = hier();
            cmd.args(["generate", "--model"]).arg(&model).args([
                "--prompt",
                "ab",
                "--max-new-tokens",
                "100000000",
                "--format",
                format,
            ]);
            cmd.args(cache);
            let seen = read_while_running(&mut cmd, |s| s.len() >= 8);
            assert!(seen.len() >= 8, "{format}: {seen:?}");
        }
    }
}

/// A copy of `model` whose output layer is NaN.
fn broken_model(dir: &Path, model: &Path) -> PathBuf {
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(model.join("config.json"), broken.join("config.json")).unwrap();
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            if name == "to_logits.weight" {
                data = f32::NAN.to_le_bytes().repeat(data.len() / 4);
            }
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
        (name.as_str(), view.unwrap())
    });
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(broken.join("model.safetensors"), out).unwrap();
    broken
}

#[test]
fn non_finite_outputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let broken = broken_model(tmp.path(), &model);
    let e = run_err(
        hier()
            .args(["generate", "--model"])
            .arg(&broken)
            .args(["--prompt", "ab"]),
    );
    assert!(e.contains("not finite"), "{e}");
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[[1, 2, 3], [4, 5, 6]]").unwrap();
    let out = tmp.path().join("out.safetensors");
    for extra in [None, Some("--with-loss")] {
        let mut cmd = hier();
        cmd.args(["forward", "--model"])
            .arg(&broken)
            .arg("--ids")
            .arg(&ids);
        let e = run_err(cmd.arg("--out").arg(&out).args(extra));
        assert!(e.contains("not finite"), "{e}");
        assert!(!out.exists());
    }
    let data = tmp.path().join("data.txt");
    std::fs::write(&data, "some text to evaluate on. ".repeat(40)).unwrap();
    let e = run_err(
        hier()
            .args(["eval", "--model"])
            .arg(&broken)
            .arg("--data")
            .arg(&data),
    );
    assert!(e.contains("not finite"), "{e}");
    // the healthy model: forward streams a loadable file
    run_ok(
        hier()
            .args(["forward", "--model"])
            .arg(&model)
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out),
    );
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("logits").unwrap().shape(), &[2, 3, 256]);
}

#[test]
fn evaluating_too_little_data_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = tmp.path().join("short.txt");
    std::fs::write(&data, "0123456789").unwrap(); // a 1-byte validation split
    let e = run_err(
        hier()
            .args(["eval", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data),
    );
    assert!(
        e.contains("too little data") && e.contains("valid split"),
        "{e}"
    );
}

fn train(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = hier();
    cmd.args([
        "train",
        "--preset",
        "tiny",
        "--max-steps",
        "4",
        "--devices",
        "1",
    ])
    .args([
        "--checkpoint-every",
        "2",
        "--validate-every",
        "2",
        "--sample-every",
        "0",
    ])
    .arg("--out")
    .arg(out)
    .args(extra);
    cmd
}

fn resume(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = hier();
    cmd.args(["train", "--devices", "1", "--resume"])
        .arg(out)
        .args(extra);
    cmd
}

#[test]
fn train_flags_are_honoured_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for stop in ["0", "5"] {
        let e = run_err(&mut train(&out, &["--stop-at", stop]));
        assert!(e.contains("--stop-at"), "{e}");
    }
    run_ok(&mut train(&out, &["--stop-at", "2"]));
    let e = run_err(&mut resume(&out, &["--warmup-steps", "7"]));
    assert!(
        e.contains("--warmup-steps") && e.contains("schedule"),
        "{e}"
    );
    for (stop, why) in [
        ("0", "not after step 2"),
        ("2", "not after step 2"),
        ("9", "beyond"),
    ] {
        let e = run_err(&mut resume(&out, &["--stop-at", stop]));
        assert!(e.contains(why), "{stop}: {e}");
    }
    let e = run_err(&mut resume(&out, &["--max-steps", "1"]));
    assert!(e.contains("--max-steps 1"), "{e}");
    let e = run_err(&mut resume(&out, &["--node-rank", "1"]));
    assert!(e.contains("--node-rank"), "{e}");
    run_ok(&mut resume(
        &out,
        &[
            "--validate-every",
            "1",
            "--checkpoint-every",
            "1",
            "--sample-every",
            "3",
        ],
    ));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    assert_eq!(saved["train"]["validate_every"], 1);
    assert_eq!(saved["train"]["checkpoint_every"], 1);
    assert_eq!(saved["train"]["sample_every"], 3);
    // validation at every step from the resumed one on: steps 3 and 4
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let validations = metrics.lines().filter(|l| l.contains("valid")).count();
    assert!(validations >= 3, "{metrics}");
}

#[test]
fn taken_ports_and_a_missing_orchestrator_are_clear_errors() {
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = held.local_addr().unwrap().port().to_string();
    let e = run_err(hier().args(["orchestrator", "--port", &taken]));
    assert!(e.contains("--port") && e.contains(&taken), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let node = |orchestrator: u16, address: &str, wait: &str| {
        let mut cmd = hier();
        cmd.args([
            "train",
            "--preset",
            "tiny",
            "--nodes",
            "2",
            "--node-rank",
            "1",
        ])
        .arg("--out")
        .arg(tmp.path().join("run"))
        .arg("--orchestrator")
        .arg(format!("ws://127.0.0.1:{orchestrator}"))
        .arg("--node-address")
        .arg(format!("ws://127.0.0.1:{address}"))
        .args(["--orchestrator-wait", wait]);
        cmd
    };
    let e = run_err(&mut node(free_port(), &taken, "1"));
    assert!(e.contains("--node-address") && e.contains(&taken), "{e}");
    let t0 = Instant::now();
    let port = free_port();
    let e = run_err(&mut node(port, &free_port().to_string(), "2"));
    assert!(
        e.contains("orchestrator") && e.contains("within 2 s"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let e = run_err(
        hier()
            .args([
                "train",
                "--preset",
                "tiny",
                "--orchestrator-wait",
                "3",
                "--out",
            ])
            .arg(tmp.path().join("x")),
    );
    assert!(e.contains("--orchestrator-wait"), "{e}");
    drop(held);
}
