//! Incremental decoding: every piece of the model keeps just the state the next token needs,
//! so each new token costs one step per hierarchy and layer instead of a pass over the context.
//!
//! Per hierarchy `i` (compression `c`, stride `s`, `a = c / s` axial sub-sequences):
//! * the compressor needs the last `c` raw token embeddings ([`Window`]);
//! * a new compressed token appears at every original position `t` with `t % s == 0`; it is
//!   token `j = t / s`, in axial sub-sequence `j % a` at axial position `j / a`;
//! * per layer and sub-sequence, attention keeps its keys and values (hier-attn's
//!   [`KvCache`], driven by the attention layer's `forward_cache`; local attention only the
//!   last `window + 1`) and token shift keeps the previous inputs of the
//!   attention and of the feed-forward;
//! * per layer, the merge reads every hierarchy's latest block output (a strided token covers
//!   the original positions up to the next one), kept in `block_out`.
//!
//! Within `seq_len` the logits equal those of the full forward pass (up to float rounding).
//! Beyond it, decoding keeps streaming: positions keep counting, local windows slide, full
//! attention keeps every key; nothing is cropped or recomputed (the reference instead re-crops the
//! context to the last `seq_len` tokens and restarts positions at 0).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use hier_attn::KvCache;

use crate::block::{Attention, HierarchicalBlock};
use crate::error::InputError;
use crate::generate::{prompt_shape, sample_rows, Sampler};
use crate::merge::HierarchicalMerge;
use crate::model::{check_vocabulary, HierarchicalTransformer};

/// The last `size` rows seen, oldest first (zeros before the first).
#[derive(Debug, Clone)]
pub struct Window<B: Backend> {
    rows: Tensor<B, 3>,
}

impl<B: Backend> Window<B> {
    /// A window of `size` zero rows of width `dim`, per batch row.
    pub fn new(batch: usize, size: usize, dim: usize, device: &B::Device) -> Self {
        Window {
            rows: Tensor::zeros([batch, size, dim], device),
        }
    }

    /// Slide in one row `[batch, 1, dim]`.
    pub fn push(&mut self, row: Tensor<B, 3>) {
        let size = self.rows.dims()[1];
        self.rows = if size > 1 {
            Tensor::cat(vec![self.rows.clone().narrow(1, 1, size - 1), row], 1)
        } else {
            row
        };
    }

    /// The last `n` rows.
    pub fn last(&self, n: usize) -> Tensor<B, 3> {
        let size = self.rows.dims()[1];
        self.rows.clone().narrow(1, size - n, n)
    }
}

/// State of one axial sub-sequence of one hierarchy in one layer.
#[derive(Debug, Clone)]
struct StreamState<B: Backend> {
    /// `None` for a hierarchy without attention.
    kv: Option<KvCache<B>>,
    prev_attn_in: Option<Tensor<B, 3>>,
    prev_ff_in: Option<Tensor<B, 3>>,
}

/// Token shift for one new row: the first half of `x`, the second half of the previous row.
fn shift_step<B: Backend>(x: Tensor<B, 3>, prev: &Option<Tensor<B, 3>>) -> Tensor<B, 3> {
    let d = x.dims()[2];
    let keep = d.div_ceil(2);
    if keep == d {
        return x;
    }
    let moved = match prev {
        Some(p) => p.clone().narrow(2, keep, d - keep),
        None => Tensor::zeros([x.dims()[0], 1, d - keep], &x.device()),
    };
    Tensor::cat(vec![x.narrow(2, 0, keep), moved], 2)
}

fn block_step<B: Backend>(
    block: &HierarchicalBlock<B>,
    x: Tensor<B, 3>,
    s: &mut StreamState<B>,
) -> Tensor<B, 3> {
    // the stream's cache counts its own (axial) positions
    let x = match (&block.attn, &mut s.kv) {
        (Some(attn), Some(kv)) => {
            let shifted = shift_step(x.clone(), &s.prev_attn_in);
            s.prev_attn_in = Some(x.clone());
            attn.forward_cache(shifted, kv) + x
        }
        _ => x,
    };
    let shifted = shift_step(x.clone(), &s.prev_ff_in);
    s.prev_ff_in = Some(x.clone());
    block.ff.forward(shifted) + x
}

/// The decoding state of a model: feed tokens one position at a time with [`Self::step`].
#[derive(Debug, Clone)]
pub struct Cache<B: Backend> {
    batch: usize,
    /// Original positions consumed.
    position: usize,
    raw: Window<B>,
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
            raw: Window::new(batch, widest, spec.token_dim, device),
            streams,
            block_out: vec![vec![None; h]; spec.depth],
            finals: vec![None; h],
        }
    }

    /// Original positions consumed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Consume one token per row (`ids`: `batch` ids) and return the next-token logits
    /// `[batch, num_tokens]`.
    pub fn step(
        &mut self,
        model: &HierarchicalTransformer<B>,
        ids: &[i64],
    ) -> Result<Tensor<B, 2>, InputError> {
        let spec = model.spec();
        if ids.len() != self.batch {
            return Err(InputError::Generation {
                option: "ids",
                problem: format!("{} ids for a batch of {}", ids.len(), self.batch),
            });
        }
        check_vocabulary(ids, spec.num_tokens, spec.ignore_index)?;
        let device = model.token_emb.weight.device();
        let t = self.position;
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [self.batch, 1]), &device);
        self.raw.push(model.token_emb.forward(ids));

        // new compressed tokens at this position: (hierarchy, token index, its input row)
        let mut current: Vec<Option<(usize, Tensor<B, 3>)>> = spec
            .hierarchies
            .iter()
            .enumerate()
            .map(|(i, h)| {
                t.is_multiple_of(h.stride).then(|| {
                    let token = model.compressors[i].compress_last(self.raw.last(h.factor));
                    (t / h.stride, model.post_token_emb_norms[i].forward(token))
                })
            })
            .collect();

        let strides = spec.strides();
        for (l, layer) in model.layers.iter().enumerate() {
            for (i, block) in layer.iter().enumerate() {
                if let Some((j, x)) = current[i].take() {
                    let a = spec.hierarchies[i].axial();
                    let out = block_step(block, x, &mut self.streams[l][i][j % a]);
                    self.block_out[l][i] = Some(out.clone());
                    current[i] = Some((j, out));
                }
            }
            if let Some(merge) = model.hierarchical_merges.get(l) {
                self.merge(spec, merge, l, &strides, &mut current);
            }
        }
        // a strided hierarchy without a new token keeps its last final output
        for (i, c) in current.into_iter().enumerate() {
            if let Some((_, x)) = c {
                self.finals[i] = Some(x);
            }
        }
        self.position += 1;

        let embed = |i: usize| {
            model.norms[i].forward(
                self.finals[i]
                    .clone()
                    .expect("every hierarchy has a token at position 0"),
            )
        };
        let predict = if spec.predict_use_all_hierarchy {
            Tensor::cat((0..spec.hierarchies.len()).map(embed).collect(), 2)
        } else {
            embed(spec.predict)
        };
        let logits = model.to_logits.forward(predict); // [b, 1, V]
        Ok(logits.reshape([self.batch, spec.num_tokens]))
    }

    /// The merge of layer `l` at the current position: every hierarchy's latest block output,
    /// pooled, added to the predicting hierarchy (or, with `hierarchy_merge_all`, to every
    /// hierarchy that has a new token now).
    fn merge(
        &mut self,
        spec: &crate::spec::ModelSpec,
        merge: &HierarchicalMerge<B>,
        l: usize,
        strides: &[usize],
        current: &mut [Option<(usize, Tensor<B, 3>)>],
    ) {
        let latest: Vec<Tensor<B, 3>> = self.block_out[l]
            .iter()
            .map(|t| {
                t.clone()
                    .expect("every hierarchy has a token at position 0")
            })
            .collect();
        // all latest tokens are single rows, so no repetition or cropping is needed
        let pooled = merge.forward(&latest, &vec![1; strides.len()]);
        if spec.hierarchy_merge_all {
            let mut offset = 0;
            for (i, h) in spec.hierarchies.iter().enumerate() {
                if let Some((j, x)) = current[i].take() {
                    current[i] = Some((j, x + pooled.clone().narrow(2, offset, h.dim)));
                }
                offset += h.dim;
            }
        } else if let Some((j, x)) = current[spec.predict].take() {
            current[spec.predict] = Some((j, x + pooled));
        }
    }
}

/// Generate `max_new_tokens` after each prompt row with the cache: the prompt is fed token by
/// token, then every new token costs one cached step. Returns only the new tokens, per row.
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
    let mut logits = None;
    for t in 0..len {
        let column: Vec<i64> = prompt.iter().map(|row| row[t]).collect();
        logits = Some(cache.step(model, &column)?);
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
