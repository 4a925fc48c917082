//! How much memory an operation on a model needs, estimated from its config alone, so that a
//! config whose parameters or activations cannot fit is refused *before* anything is allocated
//! (instead of the process aborting with "memory allocation of N bytes failed").
//!
//! The estimate is an upper bound built from the config's dims, depth, heads, hierarchies and
//! the batch and length asked for; it is computed in `f64`, so absurd configs (dim 1e9,
//! depth 1e6) give huge but finite numbers instead of overflowing.

use thiserror::Error;

use crate::spec::{AttentionKind, HierarchySpec, ModelSpec};

/// Bytes of one `f32`.
const F32: f64 = 4.0;

/// What is done with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Build and save a fresh model (`hier init`): parameters and their serialised copy.
    Init,
    /// Forward passes (logits, losses, evaluation, recomputed generation) on `batch × len`.
    Infer,
    /// Incremental decoding with caches: the prompt in passes of at most `seq_len` positions,
    /// then one token at a time; `len` = prompt + new tokens.
    Decode,
    /// Training steps: activations kept for backward, gradients, Adam's two moments.
    Train,
}

/// One operation: `replicas` copies of the model (data-parallel replicas), each running
/// `batch` sequences of `len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// What is done with the model.
    pub pass: Pass,
    /// Sequences per replica.
    pub batch: usize,
    /// Tokens per sequence (for [`Pass::Decode`], prompt plus new tokens).
    pub len: usize,
    /// Data-parallel copies of the model (0 counts as 1).
    pub replicas: usize,
}

/// The estimate, in bytes, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Parameters of one model.
    pub parameters: f64,
    /// Per replica: parameters, their host copies while loading or saving, gradients and
    /// optimizer state.
    pub model_bytes: f64,
    /// Per replica: activations (and, for decoding, the caches).
    pub activation_bytes: f64,
    /// Copies of the model, at least 1; [`Self::total`] multiplies by it.
    pub replicas: usize,
}

impl MemoryEstimate {
    /// Everything, all replicas together.
    pub fn total(&self) -> f64 {
        (self.model_bytes + self.activation_bytes) * self.replicas as f64
    }
}

/// The operation does not fit in the memory available.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("this needs about {} of memory ({}) but only {} is available; {fix}", human(*needed), breakdown(estimate), human(*available as f64))]
pub struct MemoryError {
    /// Bytes the operation needs ([`MemoryEstimate::total`]).
    pub needed: f64,
    /// Bytes available.
    pub available: u64,
    /// The estimate, by part, for the message.
    pub estimate: MemoryEstimate,
    /// What to shrink: the model, the number of replicas, or the batch and length.
    pub fix: &'static str,
}

/// Estimate the memory `work` needs on a model described by `spec`.
pub fn estimate(spec: &ModelSpec, work: &Workload) -> MemoryEstimate {
    let parameters = parameter_count(spec);
    // bytes per parameter: the model; loading adds the file's bytes and the parsed host
    // tensors, saving the state dict and its serialised form; training adds gradients, Adam's
    // two moments and a checkpoint's copies
    let per_parameter = match work.pass {
        Pass::Init | Pass::Infer | Pass::Decode => 3.0 * F32,
        Pass::Train => 6.0 * F32,
    };
    let activations = match work.pass {
        Pass::Init => 0.0,
        Pass::Infer => inference_activations(spec, work.batch, work.len),
        Pass::Decode => decode_activations(spec, work.batch, work.len),
        Pass::Train => training_activations(spec, work.batch, work.len),
    };
    MemoryEstimate {
        parameters,
        model_bytes: parameters * per_parameter,
        activation_bytes: activations * F32,
        replicas: work.replicas.max(1),
    }
}

/// Refuse `estimate` when it exceeds `available` bytes (`None`: unknown, nothing checked).
pub fn check(estimate: &MemoryEstimate, available: Option<u64>) -> Result<(), MemoryError> {
    let Some(available) = available else {
        return Ok(());
    };
    let needed = estimate.total();
    if needed <= available as f64 {
        return Ok(());
    }
    let fix = if estimate.model_bytes > available as f64 {
        "the model itself is too large: make it smaller (dim, depth, heads, dim_head, ff_mult, num_tokens)"
    } else if estimate.replicas > 1
        && estimate.model_bytes * estimate.replicas as f64 > available as f64 / 2.0
    {
        "every replica holds its own copy of the model: use fewer replicas (--devices)"
    } else {
        "use a smaller batch or shorter sequences (batch size, seq_len, fewer new tokens)"
    };
    Err(MemoryError {
        needed,
        available,
        estimate: *estimate,
        fix,
    })
}

/// Estimate `work` on `spec` and check it against the memory this machine has free now
/// ([`available_bytes`]). The environment variable `HIER_MEMORY_CHECK=off` skips the check
/// (the estimate is an upper bound and may refuse a run that would just fit).
pub fn check_available(spec: &ModelSpec, work: &Workload) -> Result<MemoryEstimate, MemoryError> {
    let estimate = estimate(spec, work);
    if std::env::var("HIER_MEMORY_CHECK").is_ok_and(|v| v == "off") {
        return Ok(estimate);
    }
    check(&estimate, available_bytes())?;
    Ok(estimate)
}

/// Memory this process can still allocate: Linux's `MemAvailable`, lowered to the cgroup's
/// remaining limit when there is one. `None` where neither can be read (other systems).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    let cgroup = cgroup_remaining();
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// cgroup v2: `memory.max - memory.current` of this process's group, when limited.
fn cgroup_remaining() -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok()?;
        text.trim().parse().ok() // "max" (no limit) does not parse
    };
    Some(read("memory.max")?.saturating_sub(read("memory.current")?))
}

/// A byte count for people: `12.3 GiB`.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes.max(0.0);
    for unit in UNITS {
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{:.1e} bytes", bytes)
}

fn breakdown(e: &MemoryEstimate) -> String {
    let per = format!(
        "{:.3e} parameters: {} for the model and its state, {} for activations",
        e.parameters,
        human(e.model_bytes),
        human(e.activation_bytes)
    );
    if e.replicas > 1 {
        format!("{per}, per replica, × {} replicas", e.replicas)
    } else {
        per
    }
}

/// Parameters of the model `spec` describes: the shapes `HierarchicalTransformer::new`
/// creates, each rounded up (an upper bound; exact for the common layouts).
pub fn parameter_count(spec: &ModelSpec) -> f64 {
    let v = spec.num_tokens as f64;
    let big_d = spec.token_dim as f64;
    let hs = &spec.hierarchies;
    let mut total = v * big_d; // token embedding
    for h in hs {
        total += hierarchy_parameters(spec, h) + spec.depth as f64 * layer_parameters(h);
    }
    if hs.len() > 1 {
        let s = total_dim(spec);
        let o = if spec.hierarchy_merge_all {
            s
        } else {
            hs[spec.predict].dim as f64
        };
        total += spec.depth as f64 * (s + s * 2.0 * o + 2.0 * o + 2.0 * o * o + o);
    }
    let logits_in = if spec.predict_use_all_hierarchy {
        total_dim(spec)
    } else {
        hs[spec.predict].dim as f64
    };
    total + logits_in * v
}

/// Sum of the hierarchies' widths, in f64 (no overflow).
fn total_dim(spec: &ModelSpec) -> f64 {
    spec.hierarchies.iter().map(|h| h.dim as f64).sum()
}

/// One hierarchy's parameters outside its layers: compressor, chunk summarizer, latent
/// dynamics, norms and the optional extra heads.
fn hierarchy_parameters(spec: &ModelSpec, h: &HierarchySpec) -> f64 {
    let (d, big_d, v, c) = (
        h.dim as f64,
        spec.token_dim as f64,
        spec.num_tokens as f64,
        h.factor as f64,
    );
    let narrower = if h.dim != spec.token_dim { 1.0 } else { 0.0 };
    let compressor = if h.factor == 1 {
        narrower * big_d * d
    } else {
        let recon = if spec.should_recon() { d * c * v } else { 0.0 };
        big_d * 4.0 * big_d * c + 4.0 * big_d + 4.0 * big_d * d + d + recon
    };
    let summarizer = narrower * (big_d * d + d);
    let hidden = spec.dynamics_hidden_dim.unwrap_or(h.dim) as f64;
    let widest = (2.0 * d).max(hidden);
    let dynamics =
        4.0 * d + spec.dynamics_num_layers as f64 * (widest * hidden.max(d) + hidden.max(d));
    let compressed = if h.factor > 1 { 1.0 } else { 0.0 };
    let prophet = if spec.prophet_loss_weight > 0.0 {
        compressed * d * c * v
    } else {
        0.0
    };
    let ar = if spec.hierarchical_ar_loss_weight > 0.0 {
        compressed * (d * d + d)
    } else {
        0.0
    };
    compressor + summarizer + dynamics + 4.0 * d + prophet + ar
}

/// One layer of one hierarchy: attention (norm, qkv, out) and feed-forward.
fn layer_parameters(h: &HierarchySpec) -> f64 {
    let (d, inner) = (h.dim as f64, h.heads as f64 * h.dim_head as f64);
    let attention = match h.attention {
        AttentionKind::None => 0.0,
        _ => 2.0 * d + 4.0 * inner * d + h.dim_head as f64,
    };
    attention + d + 2.0 * h.ff_mult as f64 * d * d
}

/// Positions of hierarchy `h` for `len` input tokens.
fn positions(h: &HierarchySpec, len: usize) -> f64 {
    len.div_ceil(h.stride.max(1)) as f64
}

/// Floats one layer of one hierarchy creates for `batch × len` tokens: the residual streams,
/// q/k/v, the attention scores and probabilities, and the feed-forward's hidden layer.
fn layer_activations(h: &HierarchySpec, batch: usize, len: usize) -> f64 {
    let n = positions(h, len);
    let (d, inner) = (h.dim as f64, h.heads as f64 * h.dim_head as f64);
    let rows = (n / h.axial().max(1) as f64).ceil();
    let keys = match h.attention {
        AttentionKind::None => 0.0,
        AttentionKind::Full => rows,
        AttentionKind::Local { window } => (2.0 * window as f64 + 1.0).min(rows + window as f64),
    };
    let scores = 2.0 * h.heads as f64 * n * keys;
    batch as f64 * (n * (8.0 * d + 6.0 * inner + 2.0 * h.ff_mult as f64 * d) + scores)
}

/// Floats outside the layers: embeddings, compressed streams, merges, logits and losses.
fn model_activations(spec: &ModelSpec, batch: usize, len: usize) -> f64 {
    let (n, v, big_d) = (len as f64, spec.num_tokens as f64, spec.token_dim as f64);
    let mut total = n * big_d * 2.0 + 3.0 * n * v; // embedding; logits, softmax, gradient
    for h in &spec.hierarchies {
        let (m, d, c) = (positions(h, len), h.dim as f64, h.factor as f64);
        total += m * (c * big_d + 4.0 * big_d + 4.0 * d);
        if spec.should_recon() && h.factor > 1 {
            total += 2.0 * m * c * v;
        }
        if spec.prophet_loss_weight > 0.0 && h.factor > 1 {
            total += 2.0 * m * c * v;
        }
    }
    batch as f64 * total
}

fn merge_activations(spec: &ModelSpec, batch: usize, len: usize) -> f64 {
    if spec.hierarchies.len() < 2 {
        return 0.0;
    }
    let s = total_dim(spec);
    batch as f64 * len as f64 * (2.0 * s + 5.0 * s)
}

/// Inference frees each layer's temporaries before the next: the widest layer counts once,
/// twice over for temporaries.
fn inference_activations(spec: &ModelSpec, batch: usize, len: usize) -> f64 {
    let layer: f64 = spec
        .hierarchies
        .iter()
        .map(|h| layer_activations(h, batch, len))
        .sum();
    2.0 * (layer + merge_activations(spec, batch, len) + model_activations(spec, batch, len))
}

/// Training keeps every layer's activations for backward and creates their gradients.
fn training_activations(spec: &ModelSpec, batch: usize, len: usize) -> f64 {
    let layer: f64 = spec
        .hierarchies
        .iter()
        .map(|h| layer_activations(h, batch, len))
        .sum();
    let depth = spec.depth as f64;
    3.0 * (depth * (layer + merge_activations(spec, batch, len))
        + model_activations(spec, batch, len))
}

/// Decoding: the caches (keys and values of every layer, a window for local attention) for a
/// context of `len` tokens, plus a prompt pass's or one step's activations.
fn decode_activations(spec: &ModelSpec, batch: usize, len: usize) -> f64 {
    let cache: f64 = spec
        .hierarchies
        .iter()
        .map(|h| {
            let n = positions(h, len);
            let kept = match h.attention {
                AttentionKind::None => 0.0,
                AttentionKind::Full => n,
                AttentionKind::Local { window } => n.min(2.0 * window as f64 * h.axial() as f64),
            };
            2.0 * (h.heads as f64 * h.dim_head as f64) * kept
                + (h.factor as f64 + 2.0) * h.dim as f64
        })
        .sum();
    let step: f64 = spec
        .hierarchies
        .iter()
        .map(|h| {
            let inner = h.heads as f64 * h.dim_head as f64;
            2.0 * h.heads as f64 * positions(h, len) + 8.0 * h.dim as f64 + 6.0 * inner
        })
        .sum();
    let step = batch as f64 * spec.depth as f64 * step + 2.0 * model_activations(spec, batch, 1);
    batch as f64 * spec.depth as f64 * cache + step.max(prompt_activations(spec, batch, len))
}

/// A prompt pass over at most `seq_len` positions: an inference forward, except that local
/// attention scores every key of the pass (a mask, not blocks).
fn prompt_activations(spec: &ModelSpec, batch: usize, len: usize) -> f64 {
    let n = len.min(spec.seq_len);
    let scores: f64 = spec
        .hierarchies
        .iter()
        .map(|h| 2.0 * h.heads as f64 * positions(h, n) * positions(h, n))
        .sum();
    inference_activations(spec, batch, n) + 2.0 * batch as f64 * scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HierarchicalTransformer, HierarchicalTransformerConfig};
    use burn::backend::Flex;
    use burn::module::Module;

    fn config(json: &str) -> HierarchicalTransformerConfig {
        HierarchicalTransformerConfig::from_json(json).unwrap()
    }

    #[test]
    fn parameter_count_bounds_the_real_model_tightly() {
        for json in [
            r#"{"num_tokens": 48, "dim": 32, "depth": 2, "seq_len": 64, "hierarchies": [1, 2], "window_sizes": [16, 16]}"#,
            r#"{"num_tokens": 256, "dim": [64, 32, 48], "depth": 3, "seq_len": 128, "heads": 3, "dim_head": 16, "hierarchies": [1, 2, 8], "window_sizes": [8, null, 0], "hierarchical_stride": [1, 2, 4]}"#,
            r#"{"num_tokens": 40, "dim": 24, "depth": 1, "seq_len": 32, "hierarchies": [1, 4], "hierarchy_merge_all": true, "predict_use_all_hierarchy": true, "prophet_loss_weight": 0.5, "hierarchical_ar_loss_weight": 0.5, "dynamics_hidden_dim": 40, "dynamics_num_layers": 3}"#,
        ] {
            let config = config(json);
            let model = HierarchicalTransformer::<Flex>::new(&config, &Default::default()).unwrap();
            let real = model.num_params() as f64;
            let estimate = parameter_count(&config.validate().unwrap());
            assert!(
                estimate >= real,
                "{json}: estimate {estimate} < real {real}"
            );
            assert!(
                estimate <= 1.1 * real,
                "{json}: estimate {estimate} ≫ real {real}"
            );
        }
    }

    #[test]
    fn absurd_configs_are_refused_without_overflow() {
        for json in [
            r#"{"num_tokens": 256, "dim": 1000000000, "depth": 2}"#,
            r#"{"num_tokens": 256, "dim": 512, "depth": 1000000}"#,
            r#"{"num_tokens": 1000000000, "dim": 512, "depth": 2}"#,
            r#"{"num_tokens": 256, "dim": 512, "depth": 2, "heads": 1000000}"#,
            r#"{"num_tokens": 256, "dim": 18446744073709551614, "depth": 18446744073709551615, "heads": 18446744073709551615, "dim_head": 18446744073709551614}"#,
        ] {
            let spec = config(json).validate().unwrap();
            for pass in [Pass::Init, Pass::Infer, Pass::Decode, Pass::Train] {
                let work = Workload {
                    pass,
                    batch: 1,
                    len: 8,
                    replicas: 1,
                };
                let e = estimate(&spec, &work);
                assert!(e.total().is_finite(), "{json}: {e:?}");
                let error = check(&e, Some(64 << 30)).unwrap_err();
                let message = error.to_string();
                assert!(
                    message.contains("64.0 GiB") && message.contains("too large"),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn activations_grow_with_batch_and_length_and_replicas_multiply() {
        let spec = config(r#"{"num_tokens": 256, "dim": 64, "depth": 2, "seq_len": 100000000}"#)
            .validate()
            .unwrap();
        let work = |pass, batch, len, replicas| {
            estimate(
                &spec,
                &Workload {
                    pass,
                    batch,
                    len,
                    replicas,
                },
            )
        };
        let small = work(Pass::Infer, 1, 64, 1);
        assert!(work(Pass::Infer, 8, 64, 1).total() > small.total());
        assert!(work(Pass::Train, 1, 64, 1).total() > small.total());
        assert_eq!(work(Pass::Infer, 1, 64, 4).total(), 4.0 * small.total());
        check(&small, Some(1 << 30)).unwrap();
        // a window of 1e8 tokens with full attention does not fit
        let long = work(Pass::Infer, 1, 100_000_000, 1);
        let message = check(&long, Some(64 << 30)).unwrap_err().to_string();
        assert!(
            message.contains("smaller batch or shorter sequences"),
            "{message}"
        );
        let many = work(Pass::Train, 1, 64, 1000);
        let limit = (many.total() / 2.0) as u64;
        let message = check(&many, Some(limit)).unwrap_err().to_string();
        assert!(message.contains("1000 replicas"), "{message}");
        // unknown availability: nothing is refused
        check(&long, None).unwrap();
    }

    /// Decoding passes the prompt in one go (up to seq_len positions, local attention masked
    /// rather than blocked): its estimate covers that pass as well as the caches.
    #[test]
    fn decoding_counts_the_prompt_pass() {
        let spec = config(
            r#"{"num_tokens": 256, "dim": 64, "depth": 2, "seq_len": 4096,
                "hierarchies": [1, 2], "window_sizes": [32, 64]}"#,
        )
        .validate()
        .unwrap();
        let work = |pass, len| {
            let work = Workload {
                pass,
                batch: 2,
                len,
                replicas: 1,
            };
            estimate(&spec, &work).total()
        };
        assert!(work(Pass::Decode, 4096) > work(Pass::Infer, 4096));
        // beyond seq_len only the caches grow, not the pass
        let longer = work(Pass::Decode, 8192) - work(Pass::Decode, 4096);
        assert!(longer < work(Pass::Decode, 4096) - work(Pass::Decode, 2048));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512.0), "512.0 B");
        assert_eq!(human(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
