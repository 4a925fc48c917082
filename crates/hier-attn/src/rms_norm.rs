use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// Configuration of [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Size of the normalised (last) dimension.
    pub dim: usize,
}

/// The reference's RMSNorm: `x / max(||x||_2, 1e-12) * sqrt(dim) * gamma`.
///
/// This is `F.normalize` scaled by `sqrt(dim)`, not the usual `x / sqrt(mean(x^2) + eps)`:
/// the two differ for rows with a tiny norm, and parity needs this one.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-feature gain, `[dim]`, initialised to ones.
    pub gamma: Param<Tensor<B, 1>>,
}

impl RmsNormConfig {
    /// An RMSNorm with `gamma` initialised to ones.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm {
            gamma: Param::from_tensor(Tensor::ones([self.dim], device)),
        }
    }
}

impl<B: Backend> RmsNorm<B> {
    /// `[..., dim] -> [..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let [dim] = self.gamma.shape().dims();
        let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
        x / norm * self.gamma.val().mul_scalar((dim as f64).sqrt()).unsqueeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn scales_rows_to_norm_sqrt_dim() {
        let device = Default::default();
        let norm = RmsNormConfig::new(4).init::<Flex>(&device);
        let x =
            Tensor::<Flex, 2>::from_floats([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], &device);
        let y: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
        // ||(3,4,0,0)|| = 5, times sqrt(4) = 2
        let expect = [1.2f32, 1.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
