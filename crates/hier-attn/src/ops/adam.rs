//! Adam's element-wise update as one pass on Flex. Burn's Adam runs it as about a dozen tensor
//! operations, each a pass over every parameter (about 4% of a `(1,2)` training step on two
//! cores); here the moments and the parameter are read and written once. The arithmetic is
//! Burn's, operation by operation, so both give the same bits.

use burn::tensor::{backend::Backend, Tensor};

/// The scalars of one Adam step, as Burn's `Adam` derives them for step `time`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamCoefficients {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// `sqrt(1 − β₂ᵗ) / (1 − β₁ᵗ)`: both bias corrections in one factor.
    pub step_factor: f32,
    /// `ε · sqrt(1 − β₂ᵗ)`, added to `sqrt(v)`.
    pub epsilon: f32,
    /// The learning rate.
    pub lr: f32,
}

impl AdamCoefficients {
    /// The coefficients of step `time` (1 for the first step), as `burn::optim::Adam` has them.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, lr: f64, time: usize) -> Self {
        let time = time.min(i32::MAX as usize) as i32;
        let correction_2 = (1.0 - beta_2.powi(time)).sqrt();
        Self {
            beta_1,
            beta_2,
            step_factor: correction_2 / (1.0 - beta_1.powi(time)),
            epsilon: epsilon * correction_2,
            lr: lr as f32,
        }
    }
}

/// The moments `(m, v)` of a parameter.
pub type Moments<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>);

/// One Adam step of `param` with gradient `grad`: the new moments (from `moments`, or from zero
/// on the first step) and the parameter moved against `m̂ / (sqrt(v̂) + ε)` times the learning
/// rate. Returns `(param, (m, v))`.
pub fn adam_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<Moments<B, D>>,
    c: &AdamCoefficients,
) -> (Tensor<B, D>, Moments<B, D>) {
    #[cfg(feature = "cpu-kernels")]
    let (param, grad, moments) = match flex_update(param, grad, moments, c) {
        Ok(done) => return done,
        Err(inputs) => inputs,
    };
    let m = grad.clone().mul_scalar(1.0 - c.beta_1);
    let v = grad.square().mul_scalar(1.0 - c.beta_2);
    let (m, v) = match moments {
        Some((m0, v0)) => (
            m0.mul_scalar(c.beta_1).add(m),
            v0.mul_scalar(c.beta_2).add(v),
        ),
        None => (m, v),
    };
    let step = m
        .clone()
        .mul_scalar(c.step_factor)
        .div(v.clone().sqrt().add_scalar(c.epsilon));
    (param - step.mul_scalar(c.lr), (m, v))
}

#[cfg(feature = "cpu-kernels")]
type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<Moments<B, D>>);

/// [`adam_update`] in one pass when `B` is Flex and every tensor is f32; the inputs back otherwise.
#[cfg(feature = "cpu-kernels")]
#[allow(clippy::type_complexity)]
fn flex_update<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<Moments<B, D>>,
    c: &AdamCoefficients,
) -> Result<(Tensor<B, D>, Moments<B, D>), Inputs<B, D>> {
    use super::{cpu, flex, unwrap, wrap, Cpu};
    if cpu(&param) != Some(Cpu::Flex) || cpu(&grad) != Some(Cpu::Flex) {
        return Err((param, grad, moments));
    }
    let moments = moments.map(|(m, v)| (unwrap(m), unwrap(v)));
    let (p, m, v) = flex::adam_update(unwrap(param), unwrap(grad), moments, c);
    Ok((wrap(p), (wrap(m), wrap(v))))
}
