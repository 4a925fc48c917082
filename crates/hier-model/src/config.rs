//! The model configuration: the reference's constructor arguments, with the same JSON names and
//! value shapes, so that `HierarchicalTransformer(**json.load(f))` works on hier's `config.json`.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::spec::ModelSpec;

/// A value given once for every hierarchy or once per hierarchy (the reference's `cast_tuple`).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum PerHierarchy<T> {
    /// One value per hierarchy, in the order of `hierarchies`.
    Each(Vec<T>),
    /// The same value for every hierarchy.
    All(T),
}

impl<T: Clone> PerHierarchy<T> {
    /// The values broadcast to `count` hierarchies (a list is returned as given).
    pub fn values(&self, count: usize) -> Vec<T> {
        match self {
            PerHierarchy::Each(v) => v.clone(),
            PerHierarchy::All(v) => vec![v.clone(); count],
        }
    }
}

/// A list is a value per hierarchy, anything else one value for all; a value of the wrong type
/// is named with the type expected (serde's untagged enums only say that no variant matched).
impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for PerHierarchy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let hint = "; give one value for every hierarchy or a list with one per hierarchy";
        match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    serde_json::from_value(v)
                        .map_err(|e| D::Error::custom(format!("entry {i}: {e}{hint}")))
                })
                .collect::<Result<_, _>>()
                .map(PerHierarchy::Each),
            v => serde_json::from_value(v)
                .map(PerHierarchy::All)
                .map_err(|e| D::Error::custom(format!("{e}{hint}"))),
        }
    }
}

impl<T> From<T> for PerHierarchy<T> {
    fn from(value: T) -> Self {
        PerHierarchy::All(value)
    }
}

/// How a predicted latent is compared with the next one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum NextLatentLossType {
    /// `0.1 * (pred - target)^2 + 0.9 * (1 - cos(pred, target))`, per feature.
    #[default]
    MseAndCosineSim,
    /// `(pred - target)^2`, per feature.
    Mse,
    /// Huber loss with beta 1, per feature.
    SmoothL1,
}

/// Every constructor argument of the reference `HierarchicalTransformer` (0.4.0), with its
/// defaults. Validate with [`HierarchicalTransformerConfig::validate`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HierarchicalTransformerConfig {
    /// Vocabulary size (256 for bytes).
    pub num_tokens: usize,
    /// Model width, per hierarchy or shared.
    pub dim: PerHierarchy<usize>,
    /// Number of layers (shared by all hierarchies).
    pub depth: usize,
    /// Longest input the model accepts; also decides the window replacement rule.
    #[serde(default = "defaults::seq_len")]
    pub seq_len: usize,
    /// Width of each attention head.
    #[serde(default = "defaults::dim_head")]
    pub dim_head: PerHierarchy<usize>,
    /// Attention heads.
    #[serde(default = "defaults::heads")]
    pub heads: PerHierarchy<usize>,
    /// Feed-forward expansion factor.
    #[serde(default = "defaults::ff_mult")]
    pub ff_mult: PerHierarchy<usize>,
    /// Compression factor of each hierarchy: unique powers of two, e.g. `[1, 2, 8]`.
    #[serde(default = "defaults::hierarchies")]
    pub hierarchies: PerHierarchy<usize>,
    /// Local attention window per hierarchy; `null` = full attention, `0` = no attention.
    #[serde(default = "defaults::window_sizes")]
    pub window_sizes: PerHierarchy<Option<i64>>,
    /// Stride of each hierarchy's compressor: a power of two, at most its compression factor.
    #[serde(default = "defaults::one")]
    pub hierarchical_stride: PerHierarchy<usize>,
    /// Merge the pooled hierarchies back into every hierarchy, not only the predicting one.
    #[serde(default)]
    pub hierarchy_merge_all: bool,
    /// Compression factor of the hierarchy that predicts the next token (default: the smallest).
    #[serde(default)]
    pub predict_hierarchy: Option<usize>,
    /// Predict from the concatenation of all hierarchies' final embeddings.
    #[serde(default)]
    pub predict_use_all_hierarchy: bool,
    /// Weight of the reconstruction loss; 0 removes the reconstruction heads.
    #[serde(default = "defaults::recon_loss_weight")]
    pub recon_loss_weight: f64,
    /// Weight of the next-latent loss, per hierarchy or shared.
    #[serde(default = "defaults::next_latent_loss_weight")]
    pub next_latent_loss_weight: PerHierarchy<f64>,
    /// Distance between predicted and actual next latents.
    #[serde(default)]
    pub next_latent_loss_type: NextLatentLossType,
    /// Steps the latent dynamics are rolled out.
    #[serde(default = "defaults::one_usize")]
    pub num_rollouts: usize,
    /// Custom chunk summarisers are Python modules; only `null` is meaningful here.
    #[serde(default)]
    pub chunk_summarizers: Option<serde_json::Value>,
    /// Stop gradients into the token embedding through the chunk summaries.
    #[serde(default = "defaults::yes")]
    pub detach_summaries: bool,
    /// Hidden width of the latent dynamics MLP (default: the hierarchy's width).
    #[serde(default)]
    pub dynamics_hidden_dim: Option<usize>,
    /// Linear layers of the latent dynamics MLP.
    #[serde(default = "defaults::dynamics_num_layers")]
    pub dynamics_num_layers: usize,
    /// Down-weight later rollout steps by the loss of the earlier ones.
    #[serde(default = "defaults::yes")]
    pub dynamic_rollout_loss_weight: bool,
    /// Decay rate of that down-weighting.
    #[serde(default = "defaults::dynamic_loss_decay")]
    pub dynamic_loss_decay: f64,
    /// Relative weight of each rollout step (default: equal).
    #[serde(default)]
    pub rollout_weights: Option<Vec<f64>>,
    /// Target id that contributes no loss.
    #[serde(default)]
    pub ignore_index: i64,
    /// Accepted for compatibility; the reference ignores it. hier picks its kernel itself.
    #[serde(default)]
    pub use_flash_attn: bool,
    /// hier extension (not in the reference, written only when non-zero): weight of the
    /// ProphetNet-style loss, in which every hierarchy with `c > 1` predicts the next `c` tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prophet_loss_weight: f64,
    /// hier extension (not in the reference, written only when non-zero): weight of the
    /// reference 0.2.0's hierarchical autoregressive loss (cosine distance of a linear map of
    /// each `c > 1` embedding to the next one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hierarchical_ar_loss_weight: f64,
    /// hier extension (written only when not `auto`): how attention is computed. `auto` takes
    /// Burn's fused attention op on backends without autodiff (inference, generation) and the
    /// explicit matmul-softmax-matmul when training; `fused` and `explicit` force one.
    #[serde(default, skip_serializing_if = "AttentionImplementation::is_auto")]
    pub attention_implementation: AttentionImplementation,
}

/// See [`HierarchicalTransformerConfig::attention_implementation`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AttentionImplementation {
    /// Fused without autodiff, explicit when training.
    #[default]
    Auto,
    /// Always Burn's fused attention op.
    Fused,
    /// Always matmul-softmax-matmul.
    Explicit,
}

impl AttentionImplementation {
    fn is_auto(&self) -> bool {
        *self == AttentionImplementation::Auto
    }
}

impl From<AttentionImplementation> for hier_attn::AttentionImpl {
    fn from(a: AttentionImplementation) -> Self {
        match a {
            AttentionImplementation::Auto => hier_attn::AttentionImpl::Auto,
            AttentionImplementation::Fused => hier_attn::AttentionImpl::Fused,
            AttentionImplementation::Explicit => hier_attn::AttentionImpl::Explicit,
        }
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

mod defaults {
    use super::PerHierarchy;
    pub fn seq_len() -> usize {
        2048
    }
    pub fn dim_head() -> PerHierarchy<usize> {
        PerHierarchy::All(64)
    }
    pub fn heads() -> PerHierarchy<usize> {
        PerHierarchy::All(8)
    }
    pub fn ff_mult() -> PerHierarchy<usize> {
        PerHierarchy::All(4)
    }
    pub fn hierarchies() -> PerHierarchy<usize> {
        PerHierarchy::All(1)
    }
    pub fn window_sizes() -> PerHierarchy<Option<i64>> {
        PerHierarchy::All(None)
    }
    pub fn one() -> PerHierarchy<usize> {
        PerHierarchy::All(1)
    }
    pub fn one_usize() -> usize {
        1
    }
    pub fn recon_loss_weight() -> f64 {
        0.1
    }
    pub fn next_latent_loss_weight() -> PerHierarchy<f64> {
        PerHierarchy::All(0.25)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn dynamics_num_layers() -> usize {
        3
    }
    pub fn dynamic_loss_decay() -> f64 {
        1.0
    }
}

impl HierarchicalTransformerConfig {
    /// A config with the reference's defaults for everything but the three required arguments.
    pub fn new(num_tokens: usize, dim: usize, depth: usize) -> Self {
        Self {
            num_tokens,
            dim: PerHierarchy::All(dim),
            depth,
            seq_len: defaults::seq_len(),
            dim_head: defaults::dim_head(),
            heads: defaults::heads(),
            ff_mult: defaults::ff_mult(),
            hierarchies: defaults::hierarchies(),
            window_sizes: defaults::window_sizes(),
            hierarchical_stride: defaults::one(),
            hierarchy_merge_all: false,
            predict_hierarchy: None,
            predict_use_all_hierarchy: false,
            recon_loss_weight: defaults::recon_loss_weight(),
            next_latent_loss_weight: defaults::next_latent_loss_weight(),
            next_latent_loss_type: NextLatentLossType::default(),
            num_rollouts: 1,
            chunk_summarizers: None,
            detach_summaries: true,
            dynamics_hidden_dim: None,
            dynamics_num_layers: defaults::dynamics_num_layers(),
            dynamic_rollout_loss_weight: true,
            dynamic_loss_decay: defaults::dynamic_loss_decay(),
            rollout_weights: None,
            ignore_index: 0,
            use_flash_attn: false,
            prophet_loss_weight: 0.0,
            hierarchical_ar_loss_weight: 0.0,
            attention_implementation: AttentionImplementation::Auto,
        }
    }

    /// Parse a JSON config; errors name the offending key.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Pretty JSON with the reference's keyword names.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Check every assertion of the reference (and the sizes it leaves implicit) and resolve
    /// the per-hierarchy values. Nothing is allocated before this succeeds.
    pub fn validate(&self) -> Result<ModelSpec, ConfigError> {
        ModelSpec::from_config(self)
    }
}
