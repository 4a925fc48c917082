//! The validated, resolved form of a [`HierarchicalTransformerConfig`]: one [`HierarchySpec`] per
//! hierarchy and the model-wide settings, everything checked.

use crate::config::{HierarchicalTransformerConfig, NextLatentLossType};
use crate::error::ConfigError;

/// What attention a hierarchy's blocks use (decided once, by the reference's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// `window_sizes[i] == 0`: token shift and feed-forward only.
    None,
    /// Local attention over `window` previous axial steps.
    Local {
        /// Keys each query sees before its own position, in axial steps.
        window: usize,
    },
    /// Full causal attention (window `null`, or a window the effective length cannot hold).
    Full,
}

/// One hierarchy, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HierarchySpec {
    /// Compression factor `c`: each compressed token summarises `c` original tokens.
    pub factor: usize,
    /// Stride `s` of the compressor: the compressed stream has `ceil(n / s)` tokens.
    pub stride: usize,
    /// Width of this hierarchy's stream.
    pub dim: usize,
    /// Width of each attention head.
    pub dim_head: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward hidden width is `ff_mult * dim`.
    pub ff_mult: usize,
    /// The attention its blocks use, after the reference's window replacement.
    pub attention: AttentionKind,
    /// How that attention is computed (fused op or explicit matmuls).
    pub attention_implementation: hier_attn::AttentionImpl,
    /// Weight of this hierarchy's next-latent loss; 0 = none.
    pub next_latent_loss_weight: f64,
}

impl HierarchySpec {
    /// `c / s`: the number of interleaved axial sub-sequences the blocks run on.
    pub fn axial(&self) -> usize {
        self.factor / self.stride
    }
}

/// A validated model description.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Vocabulary size.
    pub num_tokens: usize,
    /// Layers, each one block per hierarchy followed by a merge.
    pub depth: usize,
    /// Longest input the model accepts.
    pub seq_len: usize,
    /// One entry per hierarchy, in the config's order.
    pub hierarchies: Vec<HierarchySpec>,
    /// Index of the hierarchy that predicts the next token.
    pub predict: usize,
    /// Width of the shared token embedding (`max(dims)`).
    pub token_dim: usize,
    /// Merge into every hierarchy after each layer, not only the predicting one.
    pub hierarchy_merge_all: bool,
    /// Predict from all hierarchies' final embeddings concatenated.
    pub predict_use_all_hierarchy: bool,
    /// Weight of the reconstruction loss; 0 = no reconstruction heads.
    pub recon_loss_weight: f64,
    /// Distance between predicted and actual next latents.
    pub next_latent_loss_type: NextLatentLossType,
    /// Steps the latent dynamics are rolled out.
    pub num_rollouts: usize,
    /// Stop gradients into the token embedding through the chunk summaries.
    pub detach_summaries: bool,
    /// Hidden width of the latent dynamics MLP (`None`: the hierarchy's width).
    pub dynamics_hidden_dim: Option<usize>,
    /// Linear layers of the latent dynamics MLP.
    pub dynamics_num_layers: usize,
    /// Down-weight later rollout steps by the loss of the earlier ones.
    pub dynamic_rollout_loss_weight: bool,
    /// Decay rate of that down-weighting.
    pub dynamic_loss_decay: f64,
    /// Rollout weights normalised to sum 1.
    pub rollout_weights: Vec<f64>,
    /// Label id that contributes no loss.
    pub ignore_index: i64,
    /// Windows the reference replaces by full attention: `(factor, window)`.
    pub replaced_windows: Vec<(usize, usize)>,
    /// Weight of the ProphetNet-style future-token loss (hier extension, 0 = off).
    pub prophet_loss_weight: f64,
    /// Weight of the 0.2.0 hierarchical autoregressive loss (hier extension, 0 = off).
    pub hierarchical_ar_loss_weight: f64,
}

impl ModelSpec {
    /// The model has reconstruction heads and loss (`recon_loss_weight > 0`).
    pub fn should_recon(&self) -> bool {
        self.recon_loss_weight > 0.0
    }

    /// Some hierarchy has a next-latent loss, so the model has summarisers and dynamics.
    pub fn has_next_latent_loss(&self) -> bool {
        self.hierarchies
            .iter()
            .any(|h| h.next_latent_loss_weight > 0.0)
    }

    /// Sum of all hierarchies' widths (the merge's input width).
    pub fn total_dim(&self) -> usize {
        self.hierarchies.iter().map(|h| h.dim).sum()
    }

    /// Each hierarchy's width, in order.
    pub fn dims(&self) -> Vec<usize> {
        self.hierarchies.iter().map(|h| h.dim).collect()
    }

    /// Each hierarchy's compressor stride, in order (what [`crate::hierarchical_cat`] aligns by).
    pub fn strides(&self) -> Vec<usize> {
        self.hierarchies.iter().map(|h| h.stride).collect()
    }

    /// Check `c` by the reference's assertions (and hier's, where the reference would fail
    /// later), in a fixed order so that the first problem is always the one reported.
    pub(crate) fn from_config(c: &HierarchicalTransformerConfig) -> Result<Self, ConfigError> {
        let hierarchies = factors(c)?;
        check_sizes(c)?;
        check_factors(&hierarchies)?;
        let v = PerHierarchyValues::resolve(c, hierarchies.len())?;
        v.check_widths()?;
        v.check_strides(&hierarchies)?;
        let predict = predicting_hierarchy(c, &hierarchies, &v.strides)?;
        check_loss_weights(c, &v.next_latent_loss_weights)?;
        check_dynamics(c)?;
        let rollout_weights = normalised_rollout_weights(c)?;
        check_chunk_summarizers(c, hierarchies.len())?;
        let (specs, replaced_windows) = v.hierarchy_specs(c, &hierarchies)?;
        Ok(ModelSpec {
            num_tokens: c.num_tokens,
            depth: c.depth,
            seq_len: c.seq_len,
            token_dim: *v.dims.iter().max().unwrap(),
            hierarchies: specs,
            predict,
            hierarchy_merge_all: c.hierarchy_merge_all,
            predict_use_all_hierarchy: c.predict_use_all_hierarchy,
            recon_loss_weight: c.recon_loss_weight,
            next_latent_loss_type: c.next_latent_loss_type,
            num_rollouts: c.num_rollouts,
            detach_summaries: c.detach_summaries,
            dynamics_hidden_dim: c.dynamics_hidden_dim,
            dynamics_num_layers: c.dynamics_num_layers,
            dynamic_rollout_loss_weight: c.dynamic_rollout_loss_weight,
            dynamic_loss_decay: c.dynamic_loss_decay,
            rollout_weights,
            ignore_index: c.ignore_index,
            replaced_windows,
            prophet_loss_weight: c.prophet_loss_weight,
            hierarchical_ar_loss_weight: c.hierarchical_ar_loss_weight,
        })
    }
}

/// The compression factors, at least one.
fn factors(c: &HierarchicalTransformerConfig) -> Result<Vec<usize>, ConfigError> {
    let hierarchies = c.hierarchies.values(1);
    if hierarchies.is_empty() {
        return Err(ConfigError::invalid(
            "hierarchies",
            "is empty",
            "give at least one compression factor, e.g. 1 or [1, 2]",
        ));
    }
    Ok(hierarchies)
}

fn check_sizes(c: &HierarchicalTransformerConfig) -> Result<(), ConfigError> {
    positive("num_tokens", c.num_tokens)?;
    positive("depth", c.depth)?;
    positive("seq_len", c.seq_len)?;
    if c.num_tokens > i32::MAX as usize {
        return Err(ConfigError::invalid(
            "num_tokens",
            format!("{} is too large", c.num_tokens),
            "use at most 2^31 - 1",
        ));
    }
    Ok(())
}

/// Compression factors are unique powers of two.
fn check_factors(hierarchies: &[usize]) -> Result<(), ConfigError> {
    for (i, &h) in hierarchies.iter().enumerate() {
        if !h.is_power_of_two() {
            return Err(ConfigError::invalid(
                "hierarchies",
                format!("{h} is not a power of two"),
                "use 1, 2, 4, 8, ...",
            ));
        }
        if hierarchies[..i].contains(&h) {
            return Err(ConfigError::invalid(
                "hierarchies",
                format!("{h} appears twice"),
                "compression factors must be unique",
            ));
        }
    }
    Ok(())
}

/// `(factor, window)` of each window the reference replaces by full attention.
type ReplacedWindows = Vec<(usize, usize)>;

/// The settings given per hierarchy (or once for all), one entry per hierarchy.
struct PerHierarchyValues {
    dims: Vec<usize>,
    dim_heads: Vec<usize>,
    heads: Vec<usize>,
    ff_mults: Vec<usize>,
    strides: Vec<usize>,
    windows: Vec<Option<i64>>,
    next_latent_loss_weights: Vec<f64>,
}

impl PerHierarchyValues {
    fn resolve(c: &HierarchicalTransformerConfig, count: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            dims: per_hierarchy("dim", c.dim.values(count), count)?,
            dim_heads: per_hierarchy("dim_head", c.dim_head.values(count), count)?,
            heads: per_hierarchy("heads", c.heads.values(count), count)?,
            ff_mults: per_hierarchy("ff_mult", c.ff_mult.values(count), count)?,
            strides: per_hierarchy(
                "hierarchical_stride",
                c.hierarchical_stride.values(count),
                count,
            )?,
            windows: per_hierarchy("window_sizes", c.window_sizes.values(count), count)?,
            next_latent_loss_weights: per_hierarchy(
                "next_latent_loss_weight",
                c.next_latent_loss_weight.values(count),
                count,
            )?,
        })
    }

    fn check_widths(&self) -> Result<(), ConfigError> {
        for &d in &self.dims {
            if d < 2 {
                return Err(ConfigError::invalid(
                    "dim",
                    format!("{d} is too small"),
                    "token shift splits the features in two halves: use a width of at least 2",
                ));
            }
        }
        for &h in &self.heads {
            positive("heads", h)?;
        }
        for &m in &self.ff_mults {
            positive("ff_mult", m)?;
        }
        for &d in &self.dim_heads {
            if d == 0 || d % 2 != 0 {
                return Err(ConfigError::invalid(
                    "dim_head",
                    format!("{d} is not a positive even number"),
                    "rotary embeddings rotate feature pairs: use an even width such as 32 or 64",
                ));
            }
        }
        Ok(())
    }

    /// Each stride is a power of two no greater than its hierarchy's compression factor.
    fn check_strides(&self, hierarchies: &[usize]) -> Result<(), ConfigError> {
        for (&s, &h) in self.strides.iter().zip(hierarchies) {
            if !s.is_power_of_two() {
                return Err(ConfigError::invalid(
                    "hierarchical_stride",
                    format!("{s} is not a power of two"),
                    "use 1, 2, 4, ...",
                ));
            }
            if s > h {
                return Err(ConfigError::invalid(
                    "hierarchical_stride",
                    format!("stride {s} is greater than its hierarchy's compression factor {h}"),
                    "every stride must be at most the compression factor of its hierarchy",
                ));
            }
        }
        Ok(())
    }

    /// One spec per hierarchy, and the windows replaced by full attention.
    fn hierarchy_specs(
        &self,
        c: &HierarchicalTransformerConfig,
        hierarchies: &[usize],
    ) -> Result<(Vec<HierarchySpec>, ReplacedWindows), ConfigError> {
        let mut replaced_windows = Vec::new();
        let mut specs = Vec::with_capacity(hierarchies.len());
        for (i, &factor) in hierarchies.iter().enumerate() {
            let attention = attention_kind(self.windows[i], factor, c.seq_len)?;
            // a window given, yet full attention: the reference replaced it
            if let (AttentionKind::Full, Some(w)) = (attention, self.windows[i]) {
                replaced_windows.push((factor, w as usize));
            }
            specs.push(HierarchySpec {
                factor,
                stride: self.strides[i],
                dim: self.dims[i],
                dim_head: self.dim_heads[i],
                heads: self.heads[i],
                ff_mult: self.ff_mults[i],
                attention,
                attention_implementation: c.attention_implementation.into(),
                next_latent_loss_weight: self.next_latent_loss_weights[i],
            });
        }
        Ok((specs, replaced_windows))
    }
}

/// The reference's window rules: `null` is full attention, 0 none, and a window longer than
/// the hierarchy's share of `seq_len` full attention.
fn attention_kind(
    window: Option<i64>,
    factor: usize,
    seq_len: usize,
) -> Result<AttentionKind, ConfigError> {
    Ok(match window {
        None => AttentionKind::Full,
        Some(w) if w < 0 => {
            return Err(ConfigError::invalid(
                "window_sizes",
                format!("{w} is negative"),
                "use a window > 0, 0 for no attention, or null for full attention",
            ));
        }
        Some(0) => AttentionKind::None,
        // The reference compares with the configured seq_len, not the stride.
        Some(w) if w as usize > seq_len / factor => AttentionKind::Full,
        Some(w) => AttentionKind::Local { window: w as usize },
    })
}

/// The index of the predicting hierarchy (by default the least compressed), which must have
/// stride 1.
fn predicting_hierarchy(
    c: &HierarchicalTransformerConfig,
    hierarchies: &[usize],
    strides: &[usize],
) -> Result<usize, ConfigError> {
    let predict_factor = c
        .predict_hierarchy
        .unwrap_or_else(|| *hierarchies.iter().min().unwrap());
    let predict = hierarchies
        .iter()
        .position(|&h| h == predict_factor)
        .ok_or_else(|| {
            ConfigError::invalid(
                "predict_hierarchy",
                format!("{predict_factor} is not one of the hierarchies {hierarchies:?}"),
                "pick one of the compression factors in `hierarchies`",
            )
        })?;
    // The reference asserts this only without hierarchy_merge_all; with it, a strided
    // predicting hierarchy yields logits for every s-th position only and its loss fails on
    // the shape mismatch, so hier rejects it in both cases.
    if strides[predict] != 1 {
        return Err(ConfigError::invalid(
            "hierarchical_stride",
            format!(
                "the predicting hierarchy {predict_factor}x has stride {}",
                strides[predict]
            ),
            "the hierarchy used for next-token prediction must have stride 1",
        ));
    }
    Ok(predict)
}

fn check_loss_weights(
    c: &HierarchicalTransformerConfig,
    next_latent_loss_weights: &[f64],
) -> Result<(), ConfigError> {
    let weight = |key, w: f64, hint| match w.is_finite() && w >= 0.0 {
        true => Ok(()),
        false => Err(ConfigError::invalid(
            key,
            format!("{w} is not a finite number >= 0"),
            hint,
        )),
    };
    weight(
        "recon_loss_weight",
        c.recon_loss_weight,
        "use 0 to disable reconstruction, or a positive weight such as 0.1",
    )?;
    let hint = "use 0 to disable, or a positive weight";
    weight("prophet_loss_weight", c.prophet_loss_weight, hint)?;
    weight(
        "hierarchical_ar_loss_weight",
        c.hierarchical_ar_loss_weight,
        hint,
    )?;
    for &w in next_latent_loss_weights {
        weight(
            "next_latent_loss_weight",
            w,
            "use 0 to disable, or a positive weight such as 0.25",
        )?;
    }
    Ok(())
}

fn check_dynamics(c: &HierarchicalTransformerConfig) -> Result<(), ConfigError> {
    positive("num_rollouts", c.num_rollouts)?;
    positive("dynamics_num_layers", c.dynamics_num_layers)?;
    if let Some(h) = c.dynamics_hidden_dim {
        positive("dynamics_hidden_dim", h)?;
    }
    if !c.dynamic_loss_decay.is_finite() {
        return Err(ConfigError::invalid(
            "dynamic_loss_decay",
            "is not finite",
            "use a number such as 1.0",
        ));
    }
    Ok(())
}

/// One weight per rollout step (by default all equal), normalised to sum 1.
fn normalised_rollout_weights(c: &HierarchicalTransformerConfig) -> Result<Vec<f64>, ConfigError> {
    let weights = c
        .rollout_weights
        .clone()
        .unwrap_or_else(|| vec![1.0; c.num_rollouts]);
    if weights.len() != c.num_rollouts {
        return Err(ConfigError::invalid(
            "rollout_weights",
            format!(
                "has {} entries for num_rollouts {}",
                weights.len(),
                c.num_rollouts
            ),
            "give one weight per rollout step",
        ));
    }
    let total: f64 = weights.iter().sum();
    if weights.iter().any(|w| !w.is_finite()) || total == 0.0 || !total.is_finite() {
        return Err(ConfigError::invalid(
            "rollout_weights",
            format!("{weights:?} cannot be normalised"),
            "use finite weights with a non-zero sum",
        ));
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

/// Only the reference's default summariser (`null`) can be described in JSON.
fn check_chunk_summarizers(
    c: &HierarchicalTransformerConfig,
    count: usize,
) -> Result<(), ConfigError> {
    match &c.chunk_summarizers {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Array(a)) if a.iter().all(|v| v.is_null()) && a.len() == count => {
            Ok(())
        }
        Some(_) => Err(ConfigError::invalid(
            "chunk_summarizers",
            "custom summariser modules cannot be described in JSON",
            "use null (the default causal chunk summariser)",
        )),
    }
}

fn positive(key: &'static str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "is 0", "use a positive value"));
    }
    Ok(())
}

fn per_hierarchy<T>(
    key: &'static str,
    values: Vec<T>,
    count: usize,
) -> Result<Vec<T>, ConfigError> {
    if values.len() != count {
        return Err(ConfigError::invalid(
            key,
            format!(
                "has {} entries but there are {count} hierarchies",
                values.len()
            ),
            "give a single value or exactly one per hierarchy",
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PerHierarchy;

    fn base() -> HierarchicalTransformerConfig {
        let mut c = HierarchicalTransformerConfig::new(256, 32, 2);
        c.seq_len = 64;
        c.hierarchies = PerHierarchy::Each(vec![1, 2]);
        c.window_sizes = PerHierarchy::Each(vec![Some(8), Some(4)]);
        c
    }

    fn err_key(c: &HierarchicalTransformerConfig) -> &'static str {
        match c.validate().unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn accepts_the_reference_defaults() {
        let spec = base().validate().unwrap();
        assert_eq!(spec.hierarchies.len(), 2);
        assert_eq!(spec.predict, 0);
        assert_eq!(
            spec.hierarchies[1].attention,
            AttentionKind::Local { window: 4 }
        );
    }

    #[test]
    fn rejects_each_reference_assertion() {
        let mut c = base();
        c.hierarchies = PerHierarchy::Each(vec![1, 3]);
        assert_eq!(err_key(&c), "hierarchies");
        let mut c = base();
        c.hierarchies = PerHierarchy::Each(vec![2, 2]);
        assert_eq!(err_key(&c), "hierarchies");
        let mut c = base();
        c.hierarchical_stride = PerHierarchy::Each(vec![1, 4]);
        assert_eq!(err_key(&c), "hierarchical_stride");
        let mut c = base();
        c.hierarchical_stride = PerHierarchy::Each(vec![1, 3]);
        assert_eq!(err_key(&c), "hierarchical_stride");
        let mut c = base();
        c.dim = PerHierarchy::Each(vec![32, 32, 32]);
        assert_eq!(err_key(&c), "dim");
        let mut c = base();
        c.predict_hierarchy = Some(2);
        c.hierarchical_stride = PerHierarchy::Each(vec![1, 2]);
        assert_eq!(err_key(&c), "hierarchical_stride");
        c.hierarchy_merge_all = true;
        assert_eq!(err_key(&c), "hierarchical_stride");
        let mut c = base();
        c.predict_hierarchy = Some(4);
        assert_eq!(err_key(&c), "predict_hierarchy");
        let mut c = base();
        c.window_sizes = PerHierarchy::Each(vec![Some(-1), None]);
        assert_eq!(err_key(&c), "window_sizes");
        let mut c = base();
        c.rollout_weights = Some(vec![1.0, 2.0]);
        assert_eq!(err_key(&c), "rollout_weights");
        let mut c = base();
        c.num_rollouts = 0;
        assert_eq!(err_key(&c), "num_rollouts");
        let mut c = base();
        c.next_latent_loss_weight = PerHierarchy::All(-0.5);
        assert_eq!(err_key(&c), "next_latent_loss_weight");
        let mut c = base();
        c.hierarchies = PerHierarchy::Each(vec![]);
        assert_eq!(err_key(&c), "hierarchies");
        let mut c = base();
        c.dim_head = PerHierarchy::All(7);
        assert_eq!(err_key(&c), "dim_head");
    }

    #[test]
    fn window_rules() {
        let mut c = base();
        // 2x hierarchy: effective length 64 / 2 = 32; 32 keeps local, 33 becomes full
        c.window_sizes = PerHierarchy::Each(vec![Some(0), Some(32)]);
        let s = c.validate().unwrap();
        assert_eq!(s.hierarchies[0].attention, AttentionKind::None);
        assert_eq!(
            s.hierarchies[1].attention,
            AttentionKind::Local { window: 32 }
        );
        c.window_sizes = PerHierarchy::Each(vec![None, Some(33)]);
        let s = c.validate().unwrap();
        assert_eq!(s.hierarchies[0].attention, AttentionKind::Full);
        assert_eq!(s.hierarchies[1].attention, AttentionKind::Full);
        assert_eq!(s.replaced_windows, vec![(2, 33)]);
    }

    #[test]
    fn json_uses_the_reference_shapes() {
        let json = r#"{"num_tokens": 256, "dim": [32, 16], "depth": 2, "hierarchies": [1, 2],
                       "window_sizes": [16, null], "hierarchical_stride": 1}"#;
        let c = HierarchicalTransformerConfig::from_json(json).unwrap();
        assert_eq!(c.window_sizes, PerHierarchy::Each(vec![Some(16), None]));
        let back = HierarchicalTransformerConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let err = HierarchicalTransformerConfig::from_json(
            r#"{"num_tokens": 2, "dim": 4, "depth": 1, "windows": 3}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("windows"), "{err}");
        let err = HierarchicalTransformerConfig::from_json(
            r#"{"num_tokens": 2, "dim": "x", "depth": 1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dim"), "{err}");
        // the type expected is named, not serde's "did not match any variant of untagged enum"
        assert!(err.contains("expected usize"), "{err}");
        assert!(!err.contains("untagged"), "{err}");
        let err = HierarchicalTransformerConfig::from_json(
            r#"{"num_tokens": 2, "dim": 4, "depth": 1, "window_sizes": [8, "wide"]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("window_sizes") && err.contains("entry 1"),
            "{err}"
        );
    }
}
