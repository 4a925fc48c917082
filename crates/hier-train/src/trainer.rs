//! The training loop: random crops, gradient accumulation, global-norm clipping, Adam with
//! warm-up + cosine, validation in bits per character, samples, checkpoints, resume.
//!
//! It is driven by hand from Burn's building blocks (optimizer, gradient accumulator, records)
//! rather than burn-train's epoch-based learner, because resuming must continue bit-exactly
//! mid-schedule and the reference clips the *global* gradient norm.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Float, Int, Tensor, TensorData};
use hier_model::cache::generate_cached;
use hier_model::files::{DirLock, PathIoError};
use hier_model::generate::Sampler;
use hier_model::{host, model_dir, ForwardOptions, HierarchicalTransformer, Losses};
use thiserror::Error;

use crate::adam::{AdamOptimizer, FusedAdam};
use crate::checkpoint::{self, CheckpointError};
use crate::clip::clip_global_norm;
use crate::data::{random_crops, Corpus, DataError, Split};
use crate::metrics::{MetricsLog, Record, StepMetrics, ValidMetrics};
use crate::options::{OptionsError, TrainConfig, TrainOptions};
use crate::parallel::{on_replicas, BatchSplit, ParallelError, Peer, Replicas, Shard};
use crate::progress::Progress;
use crate::schedule::learning_rate;

/// Why a training run could not start or stopped early.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The model config is invalid.
    #[error(transparent)]
    Config(#[from] hier_model::ConfigError),
    /// The training options are invalid.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The corpus cannot be read or is too short.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The checkpoint cannot be written or resumed from.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The run directory cannot be claimed (not empty, locked, ...).
    #[error(transparent)]
    RunDir(#[from] hier_model::files::OutDirError),
    /// The model refused its input (e.g. too few positions for the rollouts).
    #[error(transparent)]
    Input(#[from] hier_model::InputError),
    /// The model directory cannot be written.
    #[error(transparent)]
    Model(#[from] hier_model::LoadError),
    /// Reading or writing the metrics log failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a value back from the device failed.
    #[error(transparent)]
    Read(#[from] hier_model::host::ReadError),
    /// Data-parallel set-up or communication failed.
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
    /// The loss became NaN or infinite; nothing of that step was saved.
    #[error("the loss became {value} at step {step}; stopped without saving, the last good checkpoint (step {last_checkpoint}) is kept — lower the learning rate or check the data")]
    NonFinite {
        /// Steps done before the one whose loss was not finite.
        step: u64,
        /// The loss.
        value: f64,
        /// The step of the checkpoint kept in the run directory.
        last_checkpoint: u64,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Optimizer steps done in total (including those before a resume).
    pub steps: u64,
    /// The last validation: (loss, bits per character).
    pub last_valid: Option<(f64, f64)>,
    /// Training tokens per second over this process's steps.
    pub tokens_per_s: f64,
    /// Stopped early by the stop flag (Ctrl-C); a checkpoint was written.
    pub interrupted: bool,
    /// Stopped early because [`Control::budget`] ran out; a checkpoint was written and a
    /// validation ran at the last step.
    pub out_of_time: bool,
}

type Model<B> = HierarchicalTransformer<B>;

/// Where a run starts.
pub enum Start {
    /// A new run: `config` is written into the run directory.
    New,
    /// Continue the run directory's checkpoint with `config` (its `train.json`, possibly with a
    /// longer `max_steps`).
    Resume,
}

/// When a run stops before `max_steps`.
#[derive(Default)]
pub struct Control<'a> {
    /// Polled after every step (set by Ctrl-C): checkpoint and return `interrupted`.
    pub interrupt: Option<&'a AtomicBool>,
    /// Checkpoint and stop after this step, without changing the schedule (which is set by
    /// `max_steps`); `--resume` continues from there.
    pub stop_at: Option<u64>,
    /// A wall-clock budget for this process's training loop, measured as the metrics'
    /// `elapsed_s` (from the first step, validations and checkpoints included, set-up not): the
    /// last step is the first whose forward and backward pass end at or after it. That step is
    /// validated and checkpointed, like the last of `max_steps`; the schedule is unchanged.
    /// With replicas, the first replica whose clock runs out stops them all at the same step.
    pub budget: Option<Duration>,
}

/// Train `config` on `corpus` into `run_dir` on one device.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    corpus: &Corpus,
    run_dir: &Path,
    start: Start,
    device: &B::Device,
    control: &Control,
) -> Result<TrainOutcome, TrainError> {
    run::<B>(config, corpus, run_dir, &start, device, control, None)
}

/// Data-parallel training: one replica per entry of `replicas.devices` (a thread each) and,
/// with `replicas.cluster`, per node. With [`BatchSplit::PerReplica`], `batch_size` is per replica: replica
/// `r` of `world` draws the crops that micro-batch `r * grad_accum + k` would draw on one
/// device, so `world` replicas with `grad_accum` `a` see the batches of one device with
/// `grad_accum` `world * a`. With [`BatchSplit::Shared`] the replicas split each micro-batch
/// of one device between them and the run follows that device's (on the CPU, one replica per
/// core: [`crate::cpu_replicas`]). Global rank 0 validates, samples and writes the run
/// directory.
pub fn train_parallel<B: AutodiffBackend>(
    config: &TrainConfig,
    corpus: &Corpus,
    run_dir: &Path,
    start: Start,
    replicas: Replicas<'_, B::Device>,
    control: &Control,
) -> Result<TrainOutcome, TrainError> {
    let Replicas {
        devices,
        cluster,
        split,
    } = replicas;
    if devices.len() == 1 && cluster.is_none() {
        return train::<B>(config, corpus, run_dir, start, &devices[0], control);
    }
    let world = devices.len() * cluster.map_or(1, |c| c.nodes);
    // fail here, not in every replica after set-up
    split.shard(0, world, config.train.batch_size, config.train.grad_accum)?;
    if devices.is_empty() {
        return Err(ParallelError::NoDevices.into());
    }
    if let Some(cluster) = cluster {
        // fail here, not in one replica while the others wait for it
        cluster.config(devices.len())?;
    }
    let start = &start;
    let results =
        on_replicas::<B::InnerBackend, _, TrainError, _>(devices, cluster, |peer, device| {
            run::<B>(
                config,
                corpus,
                run_dir,
                start,
                device,
                control,
                Some((peer, split)),
            )
        });
    // rank 0's error says why; the others only say that they stopped with it
    let mut results = results.into_iter();
    let first = results.next().expect("at least one device");
    match first {
        Err(e) => Err(e),
        Ok(outcome) => results.find_map(Result::err).map_or(Ok(outcome), Err),
    }
}

fn run<B: AutodiffBackend>(
    config: &TrainConfig,
    corpus: &Corpus,
    run_dir: &Path,
    start: &Start,
    device: &B::Device,
    control: &Control,
    parallel: Option<(&Peer, BatchSplit)>,
) -> Result<TrainOutcome, TrainError> {
    let peer = parallel.map(|(p, _)| p);
    // rank 0 (or the only replica) writes the run directory and reports
    let writer = peer.is_none_or(|p| p.rank == 0);
    let spec = config.model.validate()?;
    let o = &config.train;
    o.validate()?;
    let (shard, step_rows) = shard_of(o, parallel)?;
    corpus.check_len(spec.seq_len)?;
    let set_up = set_up::<B>(config, run_dir, start, device, writer);
    // the lock is held until the run ends: no second job writes this run directory meanwhile
    let SetUp {
        model,
        optim,
        first_step,
        metrics,
        lock: _lock,
    } = agree::<B, _>(peer, set_up, device)?;
    let train_data = corpus.split(Split::Train)?;
    let valid_data = corpus.split(Split::Valid)?;
    // the batches are uploaded unchecked (forward_loss reads nothing back): check the bytes here
    check_bytes(train_data, spec.num_tokens)?;
    check_bytes(valid_data, spec.num_tokens)?;
    let progress = match writer {
        true => Progress::new(first_step, o.max_steps, 10),
        false => Progress::Silent,
    };
    progress.println(&format!(
        "training {} parameters on {} ({} train / {} valid bytes), steps {first_step}..{}{}",
        burn::module::Module::num_params(&model),
        corpus.name(),
        train_data.len(),
        valid_data.len(),
        o.max_steps,
        replicas_note(parallel),
    ));
    let job = Job {
        o,
        run_dir,
        device,
        control,
        peer,
        shard,
        train_data,
        valid_data,
        crop: spec.seq_len + 1,
        tokens_per_step: (step_rows * o.grad_accum * spec.seq_len) as f64,
        progress,
        started: Instant::now(),
    };
    job.train(model, optim, first_step, metrics)
}

/// Every byte of `data` must be a token of the model's vocabulary `0..num_tokens`.
fn check_bytes(data: &[u8], num_tokens: usize) -> Result<(), hier_model::InputError> {
    match data.iter().position(|&b| b as usize >= num_tokens) {
        Some(position) => Err(hier_model::InputError::OutOfVocabulary {
            id: data[position] as i64,
            position,
            num_tokens,
        }),
        None => Ok(()),
    }
}

/// This replica's rows of each micro-batch, and the crops all replicas together train on per
/// micro-batch.
fn shard_of(
    o: &TrainOptions,
    parallel: Option<(&Peer, BatchSplit)>,
) -> Result<(Shard, usize), TrainError> {
    let shard = match parallel {
        Some((p, split)) => split.shard(p.rank, p.world, o.batch_size, o.grad_accum)?,
        None => BatchSplit::Shared.shard(0, 1, o.batch_size, o.grad_accum)?,
    };
    let step_rows = match parallel {
        Some((p, BatchSplit::PerReplica)) => p.world * o.batch_size,
        _ => o.batch_size,
    };
    Ok((shard, step_rows))
}

fn replicas_note(parallel: Option<(&Peer, BatchSplit)>) -> String {
    match parallel {
        None => String::new(),
        Some((p, BatchSplit::Shared)) => format!(", {} replicas sharing each batch", p.world),
        Some((p, BatchSplit::PerReplica)) => format!(", {} data-parallel replicas", p.world),
    }
}

type Optim<B> = AdamOptimizer<Model<B>, B>;

/// A replica at the first step this process trains.
struct SetUp<B: AutodiffBackend> {
    model: Model<B>,
    optim: Optim<B>,
    first_step: u64,
    /// Rank 0's metrics log, kept up to `first_step`.
    metrics: Option<MetricsLog>,
    /// Rank 0's lock on the run directory.
    lock: Option<DirLock>,
}

/// Claim the run directory (rank 0), build a new model or load the checkpoint, and record the
/// run's configuration.
fn set_up<B: AutodiffBackend>(
    config: &TrainConfig,
    run_dir: &Path,
    start: &Start,
    device: &B::Device,
    writer: bool,
) -> Result<SetUp<B>, TrainError> {
    let lock = match writer {
        true => Some(crate::run_dir::claim(run_dir, start)?),
        false => None,
    };
    let adam = FusedAdam::default();
    // a run that never reached its first checkpoint starts again, as a new one would
    let fresh = matches!(start, Start::New) || checkpoint::started_without_checkpoint(run_dir);
    let (model, optim, first_step) = if fresh {
        let model = Model::<B>::init(&config.model, config.train.seed, device)?;
        (model, adam.init::<B, Model<B>>(), 0)
    } else {
        let model = Model::<B>::new(&config.model, device)?;
        let optim = adam.init::<B, Model<B>>();
        let (model, optim, state) = checkpoint::load(run_dir, &config.model, model, optim, device)?;
        (model, optim, state.step)
    };
    if writer {
        // on resume, what --resume changed (max_steps, validate/sample/checkpoint every) holds
        // for the rest of the run and for the next --resume
        checkpoint::write_train_config(run_dir, config)?;
    }
    let metrics = match writer {
        true => Some(MetricsLog::open(run_dir, Some(first_step)).map_err(TrainError::at(run_dir))?),
        false => None,
    };
    Ok(SetUp {
        model,
        optim,
        first_step,
        metrics,
        lock,
    })
}

impl PathIoError for TrainError {
    fn from_io(path: String, source: std::io::Error) -> Self {
        TrainError::Io { path, source }
    }
}

/// The six loss components of one step, each the mean over the step's micro-batches (and
/// replicas).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct StepLosses {
    total: f64,
    ce: f64,
    next_latent: f64,
    recon: f64,
    prophet: f64,
    hierarchical_ar: f64,
}

impl StepLosses {
    const LEN: usize = 6;

    /// One micro-batch's components `[LEN]` on the device, in the order of [`Self::from_slice`],
    /// detached from the graph.
    fn components<B: AutodiffBackend>(losses: &Losses<B>) -> Tensor<B::InnerBackend, 1> {
        let parts = [
            &losses.total,
            &losses.ce,
            &losses.next_latent,
            &losses.recon,
            &losses.prophet,
            &losses.hierarchical_ar,
        ];
        Tensor::cat(parts.iter().map(|t| (*t).clone().inner()).collect(), 0)
    }

    /// The mean over the micro-batches of `values` (`parts` rows of [`Self::LEN`] components, as
    /// read from the device), summed in f64 in micro-batch order.
    fn mean_of(values: &[f32], parts: usize) -> Self {
        let mut sums = Self::default();
        for row in values.chunks(Self::LEN).take(parts) {
            let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            sums.add_share(&Self::from_slice(&row), parts);
        }
        sums
    }

    /// Add `part / parts`: one micro-batch's share of the step's mean.
    fn add_share(&mut self, part: &Self, parts: usize) {
        let parts = parts as f64;
        self.total += part.total / parts;
        self.ce += part.ce / parts;
        self.next_latent += part.next_latent / parts;
        self.recon += part.recon / parts;
        self.prophet += part.prophet / parts;
        self.hierarchical_ar += part.hierarchical_ar / parts;
    }

    /// The first [`Self::LEN`] values of `values`: total, ce, next-latent, recon, prophet,
    /// hierarchical AR.
    fn from_slice(values: &[f64]) -> Self {
        Self {
            total: values[0],
            ce: values[1],
            next_latent: values[2],
            recon: values[3],
            prophet: values[4],
            hierarchical_ar: values[5],
        }
    }

    fn metrics(self, step: u64, lr: f64, grad_norm: f64, tokens_per_s: f64) -> StepMetrics {
        StepMetrics {
            step,
            loss: self.total,
            ce_loss: self.ce,
            next_latent_loss: self.next_latent,
            recon_loss: self.recon,
            prophet_loss: self.prophet,
            hierarchical_ar_loss: self.hierarchical_ar,
            lr,
            grad_norm,
            tokens_per_s,
        }
    }
}

/// Steps between reads of the training metrics: a step's losses and gradient norm stay on the
/// device until the metrics lines of its interval are written, all read at once (also at every
/// validation, sample, checkpoint and stop). The metrics file still has a line per step.
pub const LOG_EVERY: u64 = 10;

/// What one replica holds fixed while it trains.
struct Job<'a, B: AutodiffBackend> {
    o: &'a TrainOptions,
    run_dir: &'a Path,
    device: &'a B::Device,
    control: &'a Control<'a>,
    peer: Option<&'a Peer>,
    shard: Shard,
    train_data: &'a [u8],
    valid_data: &'a [u8],
    /// `seq_len + 1`: inputs and their next tokens.
    crop: usize,
    /// Tokens all replicas together train on per optimizer step.
    tokens_per_step: f64,
    progress: Progress,
    started: Instant,
}

impl<B: AutodiffBackend> Job<'_, B> {
    /// Optimizer steps from `first_step` until `max_steps`, an interrupt, `stop_at` or the
    /// budget.
    fn train(
        &self,
        mut model: Model<B>,
        mut optim: Optim<B>,
        first_step: u64,
        mut metrics: Option<MetricsLog>,
    ) -> Result<TrainOutcome, TrainError> {
        let o = self.o;
        let mut last_valid = None;
        let mut last_checkpoint = first_step;
        let mut stop = Stop::default();
        let mut step = first_step;
        let mut interval = Interval::new();
        while step < o.max_steps {
            let (grads, losses) = self.accumulate(&model, step)?;
            let (mut grads, losses, agreed) = self.combine(&model, grads, losses, self.stop())?;
            let grad_norm_sq = clip_global_norm::<B, _>(&model, &mut grads, o.clip_grad_norm);
            let lr = learning_rate(o, step);
            model = optim.step(lr, model, grads);
            step += 1;
            interval.steps.push(Pending {
                step,
                lr,
                losses,
                grad_norm_sq,
            });
            stop = agreed;
            let due = self.due(step, stop, last_checkpoint);
            let valid = self.after_step(&model, &optim, &mut metrics, &mut interval, due)?;
            last_valid = valid.or(last_valid);
            if due.checkpoint {
                last_checkpoint = step;
            }
            if due.stop {
                let why = match stop.out_of_time && !stop.interrupt {
                    true => "time budget spent",
                    false => "stopped",
                };
                self.progress.println(&format!(
                    "{why}: checkpoint written at step {step}; continue with --resume {}",
                    self.run_dir.display()
                ));
                break;
            }
        }
        self.progress.finish();
        Ok(self.outcome(first_step, step, last_valid, stop))
    }

    /// This replica's wish to stop after the step in progress: the interrupt flag, and the
    /// budget against the training loop's clock (the metrics' `elapsed_s`).
    fn stop(&self) -> Stop {
        let control = self.control;
        Stop {
            interrupt: control.interrupt.is_some_and(|f| f.load(Ordering::SeqCst)),
            out_of_time: control.budget.is_some_and(|b| self.started.elapsed() >= b),
        }
    }

    /// What is due after `step`, given the replicas' agreed stop.
    fn due(&self, step: u64, stop: Stop, last_checkpoint: u64) -> Due {
        let o = self.o;
        let halt = stop.interrupt || stop.out_of_time || self.control.stop_at == Some(step);
        Due {
            checkpoint: step.is_multiple_of(o.checkpoint_every) || step == o.max_steps || halt,
            stop: halt,
            // a budget's last step ends the run's validation curve, as `max_steps` would
            validate: stop.out_of_time && !stop.interrupt,
            last_checkpoint,
        }
    }

    fn outcome(
        &self,
        first_step: u64,
        step: u64,
        last_valid: Option<(f64, f64)>,
        stop: Stop,
    ) -> TrainOutcome {
        let trained = step - first_step;
        let seconds = self.started.elapsed().as_secs_f64();
        TrainOutcome {
            steps: step,
            last_valid,
            tokens_per_s: if seconds > 0.0 {
                trained as f64 * self.tokens_per_step / seconds
            } else {
                0.0
            },
            interrupted: stop.interrupt,
            // a budget that ran out at the last step of the schedule stopped nothing early
            out_of_time: stop.out_of_time && !stop.interrupt && step < self.o.max_steps,
        }
    }

    /// This replica's part of optimizer step `step`: the loss components of its rows of every
    /// micro-batch (`[grad_accum * LEN]`, on the device) and the gradients of their mean,
    /// accumulated.
    fn accumulate(
        &self,
        model: &Model<B>,
        step: u64,
    ) -> Result<(GradientsParams, Tensor<B::InnerBackend, 1>), TrainError> {
        let o = self.o;
        let options = ForwardOptions {
            ablate_hierarchical_merge: o.ablate_hierarchical_merge,
        };
        let mut accumulator = GradientsAccumulator::<Model<B>>::new();
        let mut components = Vec::with_capacity(o.grad_accum);
        for micro in 0..o.grad_accum {
            let losses = model.forward_loss_with(self.micro_batch(step, micro), options)?;
            components.push(StepLosses::components(&losses));
            let grads = losses.total.div_scalar(o.grad_accum as f64).backward();
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        }
        Ok((accumulator.grads(), Tensor::cat(components, 0)))
    }

    /// This replica's rows of micro-batch `micro` of `step`, cut from the crops one device
    /// would draw, so that the data do not depend on the number of replicas.
    fn micro_batch(&self, step: u64, micro: usize) -> Tensor<B, 2, Int> {
        let (o, crop) = (self.o, self.crop);
        let micro = self.shard.micro_offset + micro as u64;
        let ids = random_crops(self.train_data, crop, o.batch_size, o.seed, step, micro);
        let rows = self.shard.rows.clone();
        let ids = ids[rows.start * crop..rows.end * crop].to_vec();
        Tensor::from_data(TensorData::new(ids, [rows.len(), crop]), self.device)
    }

    /// The same gradients, losses and stop decision on every replica: the sums of all
    /// replicas' weighted by their share of the batch; any replica's stop stops all (each
    /// replica reads its own clock for the budget). The losses stay on the device; the stop
    /// flags are read (replicas must agree on them at every step, or the next all-reduce
    /// would wait forever).
    fn combine(
        &self,
        model: &Model<B>,
        grads: GradientsParams,
        losses: Tensor<B::InnerBackend, 1>,
        stop: Stop,
    ) -> Result<(GradientsParams, Tensor<B::InnerBackend, 1>, Stop), TrainError> {
        let Some(peer) = self.peer else {
            return Ok((grads, losses, stop));
        };
        let grads = peer.weighted_gradients(model, grads, self.shard.weight)?;
        let [len] = losses.dims();
        let flags = [stop.interrupt as u8 as f32, stop.out_of_time as u8 as f32];
        let flags = Tensor::<B::InnerBackend, 1>::from_data(flags, self.device);
        let sum =
            peer.weighted_sum_device(Tensor::cat(vec![losses, flags], 0), self.shard.weight)?;
        let flags = host::read_vec::<f32, _, 1, Float>(sum.clone().narrow(0, len, 2))?;
        let stop = Stop {
            interrupt: flags[0] > 0.0,
            out_of_time: flags[1] > 0.0,
        };
        Ok((grads, sum.narrow(0, 0, len), stop))
    }

    /// After a step: when a metrics line is due (every [`LOG_EVERY`] steps, and at validations,
    /// samples, checkpoints and stops), the interval's losses are read (a non-finite loss stops
    /// the run here), validation runs if due (every replica takes part), then rank 0's report
    /// and checkpoint. Returns this step's validation (loss, bits per character), if one ran.
    fn after_step(
        &self,
        model: &Model<B>,
        optim: &Optim<B>,
        metrics: &mut Option<MetricsLog>,
        interval: &mut Interval<B::InnerBackend>,
        due: Due,
    ) -> Result<Option<(f64, f64)>, TrainError> {
        let o = self.o;
        let Some(step) = interval.steps.last().map(|p| p.step) else {
            return Ok(None);
        };
        let end = step == o.max_steps;
        let validate = step.is_multiple_of(o.validate_every) || end || due.validate;
        let sample = o.sample_every > 0 && (step.is_multiple_of(o.sample_every) || end);
        if !(validate || sample || due.checkpoint || due.stop || step.is_multiple_of(LOG_EVERY)) {
            return Ok(None);
        }
        let records = self.read_interval(interval, metrics, due.last_checkpoint)?;
        let valid = match validate {
            true => Some(self.validate(model)?),
            false => None,
        };
        let written = match metrics {
            Some(metrics) => self.report(model, optim, metrics, records, valid, due.checkpoint),
            None => Ok(()),
        };
        // a failed write stops every replica, not only rank 0
        agree::<B, _>(self.peer, written, self.device)?;
        interval.started = Instant::now();
        Ok(valid)
    }

    /// The metrics of the interval's steps, read from the device in one read. At a step whose
    /// loss is not finite, the lines of the steps before it are written and the run stops: its
    /// weights were never checkpointed (a checkpoint always follows a read).
    fn read_interval(
        &self,
        interval: &mut Interval<B::InnerBackend>,
        metrics: &mut Option<MetricsLog>,
        last_checkpoint: u64,
    ) -> Result<Vec<StepMetrics>, TrainError> {
        let records = interval.read(self.o.grad_accum, self.tokens_per_step)?;
        let Some(bad) = records.iter().position(|r| !r.loss.is_finite()) else {
            return Ok(records);
        };
        if let Some(metrics) = metrics {
            self.log(metrics, &records[..bad], None)?;
        }
        self.progress.finish();
        Err(TrainError::NonFinite {
            step: records[bad].step - 1,
            value: records[bad].loss,
            last_checkpoint,
        })
    }

    /// Rank 0 after reading an interval: metrics and progress, the validation, a sample when
    /// due, the checkpoint (with the model directory) when `checkpoint`.
    fn report(
        &self,
        model: &Model<B>,
        optim: &Optim<B>,
        metrics: &mut MetricsLog,
        records: Vec<StepMetrics>,
        valid: Option<(f64, f64)>,
        checkpoint: bool,
    ) -> Result<(), TrainError> {
        let o = self.o;
        let Some(step) = records.last().map(|r| r.step) else {
            return Ok(());
        };
        self.log(metrics, &records, valid)?;
        if o.sample_every > 0 && (step.is_multiple_of(o.sample_every) || step == o.max_steps) {
            let text = sample(
                &model.valid(),
                self.valid_data,
                o.sample_prime,
                o.sample_len,
                o.seed ^ step,
                self.device,
            )?;
            self.progress
                .println(&format!("step {step} sample:\n{text}\n"));
        }
        if checkpoint {
            checkpoint::save::<B, _, _>(self.run_dir, &model.config, model, optim, step)?;
            model_dir::save(&model.valid(), self.run_dir)?;
        }
        Ok(())
    }

    /// The steps' metrics and, if one ran after the last of them, its validation: into the
    /// metrics log and progress.
    fn log(
        &self,
        metrics: &mut MetricsLog,
        records: &[StepMetrics],
        valid: Option<(f64, f64)>,
    ) -> Result<(), TrainError> {
        let io = TrainError::at(self.run_dir);
        for record in records {
            metrics.write(&Record::Train(record.clone())).map_err(&io)?;
            self.progress.step(
                record.step,
                &format!(
                    "loss {:.4} ce {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s",
                    record.loss, record.ce_loss, record.lr, record.grad_norm, record.tokens_per_s
                ),
            );
        }
        let (Some((loss, bpc)), Some(step)) = (valid, records.last().map(|r| r.step)) else {
            return Ok(());
        };
        let record = ValidMetrics {
            step,
            valid_loss: loss,
            valid_bpc: bpc,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        metrics.write(&Record::Valid(record)).map_err(&io)?;
        self.progress.println(&format!(
            "step {step}: validation loss {loss:.4}, {bpc:.4} bits per character"
        ));
        Ok(())
    }

    /// Mean cross-entropy over `valid_batches` fixed random crops of the validation split (the
    /// same crops at every validation), and bits per character. Replicas take every
    /// `world`-th batch and add up their sums. The batches' losses are read in one read.
    fn validate(&self, model: &Model<B>) -> Result<(f64, f64), TrainError> {
        let (rank, world) = self.peer.map_or((0, 1), |p| (p.rank, p.world));
        let part = self.validation_sum(&model.valid(), rank, world);
        let mut total = agree::<B, _>(self.peer, part, self.device)?;
        if let Some(peer) = self.peer {
            total = peer.weighted_sum::<B::InnerBackend>(&[total], 1.0, self.device)?[0];
        }
        let loss = total / self.o.valid_batches as f64;
        Ok((loss, loss / std::f64::consts::LN_2))
    }

    /// The sum of this replica's validation batches' cross-entropies (summed in f64 in batch
    /// order).
    fn validation_sum(
        &self,
        model: &Model<B::InnerBackend>,
        rank: usize,
        world: usize,
    ) -> Result<f64, TrainError> {
        let (o, crop, device) = (self.o, self.crop, self.device);
        let options = ForwardOptions {
            ablate_hierarchical_merge: o.ablate_hierarchical_merge,
        };
        let mut losses = Vec::new();
        for k in (rank..o.valid_batches).step_by(world) {
            let ids = random_crops(
                self.valid_data,
                crop,
                o.batch_size,
                o.seed,
                u64::MAX,
                k as u64,
            );
            let ids = TensorData::new(ids, [o.batch_size, crop]);
            let ids = Tensor::<B::InnerBackend, 2, Int>::from_data(ids, device);
            losses.push(model.forward_loss_with(ids, options)?.ce);
        }
        if losses.is_empty() {
            return Ok(0.0);
        }
        let values = host::read_vec::<f64, _, 1, Float>(Tensor::cat(losses, 0))?;
        Ok(values.iter().sum())
    }
}

/// What is due after a step, besides what the step number says.
#[derive(Debug, Clone, Copy)]
struct Due {
    /// A checkpoint is written after this step.
    checkpoint: bool,
    /// The run stops after this step (interrupt, `stop_at` or the budget).
    stop: bool,
    /// A validation runs after this step whatever `validate_every` says.
    validate: bool,
    /// The step of the checkpoint in the run directory.
    last_checkpoint: u64,
}

/// Why a replica wants to stop after the current step.
#[derive(Debug, Clone, Copy, Default)]
struct Stop {
    /// The interrupt flag is set.
    interrupt: bool,
    /// [`Control::budget`] has run out.
    out_of_time: bool,
}

/// A step's numbers, on the device until its metrics line is written.
struct Pending<B: Backend> {
    /// Optimizer steps done, this one included.
    step: u64,
    lr: f64,
    /// `[grad_accum * StepLosses::LEN]`: each micro-batch's loss components (with replicas,
    /// their weighted sums over the replicas).
    losses: Tensor<B, 1>,
    /// `[1]`: the squared global gradient norm before clipping; `None` without gradients.
    grad_norm_sq: Option<Tensor<B, 1>>,
}

/// The steps since the last metrics line: their losses and gradient norms stay on the device
/// and are read together, in one device-to-host read per interval.
struct Interval<B: Backend> {
    steps: Vec<Pending<B>>,
    /// When the interval's first step started: its tokens per second are the interval's mean.
    started: Instant,
}

impl<B: Backend> Interval<B> {
    fn new() -> Self {
        Interval {
            steps: Vec::new(),
            started: Instant::now(),
        }
    }

    /// The steps' metrics, emptying the interval: one read of all their values.
    fn read(
        &mut self,
        grad_accum: usize,
        tokens_per_step: f64,
    ) -> Result<Vec<StepMetrics>, TrainError> {
        let steps = std::mem::take(&mut self.steps);
        let Some(device) = steps.first().map(|p| p.losses.device()) else {
            return Ok(Vec::new());
        };
        let mut parts = Vec::with_capacity(2 * steps.len());
        for p in &steps {
            parts.push(p.losses.clone());
            let norm = p.grad_norm_sq.clone();
            parts.push(norm.unwrap_or_else(|| Tensor::zeros([1], &device)));
        }
        let values = host::read_vec::<f32, B, 1, Float>(Tensor::cat(parts, 0))?;
        // a read waits for the queued steps: the interval's time is theirs
        let tokens_per_s =
            tokens_per_step * steps.len() as f64 / self.started.elapsed().as_secs_f64();
        let per_step = grad_accum * StepLosses::LEN + 1;
        Ok(steps
            .iter()
            .zip(values.chunks(per_step))
            .map(|(p, v)| {
                let losses = StepLosses::mean_of(&v[..per_step - 1], grad_accum);
                let grad_norm = (v[per_step - 1] as f64).sqrt();
                losses.metrics(p.step, p.lr, grad_norm, tokens_per_s)
            })
            .collect())
    }
}

/// With data parallelism, a step that failed on one replica (rank 0's writes, a checkpoint
/// missing on one node) stops every replica instead of leaving the others waiting in the next
/// all-reduce: the failed replica returns its error, the others [`ParallelError::PeerFailed`].
fn agree<B: AutodiffBackend, T>(
    peer: Option<&Peer>,
    result: Result<T, TrainError>,
    device: &B::Device,
) -> Result<T, TrainError> {
    let Some(peer) = peer else {
        return result;
    };
    let failed = peer.mean::<B::InnerBackend>(&[result.is_err() as u8 as f64], device)?;
    match result {
        Ok(_) if failed[0] > 0.0 => Err(ParallelError::PeerFailed.into()),
        result => result,
    }
}

/// A sample continuing a prompt from the validation split.
fn sample<B: burn::tensor::backend::Backend>(
    model: &Model<B>,
    data: &[u8],
    prime: usize,
    len: usize,
    seed: u64,
    device: &B::Device,
) -> Result<String, TrainError> {
    let prime = prime.min(model.spec().seq_len).min(data.len());
    let start = (seed as usize) % (data.len() - prime + 1);
    let prompt: Vec<i64> = data[start..start + prime]
        .iter()
        .map(|&b| b as i64)
        .collect();
    let mut sampler = Sampler::new(1.0, 0.9, seed)?;
    let new = generate_cached(
        model,
        std::slice::from_ref(&prompt),
        len,
        &mut sampler,
        device,
    )?;
    let text = |ids: &[i64]| {
        String::from_utf8_lossy(&ids.iter().map(|&t| t as u8).collect::<Vec<u8>>()).into_owned()
    };
    Ok(format!("{}⟩{}", text(&prompt), text(&new[0])))
}
