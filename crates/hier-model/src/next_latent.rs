//! The next-latent (NextLat) objective: each hierarchy's final embedding at chunk `t`, plus a
//! summary of the raw tokens of chunk `t + 1`, must predict its own embedding at `t + 1`.

use burn::module::{Initializer, Module};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Slice, Tensor, TensorData};
use hier_attn::ops::{apply_linear, gelu, narrow};
use hier_attn::{LayerNorm, LayerNormConfig};

use crate::config::NextLatentLossType;
use crate::loss::{ids_at, masked_mean};
use crate::spec::{HierarchySpec, ModelSpec};

/// Mean of the raw token embeddings of each causal chunk, projected to the hierarchy's width
/// (the reference's `CausalChunkSummarizer`).
#[derive(Module, Debug)]
pub struct ChunkSummarizer<B: Backend> {
    /// `nn.Linear(token_dim, dim)` with bias, when the widths differ.
    pub proj: Option<Linear<B>>,
    /// Compression factor `c`: tokens per chunk.
    pub factor: usize,
    /// Stride `s`: one summary every `s` original positions.
    pub stride: usize,
}

impl<B: Backend> ChunkSummarizer<B> {
    /// The summariser of hierarchy `h`, projecting from the `token_dim`-wide embedding.
    pub fn new(h: &HierarchySpec, token_dim: usize, device: &B::Device) -> Self {
        ChunkSummarizer {
            proj: (h.dim != token_dim).then(|| LinearConfig::new(token_dim, h.dim).init(device)),
            factor: h.factor,
            stride: h.stride,
        }
    }

    /// `[batch, n, token_dim] -> [batch, ceil(n / s), dim]`; summary `j` is the mean of the real
    /// (non-padding) tokens at original positions `j*s - c + 1 ..= j*s`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (c, s) = (self.factor, self.stride);
        let [b, n, d] = x.dims();
        let windows = n.div_ceil(s);
        let pooled = if c == 1 {
            stride_rows(x, 0, windows, s)
        } else {
            let padded = Tensor::cat(vec![Tensor::zeros([b, c - 1, d], &x.device()), x], 1);
            let sum = (0..c)
                .map(|k| stride_rows(padded.clone(), k, windows, s))
                .reduce(|a, b| a + b)
                .unwrap();
            let counts: Vec<f32> = (0..windows).map(|j| (j * s + 1).min(c) as f32).collect();
            let counts =
                Tensor::<B, 3>::from_data(TensorData::new(counts, [1, windows, 1]), &sum.device());
            sum / counts
        };
        match &self.proj {
            Some(proj) => apply_linear(proj, pooled),
            None => pooled,
        }
    }
}

/// Rows `start, start + s, ...` (`count` of them) of `[batch, len, d]`.
pub(crate) fn stride_rows<B: Backend>(
    x: Tensor<B, 3>,
    start: usize,
    count: usize,
    s: usize,
) -> Tensor<B, 3> {
    let end = start + (count - 1) * s + 1;
    x.slice([
        Slice::full(),
        Slice::new(start as isize, Some(end as isize), s as isize),
        Slice::full(),
    ])
}

/// `latent + MLP(LayerNorm([latent, summary]))` (the reference's `NextLatDynamics`;
/// `net.0` is the norm, `net.{2k+1}` the k-th linear layer). The last layer starts at zero, so
/// an untrained model predicts "no change".
#[derive(Module, Debug)]
pub struct NextLatDynamics<B: Backend> {
    /// LayerNorm over the concatenated `[latent, summary]`, width `2 * dim`.
    pub norm: LayerNorm<B>,
    /// The MLP's linear layers, GELU between them: `2 * dim -> hidden -> ... -> dim`.
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> NextLatDynamics<B> {
    /// `num_layers` linear layers of width `hidden` on a `dim`-wide latent, the last zeroed.
    pub fn new(dim: usize, hidden: usize, num_layers: usize, device: &B::Device) -> Self {
        let layers = (0..num_layers)
            .map(|i| {
                let input = if i == 0 { 2 * dim } else { hidden };
                let last = i + 1 == num_layers;
                let output = if last { dim } else { hidden };
                let config = LinearConfig::new(input, output);
                if last {
                    config.with_initializer(Initializer::Zeros).init(device)
                } else {
                    config.init(device)
                }
            })
            .collect();
        NextLatDynamics {
            norm: LayerNormConfig::new(2 * dim).init(device),
            layers,
        }
    }

    /// `latent`, `summary`: `[batch, n, dim]` -> predicted next latent `[batch, n, dim]`
    pub fn forward(&self, summary: Tensor<B, 3>, latent: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut h = self
            .norm
            .forward(Tensor::cat(vec![latent.clone(), summary], 2));
        for (i, layer) in self.layers.iter().enumerate() {
            h = apply_linear(layer, h);
            if i + 1 < self.layers.len() {
                h = gelu(h);
            }
        }
        latent + h
    }
}

/// Element-wise distance `[batch, n, d]` between predicted and target latents.
pub fn latent_distance<B: Backend>(
    kind: NextLatentLossType,
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let diff = pred.clone() - target.clone();
    match kind {
        NextLatentLossType::Mse => diff.square(),
        NextLatentLossType::SmoothL1 => {
            let abs = diff.clone().abs();
            let quadratic = diff.square().mul_scalar(0.5);
            let linear = abs.clone().sub_scalar(0.5);
            quadratic.mask_where(abs.greater_equal_elem(1.0), linear)
        }
        NextLatentLossType::MseAndCosineSim => {
            let mse = diff.square();
            let cos_term = cosine_similarity(pred, target).neg().add_scalar(1.0); // [b, n, 1]
                                                                                  // mse.lerp(cos_term, 0.9)
            mse.clone() + (cos_term - mse).mul_scalar(0.9)
        }
    }
}

/// `F.cosine_similarity(a, b, dim=-1, eps=1e-8)` kept as `[batch, n, 1]`.
fn cosine_similarity<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> Tensor<B, 3> {
    let norm = |t: Tensor<B, 3>| t.clone() / t.square().sum_dim(2).sqrt().clamp_min(1e-8);
    (norm(a) * norm(b)).sum_dim(2)
}

/// The per-hierarchy next-latent losses (unweighted) and their weighted sum.
///
/// * `embeds`: each hierarchy's final embeddings `[batch, n_i, d_i]`.
/// * `token_embeds`: the raw token embeddings `[batch, n, token_dim]`.
/// * `ids`: the input ids `[batch, n]`, on the device.
pub fn next_latent_losses<B: Backend>(
    spec: &ModelSpec,
    summarizers: &[ChunkSummarizer<B>],
    dynamics: &[NextLatDynamics<B>],
    embeds: &[Tensor<B, 3>],
    token_embeds: Tensor<B, 3>,
    ids: Tensor<B, 2, Int>,
) -> (Tensor<B, 1>, Vec<Tensor<B, 1>>) {
    let device = token_embeds.device();
    let zero = || Tensor::<B, 1>::zeros([1], &device);
    if !spec.has_next_latent_loss() {
        return (zero(), embeds.iter().map(|_| zero()).collect());
    }
    let source = if spec.detach_summaries {
        token_embeds.detach()
    } else {
        token_embeds
    };
    let mut total = zero();
    let mut per_hierarchy = Vec::with_capacity(embeds.len());
    for (i, h) in spec.hierarchies.iter().enumerate() {
        let summaries = summarizers[i].forward(source.clone());
        let valid = chunk_mask(ids.clone(), h, embeds[i].dims()[1], spec.ignore_index);
        let loss_i = rollout_loss(spec, &dynamics[i], embeds[i].clone(), summaries, valid);
        total = total + loss_i.clone().mul_scalar(h.next_latent_loss_weight);
        per_hierarchy.push(loss_i);
    }
    (total, per_hierarchy)
}

/// `[batch, len]`: 1 where chunk `j`'s target counts, i.e. where the input token at its end
/// (original position `j * s`) is not ignored; computed on the device.
fn chunk_mask<B: Backend>(
    ids: Tensor<B, 2, Int>,
    h: &HierarchySpec,
    len: usize,
    ignore_index: i64,
) -> Tensor<B, 2> {
    let n = ids.dims()[1];
    let positions: Vec<i64> = (0..len).map(|j| (j * h.stride).min(n - 1) as i64).collect();
    ids_at(ids, &positions, ignore_index)
        .not_equal_elem(ignore_index)
        .float()
}

/// One hierarchy's loss, summed over the rollouts: from each latent, `num_rollouts` steps of
/// the dynamics, each compared with the (detached) latent it should reach.
fn rollout_loss<B: Backend>(
    spec: &ModelSpec,
    dynamics: &NextLatDynamics<B>,
    latents: Tensor<B, 3>,
    summaries: Tensor<B, 3>,
    valid: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let predict = latents.dims()[1] - spec.num_rollouts;
    let mut latent = narrow(latents.clone(), 1, 0, predict);
    let mut cumulative: Option<Tensor<B, 3>> = None;
    let mut loss_i = Tensor::<B, 1>::zeros([1], &latents.device());
    for (r, &rollout_weight) in spec.rollout_weights.iter().enumerate() {
        let start = r + 1;
        let summary = narrow(summaries.clone(), 1, start, predict);
        let target = narrow(latents.clone(), 1, start, predict).detach();
        latent = dynamics.forward(summary, latent);
        let loss = latent_distance(spec.next_latent_loss_type, latent.clone(), target);
        let mut weighted = loss.clone().mul_scalar(rollout_weight);
        if spec.dynamic_rollout_loss_weight {
            let step = loss.detach().mean_dim(2); // [b, predict, 1]
            if let Some(cum) = &cumulative {
                weighted = weighted * cum.clone().mul_scalar(-spec.dynamic_loss_decay).exp();
            }
            cumulative = Some(match cumulative {
                Some(cum) => cum + step,
                None => step,
            });
        }
        let mask = valid.clone().narrow(1, start, predict);
        loss_i = loss_i + masked_mean(weighted, mask);
    }
    loss_i
}
