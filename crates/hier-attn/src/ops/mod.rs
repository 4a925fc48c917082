//! Operations with hier's own CPU kernels: linear layers, layer norm, exact GELU, SiLU, softmax
//! over the last axis, narrowing, axis swaps, row-major copies of strided views, and Adam's
//! update.
//!
//! On Flex and `Autodiff<Flex>` (with the default `cpu-kernels` feature) they run hier's
//! vectorized kernels, as single autodiff nodes with their own backward; on every other backend
//! they are Burn's own operations. This is how the speed reaches a crate built against stock
//! Burn: Burn's CPU backend computes these with scalar `expf`/`erff`, copies views of three or
//! more dimensions one element at a time, runs a linear layer as one product per batch element,
//! and records softmax as five autodiff nodes.
//!
//! The model stays generic over Burn's `Backend`: hier specialises by the backend's type
//! (a `TypeId` test the compiler resolves per instantiation) rather than through a trait of
//! its own, which every user's backend type would then have to implement.

mod adam;
#[cfg(feature = "cpu-kernels")]
mod autodiff;
#[cfg(feature = "cpu-kernels")]
mod fast_math;
#[cfg(feature = "cpu-kernels")]
mod flex;
#[cfg(feature = "cpu-kernels")]
mod layer_norm;
#[cfg(feature = "cpu-kernels")]
mod linear;
#[cfg(feature = "cpu-kernels")]
mod product;
#[cfg(feature = "cpu-kernels")]
mod views;

pub use adam::{adam_update, AdamCoefficients, Moments};

use burn::nn::Linear;
use burn::tensor::{activation, backend::Backend, Tensor, TensorPrimitive};

/// `value` as a `U` when `T` and `U` are the same type.
#[cfg(feature = "cpu-kernels")]
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    use std::any::Any;
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(same) => Ok(same.take().expect("the slot was just filled")),
        None => Err(slot.expect("untouched when the types differ")),
    }
}

/// `value` as a `U`, where the caller has already seen that `T` is `U`.
#[cfg(feature = "cpu-kernels")]
fn same<T: 'static, U: 'static>(value: T) -> U {
    match cast(value) {
        Ok(u) => u,
        Err(_) => unreachable!("the types were checked equal"),
    }
}

#[cfg(feature = "cpu-kernels")]
type AdFlexTensor = burn::tensor::ops::FloatTensor<burn::backend::Autodiff<burn::backend::Flex>>;

/// The backends hier's CPU kernels serve.
#[cfg(feature = "cpu-kernels")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cpu {
    Flex,
    AutodiffFlex,
}

/// Which kernels take `x`: f32 tensors of `Flex` or `Autodiff<Flex>` (other element types and
/// backends keep Burn's operations).
#[cfg(feature = "cpu-kernels")]
fn cpu<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Cpu> {
    use burn::tensor::{ops::FloatTensor, DType};
    use std::any::TypeId;
    let float = TypeId::of::<FloatTensor<B>>();
    if x.dtype() != DType::F32 {
        None
    } else if float == TypeId::of::<burn_flex::FlexTensor>() {
        Some(Cpu::Flex)
    } else if float == TypeId::of::<AdFlexTensor>() {
        Some(Cpu::AutodiffFlex)
    } else {
        None
    }
}

/// `x`'s primitive as the kernels' type `T` (after [`cpu`] named it).
#[cfg(feature = "cpu-kernels")]
fn unwrap<T: 'static, B: Backend, const D: usize>(x: Tensor<B, D>) -> T {
    same(x.into_primitive().tensor())
}

/// A kernel's result `T` back as a tensor of `B` (after [`cpu`] named it).
#[cfg(feature = "cpu-kernels")]
fn wrap<T: 'static, B: Backend, const D: usize>(t: T) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(same(t)))
}

/// `on_flex(x)` or `on_autodiff(x)` when the kernels take `x`; otherwise `x` back, for Burn's
/// own operation.
#[cfg(feature = "cpu-kernels")]
fn dispatch<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    on_flex: fn(burn_flex::FlexTensor) -> burn_flex::FlexTensor,
    on_autodiff: fn(AdFlexTensor) -> AdFlexTensor,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    match cpu(&x) {
        Some(Cpu::Flex) => Ok(wrap(on_flex(unwrap(x)))),
        Some(Cpu::AutodiffFlex) => Ok(wrap(on_autodiff(unwrap(x)))),
        None => Err(x),
    }
}

/// `x · weight + bias` over the last axis, as `burn::tensor::module::linear`: one 2-D product
/// over all rows (and one per gradient) on Flex and `Autodiff<Flex>`.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let all_f32 = cpu(&weight).is_some() && bias.as_ref().is_none_or(|b| cpu(b).is_some());
    match cpu(&x).filter(|_| all_f32) {
        Some(Cpu::Flex) => {
            return wrap(linear::on_flex(unwrap(x), unwrap(weight), bias.map(unwrap)))
        }
        Some(Cpu::AutodiffFlex) => {
            return wrap(linear::on_autodiff(
                unwrap(x),
                unwrap(weight),
                bias.map(unwrap),
            ))
        }
        None => {}
    }
    #[allow(clippy::disallowed_methods)] // the one call: every other backend's own op
    burn::tensor::module::linear(x, weight, bias)
}

/// `layer.forward(x)` through [`linear`].
pub fn apply_linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// Layer norm over the last axis, `(x − μ) / sqrt(σ² + ε) · weight + bias` (biased variance):
/// the backend's `layer_norm` op (one pass on Flex), and on `Autodiff<Flex>` one node with a
/// one-pass backward per row.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    if cpu(&x) == Some(Cpu::AutodiffFlex) && cpu(&weight).is_some() && cpu(&bias).is_some() {
        let y = layer_norm::on_autodiff(unwrap(x), unwrap(weight), unwrap(bias), epsilon);
        return wrap(y);
    }
    let float = |t: Tensor<B, 1>| t.into_primitive().tensor();
    let y = B::layer_norm(
        x.into_primitive().tensor(),
        float(weight),
        Some(float(bias)),
        epsilon,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// `x.narrow(axis, start, len)`, and `x` itself when that keeps the whole axis (no node, no
/// backward). On `Autodiff<Flex>` the backward writes the gradient into zeros row by row.
pub fn narrow<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    axis: usize,
    start: usize,
    len: usize,
) -> Tensor<B, D> {
    if start == 0 && len == x.dims()[axis] {
        return x;
    }
    #[cfg(feature = "cpu-kernels")]
    if cpu(&x) == Some(Cpu::AutodiffFlex) {
        return wrap(views::narrow(unwrap(x), axis, start, len));
    }
    x.narrow(axis, start, len)
}

/// `x.swap_dims(a, b)` laid out row-major, as [`contiguous`] of it; on `Autodiff<Flex>` the
/// gradient is laid out row-major too (stock autodiff passes on a strided view, which the next
/// reshape copies element by element).
pub fn swap_dims<B: Backend, const D: usize>(x: Tensor<B, D>, a: usize, b: usize) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    if cpu(&x) == Some(Cpu::AutodiffFlex) {
        return wrap(views::swap_dims(unwrap(x), a, b));
    }
    contiguous(x.swap_dims(a, b))
}

/// Exact (erf) GELU, `x · Φ(x)`, as `burn::tensor::activation::gelu`.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match dispatch(x, flex::gelu, autodiff::gelu) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation::gelu(x)
}

/// SiLU, `x · σ(x)`, as `burn::tensor::activation::silu`.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match dispatch(x, flex::silu, autodiff::silu) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation::silu(x)
}

/// Softmax over the last axis, as `burn::tensor::activation::softmax(x, D - 1)`.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match dispatch(x, flex::softmax_last, autodiff::softmax_last) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation::softmax(x, D - 1)
}

/// `x` with its elements laid out row-major, the same values: call it before a reshape of a
/// permuted or narrowed view, which stock Flex would copy element by element. Other backends
/// copy such views themselves; for them this is the identity.
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    let x = match dispatch(x, flex::contiguous, autodiff::contiguous) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x
}
