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
    Input(#[from] hier_model::InputError),
    #[error(transparent)]
    Model(#[from] hier_model::LoadError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
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

/// Train `config` on `corpus` into `run_dir`.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    corpus: &Corpus,
    run_dir: &Path,
    start: Start,
    device: &B::Device,
    control: &Control,
) -> Result<TrainOutcome, TrainError> {
    let spec = config.model.validate()?;
    let o = &config.train;
    o.validate()?;
    corpus.check_len(spec.seq_len)?;
    let io = |source| TrainError::Io {
        path: run_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(run_dir).map_err(io)?;

    let adam = AdamConfig::new().with_epsilon(1e-8);
    let (mut model, mut optim, first_step) = match start {
        Start::New => {
            let model = Model::<B>::init(&config.model, o.seed, device)?;
            checkpoint::write_train_config(run_dir, config)?;
            (model, adam.init::<B, Model<B>>(), 0)
        }
        Start::Resume => {
            let model = Model::<B>::new(&config.model, device)?;
            let (model, optim, state) =
                checkpoint::load(run_dir, model, adam.init::<B, Model<B>>(), device)?;
            (model, optim, state.step)
        }
    };
    let mut metrics = MetricsLog::open(run_dir, Some(first_step)).map_err(io)?;
    let train_data = corpus.split(Split::Train)?;
    let valid_data = corpus.split(Split::Valid)?;
    let crop = spec.seq_len + 1;
    let tokens_per_step = (o.batch_size * o.grad_accum * spec.seq_len) as f64;

    let progress = Progress::new(first_step, o.max_steps, 10);
    progress.println(&format!(
        "training {} parameters on {} ({} train / {} valid bytes), steps {first_step}..{}",
        burn::module::Module::num_params(&model),
        corpus.name(),
        train_data.len(),
        valid_data.len(),
        o.max_steps
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
            let ids = random_crops(train_data, crop, o.batch_size, o.seed, step, micro as u64);
            let ids =
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [o.batch_size, crop]), device);
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
        if !sums[0].is_finite() {
            progress.finish();
            return Err(TrainError::NonFinite {
                step,
                value: sums[0],
                last_checkpoint,
            });
        }
        let mut grads = accumulator.grads();
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
        metrics.write(&Record::Train(record)).map_err(io)?;
        progress.step(
            step,
            &format!(
                "loss {:.4} ce {:.4} lr {lr:.2e} |g| {grad_norm:.3} {tokens_per_s:.0} tok/s",
                sums[0], sums[1]
            ),
        );

        let last = step == o.max_steps;
        if step % o.validate_every == 0 || last {
            let (loss, bpc) = validate(&model.valid(), valid_data, crop, o, device)?;
            let elapsed_s = started.elapsed().as_secs_f64();
            let record = ValidMetrics {
                step,
                valid_loss: loss,
                valid_bpc: bpc,
                elapsed_s,
            };
            metrics.write(&Record::Valid(record)).map_err(io)?;
            progress.println(&format!(
                "step {step}: validation loss {loss:.4}, {bpc:.4} bits per character"
            ));
            last_valid = Some((loss, bpc));
        }
        if o.sample_every > 0 && (step % o.sample_every == 0 || last) {
            let text = sample(
                &model.valid(),
                valid_data,
                o.sample_prime,
                o.sample_len,
                o.seed ^ step,
                device,
            )?;
            progress.println(&format!("step {step} sample:\n{text}\n"));
        }
        interrupted = control.interrupt.is_some_and(|f| f.load(Ordering::SeqCst));
        let pause = control.stop_at == Some(step);
        if step % o.checkpoint_every == 0 || last || interrupted || pause {
            checkpoint::save::<B, _, _>(run_dir, &model, &optim, step)?;
            model_dir::save(&model.valid(), run_dir)?;
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

/// Mean cross-entropy over `batches` fixed random crops of the validation split (the same crops
/// at every validation), and bits per character.
fn validate<B: burn::tensor::backend::Backend>(
    model: &Model<B>,
    data: &[u8],
    crop: usize,
    o: &crate::options::TrainOptions,
    device: &B::Device,
) -> Result<(f64, f64), TrainError> {
    let mut total = 0.0;
    let options = ForwardOptions {
        ablate_hierarchical_merge: o.ablate_hierarchical_merge,
    };
    for k in 0..o.valid_batches {
        let ids = random_crops(data, crop, o.batch_size, o.seed, u64::MAX, k as u64);
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [o.batch_size, crop]), device);
        total += model
            .forward_loss_with(ids, options)?
            .ce
            .into_scalar()
            .elem::<f64>();
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
