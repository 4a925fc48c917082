use burn::tensor::{backend::Backend, Tensor};
use hier_attn::ops::{contiguous, narrow};

/// Shift the second half of the features one step to the right along the sequence
/// (zeros enter at position 0): each position mixes in half of its predecessor for free.
///
/// `[batch, seq, dim] -> [batch, seq, dim]`; the first `ceil(dim / 2)` features stay, as in
/// `torch.chunk(2)`.
pub fn token_shift<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    let keep = d.div_ceil(2);
    let moved = d - keep;
    if moved == 0 {
        return x;
    }
    let still = contiguous(narrow(x.clone(), 2, 0, keep));
    let zeros = Tensor::zeros([b, 1, moved], &x.device());
    let shifted = if n > 1 {
        Tensor::cat(
            vec![
                zeros,
                contiguous(narrow(narrow(x, 2, keep, moved), 1, 0, n - 1)),
            ],
            1,
        )
    } else {
        zeros
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
}
