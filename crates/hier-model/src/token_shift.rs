use burn::tensor::{backend::Backend, Tensor};
use hier_attn::ops::{contiguous, narrow};

/// Shift the second half of the features one step to the right along the sequence
/// (zeros enter at position 0): each position mixes in half of its predecessor for free.
///
/// `[batch, seq, dim] -> [batch, seq, dim]`; the first `ceil(dim / 2)` features stay, as in
/// `torch.chunk(2)`.
pub fn token_shift<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    token_shift_after(x, None)
}

/// [`token_shift`] of rows `[batch, m, dim]` that continue a sequence whose last row was `prev`
/// (`[batch, 1, dim]`; `None` at the start, where zeros enter): decoding one chunk at a time
/// gives the rows of the whole sequence's shift.
pub fn token_shift_after<B: Backend>(x: Tensor<B, 3>, prev: Option<&Tensor<B, 3>>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    let keep = d.div_ceil(2);
    let moved = d - keep;
    if moved == 0 {
        return x;
    }
    let first = match prev {
        Some(prev) => contiguous(narrow(prev.clone(), 2, keep, moved)),
        None => Tensor::zeros([b, 1, moved], &x.device()),
    };
    let still = contiguous(narrow(x.clone(), 2, 0, keep));
    let shifted = if n > 1 {
        let earlier = contiguous(narrow(narrow(x, 2, keep, moved), 1, 0, n - 1));
        Tensor::cat(vec![first, earlier], 1)
    } else {
        first
    };
    Tensor::cat(vec![still, shifted], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn shifts_the_second_half() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::from_floats(
            [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]],
            &device,
        );
        let y: Vec<f32> = token_shift(x).into_data().to_vec().unwrap();
        assert_eq!(y, vec![1.0, 2.0, 0.0, 4.0, 5.0, 3.0, 7.0, 8.0, 6.0]);
    }

    /// Shifting a sequence in chunks, each after the previous chunk's last row, gives the
    /// whole sequence's shift (what decoding with a cache relies on).
    #[test]
    fn chunks_shift_like_the_whole_sequence() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([2, 7, 5], burn::tensor::Distribution::Default, &device);
        let whole = token_shift(x.clone());
        let mut prev: Option<Tensor<Flex, 3>> = None;
        let mut parts = Vec::new();
        for (start, len) in [(0, 3), (3, 1), (4, 3)] {
            let chunk = x.clone().narrow(1, start, len);
            parts.push(token_shift_after(chunk.clone(), prev.as_ref()));
            prev = Some(chunk.narrow(1, len - 1, 1));
        }
        let chunked = Tensor::cat(parts, 1);
        whole.into_data().assert_eq(&chunked.into_data(), true);
    }
}
