//! Seeded initialisation with PyTorch's default distributions, computed on the host: the same
//! seed gives the same weights on every backend, and concurrent initialisations (tests, several
//! models in one program) cannot disturb each other through a global RNG.

use std::collections::HashMap;

use burn::tensor::backend::Backend;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::config::HierarchicalTransformerConfig;
use crate::error::{ConfigError, LoadError};
use crate::model::HierarchicalTransformer;
use crate::weights::{describe, load_state_dict, rotary_constants, HostTensor, InitKind};

/// FNV-1a, to give every parameter its own stream independent of visiting order.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn values(init: InitKind, len: usize, rng: &mut StdRng) -> Vec<f32> {
    match init {
        InitKind::Ones => vec![1.0; len],
        InitKind::Zeros => vec![0.0; len],
        InitKind::Uniform { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            (0..len).map(|_| rng.random_range(-bound..bound)).collect()
        }
        InitKind::Normal => (0..len)
            .map(|_| {
                // Box-Muller
                let u1: f32 = rng.random_range(f32::EPSILON..1.0);
                let u2: f32 = rng.random();
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect(),
    }
}

impl<B: Backend> HierarchicalTransformer<B> {
    /// A model initialised like the reference (`nn.Embedding` N(0,1), kaiming-uniform linear and
    /// conv layers, ones/zeros norms, zero-initialised last dynamics layer), reproducibly from `seed`.
    pub fn init(
        config: &HierarchicalTransformerConfig,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, ConfigError> {
        let model = Self::new(config, device)?;
        let mut tensors: HashMap<String, HostTensor> = describe(&model)
            .into_iter()
            .map(|p| {
                let mut rng = StdRng::seed_from_u64(seed ^ key_hash(&p.key));
                let len = p.shape.iter().product();
                let values = values(p.init, len, &mut rng);
                (
                    p.key,
                    HostTensor {
                        shape: p.shape,
                        values,
                    },
                )
            })
            .collect();
        tensors.extend(rotary_constants(model.spec()));
        load_state_dict(model, tensors).map_err(|e| match e {
            LoadError::Config { source, .. } => source,
            other => unreachable!("a model always loads its own initial weights: {other}"),
        })
    }
}
