//! `hier-library-bench CONFIG.json infer|train [BATCH] [STEPS]`: median milliseconds of a forward
//! pass (`infer`, one thread per core sharing the batch) or a training step (`train`: loss,
//! backward, Adam; replicas sharing the batch as `hier train` does by default), printed as one
//! JSON line like `hier bench --json`.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::synthetic::token_ids;
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig};
use hier_train::parallel::{on_replicas, on_threads, Peer};
use hier_train::adam::FusedAdam;
use hier_train::{cpu_replicas, BatchSplit};

type B = Flex;

/// hier's caching allocator, as any program that trains with hier can declare it.
#[global_allocator]
static ALLOCATOR: hier_train::alloc::CachingAllocator = hier_train::alloc::CachingAllocator::new();
type Ad = Autodiff<Flex>;

/// Milliseconds of each of `steps` calls of `f`, after one untimed call.
fn time(steps: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    f(0);
    (1..=steps)
        .map(|i| {
            let t0 = Instant::now();
            f(i);
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn infer(config: &HierarchicalTransformerConfig, batch: usize, steps: usize) -> Vec<f64> {
    let spec = config.validate().expect("valid config");
    let (n, vocab) = (spec.seq_len, spec.num_tokens);
    let world = cpu_replicas(batch);
    let per_thread = on_threads(world, |rank| {
        let device = Default::default();
        let rows = BatchSplit::Shared
            .shard(rank, world, batch, 1)
            .unwrap()
            .rows;
        let model = HierarchicalTransformer::<B>::init(config, 0, &device).unwrap();
        time(steps, |i| {
            let x = token_ids(batch * n, vocab, i as u64)[rows.start * n..rows.end * n].to_vec();
            let x = Tensor::<B, 2, Int>::from_data(TensorData::new(x, [rows.len(), n]), &device);
            let _ = model.forward(x).unwrap().narrow(1, n - 1, 1).into_data();
        })
    });
    (0..steps)
        .map(|i| per_thread.iter().map(|t| t[i]).fold(0.0, f64::max))
        .collect()
}

fn replica_steps(
    config: &HierarchicalTransformerConfig,
    batch: usize,
    steps: usize,
    peer: &Peer,
) -> Vec<f64> {
    let spec = config.validate().expect("valid config");
    let (n, vocab) = (spec.seq_len, spec.num_tokens);
    let device = Default::default();
    let shard = BatchSplit::Shared
        .shard(peer.rank, peer.world, batch, 1)
        .unwrap();
    let mut model = HierarchicalTransformer::<Ad>::init(config, 0, &device).unwrap();
    let mut optim = FusedAdam::default().init::<Ad, _>();
    time(steps, |i| {
        let x = token_ids(batch * (n + 1), vocab, i as u64);
        let x = x[shard.rows.start * (n + 1)..shard.rows.end * (n + 1)].to_vec();
        let x =
            Tensor::<Ad, 2, Int>::from_data(TensorData::new(x, [shard.rows.len(), n + 1]), &device);
        let grads = model.forward_loss(x).unwrap().total.backward();
        let grads = GradientsParams::from_grads(grads, &model);
        let grads = peer
            .weighted_gradients(&model, grads, shard.weight)
            .unwrap();
        model = optim.step(1e-4, model.clone(), grads);
    })
}

fn train(config: &HierarchicalTransformerConfig, batch: usize, steps: usize) -> Vec<f64> {
    let devices = vec![Default::default(); cpu_replicas(batch)];
    let times = on_replicas::<B, _, hier_train::ParallelError, _>(&devices, None, |peer, _| {
        Ok(replica_steps(config, batch, steps, peer))
    });
    times.into_iter().next().unwrap().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hier-library-bench CONFIG.json infer|train [BATCH] [STEPS]";
    let (Some(path), Some(mode)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let number =
        |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().expect(usage));
    let (batch, steps) = (number(3, 4), number(4, 5));
    let text = std::fs::read_to_string(path).expect("readable config");
    let config = HierarchicalTransformerConfig::from_json(&text).expect("valid config");
    let mut ms = match mode.as_str() {
        "infer" => infer(&config, batch, steps),
        "train" => train(&config, batch, steps),
        _ => panic!("{usage}"),
    };
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    println!(
        "{}",
        serde_json::json!({"mode": mode, "median_ms": median, "batch": batch, "runner": "library, stock Burn"})
    );
}
