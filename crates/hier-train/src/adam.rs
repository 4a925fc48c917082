//! Adam as the trainer runs it: Burn's Adam (β = (0.9, 0.999), no weight decay) with its update
//! in one pass per parameter ([`hier_attn::ops::adam_update`]) instead of a dozen tensor
//! operations. Its state is Burn's [`AdamState`], so checkpoints are the same records either way.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use hier_attn::ops::{adam_update, AdamCoefficients};

/// Adam with Burn's defaults and the reference's ε = 1e-8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to `sqrt(v̂)`.
    pub epsilon: f32,
}

impl Default for FusedAdam {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
        }
    }
}

/// The optimizer of a module `M`.
pub type AdamOptimizer<M, B> = OptimizerAdaptor<FusedAdam, M, B>;

impl FusedAdam {
    /// The optimizer of a module `M`, with no state yet.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> AdamOptimizer<M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let time = state.as_ref().map_or(0, |s| s.momentum.time) + 1;
        let c = AdamCoefficients::new(self.beta_1, self.beta_2, self.epsilon, lr, time);
        let moments = state.map(|s| (s.momentum.moment_1, s.momentum.moment_2));
        let (tensor, (m, v)) = adam_update(tensor, grad, moments, &c);
        let momentum = AdaptiveMomentumState::new(time, m, v);
        (tensor, Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
