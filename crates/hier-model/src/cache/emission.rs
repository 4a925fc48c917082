//! Which new tokens a strided hierarchy emits during a span of original positions, and the
//! alignment between its tokens and the positions.

use burn::tensor::{backend::Backend, Tensor};

use super::stream::select_rows;

/// Where a hierarchy of stride `s` stands during original positions `start .. start + m`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Emission {
    /// Its first new token (emitted at position `j0 * s`).
    pub(super) j0: usize,
    /// How many new tokens it emits in the span.
    pub(super) count: usize,
    pub(super) stride: usize,
    start: usize,
    m: usize,
}

impl Emission {
    pub(super) fn new(stride: usize, start: usize, m: usize) -> Self {
        let j0 = start.div_ceil(stride);
        let count = (start + m).div_ceil(stride) - j0;
        Emission {
            j0,
            count,
            stride,
            start,
            m,
        }
    }

    /// Each position's latest token, aligned on the positions: `[batch, m, dim]` from the
    /// `count` new rows and the latest row before the span (`prev`, absent at position 0).
    pub(super) fn per_position<B: Backend>(
        &self,
        prev: &Option<Tensor<B, 3>>,
        new: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        // index into [prev, new...]: token t / s is row t / s + 1 - j0
        let rows: Vec<usize> = (self.start..self.start + self.m)
            .map(|t| t / self.stride + 1 - self.j0)
            .collect();
        match (prev, new) {
            (_, Some(new)) if rows[0] >= 1 => {
                let rows: Vec<usize> = rows.iter().map(|r| r - 1).collect();
                select_rows(new, &rows)
            }
            (Some(prev), None) => select_rows(prev.clone(), &rows),
            (Some(prev), Some(new)) => select_rows(Tensor::cat(vec![prev.clone(), new], 1), &rows),
            (None, _) => unreachable!("position 0 emits a token of every hierarchy"),
        }
    }

    /// The rows of a per-position `[batch, m, dim]` tensor at this hierarchy's new tokens.
    pub(super) fn at_tokens<B: Backend>(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let rows: Vec<usize> = (self.j0..self.j0 + self.count)
            .map(|j| j * self.stride - self.start)
            .collect();
        select_rows(x, &rows)
    }
}
