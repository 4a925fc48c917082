//! Synthetic inputs for benchmarks and tests.

/// `count` deterministic pseudo-random token ids in `1..vocab` (never 0, the reference's
/// `ignore_index`), the same for the same `seed` on every machine: an xorshift stream, for
/// timing and testing, where the values do not matter but must be reproducible.
pub fn token_ids(count: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % (vocab.max(2) as u64 - 1)) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::token_ids;

    #[test]
    fn ids_are_reproducible_and_in_range() {
        let a = token_ids(1000, 48, 7);
        assert_eq!(a, token_ids(1000, 48, 7));
        assert_ne!(a, token_ids(1000, 48, 8));
        assert!(a.iter().all(|&t| (1..48).contains(&t)));
        assert!((1..48).all(|t| a.contains(&t)), "every id appears");
    }
}
