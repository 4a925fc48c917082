//! The objectives beyond 0.4.0: off by default (state_dict and config.json unchanged), the
//! future-token loss against a hand-computed value, and gradients against finite differences.
#![allow(clippy::disallowed_methods)] // tests read tensors freely

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::weights::{gradients, load_state_dict, state_dict, HostTensor};
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};

fn config(prophet: f64, ar: f64) -> HierarchicalTransformerConfig {
    let mut c = HierarchicalTransformerConfig::new(11, 8, 1);
    c.seq_len = 16;
    c.heads = PerHierarchy::All(2);
    c.dim_head = PerHierarchy::All(4);
    c.hierarchies = PerHierarchy::Each(vec![1, 2, 4]);
    c.hierarchical_stride = PerHierarchy::Each(vec![1, 1, 2]);
    c.window_sizes = PerHierarchy::Each(vec![Some(4), Some(4), None]);
    c.prophet_loss_weight = prophet;
    c.hierarchical_ar_loss_weight = ar;
    c
}

fn ids<B: Backend>() -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..2 * 13).map(|i| 1 + (i * 5) % 10).collect();
    Tensor::from_data(TensorData::new(ids, [2, 13]), &Default::default())
}

fn with<B: Backend>(
    model: HierarchicalTransformer<B>,
    edit: impl FnOnce(&mut HashMap<String, HostTensor>),
) -> HierarchicalTransformer<B> {
    let mut tensors: HashMap<String, HostTensor> = state_dict(&model).into_iter().collect();
    edit(&mut tensors);
    let fresh = HierarchicalTransformer::<B>::new(&model.config, &Default::default()).unwrap();
    load_state_dict(fresh, tensors).unwrap()
}

#[test]
fn off_by_default_and_invisible_to_the_reference() {
    let c = config(0.0, 0.0);
    let model = HierarchicalTransformer::<Flex>::init(&c, 0, &Default::default()).unwrap();
    assert!(state_dict(&model)
        .keys()
        .all(|k| !k.starts_with("prophet_heads") && !k.starts_with("to_hierarchical_preds")));
    let json = c.to_json();
    assert!(
        !json.contains("prophet") && !json.contains("hierarchical_ar"),
        "{json}"
    );
    let losses = model.forward_loss(ids()).unwrap();
    assert_eq!(losses.prophet.into_scalar(), 0.0);
    assert_eq!(losses.hierarchical_ar.into_scalar(), 0.0);
}

#[test]
fn future_token_loss_of_a_zero_head_is_ln_v_per_hierarchy() {
    let model =
        HierarchicalTransformer::<Flex>::init(&config(0.5, 0.0), 0, &Default::default()).unwrap();
    let keys: Vec<String> = state_dict(&model)
        .into_keys()
        .filter(|k| k.starts_with("prophet_heads"))
        .collect();
    assert_eq!(
        keys,
        vec!["prophet_heads.1.weight", "prophet_heads.2.weight"]
    ); // c > 1 only, bias-free
    let model = with(model, |t| {
        for k in &keys {
            t.get_mut(k)
                .unwrap()
                .values
                .iter_mut()
                .for_each(|v| *v = 0.0);
        }
    });
    let l = model.forward_loss(ids()).unwrap();
    let prophet: f32 = l.prophet.into_scalar();
    assert!((prophet - 2.0 * 11f32.ln()).abs() < 1e-5, "{prophet}");
    let expect: f32 = l.ce.into_scalar()
        + l.next_latent.into_scalar()
        + 0.1 * l.recon.into_scalar()
        + 0.5 * prophet;
    assert!((l.total.into_scalar() - expect).abs() < 1e-5);
}

/// Autodiff gradient of the total loss vs a central finite difference, for the largest-gradient
/// entry of each new head.
#[test]
fn gradients_match_finite_differences() {
    type A = Autodiff<Flex>;
    let model =
        HierarchicalTransformer::<A>::init(&config(1.0, 1.0), 3, &Default::default()).unwrap();
    let grads = gradients(&model, &model.forward_loss(ids()).unwrap().total.backward());
    let plain =
        HierarchicalTransformer::<Flex>::init(&config(1.0, 1.0), 3, &Default::default()).unwrap();
    let total = |m: &HierarchicalTransformer<Flex>| -> f64 {
        m.forward_loss(ids()).unwrap().total.into_scalar() as f64
    };
    for key in [
        "prophet_heads.2.weight",
        "to_hierarchical_preds.1.weight",
        "to_hierarchical_preds.2.bias",
    ] {
        let g = &grads[key].values;
        let (i, &analytic) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let eps = 1e-2f32;
        let shifted = |delta: f32| {
            let m = with(plain.clone(), |t| {
                t.get_mut(key).unwrap().values[i] += delta
            });
            total(&m)
        };
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
        let error = (numeric - analytic as f64).abs();
        assert!(
            error <= 2e-2 * (analytic.abs() as f64) + 1e-4,
            "{key}[{i}]: autodiff {analytic}, finite difference {numeric}"
        );
    }
}
