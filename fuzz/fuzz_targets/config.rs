//! The config parser and validator on arbitrary text: errors, never panics; an accepted config
//! builds a (lazily initialised) model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = hier_model::HierarchicalTransformerConfig::from_json(text) else {
        return;
    };
    let Ok(spec) = config.validate() else { return };
    // keep allocations bounded: lazily initialised parameters are never materialised here
    if spec.depth <= 4 && spec.hierarchies.len() <= 4 && spec.num_tokens <= 1 << 16 {
        let _ = hier_model::HierarchicalTransformer::<burn::backend::Flex>::new(
            &config,
            &Default::default(),
        );
    }
});
