//! One hierarchy's layer over its new tokens: the axial sub-sequences, each continuing its
//! own attention cache and token shift.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use hier_attn::KvCache;

use crate::block::HierarchicalBlock;
use crate::token_shift::token_shift_after;

/// State of one axial sub-sequence of one hierarchy in one layer.
#[derive(Debug, Clone)]
pub(super) struct StreamState<B: Backend> {
    /// `None` for a hierarchy without attention.
    pub(super) kv: Option<KvCache<B>>,
    /// The last input row of the attention and of the feed-forward (token shift's predecessor).
    pub(super) prev_attn_in: Option<Tensor<B, 3>>,
    pub(super) prev_ff_in: Option<Tensor<B, 3>>,
}

/// The last row of `[batch, m, dim]`.
pub(super) fn last_row<B: Backend>(x: &Tensor<B, 3>) -> Tensor<B, 3> {
    let m = x.dims()[1];
    x.clone().narrow(1, m - 1, 1)
}

/// Rows `rows` of `x` (`[batch, n, dim]`) in that order; no copy when they are `0..n`.
pub(super) fn select_rows<B: Backend>(x: Tensor<B, 3>, rows: &[usize]) -> Tensor<B, 3> {
    let n = x.dims()[1];
    let first = rows.first().copied().unwrap_or(0);
    if rows.iter().enumerate().all(|(i, &r)| r == first + i) {
        return if first == 0 && rows.len() == n {
            x
        } else {
            x.narrow(1, first, rows.len())
        };
    }
    let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let device = x.device();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
    x.select(1, index)
}

/// One layer of one axial sub-sequence for its next `m` tokens, as [`HierarchicalBlock::forward`].
fn stream_forward<B: Backend>(
    block: &HierarchicalBlock<B>,
    x: Tensor<B, 3>,
    s: &mut StreamState<B>,
) -> Tensor<B, 3> {
    // the stream's cache counts its own (axial) positions
    let x = match (&block.attn, &mut s.kv) {
        (Some(attn), Some(kv)) => {
            let shifted = token_shift_after(x.clone(), s.prev_attn_in.as_ref());
            s.prev_attn_in = Some(last_row(&x));
            attn.forward_cache(shifted, kv) + x
        }
        _ => x,
    };
    let shifted = token_shift_after(x.clone(), s.prev_ff_in.as_ref());
    s.prev_ff_in = Some(last_row(&x));
    block.ff.forward(shifted) + x
}

/// One layer of a hierarchy for its new tokens `j0 ..` (`[batch, k, dim]`): token `j` belongs
/// to axial sub-sequence `j % a`, and each sub-sequence continues its own state.
pub(super) fn block_forward<B: Backend>(
    block: &HierarchicalBlock<B>,
    x: Tensor<B, 3>,
    j0: usize,
    streams: &mut [StreamState<B>],
) -> Tensor<B, 3> {
    let a = streams.len();
    let k = x.dims()[1];
    let mut outs = Vec::with_capacity(a);
    let mut order = Vec::with_capacity(k); // row of `x` behind each row of `outs`, concatenated
    for (r, stream) in streams.iter_mut().enumerate() {
        let rows: Vec<usize> = (0..k).filter(|&i| (j0 + i) % a == r).collect();
        if rows.is_empty() {
            continue;
        }
        outs.push(stream_forward(block, select_rows(x.clone(), &rows), stream));
        order.extend(rows);
    }
    let mut inverse = vec![0; k];
    for (at, &row) in order.iter().enumerate() {
        inverse[row] = at;
    }
    let out = if outs.len() == 1 {
        outs.remove(0)
    } else {
        Tensor::cat(outs, 1)
    };
    select_rows(out, &inverse)
}
