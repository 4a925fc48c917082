//! `hier compare` from outside: configs × seeds under a time budget, its tables, JSON and plots,
//! the same re-plotted from the JSON; bad budgets and seeds refused before anything is written.

use std::path::Path;

mod common;
use common::{hier, run_err, run_ok};

/// The tiny preset as a training config file, with `depth`.
fn write_config(dir: &Path, name: &str, depth: usize) -> std::path::PathBuf {
    let mut config = hier_train::presets::preset("tiny").unwrap();
    config.model.depth = depth;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

#[test]
fn two_configs_times_two_seeds_under_a_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        write_config(tmp.path(), "a", 1),
        write_config(tmp.path(), "b", 2),
    );
    let out = tmp.path().join("cmp");
    let md = run_ok(
        hier()
            .args(["compare", "--steps", "100000", "--budget-seconds", "0.4"])
            .args(["--validate-every", "5", "--seeds", "3", "4", "--configs"])
            .args([&a, &b])
            .arg("--out")
            .arg(&out),
    );
    for name in ["a", "b"] {
        assert!(md.contains(&format!("| {name} | 2 |")), "{md}");
        for seed in [3, 4] {
            assert!(md.contains(&format!("| {name} | {seed} |")), "{md}");
            let run = out.join(name).join(format!("seed-{seed}"));
            assert!(run.join("model.safetensors").is_file(), "{run:?}");
        }
    }
    for file in [
        "compare.md",
        "compare-steps.svg",
        "compare-seconds.svg",
        "compare-flops.svg",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        let steps = r["steps"].as_u64().unwrap();
        // the budget stopped it, with a validation at its last step
        assert!(steps < 100_000, "{r}");
        let last = r["curve"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["step"].as_u64(), Some(steps), "{r}");
        assert!(last["seconds"].as_f64().unwrap() >= 0.4, "{r}");
        assert!(r["flops_per_token"].as_f64().unwrap() > 0.0, "{r}");
        let flops = steps as f64
            * r["tokens_per_step"].as_f64().unwrap()
            * r["flops_per_token"].as_f64().unwrap();
        assert_eq!(last["flops"].as_f64(), Some(flops), "{r}");
    }
    replots_from_the_json_alone(&out, &md);
}

/// `--from` re-tabulates and re-plots the runs of `out/compare.json` without training: the same
/// tables, JSON and plots; a comparison given twice is refused.
fn replots_from_the_json_alone(out: &Path, md: &str) {
    let json = out.join("compare.json");
    let again = out.with_file_name("again");
    let md_again = run_ok(
        hier()
            .args(["compare", "--from"])
            .arg(&json)
            .arg("--out")
            .arg(&again),
    );
    assert_eq!(md_again, md);
    for file in [
        "compare.md",
        "compare.json",
        "compare-steps.svg",
        "compare-flops.svg",
    ] {
        let read = |dir: &Path| std::fs::read(dir.join(file)).unwrap();
        assert!(read(out) == read(&again), "{file} differs");
    }
    assert!(!again.join("a").exists(), "nothing was trained");
    let err = run_err(
        hier()
            .args(["compare", "--from"])
            .args([&json, &json])
            .arg("--out")
            .arg(out.with_file_name("twice")),
    );
    assert!(
        err.contains("run `a` seed 3 is in two of the --from files"),
        "{err}"
    );
    let err = run_err(
        hier()
            .args(["compare", "--from"])
            .arg(&json)
            .args(["--steps", "5"]),
    );
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn bad_budgets_and_seeds_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_config(tmp.path(), "a", 1);
    let out = tmp.path().join("cmp");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--budget-seconds", "0"],
            "--budget-seconds 0 must be a positive number",
        ),
        (
            &["--budget-seconds", "-3"],
            "--budget-seconds -3 must be a positive number",
        ),
        (
            &["--budget-seconds", "NaN"],
            "--budget-seconds NaN must be a positive number",
        ),
        (
            &["--budget-seconds", "1e300"],
            "--budget-seconds 1e300 must be",
        ),
        (
            &["--seeds", "1", "2", "1"],
            "seed 1 is given twice in --seeds",
        ),
        (&["--seeds"], "--seeds"),
    ];
    for (flags, message) in cases {
        let e = run_err(
            hier()
                .args(["compare", "--steps", "5", "--configs"])
                .arg(&a)
                .arg("--out")
                .arg(&out)
                .args(flags),
        );
        assert!(e.contains(message), "{flags:?}: {e}");
        assert!(!out.exists(), "{flags:?} wrote {out:?}");
    }
}
