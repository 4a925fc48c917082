//! With no `--devices`, `hier train` on the CPU runs one replica per core sharing each batch; the
//! run must follow the one-replica run (`--devices 1`) within float rounding.

use std::path::Path;
use std::process::Command;

fn train(out: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hier"))
        .args([
            "train",
            "--preset",
            "tiny",
            "--max-steps",
            "20",
            "--validate-every",
            "5",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "hier train {extra:?} failed:\n{stderr}"
    );
    stderr
}

/// (step, validation loss) of every validation in a run's metrics.
fn validations(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("valid_loss")?.as_f64()?)))
        .collect()
}

#[test]
fn default_flags_train_like_one_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let (auto, one) = (tmp.path().join("auto"), tmp.path().join("one"));
    let said = train(&auto, &[]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        assert!(said.contains("replicas sharing each batch"), "{said}");
    }
    train(&one, &["--devices", "1"]);
    let (a, b) = (validations(&auto), validations(&one));
    let steps = |v: &[(u64, f64)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(steps(&a), [5, 10, 15, 20]);
    assert_eq!(steps(&a), steps(&b));
    assert!(a[3].1 < a[0].1, "the default run did not learn: {a:?}");
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "validation losses {a:?} vs {b:?}");
    }
}
