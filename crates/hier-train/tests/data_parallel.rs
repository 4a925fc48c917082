//! Data parallelism on one machine: two replicas (threads) with averaged gradients train like
//! one device that accumulates both replicas' batches; two replicas sharing each batch train
//! like one device with that batch; a failure stops every replica.
//!
//! burn-collective keeps one collective per process, so these tests take turns.

use std::path::Path;
use std::sync::Mutex;

use burn::backend::{Autodiff, Flex};
use hier_model::weights::state_dict;
use hier_train::metrics::{read, Record};
use hier_train::presets::preset;
use hier_train::{
    train, train_parallel, BatchSplit, Control, Corpus, Replicas, Start, TrainConfig, TrainError,
};

type B = Autodiff<Flex>;

static COLLECTIVE: Mutex<()> = Mutex::new(());

fn tiny(max_steps: u64, grad_accum: usize) -> TrainConfig {
    let mut c = preset("tiny").unwrap();
    c.train.max_steps = max_steps;
    c.train.grad_accum = grad_accum;
    c.train.validate_every = 10;
    c.train.checkpoint_every = 10;
    c
}

fn on_two_replicas(
    config: &TrainConfig,
    corpus: &Corpus,
    dir: &Path,
) -> Result<hier_train::TrainOutcome, TrainError> {
    on_replicas(2, BatchSplit::PerReplica, config, corpus, dir)
}

fn on_replicas(
    n: usize,
    split: BatchSplit,
    config: &TrainConfig,
    corpus: &Corpus,
    dir: &Path,
) -> Result<hier_train::TrainOutcome, TrainError> {
    on_replicas_with(n, split, config, corpus, dir, &Control::default())
}

fn on_replicas_with(
    n: usize,
    split: BatchSplit,
    config: &TrainConfig,
    corpus: &Corpus,
    dir: &Path,
    control: &Control,
) -> Result<hier_train::TrainOutcome, TrainError> {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    burn_collective::reset_collective::<Flex>();
    let devices = vec![Default::default(); n];
    train_parallel::<B>(
        config,
        corpus,
        dir,
        Start::New,
        Replicas {
            devices: &devices,
            cluster: None,
            split,
        },
        control,
    )
}

fn valid_losses(dir: &Path) -> Vec<f64> {
    read(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Valid(v) => Some(v.valid_loss),
            Record::Train(_) => None,
        })
        .collect()
}

fn single_device(config: &TrainConfig, dir: &Path) {
    train::<B>(
        config,
        &Corpus::shakespeare(),
        dir,
        Start::New,
        &Default::default(),
        &Control::default(),
    )
    .unwrap();
}

/// The two runs' weights agree within float rounding, their validation losses too, and they
/// moved away from the initial weights (training was not a no-op).
fn assert_same_run(parallel: &Path, single: &Path, config: &TrainConfig) {
    let load = |dir: &Path| {
        state_dict(&hier_model::model_dir::load::<Flex>(dir, &Default::default()).unwrap())
    };
    let (a, b) = (load(parallel), load(single));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0f32;
    for (key, ta) in &a {
        let tb = &b[key];
        for (x, y) in ta.values.iter().zip(&tb.values) {
            worst = worst.max((x - y).abs() / (1.0 + y.abs()));
        }
    }
    assert!(worst < 1e-4, "weights differ by {worst}");
    let (la, lb) = (valid_losses(parallel), valid_losses(single));
    assert_eq!(la.len(), 2);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-4, "validation {la:?} vs {lb:?}");
    }
    let init = state_dict(
        &hier_model::HierarchicalTransformer::<Flex>::init(
            &config.model,
            config.train.seed,
            &Default::default(),
        )
        .unwrap(),
    );
    let moved = a
        .iter()
        .any(|(k, t)| t.values.iter().zip(&init[k].values).any(|(x, y)| x != y));
    assert!(moved, "training changed nothing");
}

#[test]
fn two_replicas_train_like_one_device_accumulating_both_batches() {
    let parallel = tempfile::tempdir().unwrap();
    let outcome = on_two_replicas(&tiny(20, 1), &Corpus::shakespeare(), parallel.path()).unwrap();
    assert_eq!(outcome.steps, 20);
    let single = tempfile::tempdir().unwrap();
    single_device(&tiny(20, 2), single.path());
    // the same crops and the same averaged gradients; only the order of float additions differs
    assert_same_run(parallel.path(), single.path(), &tiny(20, 1));
}

#[test]
fn replicas_sharing_each_batch_train_like_one_device() {
    // 3 replicas share batches of 8 rows unevenly (2, 3, 3), with accumulation over 2
    let config = tiny(20, 2);
    let shared = tempfile::tempdir().unwrap();
    let split = BatchSplit::Shared;
    let outcome = on_replicas(3, split, &config, &Corpus::shakespeare(), shared.path()).unwrap();
    assert_eq!(outcome.steps, 20);
    let single = tempfile::tempdir().unwrap();
    single_device(&config, single.path());
    assert_same_run(shared.path(), single.path(), &config);
}

#[test]
fn more_replicas_than_rows_is_refused() {
    let mut config = tiny(2, 1);
    config.train.batch_size = 2;
    let dir = tempfile::tempdir().unwrap();
    let corpus = Corpus::shakespeare();
    let e = on_replicas(3, BatchSplit::Shared, &config, &corpus, dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("cannot be shared by 3 replicas"),
        "{e}"
    );
}

#[test]
fn a_non_finite_loss_stops_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = Corpus::from_bytes("zeros", vec![0u8; 10_000]);
    let e = on_two_replicas(&tiny(10, 1), &zeros, dir.path()).unwrap_err();
    assert!(
        matches!(e, TrainError::NonFinite { step: 0, .. }),
        "expected a non-finite loss at step 0, got {e}"
    );
}

#[test]
fn a_run_directory_rank_0_cannot_create_stops_every_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    // only rank 0 creates the directory; the other replica must not wait for it forever
    let e = on_two_replicas(&tiny(10, 1), &Corpus::shakespeare(), &file.join("run")).unwrap_err();
    assert!(
        matches!(e, TrainError::Io { .. } | TrainError::RunDir(_)),
        "{e}"
    );
}

/// Each replica reads its own clock; the first to run out of budget stops both at the same step
/// (a replica that stopped alone would leave the other waiting in the next all-reduce), with
/// rank 0's validation at that step.
#[test]
fn a_budget_stops_every_replica_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control {
        budget: Some(std::time::Duration::from_millis(200)),
        ..Control::default()
    };
    let split = BatchSplit::PerReplica;
    let config = tiny(100_000, 1);
    let corpus = Corpus::shakespeare();
    let outcome = on_replicas_with(2, split, &config, &corpus, dir.path(), &control).unwrap();
    assert!(
        outcome.out_of_time && outcome.steps < 100_000,
        "{outcome:?}"
    );
    let records = read(&dir.path().join("metrics.jsonl")).unwrap();
    assert!(
        matches!(records.last(), Some(Record::Valid(v)) if v.step == outcome.steps),
        "{:?}",
        records.last()
    );
}
