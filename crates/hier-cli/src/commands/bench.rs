use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::backend::Autodiff;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use clap::ValueEnum;
use hier_model::cache::generate_cached;
use hier_model::flops;
use hier_model::generate::{generate_recompute, Sampler};
use hier_model::spec::ModelSpec;
use hier_model::synthetic::token_ids;
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig};
use hier_train::adam::FusedAdam;
use hier_train::parallel::{on_replicas, on_threads, Peer};
use hier_train::BatchSplit;

use crate::backend::{device, replicas, Backend};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Forward with loss + backward + Adam step on random ids of length seq_len + 1.
    Train,
    /// Forward (logits) on random ids of length seq_len.
    Infer,
    /// `--steps` new tokens from a one-token prompt, cached and recomputed; `median_ms` is the
    /// mean time per token of that run.
    Generate,
}

#[derive(clap::Args)]
pub struct Args {
    /// Model config (the keys of a model directory's config.json).
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// A named configuration: the model of a training preset.
    #[arg(long)]
    preset: Option<String>,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Timed steps (tokens, for generate).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Data-parallel replicas (threads on the CPU, GPUs otherwise) sharing each batch; train
    /// mode averages their gradients before the Adam step. Default: one per core on the CPU
    /// (at most one per row), one GPU otherwise.
    #[arg(long)]
    devices: Option<usize>,
    /// One JSON object per line and mode instead of a table.
    #[arg(long)]
    json: bool,
    /// The device's peak throughput in TFLOP/s for the dtype used (f32 here), to report model
    /// FLOPs utilisation: achieved model FLOP/s (`hier_model::flops`) over this peak.
    #[arg(long)]
    peak_tflops: Option<f64>,
}

/// Peak resident memory of this process in MiB (Linux; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Time `steps` calls of `f` after `warmup` untimed ones; milliseconds per call.
fn time(warmup: usize, steps: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Vec<f64>> {
    for i in 0..warmup {
        f(i)?;
    }
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        let t0 = Instant::now();
        f(warmup + i)?;
        out.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

type Ad = Autodiff<Backend>;

/// One replica's training steps on its `shard` of each batch, gradients combined with the other
/// replicas when `peer` is given; milliseconds per step.
fn replica_steps(
    config: &HierarchicalTransformerConfig,
    args: &Args,
    device: &crate::backend::Device,
    peer: Option<&Peer>,
) -> Result<Vec<f64>> {
    let spec = config.validate()?;
    let (n, vocab) = (spec.seq_len, spec.num_tokens);
    let (rank, world) = peer.map_or((0, 1), |p| (p.rank, p.world));
    let shard = BatchSplit::Shared.shard(rank, world, args.batch, 1)?;
    let rows = shard.rows.len();
    let mut model = HierarchicalTransformer::<Ad>::init(config, 0, device)?;
    let mut optim = FusedAdam::default().init::<Ad, _>();
    time(args.warmup, args.steps, |i| {
        let ids = token_ids(args.batch * (n + 1), vocab, i as u64);
        let ids = ids[shard.rows.start * (n + 1)..shard.rows.end * (n + 1)].to_vec();
        let ids = Tensor::<Ad, 2, Int>::from_data(TensorData::new(ids, [rows, n + 1]), device);
        let grads = model.forward_loss(ids)?.total.backward();
        let mut grads = GradientsParams::from_grads(grads, &model);
        if let Some(peer) = peer {
            grads = peer.weighted_gradients(&model, grads, shard.weight)?;
        }
        model = optim.step(1e-4, model.clone(), grads);
        Ok(())
    })
}

fn train_step_times(config: &HierarchicalTransformerConfig, args: &Args) -> Result<Vec<f64>> {
    let (devices, _) = replicas(args.devices, args.batch);
    if devices.len() == 1 {
        return replica_steps(config, args, &devices[0], None);
    }
    let times = on_replicas::<Backend, _, anyhow::Error, _>(&devices, None, |peer, device| {
        replica_steps(config, args, device, Some(peer))
    });
    // every step ends in the all-reduce, so rank 0's times are the steps' times
    times.into_iter().next().expect("at least two replicas")
}

/// Forward passes over `--batch` rows, the rows shared by the replicas (threads, no
/// communication); milliseconds per pass, as the slowest replica saw them.
fn infer_times(config: &HierarchicalTransformerConfig, args: &Args) -> Result<Vec<f64>> {
    let spec = config.validate()?;
    let (n, vocab) = (spec.seq_len, spec.num_tokens);
    let (devices, _) = replicas(args.devices, args.batch);
    let world = devices.len();
    let times = on_threads(world, |rank| -> Result<Vec<f64>> {
        let device = &devices[rank];
        let rows = BatchSplit::Shared.shard(rank, world, args.batch, 1)?.rows;
        let model = HierarchicalTransformer::<Backend>::init(config, 0, device)?;
        time(args.warmup, args.steps, |i| {
            let ids = token_ids(args.batch * n, vocab, i as u64);
            let ids = ids[rows.start * n..rows.end * n].to_vec();
            let ids = TensorData::new(ids, [rows.len(), n]);
            let logits = model.forward(Tensor::<Backend, 2, Int>::from_data(ids, device))?;
            hier_model::host::read(logits.narrow(1, n - 1, 1))?; // wait for the result
            Ok(())
        })
    });
    let times = times.into_iter().collect::<Result<Vec<_>>>()?;
    Ok((0..args.steps)
        .map(|i| times.iter().map(|t| t[i]).fold(0.0, f64::max))
        .collect())
}

/// Replicas and memory (`hier_model::memory`), checked before any model is built.
fn check_resources(config: &HierarchicalTransformerConfig, args: &Args) -> Result<()> {
    use crate::resources::{check_memory, replica_rows, work};
    use hier_model::memory::{Pass, Workload};
    crate::resources::check_devices(args.devices)?;
    let (copies, rows) = replica_rows(args.devices, args.batch);
    let n = config.seq_len;
    let new = args.steps.saturating_add(1);
    let works = match args.mode {
        Mode::Train => vec![Workload {
            replicas: copies,
            ..work(Pass::Train, rows, n.saturating_add(1))
        }],
        Mode::Infer => vec![Workload {
            replicas: copies,
            ..work(Pass::Infer, rows, n)
        }],
        Mode::Generate => vec![
            work(Pass::Decode, args.batch, new),
            work(Pass::Infer, args.batch, new.min(n)),
        ],
    };
    works.into_iter().try_for_each(|w| check_memory(config, w))
}

/// The model config to time, and the flags checked.
fn model_config(args: &Args) -> Result<HierarchicalTransformerConfig> {
    let config = match (&args.config, &args.preset) {
        (Some(path), _) => crate::configs::model_config(path)?,
        (None, Some(name)) => crate::configs::preset(name)?.model,
        (None, None) => bail!("give --config CONFIG.json or --preset NAME"),
    };
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    if args.devices.is_some_and(|d| d > args.batch) {
        bail!(
            "--devices {} is more than --batch {}: every replica needs a row",
            args.devices.unwrap_or(0),
            args.batch
        );
    }
    if let Some(peak) = args.peak_tflops {
        if !(peak.is_finite() && peak > 0.0) {
            bail!("--peak-tflops {peak} must be a positive number of TFLOP/s");
        }
    }
    Ok(config)
}

/// Model FLOPs per token of `mode` (`hier_model::flops`): a training step per input token, a
/// forward pass per position, or the decoding of `--steps` new tokens after a one-token prompt
/// per new token (the same figure for the recomputing path, whose extra work is what it costs).
fn flops_per_token(spec: &ModelSpec, mode: Mode, steps: usize) -> f64 {
    let n = spec.seq_len;
    match mode {
        Mode::Train => flops::training_per_token(spec, n),
        Mode::Infer => flops::forward_per_token(spec, n),
        Mode::Generate => flops::generation(spec, 1, steps) / steps as f64,
    }
}

/// One row of the report: time, throughput, model FLOPs and, with `--peak-tflops`, the model
/// FLOPs utilisation.
struct Row {
    mode: &'static str,
    median_ms: f64,
    tokens_per_s: f64,
    flops_per_token: f64,
}

impl Row {
    fn new(mode: &'static str, ms: Vec<f64>, tokens: usize, flops_per_token: f64) -> Row {
        let median_ms = median(ms);
        Row {
            mode,
            median_ms,
            tokens_per_s: tokens as f64 / (median_ms / 1e3),
            flops_per_token,
        }
    }

    fn flops_per_s(&self) -> f64 {
        self.flops_per_token * self.tokens_per_s
    }

    fn mfu(&self, peak_tflops: Option<f64>) -> Option<f64> {
        peak_tflops.map(|peak| self.flops_per_s() / (peak * 1e12))
    }
}

/// Runs `args.mode`; one row per timed path.
fn measure(config: &HierarchicalTransformerConfig, args: &Args) -> Result<Vec<Row>> {
    let spec = config.validate()?;
    let (n, vocab, batch) = (spec.seq_len, spec.num_tokens, args.batch);
    let flops = flops_per_token(&spec, args.mode, args.steps);
    Ok(match args.mode {
        Mode::Train => vec![Row::new(
            "train",
            train_step_times(config, args)?,
            batch * n,
            flops,
        )],
        Mode::Infer => vec![Row::new(
            "infer",
            infer_times(config, args)?,
            batch * n,
            flops,
        )],
        Mode::Generate => {
            let device = device();
            let model = HierarchicalTransformer::<Backend>::init(config, 0, &device)?;
            let prompt: Vec<Vec<i64>> = (0..batch)
                .map(|b| vec![1 + b as i64 % (vocab as i64 - 1)])
                .collect();
            let mut rows = Vec::new();
            for (mode, cached) in [("generate", true), ("generate_recompute", false)] {
                let mut sampler = Sampler::new(1.0, 0.9, 0)?;
                let t0 = Instant::now();
                if cached {
                    generate_cached(&model, &prompt, args.steps, &mut sampler, &device)?;
                } else {
                    generate_recompute(&model, &prompt, args.steps, &mut sampler, &device)?;
                }
                let per_token = t0.elapsed().as_secs_f64() * 1e3 / args.steps as f64;
                rows.push(Row::new(mode, vec![per_token], batch, flops));
            }
            rows
        }
    })
}

fn print_json(rows: &[Row], args: &Args, seq_len: usize) {
    for r in rows {
        let row = serde_json::json!({
            "mode": r.mode,
            "median_ms": r.median_ms,
            "tokens_per_s": r.tokens_per_s,
            "model_flops_per_token": r.flops_per_token,
            "flops_per_s": r.flops_per_s(),
            "peak_tflops": args.peak_tflops,
            "mfu": r.mfu(args.peak_tflops),
            "batch": args.batch,
            "seq_len": seq_len,
            "steps": args.steps,
            "peak_rss_mib": peak_rss_mib(),
            "backend": std::any::type_name::<Backend>(),
        });
        println!("{row}");
    }
}

fn print_table(rows: &[Row], args: &Args, seq_len: usize) {
    let peak = args.peak_tflops;
    let mfu_head = if peak.is_some() { " MFU |" } else { "" };
    let mfu_rule = if peak.is_some() { "---:|" } else { "" };
    println!(
        "| mode | median ms | tokens/s | model MFLOP/token | TFLOP/s |{mfu_head} batch | seq_len | peak RSS MiB |\n\
         |---|---:|---:|---:|---:|{mfu_rule}---:|---:|---:|"
    );
    for r in rows {
        let mfu = r
            .mfu(peak)
            .map_or(String::new(), |u| format!(" {:.1}% |", 100.0 * u));
        println!(
            "| {} | {:.2} | {:.0} | {:.2} | {:.4} |{mfu} {} | {} | {:.0} |",
            r.mode,
            r.median_ms,
            r.tokens_per_s,
            r.flops_per_token / 1e6,
            r.flops_per_s() / 1e12,
            args.batch,
            seq_len,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = model_config(&args)?;
    check_resources(&config, &args)?;
    let rows = measure(&config, &args)?;
    if args.json {
        print_json(&rows, &args, config.seq_len);
    } else {
        print_table(&rows, &args, config.seq_len);
    }
    Ok(())
}
