use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor};
use hier_attn::kernel::pad_end;
use hier_attn::ops::{apply_linear, linear, narrow, silu, swap_dims};

use crate::loss::{cross_entropy, ids_at};
use crate::spec::HierarchySpec;

/// Turns the token embeddings into one hierarchy's input stream.
///
/// * `c = 1`: identity, or a bias-free projection when the hierarchy is narrower than the
///   embedding.
/// * `c > 1`: a causal strided convolution (kernel `c`, stride `s`, left-padded by `c - 1`), SiLU,
///   and a 1x1 convolution; output `j` sees original positions `j*s - c + 1 ..= j*s`.
///
/// With a reconstruction loss it also owns `to_recon`, which predicts the `c` tokens a
/// compressed position summarised.
#[derive(Module, Debug)]
pub struct Compressor<B: Backend> {
    /// `c = 1`, narrower hierarchy: `Linear(token_dim, dim)`.
    pub compress_fn: Option<Linear<B>>,
    /// `c > 1`: `Conv1d(token_dim, 4 * token_dim, kernel c, stride s)`.
    pub conv: Option<Conv1d<B>>,
    /// `c > 1`: `Conv1d(4 * token_dim, dim, 1)`.
    pub conv_out: Option<Conv1d<B>>,
    /// `c > 1` with reconstruction: `Linear(dim, c * num_tokens)`.
    pub to_recon: Option<Linear<B>>,
    /// Compression factor `c`: the convolution's kernel width.
    pub factor: usize,
    /// Stride `s`: one compressed token every `s` original positions.
    pub stride: usize,
}

impl<B: Backend> Compressor<B> {
    /// A freshly initialised compressor for hierarchy `h`; `recon` adds the reconstruction
    /// head (only for `c > 1`).
    pub fn new(
        h: &HierarchySpec,
        token_dim: usize,
        num_tokens: usize,
        recon: bool,
        device: &B::Device,
    ) -> Self {
        let (c, s) = (h.factor, h.stride);
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        if c == 1 {
            return Compressor {
                compress_fn: (h.dim != token_dim).then(|| linear(token_dim, h.dim)),
                conv: None,
                conv_out: None,
                to_recon: None,
                factor: c,
                stride: s,
            };
        }
        let inner = 4 * token_dim;
        Compressor {
            compress_fn: None,
            conv: Some(
                Conv1dConfig::new(token_dim, inner, c)
                    .with_stride(s)
                    .init(device),
            ),
            conv_out: Some(Conv1dConfig::new(inner, h.dim, 1).init(device)),
            to_recon: recon.then(|| linear(h.dim, c * num_tokens)),
            factor: c,
            stride: s,
        }
    }

    /// `[batch, n, token_dim] -> [batch, ceil(n / s), dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.conv.is_none() {
            return self.forward_after(x);
        }
        let [b, _, d] = x.dims();
        let pad = Tensor::zeros([b, self.factor - 1, d], &x.device());
        self.forward_after(Tensor::cat(vec![pad, x], 1))
    }

    /// [`Self::forward`] of rows that follow `c - 1` earlier rows, given in front of them
    /// (`[batch, c - 1 + n, token_dim]`, zeros before the start of the sequence) instead of
    /// the zero padding: `[batch, ceil(n / s), dim]`, output `j` ending at row `c - 1 + j*s`.
    /// Incremental decoding compresses new tokens with it.
    pub fn forward_after(&self, padded: Tensor<B, 3>) -> Tensor<B, 3> {
        let (Some(conv), Some(conv_out)) = (&self.conv, &self.conv_out) else {
            return match &self.compress_fn {
                Some(project) => apply_linear(project, padded),
                None => padded,
            };
        };
        let [b, len, d] = padded.dims();
        let (c, s) = (self.factor, self.stride);
        // One row per output position `j`: the `c` taps at padded positions `j*s + k`,
        // channel-major (`[b, windows, d, c]`, tap fastest) to match the convolution weight's
        // own `[inner, d, c]` layout, so both convolutions are matrix products on [b, n, ·]
        // rows with the weights used in place.
        let windows = (len + 1 - c).div_ceil(s);
        let taps = if s == c {
            // non-overlapping windows (stride = c): a reshape, no gather
            narrow(padded, 1, 0, windows * c).reshape([b, windows, c, d])
        } else {
            let padded = pad_end(padded, 1, c - 1 + windows * s);
            let tap = |k: usize| {
                let window = narrow(padded.clone(), 1, k, windows * s);
                narrow(window.reshape([b, windows, s, d]), 2, 0, 1)
            };
            Tensor::cat((0..c).map(tap).collect(), 2)
        };
        let rows = swap_dims(taps, 2, 3).reshape([b, windows, d * c]);
        compress_rows(conv, conv_out, rows)
    }

    /// Cross-entropy of reconstructing, from each compressed position `j` (original position
    /// `e = j*s`), the `c` tokens `ids[e - c + 1 ..= e]` it summarised (ids before the start are
    /// `ignore_index`). `None` for `c = 1` or without a reconstruction head.
    ///
    /// * `embeds`: `[batch, n_c, dim]`, the hierarchy's final embeddings.
    /// * `ids`: the input ids `[batch, n]`, on the device.
    pub fn recon_loss(
        &self,
        embeds: Tensor<B, 3>,
        ids: Tensor<B, 2, Int>,
        ignore_index: i64,
    ) -> Option<Tensor<B, 1>> {
        let to_recon = self.to_recon.as_ref()?;
        let (c, s) = (self.factor, self.stride);
        let [batch, positions, _] = embeds.dims();
        let logits = apply_linear(to_recon, embeds); // [b, n_c, c * V], offset major, vocabulary minor
        let vocab = logits.dims()[2] / c;
        let taps: Vec<i64> = (0..positions)
            .flat_map(|j| (0..c).map(move |k| (j * s + k) as i64 - (c as i64 - 1)))
            .collect();
        let targets = ids_at(ids, &taps, ignore_index).reshape([batch * positions * c]);
        Some(cross_entropy(
            logits.reshape([batch * positions * c, vocab]),
            targets,
            ignore_index,
        ))
    }
}

/// Both convolutions evaluated as matrix products on rows of `c` taps per channel
/// (channel-major, tap fastest, oldest tap first): `[batch, rows, token_dim · c] -> [batch, rows,
/// dim]`. One row is one window of the strided convolution; the weights are used as they are
/// stored (`[inner, token_dim, c]` viewed as `[inner, token_dim · c]`), not copied per call.
fn compress_rows<B: Backend>(
    conv: &Conv1d<B>,
    conv_out: &Conv1d<B>,
    rows: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let [inner, d, c] = conv.weight.dims();
    let w = conv.weight.val().reshape([inner, d * c]).transpose();
    let bias = |p: &Option<burn::module::Param<Tensor<B, 1>>>| p.as_ref().map(|b| b.val());
    let hidden = silu(linear(rows, w, bias(&conv.bias)));
    let [dim, _, _] = conv_out.weight.dims();
    let w_out = conv_out.weight.val().reshape([dim, inner]).transpose();
    linear(hidden, w_out, bias(&conv_out.bias))
}
