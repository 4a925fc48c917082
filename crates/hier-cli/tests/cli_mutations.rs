//! Whole `hier` invocations on mutated input files — configs, id lists, weights, training data —
//! must end in time with success or a clean error: exit 0, or exit 1/2 with `error:` on stderr,
//! never a panic, a signal or a hang. The mutations are seeded, so a failure replays exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{hier, run_ok};

/// xorshift64*: enough randomness for mutations, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `bytes`: truncation, flipped or inserted bytes, a number replaced by
/// an extreme one, or nothing at all.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match rng.below(6) {
        0 => b.truncate(rng.below(b.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let i = rng.below(b.len() + 1);
            let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
        }
        3 => {
            let extreme = [
                "0",
                "-1",
                "1e30",
                "18446744073709551617",
                "null",
                "\"x\"",
                "[]",
                "1.5",
            ];
            let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let i = digits[rng.below(digits.len())];
                let end = (i..b.len())
                    .find(|&j| !b[j].is_ascii_digit())
                    .unwrap_or(b.len());
                let with = extreme[rng.below(extreme.len())].as_bytes().to_vec();
                b.splice(i..end, with);
            }
        }
        4 => b = Vec::new(),
        _ => {}
    }
    b
}

/// Run `cmd` to its end (at most 60 s) and check that it ended cleanly; whether it succeeded.
fn assert_clean(mut cmd: Command, what: &str) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    match status.code() {
        Some(0) => {}
        Some(1 | 2) => assert!(
            stderr.contains("error"),
            "{what}: failed without an error message:\n{stderr}"
        ),
        _ => panic!("{what}: ended with {status}:\n{stderr}"),
    }
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    status.success()
}

const CONFIG: &str = r#"{"num_tokens": 256, "dim": 16, "depth": 1, "seq_len": 16, "heads": 2,
  "dim_head": 8, "hierarchies": [1, 2], "window_sizes": [4, null]}"#;

/// A model directory to mutate copies of.
fn model(dir: &Path) -> PathBuf {
    let config = dir.join("config.json");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.join("model");
    run_ok(
        hier()
            .args(["init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out),
    );
    out
}

/// `cases` mutations of one file of a model directory, each through `hier generate` and
/// `hier eval` on a copy of the directory.
fn mutated_model_file(file: &str, seed: u64, cases: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let good = model(tmp.path());
    let data = tmp.path().join("data.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question. ".repeat(20),
    )
    .unwrap();
    let original = std::fs::read(good.join(file)).unwrap();
    let mut rng = Rng(seed);
    let mut ok = 0;
    for case in 0..cases {
        let dir = tmp.path().join(format!("m{case}"));
        std::fs::create_dir(&dir).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join(file), mutate(&original, &mut rng)).unwrap();
        let what = format!("{file} case {case} (seed {seed})");
        let mut generate = hier();
        generate
            .args([
                "generate",
                "--prompt",
                "to be",
                "--max-new-tokens",
                "4",
                "--model",
            ])
            .arg(&dir);
        ok += assert_clean(generate, &format!("generate, {what}")) as usize;
        let mut eval = hier();
        eval.args(["eval", "--model"])
            .arg(&dir)
            .arg("--data")
            .arg(&data);
        ok += assert_clean(eval, &format!("eval, {what}")) as usize;
    }
    assert_some_passed(ok, 2 * cases);
}

/// Unmutated cases (and harmless mutations) must succeed: the test is not only errors.
fn assert_some_passed(ok: usize, cases: usize) {
    assert!(
        ok > 0 && ok < cases,
        "{ok} of {cases} invocations succeeded"
    );
}

#[test]
fn mutated_configs_of_a_model_directory() {
    mutated_model_file("config.json", 11, 48);
}

#[test]
fn mutated_weights_of_a_model_directory() {
    mutated_model_file("model.safetensors", 12, 48);
}

#[test]
fn mutated_model_configs_for_init() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(13);
    let mut ok = 0;
    for case in 0..96 {
        let config = tmp.path().join(format!("c{case}.json"));
        std::fs::write(&config, mutate(CONFIG.as_bytes(), &mut rng)).unwrap();
        let mut init = hier();
        init.args(["init", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(tmp.path().join(format!("o{case}")));
        ok += assert_clean(init, &format!("init, config case {case} (seed 13)")) as usize;
    }
    assert_some_passed(ok, 96);
}

#[test]
fn mutated_ids_for_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let good = model(tmp.path());
    let ids = b"[[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]]";
    let mut rng = Rng(14);
    let mut ok = 0;
    for case in 0..96 {
        let file = tmp.path().join(format!("ids{case}.json"));
        std::fs::write(&file, mutate(ids, &mut rng)).unwrap();
        let mut forward = hier();
        forward
            .args(["forward", "--model"])
            .arg(&good)
            .arg("--ids")
            .arg(&file);
        forward
            .arg("--out")
            .arg(tmp.path().join(format!("out{case}.safetensors")));
        ok += assert_clean(forward, &format!("forward, ids case {case} (seed 14)")) as usize;
    }
    assert_some_passed(ok, 96);
}

#[test]
fn mutated_training_configs_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = "whether 'tis nobler in the mind to suffer the slings and arrows ".repeat(30);
    let train = format!(
        r#"{{"model": {CONFIG}, "train": {{"batch_size": 2, "max_steps": 1, "validate_every": 1, "valid_batches": 1, "sample_every": 0}}}}"#
    );
    let mut rng = Rng(15);
    let mut ok = 0;
    for case in 0..32 {
        let (config, corpus) = (
            tmp.path().join(format!("t{case}.json")),
            tmp.path().join(format!("d{case}.txt")),
        );
        std::fs::write(&config, mutate(train.as_bytes(), &mut rng)).unwrap();
        std::fs::write(&corpus, mutate(data.as_bytes(), &mut rng)).unwrap();
        let mut cmd = hier();
        cmd.args(["train", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&corpus);
        cmd.arg("--out").arg(tmp.path().join(format!("run{case}")));
        ok += assert_clean(cmd, &format!("train, case {case} (seed 15)")) as usize;
    }
    assert_some_passed(ok, 32);
}
