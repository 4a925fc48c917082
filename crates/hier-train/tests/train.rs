//! Training end to end on the `tiny` preset: the validation loss falls; K steps + resume equals
//! N steps bit for bit; a corrupted checkpoint is a clear error.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
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
    let strip = |records: Vec<Record>| -> Vec<Record> {
        records
            .into_iter()
            .map(|r| match r {
                // timing is the one thing allowed to differ
                Record::Train(mut m) => {
                    m.tokens_per_s = 0.0;
                    Record::Train(m)
                }
                Record::Valid(mut m) => {
                    m.elapsed_s = 0.0;
                    Record::Valid(m)
                }
            })
            .collect()
    };
    let (a, b) = (
        strip(records(straight.path())),
        strip(records(resumed.path())),
    );
    assert_eq!(a.len(), b.len());
    assert_eq!(a, b, "resumed metrics differ");
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
