//! Attention kernels on the CPU (Flex): full and local attention, fused vs explicit, forward
//! (inference) and forward + backward (training). `cargo bench -p hier-attn`; compare the
//! variants of one group with each other, on the same machine and run.
#![allow(clippy::disallowed_methods)] // the benchmark waits for its results by reading them

use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hier_attn::{
    AttentionImpl, FullAttention, FullAttentionConfig, LocalAttention, LocalAttentionConfig,
};

const DIM: usize = 256;
const HEADS: usize = 4;
const DIM_HEAD: usize = 64;
const BATCH: usize = 4;

enum Layer<B: Backend> {
    Full(FullAttention<B>),
    Local(LocalAttention<B>),
}

impl<B: Backend> Layer<B> {
    fn new(window: Option<usize>, implementation: AttentionImpl, device: &B::Device) -> Self {
        match window {
            None => {
                let mut a = FullAttentionConfig::new(DIM)
                    .with_heads(HEADS)
                    .with_dim_head(DIM_HEAD)
                    .init(device);
                a.implementation = implementation;
                Layer::Full(a)
            }
            Some(w) => {
                let mut a = LocalAttentionConfig::new(DIM, w)
                    .with_heads(HEADS)
                    .with_dim_head(DIM_HEAD)
                    .init(device);
                a.implementation = implementation;
                Layer::Local(a)
            }
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Layer::Full(a) => a.forward(x),
            Layer::Local(a) => a.forward(x),
        }
    }
}

fn name(window: Option<usize>) -> String {
    window.map_or("full".into(), |w| format!("local_w{w}"))
}

fn inference(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("attention_forward");
    group.sample_size(10);
    for window in [None, Some(32)] {
        for n in [256, 512] {
            let x = Tensor::<Flex, 3>::random([BATCH, n, DIM], Distribution::Default, &device);
            for (label, implementation) in [
                ("explicit", AttentionImpl::Explicit),
                ("fused", AttentionImpl::Fused),
            ] {
                let layer = Layer::<Flex>::new(window, implementation, &device);
                let id = BenchmarkId::new(format!("{}/{label}", name(window)), n);
                group.bench_with_input(id, &x, |bench, x| {
                    bench.iter(|| layer.forward(x.clone()).into_data())
                });
            }
        }
    }
    group.finish();
}

fn training(c: &mut Criterion) {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let mut group = c.benchmark_group("attention_forward_backward");
    group.sample_size(10);
    for window in [None, Some(32)] {
        let n = 512;
        let x = Tensor::<B, 3>::random([BATCH, n, DIM], Distribution::Default, &device);
        let layer = Layer::<B>::new(window, AttentionImpl::Explicit, &device);
        let id = BenchmarkId::new(name(window), n);
        group.bench_with_input(id, &x, |bench, x| {
            bench.iter(|| layer.forward(x.clone()).sum().backward())
        });
    }
    group.finish();
}

criterion_group!(benches, inference, training);
criterion_main!(benches);
