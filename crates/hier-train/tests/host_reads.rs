//! Device-to-host reads of a training run, counted by `hier_model::host` (clippy.toml routes
//! every read of the library through it): the step losses and gradient norms are read once per
//! logging interval, a validation once, and nothing else but the model directory written at the
//! checkpoint.

use burn::backend::{Autodiff, Flex};
use hier_model::host::count_reads;
use hier_model::model_dir;
use hier_train::metrics::{read, Record};
use hier_train::presets::preset;
use hier_train::trainer::LOG_EVERY;
use hier_train::{train, Control, Corpus, Start};

type B = Autodiff<Flex>;

#[test]
fn training_reads_once_per_logging_interval() {
    let steps = 3 * LOG_EVERY;
    let mut config = preset("tiny").unwrap();
    config.train.max_steps = steps;
    config.train.validate_every = steps;
    config.train.checkpoint_every = steps;
    config.train.sample_every = 0;
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let (outcome, reads) = count_reads(|| {
        let corpus = Corpus::shakespeare();
        let control = Control::default();
        train::<B>(&config, &corpus, dir.path(), Start::New, &device, &control).unwrap()
    });
    assert_eq!(outcome.steps, steps);
    // the model directory written with the checkpoint reads every parameter: counted apart
    let model = model_dir::load::<Flex>(dir.path(), &device).unwrap();
    let copy = tempfile::tempdir().unwrap();
    let (_, save_reads) = count_reads(|| model_dir::save(&model, &copy.path().join("m")).unwrap());
    let intervals = steps / LOG_EVERY;
    let validations = 1;
    assert_eq!(
        reads,
        intervals + validations + save_reads,
        "{intervals} intervals, {validations} validation, {save_reads} reads saving the model"
    );
    // still a metrics line per step
    let records = read(&dir.path().join("metrics.jsonl")).unwrap();
    let train_lines = records
        .iter()
        .filter(|r| matches!(r, Record::Train(_)))
        .count();
    assert_eq!(train_lines as u64, steps);
}
