//! Element-wise and row-wise operations with hier's own CPU kernels: exact GELU, SiLU, softmax
//! over the last axis, row-major copies of strided views, and Adam's update.
//!
//! On Flex and `Autodiff<Flex>` (with the default `cpu-kernels` feature) they run hier's
//! vectorized kernels, as single autodiff nodes with their own backward; on every other backend
//! they are Burn's own operations. This is how the speed reaches a crate built against stock
//! Burn: Burn's CPU backend computes these with scalar `expf`/`erff`, copies views of three or
//! more dimensions one element at a time, and records softmax as five autodiff nodes.
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

pub use adam::{adam_update, AdamCoefficients, Moments};

use burn::tensor::{activation, backend::Backend, Tensor};

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

/// `on_flex(x)` or `on_autodiff(x)` when `B` is `Flex` or `Autodiff<Flex>` and the kernels take
/// `x`'s element type; otherwise `x` back, for Burn's own operation.
#[cfg(feature = "cpu-kernels")]
fn dispatch<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    on_flex: fn(burn_flex::FlexTensor) -> burn_flex::FlexTensor,
    on_autodiff: fn(AdFlexTensor) -> AdFlexTensor,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    use burn::tensor::{ops::FloatTensor, TensorPrimitive};
    let wrap = |p| Tensor::from_primitive(TensorPrimitive::Float(p));
    let primitive = x.into_primitive().tensor();
    let primitive = match cast::<FloatTensor<B>, burn_flex::FlexTensor>(primitive) {
        Ok(t) if flex::takes(&t) => return Ok(wrap(same(on_flex(t)))),
        Ok(t) => same(t),
        Err(p) => p,
    };
    match cast::<FloatTensor<B>, AdFlexTensor>(primitive) {
        Ok(t) if flex::takes(&t.primitive) => Ok(wrap(same(on_autodiff(t)))),
        Ok(t) => Err(wrap(same(t))),
        Err(p) => Err(wrap(p)),
    }
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
