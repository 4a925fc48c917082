//! hier's patches to Burn (`third_party/README.md`): burn-flex's vectorized math
//! (`src/ops/fast_math.rs`) against f64 references and against the formulas it replaces, on
//! contiguous, strided and shared inputs; burn-flex's copy-free reshape of strided views; and
//! burn-autodiff's one-node softmax and layer-norm backward
//! against the analytic gradient and the decomposition they replace.
#![allow(clippy::disallowed_methods)] // tests read tensors freely

use burn::tensor::ops::{ActivationOps, ModuleOps};
use burn::tensor::{activation, Distribution, Tensor, TensorData, TensorPrimitive, Tolerance};
use burn_flex::ops::fast_math::{erf_f32, exp_f32, gelu_backward_f32, gelu_f32, sigmoid_f32};
use burn_flex::{Flex, FlexDevice};
use std::f64::consts::{PI, SQRT_2};

type B = Flex;

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i32)
        .wrapping_sub(b.to_bits() as i32)
        .unsigned_abs()
}

fn cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

fn pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

#[test]
fn exp_is_within_two_ulp_of_the_correctly_rounded_result() {
    let mut worst = (0, 0.0);
    let mut x = -87.0f32;
    while x < 88.7 {
        let e = ulps(exp_f32(x), (x as f64).exp() as f32);
        if e > worst.0 {
            worst = (e, x);
        }
        x += 0.000_37;
    }
    assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
}

#[test]
fn exp_saturates_and_propagates_nan() {
    assert_eq!(exp_f32(0.0), 1.0);
    for x in [f32::MIN, -200.0, f32::NEG_INFINITY] {
        assert_eq!(exp_f32(x), 0.0, "exp({x})");
    }
    assert_eq!(exp_f32(100.0), f32::INFINITY);
    assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    assert!(exp_f32(f32::NAN).is_nan());
    // results below f32::MIN_POSITIVE are subnormal, not flushed
    let x = -95.0f32;
    assert!(exp_f32(x) > 0.0);
    assert!((exp_f32(x) as f64 - (x as f64).exp()).abs() < 1e-44);
}

#[test]
fn erf_is_within_2_5e_7_of_libm() {
    let mut worst = (0.0f32, 0.0);
    let mut x = -6.0f32;
    while x < 6.0 {
        let e = (erf_f32(x) - libm::erf(x as f64) as f32).abs();
        if e > worst.0 {
            worst = (e, x);
        }
        x += 0.000_31;
    }
    assert!(worst.0 < 2.5e-7, "error {} at x = {}", worst.0, worst.1);
    assert_eq!(erf_f32(0.0), 0.0);
    assert_eq!(erf_f32(f32::INFINITY), 1.0);
    assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
    assert!(erf_f32(f32::NAN).is_nan());
    let tiny = 1e-6f32;
    assert!((erf_f32(tiny) / (tiny * std::f32::consts::FRAC_2_SQRT_PI) - 1.0).abs() < 1e-6);
}

#[test]
fn gelu_and_its_derivative_match_the_exact_formulas() {
    for i in -800..800 {
        let x = i as f32 * 0.01;
        let xd = x as f64;
        assert!(
            (gelu_f32(x) as f64 - xd * cdf(xd)).abs() < 1e-6,
            "gelu({x})"
        );
        let want = 0.7 * (cdf(xd) + xd * pdf(xd));
        assert!(
            (gelu_backward_f32(x, 0.7) as f64 - want).abs() < 1e-6,
            "gelu'({x})"
        );
    }
    // the negative tail keeps its relative accuracy (Φ from erfc, no 1 - erf cancellation;
    // what is left is the rounding of the exponent -x²/2 near -65)
    for i in 300..1300 {
        let x = -(i as f32) * 0.01;
        let want = x as f64 * cdf(x as f64);
        let rel = (gelu_f32(x) as f64 - want).abs() / want.abs();
        assert!(rel < 5e-5, "gelu({x}): relative error {rel}");
    }
}

fn random(shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::random(shape, Distribution::Normal(0.0, 3.0), &FlexDevice)
}

fn host(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[test]
fn tensor_exp_on_contiguous_strided_and_shared_inputs() {
    let x = random([3, 5, 7]);
    let before = host(x.clone());
    let want: Vec<f32> = before.iter().map(|v| v.exp()).collect();
    // `x` stays alive, so the op must not write into its buffer
    let got = host(x.clone().exp());
    assert_eq!(host(x.clone()), before, "exp wrote into a shared input");
    for (g, w) in got.iter().zip(&want) {
        assert!(ulps(*g, *w) <= 2, "{g} vs {w}");
    }
    let strided = x.swap_dims(0, 2).exp().swap_dims(0, 2);
    TensorData::from(host(strided).as_slice()).assert_approx_eq::<f32>(
        &TensorData::from(want.as_slice()),
        Tolerance::rel_abs(1e-6, 1e-30),
    );
}

#[test]
fn tensor_gelu_and_backward_match_the_formulas() {
    let x = random([2, 3, 33]);
    let g = random([2, 3, 33]);
    let xs = host(x.clone());
    for (got, &x) in host(activation::gelu(x.clone())).iter().zip(&xs) {
        let want = x as f64 * cdf(x as f64);
        assert!(
            (*got as f64 - want).abs() < 2e-6,
            "gelu({x}) = {got}, want {want}"
        );
    }
    // a strided gradient exercises the copy into a contiguous buffer
    let strided = g.clone().swap_dims(1, 2).swap_dims(1, 2);
    let back = B::gelu_backward(
        x.into_primitive().tensor(),
        strided.into_primitive().tensor(),
    );
    let back: Tensor<B, 3> = Tensor::from_primitive(TensorPrimitive::Float(back));
    for ((got, &x), &g) in host(back).iter().zip(&xs).zip(&host(g)) {
        let xd = x as f64;
        let want = g as f64 * (cdf(xd) + xd * pdf(xd));
        assert!(
            (*got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
    }
}

#[test]
fn softmax_rows_sum_to_one_and_masked_entries_are_exactly_zero() {
    let mut x = host(random([2, 4, 40]));
    for (i, v) in x.iter_mut().enumerate() {
        if i % 3 == 0 {
            *v = f32::MIN;
        }
    }
    let t = Tensor::<B, 3>::from_data(TensorData::new(x.clone(), [2, 4, 40]), &FlexDevice);
    let got = host(activation::softmax(t, 2));
    for (row_in, row) in x.chunks(40).zip(got.chunks(40)) {
        let max = row_in.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let sum: f64 = row_in.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (&v, &p) in row_in.iter().zip(row) {
            if v == f32::MIN {
                assert_eq!(p, 0.0);
            } else {
                let want = (v as f64 - max).exp() / sum;
                assert!((p as f64 - want).abs() < 1e-6, "{p} vs {want}");
            }
        }
    }
}

#[test]
fn reshape_of_strided_views_keeps_the_values() {
    let x = random([2, 3, 4]);
    let xs = host(x.clone());
    let at = |b: usize, i: usize, j: usize| xs[b * 12 + i * 4 + j];
    // [b, j, i]: reshapes that add 1s are views, merging j and i needs a copy
    let t = x.clone().swap_dims(1, 2);
    let mut want = vec![];
    for b in 0..2 {
        for j in 0..4 {
            for i in 0..3 {
                want.push(at(b, i, j));
            }
        }
    }
    let v: Tensor<B, 4> = t.clone().reshape([1, 2, 4, 3]);
    assert_eq!(v.clone().into_data().to_vec::<f32>().unwrap(), want);
    assert_eq!(host(v.reshape([2, 4, 3])), want);
    let v: Tensor<B, 4> = t.clone().reshape([2, 4, 3, 1]);
    assert_eq!(v.into_data().to_vec::<f32>().unwrap(), want);
    let m: Tensor<B, 2> = t.reshape([2, 12]);
    assert_eq!(m.into_data().to_vec::<f32>().unwrap(), want);
    // [i, b, j]: splitting the contiguous last dimension is a view
    let mut want = vec![];
    for i in 0..3 {
        for b in 0..2 {
            for j in 0..4 {
                want.push(at(b, i, j));
            }
        }
    }
    let v: Tensor<B, 4> = x.swap_dims(0, 1).reshape([3, 2, 2, 2]);
    let back = v.clone().exp().log(); // an op on the strided view
    assert_eq!(v.into_data().to_vec::<f32>().unwrap(), want);
    let back: Vec<f32> = back.into_data().to_vec().unwrap();
    for (g, w) in back.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()));
    }
    // a contiguous slice at an offset of a flat buffer, reshaped, then used by ops
    let flat: Tensor<B, 1> = Tensor::from_data(TensorData::new(xs.clone(), [24]), &FlexDevice);
    let part: Tensor<B, 2> = flat.narrow(0, 6, 12).reshape([3, 4]);
    assert_eq!(part.clone().into_data().to_vec::<f32>().unwrap(), xs[6..18]);
    let doubled: Vec<f32> = (part.clone().mul_scalar(2.0) + part.transpose().transpose())
        .into_data()
        .to_vec()
        .unwrap();
    for (g, w) in doubled.iter().zip(&xs[6..18]) {
        assert_eq!(*g, 3.0 * w);
    }
}

#[test]
fn autodiff_softmax_gradient_is_the_analytic_one() {
    type A = burn::backend::Autodiff<Flex>;
    let mut x = host(random([2, 3, 9]));
    x[4] = f32::MIN; // a masked entry
    let w = host(random([2, 3, 9]));
    let xt = Tensor::<A, 3>::from_data(TensorData::new(x.clone(), [2, 3, 9]), &FlexDevice)
        .require_grad();
    let wt = Tensor::<A, 3>::from_data(TensorData::new(w.clone(), [2, 3, 9]), &FlexDevice);
    let loss = (activation::softmax(xt.clone(), 2) * wt).sum();
    let grads = loss.backward();
    let got: Vec<f32> = xt.grad(&grads).unwrap().into_data().to_vec().unwrap();
    for ((xr, wr), gr) in x.chunks(9).zip(w.chunks(9)).zip(got.chunks(9)) {
        let max = xr.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = xr.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let y: Vec<f64> = e.iter().map(|v| v / sum).collect();
        let dot: f64 = y.iter().zip(wr).map(|(y, &w)| y * w as f64).sum();
        // f32 rounding of `y · (w − Σ y·w)` scales with the terms, not with the result
        let spread: f64 = y.iter().zip(wr).map(|(y, &w)| y * (w as f64).abs()).sum();
        for k in 0..9 {
            let want = y[k] * (wr[k] as f64 - dot);
            let tolerance =
                1e-6 + 8.0 * f32::EPSILON as f64 * y[k] * ((wr[k] as f64).abs() + spread);
            assert!(
                (gr[k] as f64 - want).abs() < tolerance,
                "{} vs {want}",
                gr[k]
            );
        }
    }
}

/// `B::layer_norm` on the autodiff backend (one node) against the element-wise decomposition,
/// with and without a bias; the gradients of `x` (a strided view), `γ` and `β`.
#[test]
fn autodiff_layer_norm_gradients_match_the_decomposition() {
    type A = burn::backend::Autodiff<Flex>;
    let leaf = |shape: [usize; 3], offset: f32| {
        Tensor::<A, 3>::from_data(TensorData::new(host(random(shape)), shape), &FlexDevice)
            .add_scalar(offset)
            .detach()
            .require_grad()
    };
    let x = leaf([2, 9, 5], 2.0); // seen as [2, 5, 9] through a transpose
    let gamma = leaf([1, 1, 9], 1.0).reshape([9]).detach().require_grad();
    let beta = leaf([1, 1, 9], 0.0).reshape([9]).detach().require_grad();
    let w = Tensor::<A, 3>::from_data(
        TensorData::new(host(random([2, 5, 9])), [2, 5, 9]),
        &FlexDevice,
    );
    let eps = 1e-5;
    for with_beta in [true, false] {
        let prim = |t: &Tensor<A, 1>| t.clone().into_primitive().tensor();
        let fused: Tensor<A, 3> = Tensor::from_primitive(TensorPrimitive::Float(A::layer_norm(
            x.clone().swap_dims(1, 2).into_primitive().tensor(),
            prim(&gamma),
            with_beta.then(|| prim(&beta)),
            eps,
        )));
        let xs = x.clone().swap_dims(1, 2);
        let (var, mean) = xs.clone().var_mean_bias(2);
        let mut plain = (xs - mean) / (var + eps).sqrt() * gamma.clone().unsqueeze();
        if with_beta {
            plain = plain + beta.clone().unsqueeze();
        }
        let grads = |y: Tensor<A, 3>| {
            let g = (y * w.clone()).sum().backward();
            let values = |t: &Tensor<A, 1>| t.grad(&g).map(|t| host(t.unsqueeze()));
            (host(x.grad(&g).unwrap()), values(&gamma), values(&beta))
        };
        let (fx, fg, fb) = grads(fused);
        let (px, pg, pb) = grads(plain);
        let close = |a: &[f32], b: &[f32]| {
            for (a, b) in a.iter().zip(b) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{a} vs {b} (bias {with_beta})"
                );
            }
        };
        close(&fx, &px);
        close(&fg.unwrap(), &pg.unwrap());
        assert_eq!(
            fb.is_some(),
            with_beta,
            "β gets a gradient only when it is used"
        );
        if with_beta {
            close(&fb.unwrap(), &pb.unwrap());
        }
    }
}

/// A slice that keeps everything passes the tensor (and its gradient) through; a real slice
/// still scatters its gradient into zeros.
#[test]
fn autodiff_whole_and_partial_slices() {
    type A = burn::backend::Autodiff<Flex>;
    let values = host(random([2, 4, 3]));
    let x = Tensor::<A, 3>::from_data(TensorData::new(values.clone(), [2, 4, 3]), &FlexDevice)
        .require_grad();
    let w = Tensor::<A, 3>::from_data(
        TensorData::new(host(random([2, 4, 3])), [2, 4, 3]),
        &FlexDevice,
    );
    let whole = x.clone().narrow(1, 0, 4).slice([0..2, 0..4, 0..3]);
    assert_eq!(host(whole.clone().inner()), values);
    let part = x.clone().narrow(1, 1, 2); // rows 1..3
    let loss = (whole * w.clone()).sum() + part.sum().mul_scalar(10.0);
    let grads = loss.backward();
    let got = host(x.grad(&grads).unwrap());
    let w = host(w.inner());
    for (i, (g, w)) in got.iter().zip(&w).enumerate() {
        let row = (i / 3) % 4;
        let want = w + if (1..3).contains(&row) { 10.0 } else { 0.0 };
        assert!((g - want).abs() < 1e-6, "element {i}: {g} vs {want}");
    }
}

#[test]
fn sigmoid_matches_the_formula_and_saturates() {
    for i in -2000..2000 {
        let x = i as f32 * 0.05;
        let want = 1.0 / (1.0 + (-(x as f64)).exp());
        assert!((sigmoid_f32(x) as f64 - want).abs() < 2e-7, "sigmoid({x})");
    }
    assert_eq!(sigmoid_f32(-200.0), 0.0);
    assert_eq!(sigmoid_f32(200.0), 1.0);
    let t = random([2, 3, 5]);
    let got = host(activation::sigmoid(t.clone()));
    for (g, x) in got.iter().zip(host(t)) {
        assert!((*g as f64 - 1.0 / (1.0 + (-(x as f64)).exp())).abs() < 2e-7);
    }
}
