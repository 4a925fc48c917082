use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use hier_attn::ops::{apply_linear, narrow, silu};
use hier_attn::{RmsNorm, RmsNormConfig};

/// Concatenate the hierarchies' streams feature-wise, aligned on original positions: a
/// strided stream's token `j` is repeated `s` times (it covers rows `j*s .. j*s + s - 1`, which
/// is causal since it ends at `j*s`), then all are cropped to the shortest.
///
/// `[batch, n_i, d_i]` per hierarchy -> `[batch, n, sum(d_i)]`
pub fn hierarchical_cat<B: Backend>(tokens: &[Tensor<B, 3>], strides: &[usize]) -> Tensor<B, 3> {
    if strides.iter().all(|&s| s == 1) {
        return Tensor::cat(tokens.to_vec(), 2);
    }
    let expanded: Vec<Tensor<B, 3>> = tokens
        .iter()
        .zip(strides)
        .map(|(t, &s)| {
            let [b, n, d] = t.dims();
            let t: Tensor<B, 4> = t.clone().unsqueeze_dim(2);
            t.expand([b, n, s, d]).reshape([b, n * s, d])
        })
        .collect();
    let len = expanded.iter().map(|t| t.dims()[1]).min().unwrap();
    Tensor::cat(
        expanded.into_iter().map(|t| narrow(t, 1, 0, len)).collect(),
        2,
    )
}

/// Pools all hierarchies into a residual update for the predicting one (or for all):
/// `RMSNorm(S) -> Linear(S, 2o) -> SiLU -> Linear(2o, o)`, `S = sum(dims)`
/// (the reference's `hierarchical_merges.l.net.{0,1,3}`).
#[derive(Module, Debug)]
pub struct HierarchicalMerge<B: Backend> {
    /// Pre-norm over the concatenated width `S`.
    pub norm: RmsNorm<B>,
    /// `Linear(S, 2o)`, with bias.
    pub proj_in: Linear<B>,
    /// `Linear(2o, o)`, with bias.
    pub proj_out: Linear<B>,
}

impl<B: Backend> HierarchicalMerge<B> {
    /// A freshly initialised merge from `total_dim` (`S`) to `dim_out` (`o`).
    pub fn new(total_dim: usize, dim_out: usize, device: &B::Device) -> Self {
        HierarchicalMerge {
            norm: RmsNormConfig::new(total_dim).init(device),
            proj_in: LinearConfig::new(total_dim, 2 * dim_out).init(device),
            proj_out: LinearConfig::new(2 * dim_out, dim_out).init(device),
        }
    }

    /// per-hierarchy `[batch, n_i, d_i]` -> `[batch, n, dim_out]`
    pub fn forward(&self, tokens: &[Tensor<B, 3>], strides: &[usize]) -> Tensor<B, 3> {
        let x = hierarchical_cat(tokens, strides);
        let hidden = silu(apply_linear(&self.proj_in, self.norm.forward(x)));
        apply_linear(&self.proj_out, hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn strided_streams_repeat_and_crop() {
        let device = Default::default();
        let a = Tensor::<Flex, 3>::from_floats([[[1.0], [2.0], [3.0]]], &device);
        let b = Tensor::<Flex, 3>::from_floats([[[10.0], [20.0]]], &device);
        let y: Vec<f32> = hierarchical_cat(&[a, b], &[1, 2])
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(y, vec![1.0, 10.0, 2.0, 10.0, 3.0, 20.0]);
    }
}
