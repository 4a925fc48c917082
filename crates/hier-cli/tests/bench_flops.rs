//! `hier bench` reports model FLOPs per token (`hier_model::flops`), the FLOP/s achieved, and
//! with `--peak-tflops` the model FLOPs utilisation.

mod common;

use common::{hier, run_err, run_ok};

fn bench_json(mode: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = hier();
    cmd.args([
        "bench", "--preset", "tiny", "--mode", mode, "--batch", "2", "--steps", "2", "--warmup",
        "0", "--json",
    ])
    .args(extra);
    run_ok(&mut cmd)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_mode_reports_model_flops_and_utilisation() {
    for mode in ["train", "infer", "generate"] {
        for row in bench_json(mode, &["--peak-tflops", "0.5"]) {
            let per_token = row["model_flops_per_token"].as_f64().unwrap();
            let tokens = row["tokens_per_s"].as_f64().unwrap();
            let achieved = row["flops_per_s"].as_f64().unwrap();
            assert!(per_token > 0.0, "{row}");
            assert!(
                (achieved - per_token * tokens).abs() <= 1e-9 * achieved,
                "{row}"
            );
            let mfu = row["mfu"].as_f64().unwrap();
            assert!(
                (mfu - achieved / 0.5e12).abs() <= 1e-9 * mfu.max(1e-30),
                "{row}"
            );
        }
    }
    // a training step is three forward passes and the loss heads
    let train = bench_json("train", &[])[0]["model_flops_per_token"]
        .as_f64()
        .unwrap();
    let infer = &bench_json("infer", &[])[0];
    assert!(train > 3.0 * infer["model_flops_per_token"].as_f64().unwrap());
    assert!(infer["mfu"].is_null(), "{infer}");
}

#[test]
fn the_table_shows_utilisation_only_with_a_peak() {
    let args = [
        "bench", "--preset", "tiny", "--mode", "infer", "--batch", "1", "--steps", "1", "--warmup",
        "0",
    ];
    let plain = run_ok(hier().args(args));
    assert!(
        plain.contains("model MFLOP/token") && !plain.contains("MFU"),
        "{plain}"
    );
    let with_peak = run_ok(hier().args(args).args(["--peak-tflops", "1"]));
    assert!(with_peak.contains("MFU"), "{with_peak}");
    for bad in ["0", "-1", "nan"] {
        let e = run_err(hier().args(args).arg(format!("--peak-tflops={bad}")));
        assert!(e.contains("--peak-tflops"), "{e}");
    }
}
