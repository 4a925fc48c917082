//! Reading the configs the commands are given: a model config file (`--config` of init and
//! bench, `--model-config`), a training config file (`--config` of train, compare's configs)
//! or a preset by name. Every command reads them here, with the same messages.

use std::path::Path;

use anyhow::{Context, Result};
use hier_model::HierarchicalTransformerConfig;
use hier_train::presets::{self, NAMES};
use hier_train::TrainConfig;

/// The preset a command uses when given no config.
pub const DEFAULT_PRESET: &str = "shakespeare";

/// The named training setup `name`.
pub fn preset(name: &str) -> Result<TrainConfig> {
    presets::preset(name).with_context(|| {
        format!(
            "unknown preset `{name}`; choose one of {}",
            NAMES.join(", ")
        )
    })
}

fn read(path: &Path) -> Result<String> {
    hier_model::files::read_text(path).with_context(|| format!("reading {}", path.display()))
}

fn parse_model(text: &str, path: &Path) -> Result<HierarchicalTransformerConfig> {
    HierarchicalTransformerConfig::from_json(text).with_context(|| format!("in {}", path.display()))
}

/// A model config file: the keys of a model directory's config.json.
pub fn model_config(path: &Path) -> Result<HierarchicalTransformerConfig> {
    parse_model(&read(path)?, path)
}

/// A training config file, `{"model": {...}, "train": {...}, "data": ...}`; or, with
/// `bare_model` (compare), a bare model config, trained with the default preset's options.
pub fn train_config(path: &Path, bare_model: bool) -> Result<TrainConfig> {
    let text = read(path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if bare_model && value.get("model").is_none() {
        return Ok(TrainConfig {
            model: parse_model(&text, path)?,
            ..preset(DEFAULT_PRESET)?
        });
    }
    serde_json::from_value(value).with_context(|| {
        format!(
            "{}: expected a training config {{\"model\": {{...}}, \"train\": {{...}}}}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_presets_read_with_their_names_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = preset("tiny").unwrap();
        let model = dir.path().join("model.json");
        std::fs::write(&model, tiny.model.to_json()).unwrap();
        assert_eq!(model_config(&model).unwrap(), tiny.model);
        let bare = train_config(&model, true).unwrap();
        assert_eq!(bare.model, tiny.model);
        assert_eq!(bare.train, preset(DEFAULT_PRESET).unwrap().train);
        let e = format!("{:#}", train_config(&model, false).unwrap_err());
        assert!(e.contains("expected a training config"), "{e}");
        let full = dir.path().join("train.json");
        std::fs::write(&full, serde_json::to_string(&tiny).unwrap()).unwrap();
        assert_eq!(train_config(&full, false).unwrap().train, tiny.train);
        let e = format!("{:#}", preset("huge").unwrap_err());
        assert!(e.contains("choose one of tiny, shakespeare, enwik8"), "{e}");
        let e = format!(
            "{:#}",
            model_config(&dir.path().join("none.json")).unwrap_err()
        );
        assert!(e.contains("reading") && e.contains("none.json"), "{e}");
    }
}
