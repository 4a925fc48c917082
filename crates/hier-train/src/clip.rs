//! Global-norm gradient clipping, as PyTorch's `clip_grad_norm_`: one norm over all parameters
//! (Burn's `GradientClipping::Norm` clips each tensor on its own, which trains differently).
//!
//! The norm and the scale stay on the device: clipping reads nothing back to the host, and the
//! trainer reads the norm only when it writes a metrics line.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    /// `[1]`, multiplied into every gradient.
    factor: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let factor = self.factor.clone().unsqueeze::<D>();
            self.grads.register(param.id, g * factor);
        }
    }
}

/// The global squared L2 norm `[1]` of `grads` over `module`'s parameters, on the device; `None`
/// when no parameter has a gradient.
pub fn global_norm_squared<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut visitor = SquaredNorm::<B> { grads, sum: None };
    module.visit(&mut visitor);
    visitor.sum
}

/// Scale `grads` so that their global norm is at most `max_norm` (by `max_norm / (norm + 1e-6)`,
/// never scaling up; `max_norm = 0` disables clipping). Returns the squared norm before
/// clipping, on the device (`None` without gradients): the norm is its square root.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let squared = global_norm_squared::<B, M>(module, grads)?;
    if max_norm > 0.0 {
        let denominator = squared.clone().sqrt().add_scalar(1e-6);
        // a factor of at least 1 becomes exactly 1: multiplying by it changes nothing
        let factor = Tensor::full([1], max_norm, &denominator.device())
            .div(denominator)
            .clamp_max(1.0);
        module.visit(&mut Scale::<B> { grads, factor });
    }
    Some(squared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type B = Autodiff<Flex>;

    /// Gradients of a bias-free `Linear(2, 1)` on input `x` for output `sum(y)`: `x` itself.
    fn grads(x: [f32; 2]) -> (Linear<B>, GradientsParams) {
        let device = Default::default();
        let linear = LinearConfig::new(2, 1).with_bias(false).init::<B>(&device);
        let y = linear.forward(Tensor::<B, 2>::from_floats([x], &device));
        let grads = GradientsParams::from_grads(y.sum().backward(), &linear);
        (linear, grads)
    }

    fn weight_grad(linear: &Linear<B>, grads: &GradientsParams) -> Vec<f32> {
        let g = grads.get::<Flex, 2>(linear.weight.id).expect("a gradient");
        g.into_data().to_vec().unwrap()
    }

    #[test]
    fn clips_to_the_max_norm_and_never_scales_up() {
        let (linear, mut g) = grads([3.0, 4.0]); // norm 5
        let squared = clip_global_norm::<B, _>(&linear, &mut g, 1.0).unwrap();
        assert_eq!(squared.into_scalar(), 25.0);
        let clipped = weight_grad(&linear, &g);
        assert!((clipped[0] - 0.6).abs() < 1e-6 && (clipped[1] - 0.8).abs() < 1e-6);
        let (linear, mut g) = grads([3.0, 4.0]);
        clip_global_norm::<B, _>(&linear, &mut g, 10.0).unwrap();
        assert_eq!(weight_grad(&linear, &g), vec![3.0, 4.0]);
    }
}
