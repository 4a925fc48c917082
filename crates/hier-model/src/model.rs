use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor};
use hier_attn::ops::{apply_linear, narrow};
use hier_attn::{LayerNorm, LayerNormConfig};

use crate::block::HierarchicalBlock;
use crate::compressor::Compressor;
use crate::config::HierarchicalTransformerConfig;
use crate::error::{ConfigError, InputError};
use crate::loss::cross_entropy;
use crate::merge::{hierarchical_cat, HierarchicalMerge};
use crate::next_latent::{next_latent_losses, stride_rows, ChunkSummarizer, NextLatDynamics};
use crate::objectives::{hierarchical_ar_loss, prophet_loss};
use crate::spec::ModelSpec;

/// The Simple Hierarchical Transformer: a GPT whose token stream is also compressed into
/// coarser hierarchies (1x, 2x, 8x, ...) that run side by side and are merged back into the
/// predicting hierarchy after every layer.
///
/// Field names follow the reference's state_dict (see [`crate::weights`]).
#[derive(Module, Debug)]
pub struct HierarchicalTransformer<B: Backend> {
    /// Token embeddings, `[num_tokens, max(dim)]`.
    pub token_emb: Embedding<B>,
    /// One per hierarchy: the causal strided convolution that compresses the token embeddings
    /// into it.
    pub compressors: Vec<Compressor<B>>,
    /// Per hierarchy, for the next-latent loss with chunk summarizers.
    pub chunk_summarizers: Vec<ChunkSummarizer<B>>,
    /// Per hierarchy, the next-latent predictors.
    pub latent_dynamics: Vec<NextLatDynamics<B>>,
    /// One per hierarchy, after the compressed embeddings.
    pub post_token_emb_norms: Vec<LayerNorm<B>>,
    /// `layers[l][i]`: layer `l` of hierarchy `i`.
    pub layers: Vec<Vec<HierarchicalBlock<B>>>,
    /// One per layer when there is more than one hierarchy.
    pub hierarchical_merges: Vec<HierarchicalMerge<B>>,
    /// The final norm of every hierarchy.
    pub norms: Vec<LayerNorm<B>>,
    /// The output projection to `num_tokens` logits.
    pub to_logits: Linear<B>,
    /// With `prophet_loss_weight > 0`: per hierarchy, `Linear(d_i, c_i * V)` for `c_i > 1`.
    pub prophet_heads: Vec<Option<Linear<B>>>,
    /// With `hierarchical_ar_loss_weight > 0`: per hierarchy, `nn.Linear(d_i, d_i)` for `c_i > 1`.
    pub to_hierarchical_preds: Vec<Option<Linear<B>>>,
    /// The config the model was built from (written as `config.json`).
    pub config: HierarchicalTransformerConfig,
    /// The validated config with every per-hierarchy value resolved.
    pub spec: ModelSpec,
}

/// Options of [`HierarchicalTransformer::forward_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions {
    /// Skip every hierarchical merge (an ablation of the reference).
    pub ablate_hierarchical_merge: bool,
}

/// Logits together with every hierarchy's final embeddings.
#[derive(Debug, Clone)]
pub struct ForwardOutput<B: Backend> {
    /// `[batch, n, num_tokens]`
    pub logits: Tensor<B, 3>,
    /// Per hierarchy `[batch, ceil(n / s_i), d_i]`, after the final norms.
    pub embeds: Vec<Tensor<B, 3>>,
}

/// The losses of [`HierarchicalTransformer::forward_loss`], each a one-element tensor.
#[derive(Debug, Clone)]
pub struct Losses<B: Backend> {
    /// `ce + next_latent + recon_loss_weight * recon`
    pub total: Tensor<B, 1>,
    /// Next-token cross-entropy (mean over the predicted positions).
    pub ce: Tensor<B, 1>,
    /// Already weighted per hierarchy by `next_latent_loss_weight`.
    pub next_latent: Tensor<B, 1>,
    /// Unweighted.
    pub recon: Tensor<B, 1>,
    /// ProphetNet-style future-token loss, unweighted (0 when off).
    pub prophet: Tensor<B, 1>,
    /// Hierarchical autoregressive loss, unweighted (0 when off).
    pub hierarchical_ar: Tensor<B, 1>,
    /// Unweighted, one per hierarchy.
    pub next_latent_per_hierarchy: Vec<Tensor<B, 1>>,
    /// Logits of the inputs `ids[:, :-1]`.
    pub logits: Tensor<B, 3>,
}

impl<B: Backend> HierarchicalTransformer<B> {
    /// A freshly initialised model (PyTorch's default initialisations).
    pub fn new(
        config: &HierarchicalTransformerConfig,
        device: &B::Device,
    ) -> Result<Self, ConfigError> {
        let spec = config.validate()?;
        let d = spec.token_dim;
        let recon = spec.should_recon();
        let hs = &spec.hierarchies;
        let merge_out = if spec.hierarchy_merge_all {
            spec.total_dim()
        } else {
            hs[spec.predict].dim
        };
        let logits_in = if spec.predict_use_all_hierarchy {
            spec.total_dim()
        } else {
            hs[spec.predict].dim
        };
        Ok(HierarchicalTransformer {
            token_emb: EmbeddingConfig::new(spec.num_tokens, d).init(device),
            compressors: hs
                .iter()
                .map(|h| Compressor::new(h, d, spec.num_tokens, recon, device))
                .collect(),
            chunk_summarizers: hs
                .iter()
                .map(|h| ChunkSummarizer::new(h, d, device))
                .collect(),
            latent_dynamics: hs
                .iter()
                .map(|h| {
                    let hidden = spec.dynamics_hidden_dim.unwrap_or(h.dim);
                    NextLatDynamics::new(h.dim, hidden, spec.dynamics_num_layers, device)
                })
                .collect(),
            post_token_emb_norms: hs
                .iter()
                .map(|h| LayerNormConfig::new(h.dim).init(device))
                .collect(),
            layers: (0..spec.depth)
                .map(|_| {
                    hs.iter()
                        .map(|h| HierarchicalBlock::new(h, device))
                        .collect()
                })
                .collect(),
            hierarchical_merges: if hs.len() > 1 {
                (0..spec.depth)
                    .map(|_| HierarchicalMerge::new(spec.total_dim(), merge_out, device))
                    .collect()
            } else {
                Vec::new()
            },
            norms: hs
                .iter()
                .map(|h| LayerNormConfig::new(h.dim).init(device))
                .collect(),
            to_logits: LinearConfig::new(logits_in, spec.num_tokens)
                .with_bias(false)
                .init(device),
            prophet_heads: per_compressed(&spec, spec.prophet_loss_weight, |h| {
                LinearConfig::new(h.dim, h.factor * spec.num_tokens)
                    .with_bias(false)
                    .init(device)
            }),
            to_hierarchical_preds: per_compressed(&spec, spec.hierarchical_ar_loss_weight, |h| {
                LinearConfig::new(h.dim, h.dim).init(device)
            }),
            config: config.clone(),
            spec,
        })
    }

    /// The validated description the model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn check_len(&self, n: usize) -> Result<(), InputError> {
        if n == 0 {
            return Err(InputError::TooShort { min: 1 });
        }
        if n > self.spec.seq_len {
            return Err(InputError::TooLong {
                len: n,
                seq_len: self.spec.seq_len,
            });
        }
        Ok(())
    }

    /// Next-token logits: `ids [batch, n] -> [batch, n, num_tokens]`, `n <= seq_len`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, InputError> {
        Ok(self.forward_with(ids, ForwardOptions::default())?.logits)
    }

    /// Logits and final embeddings, with the ablation switches.
    pub fn forward_with(
        &self,
        ids: Tensor<B, 2, Int>,
        options: ForwardOptions,
    ) -> Result<ForwardOutput<B>, InputError> {
        self.check_len(ids.dims()[1])?;
        let tokens = self.embed(self.token_emb.forward(ids));
        let embeds = self.trunk(tokens, options);
        Ok(ForwardOutput {
            logits: self.logits(&embeds),
            embeds,
        })
    }

    /// The early exit `return_hierarchical_token_embeds`: every hierarchy's input stream after
    /// its compressor and post-embedding norm.
    pub fn hierarchical_token_embeds(
        &self,
        ids: Tensor<B, 2, Int>,
    ) -> Result<Vec<Tensor<B, 3>>, InputError> {
        self.check_len(ids.dims()[1])?;
        Ok(self.embed(self.token_emb.forward(ids)))
    }

    /// The early exit `return_hierarchical_embeds`: every hierarchy's final embeddings.
    pub fn hierarchical_embeds(
        &self,
        ids: Tensor<B, 2, Int>,
    ) -> Result<Vec<Tensor<B, 3>>, InputError> {
        Ok(self.forward_with(ids, ForwardOptions::default())?.embeds)
    }

    /// `[batch, n, token_dim]` -> per hierarchy `[batch, n_i, d_i]`
    fn embed(&self, x: Tensor<B, 3>) -> Vec<Tensor<B, 3>> {
        self.compressors
            .iter()
            .zip(&self.post_token_emb_norms)
            .map(|(compress, norm)| norm.forward(compress.forward(x.clone())))
            .collect()
    }

    /// All layers and merges, then the final norms.
    fn trunk(&self, mut tokens: Vec<Tensor<B, 3>>, options: ForwardOptions) -> Vec<Tensor<B, 3>> {
        let strides = self.spec.strides();
        let p = self.spec.predict;
        for (l, layer) in self.layers.iter().enumerate() {
            tokens = layer
                .iter()
                .zip(tokens)
                .map(|(block, t)| block.forward(t))
                .collect();
            let Some(merge) = self.hierarchical_merges.get(l) else {
                continue;
            };
            if options.ablate_hierarchical_merge {
                continue;
            }
            let pooled = merge.forward(&tokens, &strides);
            if self.spec.hierarchy_merge_all {
                let mut offset = 0;
                tokens = tokens
                    .into_iter()
                    .zip(&self.spec.hierarchies)
                    .map(|(t, h)| {
                        let part = narrow(pooled.clone(), 2, offset, h.dim);
                        offset += h.dim;
                        let len = t.dims()[1];
                        t + stride_rows(part, 0, len, h.stride)
                    })
                    .collect();
            } else {
                tokens[p] = tokens[p].clone() + pooled;
            }
        }
        self.norms
            .iter()
            .zip(tokens)
            .map(|(norm, t)| norm.forward(t))
            .collect()
    }

    fn logits(&self, embeds: &[Tensor<B, 3>]) -> Tensor<B, 3> {
        let predict = if self.spec.predict_use_all_hierarchy {
            hierarchical_cat(embeds, &self.spec.strides())
        } else {
            embeds[self.spec.predict].clone()
        };
        apply_linear(&self.to_logits, predict)
    }

    /// Training losses for `ids [batch, n + 1]`: inputs `ids[:, :-1]`, labels `ids[:, 1:]`, as
    /// the reference's `forward(ids, return_loss=True)`.
    ///
    /// Nothing is read back to the host: the ids must lie in `0..num_tokens` (labels may also be
    /// `ignore_index`), which callers check where the ids are built, on the host, with
    /// [`check_vocabulary`] (as [`Self::forward`] requires of its ids too).
    pub fn forward_loss(&self, ids: Tensor<B, 2, Int>) -> Result<Losses<B>, InputError> {
        self.forward_loss_with(ids, ForwardOptions::default())
    }

    /// [`Self::forward_loss`] with [`ForwardOptions`] (e.g. the merge ablation).
    pub fn forward_loss_with(
        &self,
        ids: Tensor<B, 2, Int>,
        options: ForwardOptions,
    ) -> Result<Losses<B>, InputError> {
        let device = ids.device();
        let TrainingIds {
            all,
            inputs,
            labels,
            batch,
            n,
        } = self.training_ids(ids)?;
        let x = self.token_emb.forward(inputs.clone());
        let embeds = self.trunk(self.embed(x.clone()), options);
        let logits = self.logits(&embeds);
        let vocab = self.spec.num_tokens;
        let ce = cross_entropy(
            logits.clone().reshape([batch * n, vocab]),
            labels,
            self.spec.ignore_index,
        );

        let (next_latent, next_latent_per_hierarchy) = next_latent_losses(
            &self.spec,
            &self.chunk_summarizers,
            &self.latent_dynamics,
            &embeds,
            x,
            inputs.clone(),
        );
        let recon = self.recon_loss(&embeds, inputs, &device);
        let (prophet, hierarchical_ar) = self.extension_losses(&embeds, all, &device);
        let total = ce.clone()
            + next_latent.clone()
            + recon.clone().mul_scalar(self.spec.recon_loss_weight)
            + prophet.clone().mul_scalar(self.spec.prophet_loss_weight)
            + hierarchical_ar
                .clone()
                .mul_scalar(self.spec.hierarchical_ar_loss_weight);
        Ok(Losses {
            total,
            ce,
            next_latent,
            recon,
            prophet,
            hierarchical_ar,
            next_latent_per_hierarchy,
            logits,
        })
    }

    /// `ids [batch, n + 1]` checked (shapes only) and split on the device into inputs and
    /// labels.
    fn training_ids(&self, ids: Tensor<B, 2, Int>) -> Result<TrainingIds<B>, InputError> {
        let [batch, total] = ids.dims();
        if total < 2 {
            return Err(InputError::TooShort { min: 2 });
        }
        let n = total - 1;
        self.check_len(n)?;
        for h in &self.spec.hierarchies {
            let len = n.div_ceil(h.stride);
            if self.spec.has_next_latent_loss() && len <= self.spec.num_rollouts {
                return Err(InputError::TooShortForRollouts {
                    factor: h.factor,
                    len,
                    rollouts: self.spec.num_rollouts,
                });
            }
        }
        Ok(TrainingIds {
            inputs: ids.clone().narrow(1, 0, n),
            labels: ids.clone().narrow(1, 1, n).reshape([batch * n]),
            all: ids,
            batch,
            n,
        })
    }

    /// The compressors' reconstruction losses, summed (0 when reconstruction is off).
    fn recon_loss(
        &self,
        embeds: &[Tensor<B, 3>],
        inputs: Tensor<B, 2, Int>,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let mut recon = Tensor::<B, 1>::zeros([1], device);
        for (compress, e) in self.compressors.iter().zip(embeds) {
            if let Some(loss) =
                compress.recon_loss(e.clone(), inputs.clone(), self.spec.ignore_index)
            {
                recon = recon + loss;
            }
        }
        recon
    }

    /// hier's extension objectives, each summed over the hierarchies (0 when off): the
    /// ProphetNet-style future-token loss and the hierarchical autoregressive loss.
    fn extension_losses(
        &self,
        embeds: &[Tensor<B, 3>],
        all: Tensor<B, 2, Int>,
        device: &B::Device,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let mut prophet = Tensor::<B, 1>::zeros([1], device);
        let mut hierarchical_ar = Tensor::<B, 1>::zeros([1], device);
        let ignore = self.spec.ignore_index;
        for (i, (h, e)) in self.spec.hierarchies.iter().zip(embeds).enumerate() {
            if let Some(Some(head)) = self.prophet_heads.get(i) {
                let logits = apply_linear(head, e.clone());
                prophet = prophet + prophet_loss(logits, all.clone(), h.factor, h.stride, ignore);
            }
            if let Some(Some(map)) = self.to_hierarchical_preds.get(i) {
                hierarchical_ar =
                    hierarchical_ar + hierarchical_ar_loss(apply_linear(map, e.clone()), e.clone());
            }
        }
        (prophet, hierarchical_ar)
    }
}

/// Training ids on the device: all `[batch, n + 1]` of them, the inputs `ids[:, :-1]` and the
/// labels `ids[:, 1:]` flattened to `[batch * n]`.
struct TrainingIds<B: Backend> {
    all: Tensor<B, 2, Int>,
    inputs: Tensor<B, 2, Int>,
    labels: Tensor<B, 1, Int>,
    batch: usize,
    n: usize,
}

/// One optional module per hierarchy with `c > 1`, or none at all when the objective is off.
fn per_compressed<B: Backend>(
    spec: &ModelSpec,
    weight: f64,
    make: impl Fn(&crate::spec::HierarchySpec) -> Linear<B>,
) -> Vec<Option<Linear<B>>> {
    if weight <= 0.0 {
        return Vec::new();
    }
    spec.hierarchies
        .iter()
        .map(|h| (h.factor > 1).then(|| make(h)))
        .collect()
}

/// Every id must index the embedding (`ignore_index` is allowed as a label only if in range).
pub fn check_vocabulary(
    ids: &[i64],
    num_tokens: usize,
    _ignore_index: i64,
) -> Result<(), InputError> {
    match ids
        .iter()
        .position(|&id| id < 0 || id as usize >= num_tokens)
    {
        Some(position) => Err(InputError::OutOfVocabulary {
            id: ids[position],
            position,
            num_tokens,
        }),
        None => Ok(()),
    }
}
