//! Training end to end on the `tiny` preset: the validation loss falls; K steps + resume equals
//! N steps bit for bit; a corrupted checkpoint is a clear error.

use std::path::Path;
use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use hier_model::files::OutDirError;
use hier_train::checkpoint::CheckpointError;
use hier_train::metrics::{read, Record};
use hier_train::presets::preset;
use hier_train::{train, Control, Corpus, Start, TrainConfig, TrainError, TrainOutcome};

type B = Autodiff<Flex>;

fn tiny(max_steps: u64) -> TrainConfig {
    let mut c = preset("tiny").unwrap();
    c.train.max_steps = max_steps;
    c.train.validate_every = 10;
    c.train.checkpoint_every = 10;
    c
}

fn run(
    config: &TrainConfig,
    dir: &Path,
    start: Start,
    stop_at: Option<u64>,
) -> Result<TrainOutcome, TrainError> {
    let control = Control {
        interrupt: None,
        stop_at,
        budget: None,
    };
    train::<B>(
        config,
        &Corpus::shakespeare(),
        dir,
        start,
        &Default::default(),
        &control,
    )
}

fn records(dir: &Path) -> Vec<Record> {
    read(&dir.join("metrics.jsonl")).unwrap()
}

#[test]
fn validation_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(&tiny(40), dir.path(), Start::New, None).unwrap();
    assert_eq!(outcome.steps, 40);
    let losses: Vec<f64> = records(dir.path())
        .into_iter()
        .filter_map(|r| match r {
            Record::Valid(v) => Some(v.valid_loss),
            Record::Train(_) => None,
        })
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(
        losses[3] < losses[0] - 0.2,
        "validation loss did not fall: {losses:?}"
    );
    assert!(losses[3] < 3.6, "{losses:?}"); // a uniform byte guess is ln 256 = 5.55 nats
                                            // the run directory is a model directory
    hier_model::model_dir::load::<Flex>(dir.path(), &Default::default()).unwrap();
}

#[test]
fn resume_continues_bit_exactly() {
    let straight = tempfile::tempdir().unwrap();
    run(&tiny(30), straight.path(), Start::New, None).unwrap();

    // 17 steps (not a checkpoint boundary), stop, resume to 30
    let resumed = tempfile::tempdir().unwrap();
    let first = run(&tiny(30), resumed.path(), Start::New, Some(17)).unwrap();
    assert_eq!(first.steps, 17);
    let second = run(&tiny(30), resumed.path(), Start::Resume, None).unwrap();
    assert_eq!(second.steps, 30);

    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        weights(straight.path()) == weights(resumed.path()),
        "resumed weights differ"
    );
    let (a, b) = (
        metrics_without_timing(straight.path()),
        metrics_without_timing(resumed.path()),
    );
    assert_eq!(a.len(), 30 + 3);
    assert!(a == b, "resumed metrics differ:\n{a:?}\n{b:?}");
}

/// Train with a wall-clock budget.
fn run_for(config: &TrainConfig, dir: &Path, budget: Duration) -> TrainOutcome {
    let control = Control {
        budget: Some(budget),
        ..Control::default()
    };
    let corpus = Corpus::shakespeare();
    train::<B>(
        config,
        &corpus,
        dir,
        Start::New,
        &Default::default(),
        &control,
    )
    .unwrap()
}

/// A spent budget stops the run after the step in progress, with a validation at that step
/// (the end of its curve) and a checkpoint that `--resume` continues on the unchanged schedule.
#[test]
fn a_spent_budget_stops_with_a_validation_and_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_for(&tiny(20), dir.path(), Duration::ZERO);
    assert_eq!((outcome.steps, outcome.out_of_time), (1, true));
    assert!(!outcome.interrupted);
    match records(dir.path()).last() {
        Some(Record::Valid(v)) => assert_eq!(v.step, 1),
        other => panic!("the metrics do not end with a validation at step 1: {other:?}"),
    }
    assert!(outcome.last_valid.is_some());
    let resumed = run(&tiny(20), dir.path(), Start::Resume, None).unwrap();
    assert_eq!((resumed.steps, resumed.out_of_time), (20, false));
}

/// A budget of a fraction of a second stops a long run early, after the budget by the metrics'
/// own clock (`elapsed_s` of the last validation).
#[test]
fn a_budget_stops_a_run_on_the_metrics_clock() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Duration::from_millis(300);
    let outcome = run_for(&tiny(100_000), dir.path(), budget);
    assert!(
        outcome.out_of_time && outcome.steps < 100_000,
        "{outcome:?}"
    );
    let Some(Record::Valid(last)) = records(dir.path()).pop() else {
        panic!("no final validation");
    };
    assert_eq!(last.step, outcome.steps);
    assert!(last.elapsed_s >= budget.as_secs_f64(), "{last:?}");
}

/// The lines of `metrics.jsonl` as text (not parsed: the floats' last digits count), without
/// the timing fields `tokens_per_s` and `elapsed_s`, the only ones allowed to differ.
fn metrics_without_timing(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let fields = line
                .trim_start_matches('{')
                .trim_end_matches('}')
                .split(',');
            let timing =
                |f: &&str| f.starts_with("\"tokens_per_s\"") || f.starts_with("\"elapsed_s\"");
            fields.filter(|f| !timing(f)).collect::<Vec<_>>().join(",")
        })
        .collect()
}

/// A new run never writes into a directory holding anything (a model directory, or a run
/// whose checkpoint was removed): refused, naming what is there, with nothing changed.
#[test]
fn a_new_run_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let model =
        hier_model::HierarchicalTransformer::<Flex>::init(&tiny(1).model, 3, &Default::default())
            .unwrap();
    hier_model::model_dir::save(&model, dir.path()).unwrap();
    let before = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let e = run(&tiny(5), dir.path(), Start::New, None).unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, TrainError::RunDir(OutDirError::NotEmpty { .. }))
            && message.contains("config.json")
            && message.contains("--resume"),
        "{message}"
    );
    assert_eq!(
        before,
        std::fs::read(dir.path().join("model.safetensors")).unwrap()
    );

    let finished = tempfile::tempdir().unwrap();
    run(&tiny(5), finished.path(), Start::New, None).unwrap();
    std::fs::remove_dir_all(finished.path().join("checkpoint")).unwrap();
    let config = std::fs::read(finished.path().join("config.json")).unwrap();
    let e = run(&tiny(5), finished.path(), Start::New, None).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    assert_eq!(
        config,
        std::fs::read(finished.path().join("config.json")).unwrap()
    );
}

/// While a job writes a run directory it is locked: a second job into it, new or resumed,
/// fails at once naming the directory.
#[test]
fn a_locked_run_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lock = hier_model::files::lock_dir(dir.path()).unwrap();
    let e = run(&tiny(5), dir.path(), Start::New, None).unwrap_err();
    assert!(
        matches!(e, TrainError::RunDir(OutDirError::Locked { .. }))
            && e.to_string().contains("another process"),
        "{e}"
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    drop(lock);
    run(&tiny(5), dir.path(), Start::New, Some(3)).unwrap();
    let _lock = hier_model::files::lock_dir(dir.path()).unwrap();
    let e = run(&tiny(5), dir.path(), Start::Resume, None).unwrap_err();
    assert!(
        matches!(e, TrainError::RunDir(OutDirError::Locked { .. })),
        "{e}"
    );
}

/// `--resume` with a model config other than the checkpoint's (an edited train.json) is
/// refused, naming the keys, before anything is trained or written.
#[test]
fn resume_refuses_a_model_config_other_than_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    run(&tiny(10), dir.path(), Start::New, Some(5)).unwrap();
    let config_json = std::fs::read(dir.path().join("config.json")).unwrap();
    let mut edited = tiny(10);
    edited.model.depth = 3;
    let e = run(&edited, dir.path(), Start::Resume, None).unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(
            e,
            TrainError::Checkpoint(CheckpointError::ConfigMismatch { .. })
        ) && message.contains("`depth`")
            && message.contains("train.json"),
        "{message}"
    );
    assert_eq!(
        config_json,
        std::fs::read(dir.path().join("config.json")).unwrap()
    );
    run(&tiny(10), dir.path(), Start::Resume, None).unwrap();
}

/// A crash's leftovers (hier's own temporary names) are removed at the next start; other
/// files are kept.
#[test]
fn leftovers_of_a_crash_are_removed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    run(&tiny(10), dir.path(), Start::New, Some(5)).unwrap();
    let leftovers = [
        ".config.json.tmp-4000001",
        ".model.safetensors.tmp-4000002",
        ".train.json.tmp-4000003",
    ];
    for name in leftovers {
        std::fs::write(dir.path().join(name), b"partial").unwrap();
    }
    std::fs::create_dir(dir.path().join(".checkpoint.tmp")).unwrap();
    std::fs::write(dir.path().join(".checkpoint.tmp/model.mpk"), b"part").unwrap();
    let users = ["notes.txt", ".notes.txt.tmp-5", "config.json.tmp-5"];
    for name in users {
        std::fs::write(dir.path().join(name), b"mine").unwrap();
    }
    run(&tiny(10), dir.path(), Start::Resume, None).unwrap();
    for name in leftovers.iter().chain(&[".checkpoint.tmp"]) {
        assert!(!dir.path().join(name).exists(), "{name} left behind");
    }
    for name in users {
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"mine");
    }

    // a fresh directory holding only leftovers of a crashed first write counts as empty
    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(fresh.path().join(".config.json.tmp-4000001"), b"x").unwrap();
    run(&tiny(2), fresh.path(), Start::New, None).unwrap();
}

#[test]
fn a_run_killed_before_its_first_checkpoint_resumes_from_the_start() {
    // what such a run leaves: its train.json (and metrics of the steps it did), no checkpoint
    let (killed, whole) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&tiny(10), killed.path(), Start::New, None).unwrap();
    for name in ["checkpoint", "config.json", "model.safetensors"] {
        let path = killed.path().join(name);
        match path.is_dir() {
            true => std::fs::remove_dir_all(path).unwrap(),
            false => std::fs::remove_file(path).unwrap(),
        }
    }
    let outcome = run(&tiny(10), killed.path(), Start::Resume, None).unwrap();
    assert_eq!(outcome.steps, 10);
    run(&tiny(10), whole.path(), Start::New, None).unwrap();
    assert_eq!(
        metrics_without_timing(killed.path()),
        metrics_without_timing(whole.path())
    );
}

#[test]
fn corrupted_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    run(&tiny(10), dir.path(), Start::New, None).unwrap();
    let optimizer = dir.path().join("checkpoint/optimizer.mpk");
    let mut bytes = std::fs::read(&optimizer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&optimizer, bytes).unwrap();
    let e = run(&tiny(20), dir.path(), Start::Resume, None).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("corrupted") && message.contains("optimizer.mpk"),
        "{message}"
    );

    std::fs::write(dir.path().join("checkpoint/state.json"), "{ not json").unwrap();
    let e = run(&tiny(20), dir.path(), Start::Resume, None).unwrap_err();
    assert!(e.to_string().contains("state.json"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = run(&tiny(20), empty.path(), Start::Resume, None).unwrap_err();
    assert!(e.to_string().contains("--out"), "{e}");
}

#[test]
fn data_shorter_than_a_crop_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = Corpus::from_bytes("short", b"only a few bytes of text here".to_vec());
    let e = train::<B>(
        &tiny(5),
        &corpus,
        dir.path(),
        Start::New,
        &Default::default(),
        &Control::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("seq_len"), "{e}");
}

#[test]
fn a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    run(&tiny(10), dir.path(), Start::New, Some(5)).unwrap();
    let before = std::fs::read(dir.path().join("checkpoint/model.mpk")).unwrap();
    // every label is the ignore_index (byte 0): the cross-entropy is 0/0 = NaN
    let zeros = Corpus::from_bytes("zeros", vec![0u8; 10_000]);
    let control = Control::default();
    let e = train::<B>(
        &tiny(10),
        &zeros,
        dir.path(),
        Start::Resume,
        &Default::default(),
        &control,
    )
    .unwrap_err();
    let TrainError::NonFinite {
        step,
        last_checkpoint,
        ..
    } = &e
    else {
        panic!("expected a non-finite loss, got {e}")
    };
    assert_eq!((*step, *last_checkpoint), (5, 5));
    let message = e.to_string();
    assert!(
        message.contains("last good checkpoint (step 5)") && message.contains("learning rate"),
        "{message}"
    );
    assert_eq!(
        before,
        std::fs::read(dir.path().join("checkpoint/model.mpk")).unwrap(),
        "checkpoint untouched"
    );
    hier_model::model_dir::load::<Flex>(dir.path(), &Default::default()).unwrap();
}
