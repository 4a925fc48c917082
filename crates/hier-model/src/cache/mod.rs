//! Incremental decoding: every piece of the model keeps just the state later tokens need, so
//! a prompt costs one pass and each new token one step per hierarchy and layer instead of a
//! pass over the context. One implementation serves both: [`Cache::forward`] takes any number
//! of new positions.
//!
//! Per hierarchy `i` (compression `c`, stride `s`, `a = c / s` axial sub-sequences):
//! * the compressor needs the `c - 1` token embeddings before the new ones (`history`);
//! * a new compressed token appears at every original position `t` with `t % s == 0`; it is
//!   token `j = t / s`, in axial sub-sequence `j % a` at axial position `j / a`;
//! * per layer and sub-sequence, attention keeps its keys and values (hier-attn's
//!   [`KvCache`](hier_attn::KvCache), driven by the attention layer's `forward_cache`; local
//!   attention only the last `window + 1`) and token shift keeps the last inputs of the
//!   attention and of the feed-forward;
//! * per layer, the merge reads at each position every hierarchy's latest block output (a
//!   strided token covers the original positions up to the next one), kept in `block_out`.
//!
//! Within `seq_len` the logits equal those of the full forward pass (up to float rounding),
//! however the positions are split into calls. Beyond it, decoding keeps streaming: positions
//! keep counting, local windows slide, full attention keeps every key; nothing is cropped or
//! recomputed (the reference instead re-crops the context to the last `seq_len` tokens and
//! restarts positions at 0).

mod emission;
mod stream;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::block::Attention;
use crate::error::InputError;
use crate::generate::{prompt_shape, sample_rows, Sampler};
use crate::merge::HierarchicalMerge;
use crate::model::HierarchicalTransformer;
use crate::spec::ModelSpec;
use emission::Emission;
use stream::{block_forward, last_row, StreamState};

/// The decoding state of a model. [`Self::forward`] feeds any number of new positions at once
/// (a whole prompt in one pass, or one token: [`Self::step`]) and returns their logits.
#[derive(Debug, Clone)]
pub struct Cache<B: Backend> {
    batch: usize,
    /// Original positions consumed.
    position: usize,
    /// The last `c - 1` token embeddings before `position` for the widest factor `c` (zeros
    /// before the start): what the compressors' next windows reach back into. `None` when
    /// every factor is 1.
    history: Option<Tensor<B, 3>>,
    /// `streams[l][i][k]`: layer `l`, hierarchy `i`, axial sub-sequence `k`.
    streams: Vec<Vec<Vec<StreamState<B>>>>,
    /// `block_out[l][i]`: hierarchy `i`'s latest output of layer `l`'s block (before the merge).
    block_out: Vec<Vec<Option<Tensor<B, 3>>>>,
    /// `finals[i]`: hierarchy `i`'s latest output of the last layer (after the merge).
    finals: Vec<Option<Tensor<B, 3>>>,
}

impl<B: Backend> Cache<B> {
    /// An empty state for decoding `batch` sequences with `model`, at position 0.
    pub fn new(model: &HierarchicalTransformer<B>, batch: usize, device: &B::Device) -> Self {
        let spec = model.spec();
        let widest = spec.hierarchies.iter().map(|h| h.factor).max().unwrap_or(1);
        let streams = model
            .layers
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .zip(&spec.hierarchies)
                    .map(|(block, h)| {
                        let state = StreamState {
                            kv: block.attn.as_ref().map(Attention::new_cache),
                            prev_attn_in: None,
                            prev_ff_in: None,
                        };
                        vec![state; h.axial()]
                    })
                    .collect()
            })
            .collect();
        let h = spec.hierarchies.len();
        Cache {
            batch,
            position: 0,
            history: (widest > 1)
                .then(|| Tensor::zeros([batch, widest - 1, spec.token_dim], device)),
            streams,
            block_out: vec![vec![None; h]; spec.depth],
            finals: vec![None; h],
        }
    }

    /// Original positions consumed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Consume `ids` (one row of equal length `m >= 1` per sequence) at the next `m` positions
    /// and return their next-token logits `[batch, m, num_tokens]`: a prompt in one pass.
    /// Memory grows with `m²` per attention layer; feed long inputs in chunks of `seq_len`.
    pub fn forward(
        &mut self,
        model: &HierarchicalTransformer<B>,
        ids: &[Vec<i64>],
    ) -> Result<Tensor<B, 3>, InputError> {
        let (batch, m) = prompt_shape(model, ids)?;
        if batch != self.batch {
            return Err(InputError::Generation {
                option: "ids",
                problem: format!("{batch} rows for a cache of batch {}", self.batch),
            });
        }
        let device = model.token_emb.weight.device();
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.concat(), [batch, m]), &device);
        Ok(self.forward_ids(model, ids))
    }

    /// Consume one token per row (`ids`: `batch` ids) and return the next-token logits
    /// `[batch, num_tokens]`.
    pub fn step(
        &mut self,
        model: &HierarchicalTransformer<B>,
        ids: &[i64],
    ) -> Result<Tensor<B, 2>, InputError> {
        if ids.len() != self.batch {
            return Err(InputError::Generation {
                option: "ids",
                problem: format!("{} ids for a batch of {}", ids.len(), self.batch),
            });
        }
        let rows: Vec<Vec<i64>> = ids.iter().map(|&id| vec![id]).collect();
        let logits = self.forward(model, &rows)?;
        Ok(logits.reshape([self.batch, model.spec().num_tokens]))
    }

    /// [`Self::forward`] of checked ids `[batch, m]`.
    fn forward_ids(
        &mut self,
        model: &HierarchicalTransformer<B>,
        ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let spec = model.spec();
        let m = ids.dims()[1];
        let emissions: Vec<Emission> = spec
            .hierarchies
            .iter()
            .map(|h| Emission::new(h.stride, self.position, m))
            .collect();
        let mut current = self.compress(model, model.token_emb.forward(ids), &emissions);
        for (l, layer) in model.layers.iter().enumerate() {
            for (i, block) in layer.iter().enumerate() {
                if let Some(x) = current[i].take() {
                    let streams = &mut self.streams[l][i];
                    current[i] = Some(block_forward(block, x, emissions[i].j0, streams));
                }
            }
            if let Some(merge) = model.hierarchical_merges.get(l) {
                self.merge(spec, merge, l, &emissions, &mut current);
            }
        }
        let logits = self.logits(model, &emissions, current);
        self.position += m;
        logits
    }

    /// Every hierarchy's new input tokens (compressed, normed; `None` without any), from the
    /// new token embeddings `[batch, m, token_dim]` and the history, which then moves on.
    fn compress(
        &mut self,
        model: &HierarchicalTransformer<B>,
        x: Tensor<B, 3>,
        emissions: &[Emission],
    ) -> Vec<Option<Tensor<B, 3>>> {
        let m = x.dims()[1];
        let held = self.history.as_ref().map_or(0, |h| h.dims()[1]);
        // row r of `all` is position `self.position - held + r`
        let all = match self.history.take() {
            Some(history) => Tensor::cat(vec![history, x], 1),
            None => x,
        };
        let new = model
            .compressors
            .iter()
            .zip(&model.post_token_emb_norms)
            .zip(emissions)
            .map(|((compressor, norm), e)| {
                (e.count > 0).then(|| {
                    // from the first new token's first tap (c - 1 rows before it)
                    let first = (e.j0 * e.stride - self.position) + (held + 1 - compressor.factor);
                    let len = (e.count - 1) * e.stride + compressor.factor;
                    norm.forward(compressor.forward_after(all.clone().narrow(1, first, len)))
                })
            })
            .collect();
        if held > 0 {
            self.history = Some(all.narrow(1, m, held));
        }
        new
    }

    /// The merge of layer `l` over the span: at each position every hierarchy's latest block
    /// output, pooled, added to the predicting hierarchy's new tokens (or, with
    /// `hierarchy_merge_all`, to every hierarchy's).
    fn merge(
        &mut self,
        spec: &ModelSpec,
        merge: &HierarchicalMerge<B>,
        l: usize,
        emissions: &[Emission],
        current: &mut [Option<Tensor<B, 3>>],
    ) {
        let aligned: Vec<Tensor<B, 3>> = emissions
            .iter()
            .zip(&self.block_out[l])
            .zip(current.iter())
            .map(|((e, prev), new)| e.per_position(prev, new.clone()))
            .collect();
        for (latest, new) in self.block_out[l].iter_mut().zip(current.iter()) {
            if let Some(new) = new {
                *latest = Some(last_row(new));
            }
        }
        // every stream is now one row per position: no repetition or cropping
        let pooled = merge.forward(&aligned, &vec![1; aligned.len()]);
        let mut offset = 0;
        for (i, (h, e)) in spec.hierarchies.iter().zip(emissions).enumerate() {
            let part = if spec.hierarchy_merge_all {
                Some(pooled.clone().narrow(2, offset, h.dim))
            } else {
                (i == spec.predict).then(|| pooled.clone())
            };
            offset += h.dim;
            if let (Some(part), Some(x)) = (part, current[i].as_mut()) {
                *x = x.clone() + e.at_tokens(part);
            }
        }
    }

    /// Next-token logits `[batch, m, num_tokens]` from the last layer's new outputs; keeps
    /// each hierarchy's latest for later positions.
    fn logits(
        &mut self,
        model: &HierarchicalTransformer<B>,
        emissions: &[Emission],
        current: Vec<Option<Tensor<B, 3>>>,
    ) -> Tensor<B, 3> {
        let spec = model.spec();
        let embed = |i: usize| {
            let latest = emissions[i].per_position(&self.finals[i], current[i].clone());
            model.norms[i].forward(latest)
        };
        let predict = if spec.predict_use_all_hierarchy {
            Tensor::cat((0..spec.hierarchies.len()).map(embed).collect(), 2)
        } else {
            embed(spec.predict)
        };
        for (latest, new) in self.finals.iter_mut().zip(&current) {
            if let Some(new) = new {
                *latest = Some(last_row(new));
            }
        }
        hier_attn::ops::apply_linear(&model.to_logits, predict)
    }
}

/// Generate `max_new_tokens` after each prompt row with the cache: the prompt is fed in one
/// pass (per `seq_len` positions), then every new token costs one cached step. Returns only
/// the new tokens, per row.
pub fn generate_cached<B: Backend>(
    model: &HierarchicalTransformer<B>,
    prompt: &[Vec<i64>],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    device: &B::Device,
) -> Result<Vec<Vec<i64>>, InputError> {
    generate_cached_with(model, prompt, max_new_tokens, sampler, device, |_| Ok(()))
}

/// [`generate_cached`], calling `on_token` with each new token of every row (one per row) as
/// soon as it is sampled, so that callers can stream; an error from it stops generation.
pub fn generate_cached_with<B: Backend, E: From<InputError>>(
    model: &HierarchicalTransformer<B>,
    prompt: &[Vec<i64>],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    device: &B::Device,
    mut on_token: impl FnMut(&[i64]) -> Result<(), E>,
) -> Result<Vec<Vec<i64>>, E> {
    let (batch, len) = prompt_shape(model, prompt)?;
    let mut cache = Cache::new(model, batch, device);
    let seq_len = model.spec().seq_len;
    let mut logits = None;
    // the prompt in passes of at most seq_len positions (attention memory grows with m²)
    for start in (0..len).step_by(seq_len) {
        let m = seq_len.min(len - start);
        let chunk: Vec<Vec<i64>> = prompt
            .iter()
            .map(|r| r[start..start + m].to_vec())
            .collect();
        let all = cache.forward(model, &chunk)?;
        logits = Some(
            all.narrow(1, m - 1, 1)
                .reshape([batch, model.spec().num_tokens]),
        );
    }
    let mut out = vec![Vec::with_capacity(max_new_tokens); batch];
    for n in 0..max_new_tokens {
        let Some(step_logits) = logits.take() else {
            break; // unreachable: the prompt is not empty
        };
        let next = sample_rows(sampler, step_logits)?;
        on_token(&next)?;
        for (row, &token) in out.iter_mut().zip(&next) {
            row.push(token);
        }
        if n + 1 < max_new_tokens {
            logits = Some(cache.step(model, &next)?);
        }
    }
    Ok(out)
}
