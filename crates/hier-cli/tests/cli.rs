//! The CLI contract, checked from outside against the reference fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

fn hier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hier"))
}

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

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "unexpectedly succeeded");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    stderr
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
    run_ok(
        hier()
            .args(["init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&model)
            .args(["--seed", "3"]),
    );
    assert_eq!(a, std::fs::read(model.join("model.safetensors")).unwrap());
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = tmp.path().join("ids.json");
    let out = tmp.path().join("out.safetensors");
    std::fs::write(&ids, "[[1, 2, 3], [4, 5]]").unwrap();
    let e = run_err(
        hier()
            .args(["forward", "--model"])
            .arg(fixture("flat"))
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out),
    );
    assert!(e.contains("same length"), "{e}");
    std::fs::write(&ids, "[[1, 2, 300]]").unwrap();
    let e = run_err(
        hier()
            .args(["forward", "--model"])
            .arg(fixture("flat"))
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out),
    );
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = run_err(
        hier()
            .args(["forward", "--model"])
            .arg(tmp.path().join("nope"))
            .arg("--ids")
            .arg(&ids)
            .arg("--out")
            .arg(&out),
    );
    assert!(e.contains("config.json"), "{e}");
    let e = run_err(
        hier()
            .args(["generate", "--model"])
            .arg(fixture("flat"))
            .args(["--prompt-ids", "1,x"]),
    );
    assert!(e.contains("not an integer"), "{e}");
    let generate = || {
        let mut cmd = hier();
        cmd.args(["generate", "--model"]).arg(fixture("flat"));
        cmd
    };
    let e = run_err(generate().args(["--prompt", ""]));
    assert!(e.contains("the prompt is empty"), "{e}");
    use std::os::unix::ffi::OsStrExt;
    let e = run_err(
        generate()
            .arg("--prompt")
            .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe")),
    );
    assert!(e.contains("invalid UTF-8"), "{e}");
    let e = run_err(
        hier()
            .args(["generate", "--model"])
            .arg(fixture("flat"))
            .args(["--prompt-ids", "1", "--filter-thres", "1.5"]),
    );
    assert!(e.contains("filter_thres"), "{e}");
    let e = run_err(hier().arg("--version").env("HIER_ALLOC_CACHE_MIB", "2GB"));
    assert!(
        e.contains("HIER_ALLOC_CACHE_MIB") && e.contains("whole number"),
        "{e}"
    );
    run_ok(hier().arg("--version").env("HIER_ALLOC_CACHE_MIB", "0"));
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
