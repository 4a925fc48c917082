//! Property tests over random configs: validation never panics, and every config it accepts
//! builds and runs a forward pass and the losses.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::{HierarchicalTransformer, HierarchicalTransformerConfig, PerHierarchy};
use proptest::prelude::*;

type B = Flex;

fn per<T: Clone + std::fmt::Debug + 'static>(
    values: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = PerHierarchy<T>> {
    prop_oneof![
        values.clone().prop_map(PerHierarchy::All),
        prop::collection::vec(values, 0..4).prop_map(PerHierarchy::Each),
    ]
}

prop_compose! {
    fn configs()(
        num_tokens in 0usize..40,
        dim in per(0usize..20),
        depth in 0usize..3,
        seq_len in 0usize..40,
        dim_head in per(0usize..9),
        heads in per(0usize..3),
        ff_mult in per(0usize..3),
        hierarchies in per(0usize..9),
        window_sizes in per(prop::option::of(-2i64..12)),
        hierarchical_stride in per(0usize..9),
        merge_all in any::<bool>(),
        predict_hierarchy in prop::option::of(0usize..9),
        predict_all in any::<bool>(),
        recon in prop_oneof![Just(0.0), Just(0.1), Just(-1.0), Just(f64::NAN)],
        rollouts in 0usize..3,
    ) -> HierarchicalTransformerConfig {
        let mut c = HierarchicalTransformerConfig::new(num_tokens, 0, depth);
        c.dim = dim;
        c.seq_len = seq_len;
        c.dim_head = dim_head;
        c.heads = heads;
        c.ff_mult = ff_mult;
        c.hierarchies = hierarchies;
        c.window_sizes = window_sizes;
        c.hierarchical_stride = hierarchical_stride;
        c.hierarchy_merge_all = merge_all;
        c.predict_hierarchy = predict_hierarchy;
        c.predict_use_all_hierarchy = predict_all;
        c.recon_loss_weight = recon;
        c.num_rollouts = rollouts;
        c
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn validation_never_panics_and_accepted_configs_run(config in configs(), len in 1usize..40) {
        let Ok(spec) = config.validate() else { return Ok(()) };
        let model = HierarchicalTransformer::<B>::init(&config, 0, &Default::default()).unwrap();
        let n = len.min(spec.seq_len);
        let ids: Vec<i64> = (0..2 * n).map(|i| 1 + (i as i64 * 7) % (spec.num_tokens.max(2) as i64 - 1)).map(|t| t.min(spec.num_tokens as i64 - 1)).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, n]), &Default::default());
        let logits = model.forward(ids.clone()).unwrap();
        prop_assert_eq!(logits.dims(), [2, n, spec.num_tokens]);
        // the losses either run or refuse the input with an error (never panic)
        let _ = model.forward_loss(ids);
        // and the JSON form round-trips
        let back = HierarchicalTransformerConfig::from_json(&config.to_json()).unwrap();
        prop_assert_eq!(back.validate().unwrap(), spec);
    }

    #[test]
    fn arbitrary_json_never_panics(text in "\\PC{0,200}") {
        let _ = HierarchicalTransformerConfig::from_json(&text);
    }
}
