//! Multi-node data parallelism on localhost: an orchestrator and two `hier train --nodes 2`
//! processes train like one process with `--devices 2`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, hier};

/// Kills the process when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn train(out: &Path, extra: &[String]) -> Command {
    let mut cmd = hier();
    cmd.args(["train", "--preset", "tiny", "--max-steps", "12", "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn wait(child: &mut Guard, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            assert!(status.success(), "{what} failed ({status}):\n{err}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not finish in 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn two_nodes_on_localhost_train_like_two_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _orchestrator = Guard(
        hier()
            .args(["orchestrator", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let nodes: Vec<Guard> = (0..2)
        .map(|rank| {
            let args = [
                "--nodes".to_string(),
                "2".into(),
                "--node-rank".into(),
                rank.to_string(),
                "--orchestrator".into(),
                format!("ws://127.0.0.1:{port}"),
                "--node-address".into(),
                format!("ws://127.0.0.1:{}", free_port()),
            ];
            Guard(
                train(&tmp.path().join(format!("node{rank}")), &args)
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for (rank, mut node) in nodes.into_iter().enumerate() {
        wait(&mut node, &format!("node {rank}"));
    }
    // rank 0 wrote the run; rank 1 only computed
    assert!(tmp.path().join("node0/checkpoint").is_dir());
    assert!(!tmp.path().join("node1/model.safetensors").exists());

    let local = tmp.path().join("devices2");
    let mut one = Guard(
        train(&local, &["--devices".into(), "2".into()])
            .spawn()
            .unwrap(),
    );
    wait(&mut one, "--devices 2");

    let (a, b) = (weights(&tmp.path().join("node0")), weights(&local));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        for (x, y) in va.iter().zip(vb) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{ka}: {x} (two nodes) vs {y} (two devices)"
            );
        }
    }
}

#[test]
fn bad_parallel_flags_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fails = |extra: &[&str]| -> String {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let out = train(&tmp.path().join("run"), &extra).output().unwrap();
        assert!(!out.status.success(), "{extra:?} unexpectedly succeeded");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!stderr.contains("panicked"), "panicked: {stderr}");
        stderr
    };
    let e = fails(&["--devices", "0"]);
    assert!(e.contains("--devices must be at least 1"), "{e}");
    let e = fails(&["--nodes", "2"]);
    assert!(
        e.contains("--orchestrator") && e.contains("--node-address"),
        "{e}"
    );
    let node = |rank: &str, orchestrator: &str, address: &str| {
        [
            "--nodes",
            "2",
            "--node-rank",
            rank,
            "--orchestrator",
            orchestrator,
            "--node-address",
            address,
        ]
        .map(String::from)
    };
    let e = fails(
        &node("2", "ws://127.0.0.1:1", "ws://127.0.0.1:2")
            .each_ref()
            .map(|s| s.as_str()),
    );
    assert!(e.contains("--node-rank 2 is outside 0..2"), "{e}");
    let e = fails(
        &node("0", "127.0.0.1:1", "ws://127.0.0.1:2")
            .each_ref()
            .map(|s| s.as_str()),
    );
    assert!(
        e.contains("ws://HOST:PORT") && e.contains("--orchestrator"),
        "{e}"
    );
    let e = fails(
        &node("0", "ws://127.0.0.1:1", "ws://127.0.0.1")
            .each_ref()
            .map(|s| s.as_str()),
    );
    assert!(e.contains("--node-address"), "{e}");
}
