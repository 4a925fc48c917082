use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::backend::Autodiff;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use clap::ValueEnum;
use hier_model::cache::generate_cached;
use hier_model::generate::{generate_recompute, Sampler};
use hier_model::synthetic::token_ids;
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig};
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
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<Ad, _>();
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

pub fn run(args: Args) -> Result<()> {
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
    let spec = config.validate()?;
    let (n, vocab, batch) = (spec.seq_len, spec.num_tokens, args.batch);
    check_resources(&config, &args)?;
    let device = device();
    let mut rows = Vec::new();
    let mut report = |mode: &str, ms: Vec<f64>, tokens: usize| {
        let median_ms = median(ms);
        rows.push(serde_json::json!({
            "mode": mode,
            "median_ms": median_ms,
            "tokens_per_s": tokens as f64 / (median_ms / 1e3),
            "batch": batch,
            "seq_len": n,
            "steps": args.steps,
            "peak_rss_mib": peak_rss_mib(),
            "backend": std::any::type_name::<Backend>(),
        }));
    };
    match args.mode {
        Mode::Train => {
            let ms = train_step_times(&config, &args)?;
            report("train", ms, batch * n);
        }
        Mode::Infer => {
            let ms = infer_times(&config, &args)?;
            report("infer", ms, batch * n);
        }
        Mode::Generate => {
            let model = HierarchicalTransformer::<Backend>::init(&config, 0, &device)?;
            let prompt: Vec<Vec<i64>> = (0..batch)
                .map(|b| vec![1 + b as i64 % (vocab as i64 - 1)])
                .collect();
            for (mode, cached) in [("generate", true), ("generate_recompute", false)] {
                let mut sampler = Sampler::new(1.0, 0.9, 0)?;
                let t0 = Instant::now();
                if cached {
                    generate_cached(&model, &prompt, args.steps, &mut sampler, &device)?;
                } else {
                    generate_recompute(&model, &prompt, args.steps, &mut sampler, &device)?;
                }
                let per_token = t0.elapsed().as_secs_f64() * 1e3 / args.steps as f64;
                report(mode, vec![per_token], batch);
            }
        }
    }
    if args.json {
        for row in &rows {
            println!("{row}");
        }
    } else {
        println!("| mode | median ms | tokens/s | batch | seq_len | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.2} | {:.0} | {} | {} | {:.0} |",
                r["mode"].as_str().unwrap_or(""),
                r["median_ms"].as_f64().unwrap_or(0.0),
                r["tokens_per_s"].as_f64().unwrap_or(0.0),
                batch,
                n,
                r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
