//! hier's own kernels (`hier_attn::ops`) against Burn's operations: the same values on Flex,
//! and the same gradients through `Autodiff<Flex>` (hier's single nodes) as through
//! `Autodiff<NdArray>` (Burn's own operations, which the same functions call there).
#![allow(clippy::disallowed_methods)] // tests read results back

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{activation, backend::Backend, Distribution, Tensor, TensorData, Tolerance};
use hier_attn::ops::{contiguous, gelu, layer_norm, linear, narrow, silu, softmax_last, swap_dims};

fn random<B: Backend>(shape: [usize; 3], seed: u64, device: &B::Device) -> Tensor<B, 3> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // [-8, 8): both GELU tails and large softmax logits
            (state >> 40) as f32 / (1u64 << 24) as f32 * 16.0 - 8.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn close<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>, tol: f32) {
    a.into_data()
        .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(tol));
}

#[test]
fn kernels_equal_burns_operations_on_flex() {
    let device = Default::default();
    // a permuted view too: the kernels read strided input
    let x = random::<Flex>([3, 37, 70], 1, &device);
    for x in [x.clone(), x.swap_dims(0, 1).swap_dims(1, 2)] {
        close(gelu(x.clone()), activation::gelu(x.clone()), 1e-6);
        close(silu(x.clone()), activation::silu(x.clone()), 1e-6);
        close(
            softmax_last(x.clone()),
            activation::softmax(x.clone(), 2),
            1e-6,
        );
    }
}

#[test]
fn contiguous_keeps_every_value_of_any_view() {
    let device = Default::default();
    let x: Tensor<Flex, 4> = random::<Flex>([4, 6, 10], 2, &device).reshape([4, 6, 2, 5]);
    let views = [
        x.clone().swap_dims(1, 2),
        x.clone().swap_dims(2, 3),
        x.clone().narrow(1, 1, 4).narrow(3, 2, 3),
        x.clone().permute([3, 1, 0, 2]),
        x.clone(),
    ];
    for view in views {
        let dims = view.dims();
        let copied = contiguous(view.clone());
        assert_eq!(copied.dims(), dims);
        copied.into_data().assert_eq(&view.into_data(), true);
    }
}

/// `Σ w · f(x)` differentiated on both backends, for a `f` and fixed weights `w`.
fn gradients<B: burn::tensor::backend::AutodiffBackend>(
    f: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>,
    device: &B::Device,
) -> (Vec<f32>, Vec<f32>) {
    let x = random::<B>([2, 9, 33], 3, device).require_grad();
    let w = random::<B>([2, 9, 33], 4, device);
    let y = f(x.clone());
    let grads = (y.clone() * w).sum().backward();
    let g = x.grad(&grads).expect("x has a gradient");
    (
        y.into_data().to_vec().unwrap(),
        g.into_data().to_vec().unwrap(),
    )
}

#[test]
fn single_nodes_have_burns_gradients() {
    let flex = Default::default();
    let nd = Default::default();
    type Ours = fn(Tensor<Autodiff<Flex>, 3>) -> Tensor<Autodiff<Flex>, 3>;
    type Burns = fn(Tensor<Autodiff<NdArray>, 3>) -> Tensor<Autodiff<NdArray>, 3>;
    let cases: [(Ours, Burns); 3] = [
        (silu, activation::silu),
        (softmax_last, |x| activation::softmax(x, 2)),
        (|x| contiguous(x.swap_dims(1, 2)).swap_dims(1, 2), |x| x),
    ];
    for (ours, burns) in cases {
        let (y, g) = gradients::<Autodiff<Flex>>(ours, &flex);
        let (y_ref, g_ref) = gradients::<Autodiff<NdArray>>(burns, &nd);
        for (a, b) in y.iter().zip(&y_ref).chain(g.iter().zip(&g_ref)) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

/// GELU and its gradient are the exact `x·Φ(x)` and `Φ(x) + x·φ(x)`, checked against libm's
/// `erf` (inside this workspace Flex's own GELU is the same fast code, and Burn's default
/// backward is the tanh approximation's, so neither can serve as the reference).
#[test]
fn gelu_node_is_exact() {
    let device = Default::default();
    let (y, g) = gradients::<Autodiff<Flex>>(gelu, &device);
    let values = |seed| -> Vec<f32> {
        let t = random::<Flex>([2, 9, 33], seed, &device);
        t.into_data().to_vec().unwrap()
    };
    let close = |got: f32, exact: f64| (got as f64 - exact).abs() <= 1e-5 * (1.0 + exact.abs());
    for (((&x, &w), &y), &g) in values(3).iter().zip(&values(4)).zip(&y).zip(&g) {
        let x = x as f64;
        let cdf = 0.5 * (1.0 + libm::erf(x / 2f64.sqrt()));
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        assert!(close(y, x * cdf), "gelu({x}) = {y}, not {}", x * cdf);
        let exact = w as f64 * (cdf + x * pdf);
        assert!(close(g, exact), "gradient at {x}: {g}, not {exact}");
    }
}

/// Two linear layers (with and without bias) on a strided input and a narrowed weight, a layer
/// norm, axis swaps and narrowing along inner and outer axes: the model's uses of [`linear`],
/// [`layer_norm`], [`narrow`] and [`swap_dims`] in one expression, weighted by `probe` and summed.
fn layers<B: Backend>(
    x: Tensor<B, 3>,
    w: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    [gamma, beta]: [Tensor<B, 1>; 2],
    probe: Tensor<B, 3>,
) -> Tensor<B, 1> {
    let h = linear(
        x.swap_dims(0, 1), // [9, 2, 33], not row-major
        narrow(w.clone(), 1, 4, 16),
        Some(narrow(bias, 0, 4, 16)),
    ); // [9, 2, 16]
    let h = layer_norm(h, gamma, beta, 1e-5);
    let h = linear(h, narrow(w, 1, 8, 16).transpose(), None); // [9, 2, 33]
    let h = narrow(swap_dims(h, 0, 2), 2, 3, 5); // [33, 2, 5]
    let h = narrow(narrow(h, 0, 0, 33), 0, 2, 30); // a whole axis, then a part
    (h * probe).sum()
}

/// [`layers`]' value and the gradients of `x`, `w`, `bias`, `gamma` and `beta` on an autodiff
/// backend.
fn layer_gradients<B: burn::tensor::backend::AutodiffBackend>(device: &B::Device) -> [Vec<f32>; 6] {
    let matrix =
        |rows, cols, seed| random::<B>([1, rows, cols], seed, device).reshape([rows, cols]);
    let x = random::<B>([2, 9, 33], 5, device).require_grad();
    let w = matrix(33, 24, 6).require_grad();
    let bias = matrix(1, 24, 7).reshape([24]).require_grad();
    let gamma = matrix(1, 16, 9).reshape([16]).require_grad();
    let beta = matrix(1, 16, 10).reshape([16]).require_grad();
    let probe = random::<B>([30, 2, 5], 8, device);
    let norm = [gamma.clone(), beta.clone()];
    let y = layers(x.clone(), w.clone(), bias.clone(), norm, probe);
    let grads = y.backward();
    let read = |t: Tensor<B::InnerBackend, 3>| t.into_data().to_vec::<f32>().unwrap();
    [
        y.into_data().to_vec().unwrap(),
        read(x.grad(&grads).unwrap()),
        read(w.grad(&grads).unwrap().unsqueeze()),
        read(bias.grad(&grads).unwrap().unsqueeze()),
        read(gamma.grad(&grads).unwrap().unsqueeze()),
        read(beta.grad(&grads).unwrap().unsqueeze()),
    ]
}

#[test]
fn linear_and_views_have_burns_values_and_gradients() {
    let ours = layer_gradients::<Autodiff<Flex>>(&Default::default());
    let burns = layer_gradients::<Autodiff<NdArray>>(&Default::default());
    for (ours, burns) in ours.iter().zip(&burns) {
        assert_eq!(ours.len(), burns.len());
        for (a, b) in ours.iter().zip(burns) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    // and forward on Flex itself, without autodiff
    let flex = Default::default();
    let matrix =
        |rows, cols, seed| random::<Flex>([1, rows, cols], seed, &flex).reshape([rows, cols]);
    let y = layers(
        random::<Flex>([2, 9, 33], 5, &flex),
        matrix(33, 24, 6),
        matrix(1, 24, 7).reshape([24]),
        [9, 10].map(|seed| matrix(1, 16, seed).reshape([16])),
        random::<Flex>([30, 2, 5], 8, &flex),
    );
    let y: f32 = y.into_scalar();
    assert!(
        (y - burns[0][0]).abs() <= 1e-4 * (1.0 + burns[0][0].abs()),
        "{y} vs {}",
        burns[0][0]
    );
}

#[test]
/// [`linear`] on `Autodiff<Flex>` against the products written out in f64.
fn linear_matches_the_explicit_products() {
    use burn::nn::LinearConfig;
    type A = burn::backend::Autodiff<Flex>;
    let device = Default::default();
    let layer = LinearConfig::new(5, 4).init::<A>(&device);
    // a strided input: the transpose of a [2, 5, 3] tensor
    let x = Tensor::<A, 3>::random([2, 5, 3], Distribution::Default, &device).require_grad();
    let xt = x.clone().swap_dims(1, 2); // [2, 3, 5]
    let g = Tensor::<A, 3>::random([2, 3, 4], Distribution::Default, &device);
    let y = hier_attn::ops::apply_linear(&layer, xt.clone());
    let grads = (y.clone() * g.clone()).sum().backward();

    let w = layer.weight.val().inner();
    let bias = layer.bias.as_ref().unwrap().val().inner();
    let (xt_in, g_in) = (xt.inner(), g.inner());
    let mut want_y = vec![0.0f64; 2 * 3 * 4];
    let mut want_dw = vec![0.0f64; 5 * 4];
    let mut want_dx = vec![0.0f64; 2 * 3 * 5];
    let (xv, wv, bv, gv): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) = (
        xt_in.into_data().to_vec().unwrap(),
        w.into_data().to_vec().unwrap(),
        bias.into_data().to_vec().unwrap(),
        g_in.into_data().to_vec().unwrap(),
    );
    for r in 0..6 {
        for o in 0..4 {
            let mut acc = bv[o] as f64;
            for i in 0..5 {
                acc += xv[r * 5 + i] as f64 * wv[i * 4 + o] as f64;
                want_dw[i * 4 + o] += xv[r * 5 + i] as f64 * gv[r * 4 + o] as f64;
                want_dx[r * 5 + i] += gv[r * 4 + o] as f64 * wv[i * 4 + o] as f64;
            }
            want_y[r * 4 + o] = acc;
        }
    }
    let close = |got: Vec<f32>, want: &[f64]| {
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
    };
    close(y.inner().into_data().to_vec().unwrap(), &want_y);
    let dw = layer.weight.grad(&grads).unwrap();
    close(dw.into_data().to_vec().unwrap(), &want_dw);
    // x's gradient arrives in x's own [2, 5, 3] order; compare through the same transpose
    let dx = x.grad(&grads).unwrap().swap_dims(1, 2);
    close(dx.into_data().to_vec().unwrap(), &want_dx);
}
