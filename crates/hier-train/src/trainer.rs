//! The training loop: random crops, gradient accumulation, global-norm clipping, Adam with
//! warm-up + cosine, validation in bits per character, samples, checkpoints, resume.
//!
//! It is driven by hand from Burn's building blocks (optimizer, gradient accumulator, records)
//! rather than burn-train's epoch-based learner, because resuming must continue bit-exactly
//! mid-schedule and the reference clips the *global* gradient norm.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use hier_model::cache::generate_cached;
use hier_model::generate::Sampler;
use hier_model::{model_dir, ForwardOptions, HierarchicalTransformer};
use thiserror::Error;

use crate::checkpoint::{self, CheckpointError};
use crate::clip::clip_global_norm;
use crate::data::{random_crops, Corpus, DataError, Split};
use crate::metrics::{MetricsLog, Record, StepMetrics, ValidMetrics};
use crate::options::{OptionsError, TrainConfig};
use crate::parallel::{on_replicas, BatchSplit, ParallelError, Peer, Replicas};
use crate::progress::Progress;
use crate::schedule::learning_rate;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] hier_model::ConfigError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    RunDir(#[from] hier_model::files::OutDirError),
    #[error(transparent)]
    Input(#[from] hier_model::InputError),
    #[error(transparent)]
    Model(#[from] hier_model::LoadError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
    #[error("the loss became {value} at step {step}; stopped without saving, the last good checkpoint (step {last_checkpoint}) is kept — lower the learning rate or check the data")]
    NonFinite {
        step: u64,
        value: f64,
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
    let shard = match parallel {
        Some((p, split)) => split.shard(p.rank, p.world, o.batch_size, o.grad_accum)?,
        None => BatchSplit::Shared.shard(0, 1, o.batch_size, o.grad_accum)?,
    };
    // crops trained on per step by all replicas together
    let step_rows = match parallel {
        Some((p, BatchSplit::PerReplica)) => p.world * o.batch_size,
        _ => o.batch_size,
    };
    corpus.check_len(spec.seq_len)?;
    let io = |source| TrainError::Io {
        path: run_dir.display().to_string(),
        source,
    };
    let setup = || -> Result<_, TrainError> {
        // held until the run ends: no second job writes this run directory meanwhile
        let lock = match writer {
            true => Some(crate::run_dir::claim(run_dir, start)?),
            false => None,
        };
        let adam = AdamConfig::new().with_epsilon(1e-8);
        let (model, optim, first_step) = match start {
            Start::New => {
                let model = Model::<B>::init(&config.model, o.seed, device)?;
                if writer {
                    checkpoint::write_train_config(run_dir, config)?;
                }
                (model, adam.init::<B, Model<B>>(), 0)
            }
            Start::Resume => {
                let model = Model::<B>::new(&config.model, device)?;
                let (model, optim, state) = checkpoint::load(
                    run_dir,
                    &config.model,
                    model,
                    adam.init::<B, Model<B>>(),
                    device,
                )?;
                if writer {
                    // what --resume changed (max_steps, validate/sample/checkpoint every)
                    // holds for the rest of the run and for the next --resume
                    checkpoint::write_train_config(run_dir, config)?;
                }
                (model, optim, state.step)
            }
        };
        let metrics = match writer {
            true => Some(MetricsLog::open(run_dir, Some(first_step)).map_err(io)?),
            false => None,
        };
        Ok((model, optim, first_step, metrics, lock))
    };
    let (mut model, mut optim, first_step, mut metrics, _lock) =
        agree::<B, _>(peer, setup(), device)?;
    let train_data = corpus.split(Split::Train)?;
    let valid_data = corpus.split(Split::Valid)?;
    let crop = spec.seq_len + 1;
    let tokens_per_step = (step_rows * o.grad_accum * spec.seq_len) as f64;

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
        match parallel {
            None => String::new(),
            Some((p, BatchSplit::Shared)) => format!(", {} replicas sharing each batch", p.world),
            Some((p, BatchSplit::PerReplica)) => format!(", {} data-parallel replicas", p.world),
        }
    ));
    let started = Instant::now();
    let mut last_valid = None;
    let mut last_checkpoint = first_step;
    let mut interrupted = false;
    let mut step = first_step;
    while step < o.max_steps {
        let t0 = Instant::now();
        let mut accumulator = GradientsAccumulator::<Model<B>>::new();
        let mut sums = [0f64; 6];
        let options = ForwardOptions {
            ablate_hierarchical_merge: o.ablate_hierarchical_merge,
        };
        for micro in 0..o.grad_accum {
            let micro = shard.micro_offset + micro as u64;
            let ids = random_crops(train_data, crop, o.batch_size, o.seed, step, micro);
            let ids = ids[shard.rows.start * crop..shard.rows.end * crop].to_vec();
            let rows = shard.rows.len();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, crop]), device);
            let losses = model.forward_loss_with(ids, options)?;
            let parts = [
                &losses.total,
                &losses.ce,
                &losses.next_latent,
                &losses.recon,
                &losses.prophet,
                &losses.hierarchical_ar,
            ];
            for (sum, t) in sums.iter_mut().zip(parts) {
                *sum += t.clone().into_scalar().elem::<f64>() / o.grad_accum as f64;
            }
            let grads = losses.total.div_scalar(o.grad_accum as f64).backward();
            accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        let mut grads = accumulator.grads();
        let mut interrupted_here = control.interrupt.is_some_and(|f| f.load(Ordering::SeqCst));
        if let Some(peer) = peer {
            // the same losses, gradients and stop decision on every replica
            grads = peer.weighted_gradients(&model, grads, shard.weight)?;
            let mut values = sums.to_vec();
            values.push(interrupted_here as u8 as f64);
            let sum = peer.weighted_sum::<B::InnerBackend>(&values, shard.weight, device)?;
            sums.copy_from_slice(&sum[..6]);
            interrupted_here = sum[6] > 0.0;
        }
        if !sums[0].is_finite() {
            progress.finish();
            return Err(TrainError::NonFinite {
                step,
                value: sums[0],
                last_checkpoint,
            });
        }
        let grad_norm = clip_global_norm::<B, _>(&model, &mut grads, o.clip_grad_norm);
        let lr = learning_rate(o, step);
        model = optim.step(lr, model, grads);
        step += 1;

        let tokens_per_s = tokens_per_step / t0.elapsed().as_secs_f64();
        let record = StepMetrics {
            step,
            loss: sums[0],
            ce_loss: sums[1],
            next_latent_loss: sums[2],
            recon_loss: sums[3],
            prophet_loss: sums[4],
            hierarchical_ar_loss: sums[5],
            lr,
            grad_norm,
            tokens_per_s,
        };
        let last = step == o.max_steps;
        interrupted = interrupted_here;
        let pause = control.stop_at == Some(step);
        let valid = match step.is_multiple_of(o.validate_every) || last {
            true => Some(validate::<B>(&model, valid_data, crop, o, device, peer)?),
            false => None,
        };
        let report = match &mut metrics {
            Some(metrics) => {
                let ctx = Report {
                    run_dir,
                    valid_data,
                    device,
                    progress: &progress,
                    started,
                };
                let checkpoint =
                    step.is_multiple_of(o.checkpoint_every) || last || interrupted || pause;
                ctx.after_step(&model, &optim, metrics, record, valid, o, checkpoint)
            }
            None => Ok(()),
        };
        agree::<B, _>(peer, report, device)?;
        if valid.is_some() {
            last_valid = valid;
        }
        if step.is_multiple_of(o.checkpoint_every) || last || interrupted || pause {
            last_checkpoint = step;
        }
        if interrupted || pause {
            progress.println(&format!(
                "stopped: checkpoint written at step {step}; continue with --resume {}",
                run_dir.display()
            ));
            break;
        }
    }
    progress.finish();
    let trained = step - first_step;
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        steps: step,
        last_valid,
        tokens_per_s: if seconds > 0.0 {
            trained as f64 * tokens_per_step / seconds
        } else {
            0.0
        },
        interrupted,
    })
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

/// What rank 0 does after a step: metrics, progress, validation, sample, checkpoint.
struct Report<'a, B: AutodiffBackend> {
    run_dir: &'a Path,
    valid_data: &'a [u8],
    device: &'a B::Device,
    progress: &'a Progress,
    started: Instant,
}

impl<B: AutodiffBackend> Report<'_, B> {
    /// `valid`: this step's validation (loss, bpc), if one ran.
    #[allow(clippy::too_many_arguments)]
    fn after_step<O: burn::optim::Optimizer<Model<B>, B>>(
        &self,
        model: &Model<B>,
        optim: &O,
        metrics: &mut MetricsLog,
        record: StepMetrics,
        valid: Option<(f64, f64)>,
        o: &crate::options::TrainOptions,
        checkpoint: bool,
    ) -> Result<(), TrainError> {
        let io = |source| TrainError::Io {
            path: self.run_dir.display().to_string(),
            source,
        };
        let step = record.step;
        metrics.write(&Record::Train(record.clone())).map_err(io)?;
        self.progress.step(
            step,
            &format!(
                "loss {:.4} ce {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s",
                record.loss, record.ce_loss, record.lr, record.grad_norm, record.tokens_per_s
            ),
        );
        let last = step == o.max_steps;
        if let Some((loss, bpc)) = valid {
            let record = ValidMetrics {
                step,
                valid_loss: loss,
                valid_bpc: bpc,
                elapsed_s: self.started.elapsed().as_secs_f64(),
            };
            metrics.write(&Record::Valid(record)).map_err(io)?;
            self.progress.println(&format!(
                "step {step}: validation loss {loss:.4}, {bpc:.4} bits per character"
            ));
        }
        if o.sample_every > 0 && (step.is_multiple_of(o.sample_every) || last) {
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
}

/// Mean cross-entropy over `valid_batches` fixed random crops of the validation split (the same
/// crops at every validation), and bits per character. Replicas take every `world`-th batch and
/// add up their sums.
fn validate<B: AutodiffBackend>(
    model: &Model<B>,
    data: &[u8],
    crop: usize,
    o: &crate::options::TrainOptions,
    device: &B::Device,
    peer: Option<&Peer>,
) -> Result<(f64, f64), TrainError> {
    let (rank, world) = peer.map_or((0, 1), |p| (p.rank, p.world));
    let model = model.valid();
    let options = ForwardOptions {
        ablate_hierarchical_merge: o.ablate_hierarchical_merge,
    };
    let part = || -> Result<f64, TrainError> {
        let mut total = 0.0;
        for k in (rank..o.valid_batches).step_by(world) {
            let ids = random_crops(data, crop, o.batch_size, o.seed, u64::MAX, k as u64);
            let ids = TensorData::new(ids, [o.batch_size, crop]);
            let ids = Tensor::<B::InnerBackend, 2, Int>::from_data(ids, device);
            let ce = model.forward_loss_with(ids, options)?.ce;
            total += ce.into_scalar().elem::<f64>();
        }
        Ok(total)
    };
    let mut total = agree::<B, _>(peer, part(), device)?;
    if let Some(peer) = peer {
        total = peer.weighted_sum::<B::InnerBackend>(&[total], 1.0, device)?[0];
    }
    let loss = total / o.valid_batches as f64;
    Ok((loss, loss / std::f64::consts::LN_2))
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
