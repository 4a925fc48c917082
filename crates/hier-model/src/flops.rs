//! Model FLOPs: the floating-point operations a pass of the model needs, counted from its
//! config, for throughput and model FLOPs utilisation (MFU) figures.
//!
//! The count is the usual model-FLOPs accounting (PaLM's "6N" extended to attention), computed
//! per hierarchy instead of from a parameter count: every matrix product counts `2·m·k·n`, at
//! the length each hierarchy really runs at (`ceil(len / stride)` positions, its blocks split
//! into `factor / stride` interleaved sub-sequences). Counted:
//!
//! - attention: the q/k/v and output projections, and the scores and weighted values of every
//!   key a query attends (`4 · heads · dim_head` per pair): under full causal attention a query
//!   at row `i` of its sub-sequence attends `i + 1` keys, under local attention
//!   `min(i, window) + 1`. Masked pairs are not counted, so blocked or padded kernels that
//!   compute them do not raise the utilisation;
//! - the feed-forwards, the compressors (both convolutions, or the projection of a narrower
//!   factor-1 hierarchy), the merges after every layer (at the merged length) and the logits;
//! - for training, the loss heads the config enables (reconstruction, next-latent summarisers
//!   and dynamics, prophet and hierarchical-AR heads), and backward as twice the forward, so a
//!   step is 3× its forward.
//!
//! Not counted: embedding look-ups, norms, activations, rotary and xPos, token shift, softmax,
//! biases and the optimizer (each linear in the width, not quadratic), and work an
//! implementation adds (padding, recomputation).

use crate::spec::{AttentionKind, HierarchySpec, ModelSpec};

/// FLOPs of one forward pass over one sequence, by part.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FlopCount {
    /// q/k/v and output projections of every attention layer.
    pub attention_projections: f64,
    /// Attention scores and the weighted sum of values, over the keys each query attends.
    pub attention_scores: f64,
    /// Feed-forward layers.
    pub feed_forward: f64,
    /// The compressors that build each hierarchy's input stream.
    pub compressors: f64,
    /// The hierarchical merges after every layer.
    pub merges: f64,
    /// The projection to the vocabulary.
    pub logits: f64,
    /// The loss heads of training ([`forward_with_losses`]); 0 in [`forward`].
    pub loss_heads: f64,
}

impl FlopCount {
    /// All parts together.
    pub fn total(&self) -> f64 {
        self.attention_projections
            + self.attention_scores
            + self.feed_forward
            + self.compressors
            + self.merges
            + self.logits
            + self.loss_heads
    }
}

/// The forward pass that produces the logits of all `len` positions of one sequence.
pub fn forward(spec: &ModelSpec, len: usize) -> FlopCount {
    let depth = spec.depth as f64;
    let mut count = FlopCount::default();
    for h in &spec.hierarchies {
        let m = positions(h, len);
        let (d, inner) = (h.dim as f64, (h.heads * h.dim_head) as f64);
        if h.attention != AttentionKind::None {
            count.attention_projections += depth * matmul(m, d, 4.0 * inner);
            count.attention_scores += depth * 4.0 * inner * attended_pairs(h, len);
        }
        count.feed_forward += depth * 2.0 * matmul(m, d, (h.ff_mult * h.dim) as f64);
        count.compressors += compressor(spec, h, len);
    }
    if spec.hierarchies.len() > 1 {
        let (s, o) = (spec.total_dim() as f64, merge_out(spec));
        let merged = merged_len(spec, len);
        count.merges = depth * (matmul(merged, s, 2.0 * o) + matmul(merged, 2.0 * o, o));
    }
    let (rows, width) = if spec.predict_use_all_hierarchy {
        (merged_len(spec, len), spec.total_dim() as f64)
    } else {
        let p = &spec.hierarchies[spec.predict];
        (positions(p, len), p.dim as f64)
    };
    count.logits = matmul(rows, width, spec.num_tokens as f64);
    count
}

/// [`forward`] plus the loss heads a training step also runs on the same sequence.
pub fn forward_with_losses(spec: &ModelSpec, len: usize) -> FlopCount {
    FlopCount {
        loss_heads: loss_heads(spec, len),
        ..forward(spec, len)
    }
}

/// One training step on one sequence of `len` input tokens: forward with losses, and backward
/// as twice that.
pub fn training_step(spec: &ModelSpec, len: usize) -> f64 {
    3.0 * forward_with_losses(spec, len).total()
}

/// [`training_step`] per input token.
pub fn training_per_token(spec: &ModelSpec, len: usize) -> f64 {
    training_step(spec, len) / len.max(1) as f64
}

/// [`forward`] per position.
pub fn forward_per_token(spec: &ModelSpec, len: usize) -> f64 {
    forward(spec, len).total() / len.max(1) as f64
}

/// Generating `new` tokens after a prompt of `prompt` tokens with the decoding caches: the
/// forward work of the positions the new tokens add (the prompt's own forward excluded).
pub fn generation(spec: &ModelSpec, prompt: usize, new: usize) -> f64 {
    let end = prompt.saturating_add(new);
    forward(spec, end).total() - forward(spec, prompt).total()
}

/// `2·m·k·n`: a `[m, k] × [k, n]` product.
fn matmul(m: f64, k: f64, n: f64) -> f64 {
    2.0 * m * k * n
}

/// Positions of hierarchy `h` for `len` input tokens.
fn positions(h: &HierarchySpec, len: usize) -> f64 {
    len.div_ceil(h.stride.max(1)) as f64
}

/// Length of the merged streams: every hierarchy repeated `stride` times, cut to the shortest.
fn merged_len(spec: &ModelSpec, len: usize) -> f64 {
    spec.hierarchies
        .iter()
        .map(|h| positions(h, len) * h.stride as f64)
        .fold(f64::INFINITY, f64::min)
}

/// Width the merges write: every hierarchy with `hierarchy_merge_all`, else the predicting one.
fn merge_out(spec: &ModelSpec) -> f64 {
    if spec.hierarchy_merge_all {
        spec.total_dim() as f64
    } else {
        spec.hierarchies[spec.predict].dim as f64
    }
}

/// Query-key pairs one layer of `h` attends: its positions fall into `factor / stride`
/// interleaved sub-sequences, each attended causally on its own.
fn attended_pairs(h: &HierarchySpec, len: usize) -> f64 {
    let m = len.div_ceil(h.stride.max(1));
    let axial = h.axial().max(1);
    (0..axial.min(m))
        .map(|k| (m - k).div_ceil(axial))
        .map(|rows| match h.attention {
            AttentionKind::None => 0.0,
            AttentionKind::Full => causal_pairs(rows as f64),
            AttentionKind::Local { window } => banded_pairs(rows as f64, window as f64),
        })
        .sum()
}

/// `1 + 2 + … + r`: row `i` attends keys `0..=i`.
fn causal_pairs(r: f64) -> f64 {
    r * (r + 1.0) / 2.0
}

/// Row `i` attends keys `i - w ..= i` (`min(i, w) + 1` of them).
fn banded_pairs(r: f64, w: f64) -> f64 {
    if r <= w + 1.0 {
        causal_pairs(r)
    } else {
        causal_pairs(w + 1.0) + (r - w - 1.0) * (w + 1.0)
    }
}

/// The compressor of `h`: the strided convolution (`c` taps of the token width into four times
/// the token width) and the pointwise one out to `dim`; for a factor-1 hierarchy narrower than
/// the token embedding, its projection.
fn compressor(spec: &ModelSpec, h: &HierarchySpec, len: usize) -> f64 {
    let (m, d, big_d) = (positions(h, len), h.dim as f64, spec.token_dim as f64);
    if h.factor > 1 {
        let c = h.factor as f64;
        matmul(m, c * big_d, 4.0 * big_d) + matmul(m, 4.0 * big_d, d)
    } else if h.dim != spec.token_dim {
        matmul(m, big_d, d)
    } else {
        0.0
    }
}

/// The training-only heads: reconstruction, next-latent (summariser projection and the
/// dynamics MLP per rollout), prophet and hierarchical-AR.
fn loss_heads(spec: &ModelSpec, len: usize) -> f64 {
    let v = spec.num_tokens as f64;
    let mut total = 0.0;
    for h in &spec.hierarchies {
        let (m, d, c) = (positions(h, len), h.dim as f64, h.factor as f64);
        let compressed = h.factor > 1;
        if compressed && spec.should_recon() {
            total += matmul(m, d, c * v);
        }
        if compressed && spec.prophet_loss_weight > 0.0 {
            total += matmul(m, d, c * v);
        }
        if compressed && spec.hierarchical_ar_loss_weight > 0.0 {
            total += matmul(m, d, d);
        }
        if spec.has_next_latent_loss() {
            total += next_latent(spec, h, len);
        }
    }
    total
}

/// One hierarchy's next-latent loss: chunk summaries projected to its width (when narrower
/// than the token embedding), and the dynamics MLP on every predicted position per rollout.
fn next_latent(spec: &ModelSpec, h: &HierarchySpec, len: usize) -> f64 {
    let (m, d, big_d) = (positions(h, len), h.dim as f64, spec.token_dim as f64);
    let summaries = if h.dim != spec.token_dim {
        matmul(m, big_d, d)
    } else {
        0.0
    };
    let hidden = spec.dynamics_hidden_dim.unwrap_or(h.dim) as f64;
    let layers = spec.dynamics_num_layers;
    let weights: f64 = (0..layers)
        .map(|i| {
            let input = if i == 0 { 2.0 * d } else { hidden };
            let output = if i + 1 == layers { d } else { hidden };
            input * output
        })
        .sum();
    let predicted = (m - spec.num_rollouts as f64).max(0.0);
    summaries + spec.num_rollouts as f64 * 2.0 * predicted * weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HierarchicalTransformerConfig;

    fn spec(json: &str) -> ModelSpec {
        HierarchicalTransformerConfig::from_json(json)
            .unwrap()
            .validate()
            .unwrap()
    }

    /// One layer, one full-attention hierarchy, counted by hand: V 10, d 8, 2 heads × 4, ff 4,
    /// 4 tokens.
    #[test]
    fn flat_model_matches_a_hand_count() {
        let s = spec(
            r#"{"num_tokens": 10, "dim": 8, "depth": 1, "seq_len": 4, "heads": 2, "dim_head": 4}"#,
        );
        let f = forward(&s, 4);
        assert_eq!(
            f.attention_projections,
            2.0 * 4.0 * 8.0 * 24.0 + 2.0 * 4.0 * 8.0 * 8.0
        );
        // 1 + 2 + 3 + 4 pairs, 2·4 per head for scores and again for values
        assert_eq!(f.attention_scores, 10.0 * 2.0 * (2.0 * 4.0 + 2.0 * 4.0));
        assert_eq!(f.feed_forward, 2.0 * (2.0 * 4.0 * 8.0 * 32.0));
        assert_eq!((f.compressors, f.merges), (0.0, 0.0));
        assert_eq!(f.logits, 2.0 * 4.0 * 8.0 * 10.0);
        assert_eq!(f.total(), 7104.0);
        assert_eq!(forward_per_token(&s, 4), 7104.0 / 4.0);
    }

    /// (1, 2), stride 1, local windows of 2: the coarse hierarchy runs at full length as two
    /// interleaved sub-sequences; compressor, merge, reconstruction and next-latent by hand.
    #[test]
    fn two_hierarchies_match_a_hand_count() {
        let s = spec(
            r#"{"num_tokens": 10, "dim": 8, "depth": 1, "seq_len": 8, "heads": 2, "dim_head": 4,
                "hierarchies": [1, 2], "window_sizes": [2, 2]}"#,
        );
        let f = forward_with_losses(&s, 8);
        let projections = 2.0 * 8.0 * 8.0 * 32.0; // 8 positions, [8] × [8, 3·8 + 8]
        assert_eq!(f.attention_projections, 2.0 * projections);
        // fine: 8 rows, window 2: 1 + 2 + 3 × 6 = 21; coarse: two sub-sequences of 4 rows,
        // 1 + 2 + 3 + 3 = 9 each
        assert_eq!(f.attention_scores, (21.0 + 18.0) * 4.0 * 8.0);
        assert_eq!(f.feed_forward, 2.0 * 2.0 * (2.0 * 8.0 * 8.0 * 32.0));
        // conv: 2 taps × 8 → 32, then 32 → 8, on 8 windows
        assert_eq!(
            f.compressors,
            2.0 * 8.0 * 16.0 * 32.0 + 2.0 * 8.0 * 32.0 * 8.0
        );
        // norm(cat) 16 → 16 → 8 on 8 rows
        assert_eq!(f.merges, 2.0 * 8.0 * 16.0 * 16.0 + 2.0 * 8.0 * 16.0 * 8.0);
        assert_eq!(f.logits, 2.0 * 8.0 * 8.0 * 10.0);
        // reconstruction 8 → 2·10 on 8 rows; next-latent for both hierarchies: one rollout of
        // 7 positions through 16 → 8 → 8 → 8
        let recon = 2.0 * 8.0 * 8.0 * 20.0;
        let dynamics = 2.0 * 7.0 * (16.0 * 8.0 + 8.0 * 8.0 + 8.0 * 8.0);
        assert_eq!(f.loss_heads, recon + 2.0 * dynamics);
        assert_eq!(training_step(&s, 8), 3.0 * f.total());
    }

    #[test]
    fn a_hierarchy_costs_more_than_flat() {
        let flat = spec(r#"{"num_tokens": 256, "dim": 128, "depth": 3, "seq_len": 256}"#);
        let h12 = spec(
            r#"{"num_tokens": 256, "dim": 128, "depth": 3, "seq_len": 256,
                "hierarchies": [1, 2], "window_sizes": [64, 64]}"#,
        );
        assert!(forward(&h12, 256).total() > forward(&flat, 256).total());
        assert!(training_per_token(&h12, 256) > training_per_token(&flat, 256));
        // with the stride equal to the factor the coarse hierarchy runs at half the length
        let strided = spec(
            r#"{"num_tokens": 256, "dim": 128, "depth": 3, "seq_len": 256,
                "hierarchies": [1, 2], "window_sizes": [64, 64], "hierarchical_stride": [1, 2]}"#,
        );
        assert!(forward(&strided, 256).total() < forward(&h12, 256).total());
    }

    #[test]
    fn local_attention_grows_linearly_and_full_quadratically() {
        let full = spec(r#"{"num_tokens": 16, "dim": 16, "depth": 1, "seq_len": 4096}"#);
        let local = spec(
            r#"{"num_tokens": 16, "dim": 16, "depth": 1, "seq_len": 4096, "window_sizes": [32]}"#,
        );
        let ratio =
            |s: &ModelSpec| forward(s, 2048).attention_scores / forward(s, 1024).attention_scores;
        assert!((ratio(&full) - 4.0).abs() < 0.01, "{}", ratio(&full));
        assert!((ratio(&local) - 2.0).abs() < 0.05, "{}", ratio(&local));
    }

    #[test]
    fn generation_is_the_forward_of_the_added_positions() {
        let s = spec(
            r#"{"num_tokens": 32, "dim": 16, "depth": 2, "seq_len": 64, "hierarchies": [1, 2]}"#,
        );
        let whole = generation(&s, 0, 40);
        assert_eq!(whole, forward(&s, 40).total());
        assert_eq!(generation(&s, 1, 39) + forward(&s, 1).total(), whole);
    }
}
