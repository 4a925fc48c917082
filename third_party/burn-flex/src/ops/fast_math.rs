//! hier patch: branch-free f32 `exp`, `erf`, sigmoid and GELU that the compiler vectorizes.
//!
//! `f32::exp` calls glibc's scalar `expf`, which also takes a slow errno path for every result
//! that underflows (every masked attention logit); libm's `erff` is scalar too. These versions
//! are straight-line arithmetic, so under `#[macerator::with_simd]` each loop runs 16 lanes at a
//! time on AVX-512 (8 on AVX2). Accuracy: `exp` within 2 ulp of the correctly rounded result
//! for normal results (results below `f32::MIN_POSITIVE` are computed through two exact power-of-two
//! factors, so they round like any product); `erf` within 2.5e-7 absolute; GELU's `Φ` straight
//! from `erfc` (no series branch, no cancellation in the negative tail). Polynomials use fused
//! multiply-adds. Tested in hier's
//! `crates/hier-attn/tests/backend_patches.rs` (this vendored crate's dev-dependencies are not built).

use alloc::vec::Vec;
use burn_backend::DType;
use burn_std::Bytes;

use crate::{FlexTensor, Layout};

const LOG2E: f32 = core::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for every `|n| ≤ 150`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding 1.5 · 2²³ rounds to an integer that can be read back from the mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// `e^x`: Cody–Waite reduction to `r ∈ [-ln2/2, ln2/2]`, a degree-7 polynomial, and a scale by
/// `2^n` built from exponent bits in two halves (so `n` down to -150 underflows gracefully).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // NaN fails both comparisons and propagates through the arithmetic.
    let x = if x < -104.0 {
        -104.0
    } else if x > 89.0 {
        89.0
    } else {
        x
    };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = poly(
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.000_000_1e-1,
        ],
    );
    let p = (p * r).mul_add(r, r) + 1.0;
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) << 23) as u32);
    let s2 = f32::from_bits(((n - half + 127) << 23) as u32);
    p * s1 * s2
}

/// `c[0]·x^(n-1) + … + c[n-1]` by Horner's rule with fused multiply-adds (one instruction each
/// where the caller is compiled with FMA, as under `with_simd`).
#[inline(always)]
fn poly(x: f32, c: &[f32]) -> f32 {
    c[1..].iter().fold(c[0], |acc, &k| acc.mul_add(x, k))
}

/// `erfc(z)` for `z ≥ 0`: `t·e^{-z² + P(t)}`, `t = 1 / (1 + z/2)` (a Chebyshev fit with relative
/// error below 1.2e-7; no cancellation in the tail).
#[inline(always)]
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / 0.5f32.mul_add(z, 1.0);
    let p = poly(
        t,
        &[
            0.170_872_77,
            -0.822_152_2,
            1.488_515_9,
            -1.135_204,
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_7,
            -1.265_512_2,
        ],
    );
    t * exp_f32((-z).mul_add(z, p))
}

/// `erf(x)`: the odd Taylor series below 0.5 (relative accuracy near 0), `1 - erfc` above.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let z = x.abs();
    let x2 = x * x;
    let small = x * poly(
        x2,
        &[
            1.205_533_3e-4,
            -8.548_327e-4,
            5.223_977_6e-3,
            -0.026_866_17,
            0.112_837_92,
            -0.376_126_4,
            1.128_379_2,
        ],
    );
    let large = (1.0 - erfc_nonneg(z)).copysign(x);
    if z < 0.5 { small } else { large }
}

/// `1 / (1 + e^{-x})`; saturates to exactly 0 and 1 (`e^{-x}` overflows to infinity or
/// underflows to 0).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `Φ(x)`, the standard normal CDF, from `erfc` of `|x|/√2` (GELU needs absolute accuracy
/// only, so no series branch near 0, and the negative tail keeps its relative accuracy).
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    let half_erfc = 0.5 * erfc_nonneg(x.abs() * FRAC_1_SQRT_2);
    if x < 0.0 { half_erfc } else { 1.0 - half_erfc }
}

/// Exact (erf) GELU: `x · Φ(x)`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    x * normal_cdf(x)
}

/// `d gelu / dx · g = (Φ(x) + x · φ(x)) · g`.
#[inline(always)]
pub fn gelu_backward_f32(x: f32, g: f32) -> f32 {
    let pdf = FRAC_1_SQRT_2PI * exp_f32(-0.5 * x * x);
    g * x.mul_add(pdf, normal_cdf(x))
}

/// Defines each function once: under macerator's runtime SIMD dispatch when the `simd` feature
/// is on (its loop then vectorizes for the CPU it runs on), as a plain function otherwise.
macro_rules! dispatched {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) $body:block)*) => {$(
        #[cfg(feature = "simd")]
        #[macerator::with_simd]
        fn $name<S: macerator::Simd>($($arg: $ty),*) $body

        #[cfg(not(feature = "simd"))]
        fn $name($($arg: $ty),*) $body
    )*};
}

/// In-place and into-a-new-buffer maps of the scalar function `$f`.
macro_rules! map_kernels {
    ($inplace:ident, $into:ident, $f:ident) => {
        dispatched! {
            fn $inplace(xs: &mut [f32]) {
                for x in xs.iter_mut() {
                    *x = $f(*x);
                }
            }

            fn $into(src: &[f32], dst: &mut Vec<f32>) {
                dst.clear();
                dst.reserve(src.len());
                // An index loop over the spare capacity (not `extend`, which stays a scalar call).
                for (d, &x) in dst.spare_capacity_mut().iter_mut().zip(src) {
                    d.write($f(x));
                }
                // SAFETY: the loop initialised all `src.len()` reserved elements.
                unsafe { dst.set_len(src.len()) };
            }
        }
    };
}

map_kernels!(exp_inplace, exp_into, exp_f32);
map_kernels!(gelu_inplace, gelu_into, gelu_f32);
map_kernels!(sigmoid_inplace, sigmoid_into, sigmoid_f32);

dispatched! {
    fn gelu_backward_inplace(x: &[f32], g: &mut [f32]) {
        for (g, &x) in g.iter_mut().zip(x) {
            *g = gelu_backward_f32(x, *g);
        }
    }
}

/// A contiguous tensor at offset 0 covering its whole buffer; shares nothing new with `tensor`.
fn contiguous(tensor: FlexTensor) -> FlexTensor {
    let out = tensor.to_contiguous();
    drop(tensor);
    out
}

/// Applies an f32 map to a tensor: in place when the tensor owns a contiguous buffer, otherwise
/// into a fresh contiguous one (one read, one write either way).
fn map_f32(
    tensor: FlexTensor,
    inplace: fn(&mut [f32]),
    into: fn(&[f32], &mut Vec<f32>),
) -> FlexTensor {
    let mut tensor = contiguous(tensor);
    let n = tensor.layout().num_elements();
    if let Some(storage) = tensor.try_storage_mut::<f32>() {
        inplace(&mut storage[..n]);
        return tensor;
    }
    let src: &[f32] = tensor.storage();
    let mut out = Vec::with_capacity(n);
    into(&src[..n], &mut out);
    assert_eq!(out.len(), n);
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(tensor.layout().shape().clone()),
        DType::F32,
    )
}

/// `e^x` of an f32 tensor.
pub fn exp(tensor: FlexTensor) -> FlexTensor {
    map_f32(tensor, exp_inplace, exp_into)
}

/// Exact GELU of an f32 tensor.
pub fn gelu(tensor: FlexTensor) -> FlexTensor {
    map_f32(tensor, gelu_inplace, gelu_into)
}

/// Logistic sigmoid of an f32 tensor.
pub fn sigmoid(tensor: FlexTensor) -> FlexTensor {
    map_f32(tensor, sigmoid_inplace, sigmoid_into)
}

/// GELU's backward of f32 tensors of one shape: `grad · gelu'(x)`.
pub fn gelu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let mut grad = contiguous(grad);
    let n = grad.layout().num_elements();
    let xs: &[f32] = x.storage();
    // Copy-on-write: a shared gradient is copied once, then updated in place.
    let g: &mut [f32] = grad.storage_mut();
    gelu_backward_inplace(&xs[..n], &mut g[..n]);
    grad
}
