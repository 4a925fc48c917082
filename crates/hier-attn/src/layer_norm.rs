use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// Configuration of [`LayerNorm`]: PyTorch's `nn.LayerNorm` (biased variance, affine).
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Size of the normalised (last) dimension.
    pub dim: usize,
    /// Added to the variance before the square root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// Layer normalisation with PyTorch's parameter names (`weight`, `bias`), so that the
/// reference's state_dict keys map one to one.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[dim]`, initialised to ones.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift, `[dim]`, initialised to zeros.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl LayerNormConfig {
    /// A layer norm with PyTorch's initialisation (weight ones, bias zeros).
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([self.dim], device)),
            bias: Param::from_tensor(Tensor::zeros([self.dim], device)),
            epsilon: self.epsilon,
        }
    }
}

impl<B: Backend> LayerNorm<B> {
    /// `[..., dim] -> [..., dim]`
    ///
    /// One kernel on Flex and one autodiff node on `Autodiff<Flex>` ([`crate::ops::layer_norm`])
    /// instead of nine element-wise ops and their backward.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::ops::layer_norm(x, self.weight.val(), self.bias.val(), self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn normalises_to_zero_mean_unit_variance() {
        let device = Default::default();
        let norm = LayerNormConfig::new(4).init::<Flex>(&device);
        let x =
            Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0, 4.0], [-2.0, 0.0, 0.0, 2.0]], &device);
        let y: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
        // row 0: mean 2.5, biased var 1.25
        let expect0 = [-1.5f32, -0.5, 0.5, 1.5].map(|v| v / (1.25f32 + 1e-5).sqrt());
        for (a, b) in y[..4].iter().zip(expect0) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let mean1: f32 = y[4..].iter().sum::<f32>() / 4.0;
        assert!(mean1.abs() < 1e-6);
    }
}
