//! Constant host tables (rotary angles with their xPos and softmax scales, additive attention
//! masks), memoised by what determines them.
//!
//! Every layer of every step needs the same tables; computing `cos`/`sin` for `seq × features`
//! entries per layer per step was measurable on the CPU, uploading a cached copy is not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::rotary::Part;

/// What a table is and the sizes that determine it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TableKey {
    /// Full attention's query or key rotation: `[seq, heads · dim_head]`, cos or sin.
    FullRotary {
        seq: usize,
        heads: usize,
        dim_head: usize,
        part: Part,
        sin: bool,
    },
    /// Local attention's rotation at positions `0..seq`.
    LocalRotary {
        seq: usize,
        dim_head: usize,
        part: Part,
        sin: bool,
    },
    /// Additive causal mask `[seq, seq]`.
    CausalBias { seq: usize },
    /// Additive band mask of blocked local attention `[blocks, w, 2w]`.
    LocalBias { blocks: usize, window: usize },
    /// The signed permutation of [`crate::rotary::rotation_matrix`].
    Rotation { dim_head: usize, half_split: bool },
}

/// At most this many bytes of tables are kept; generation with recomputation asks for every
/// sequence length once (and a causal mask grows with its square), so the memo is cleared
/// rather than grown without bound.
pub(crate) const CAPACITY_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Memo {
    tables: HashMap<TableKey, Arc<[f32]>>,
    bytes: usize,
}

fn memo() -> &'static Mutex<Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// The table for `key`, built by `build` the first time.
pub(crate) fn table(key: TableKey, build: impl FnOnce() -> Vec<f32>) -> Arc<[f32]> {
    // A poisoned memo only means another thread panicked while inserting; the map is intact.
    let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = memo.tables.get(&key) {
        return t.clone();
    }
    let t: Arc<[f32]> = build().into();
    let bytes = std::mem::size_of_val(&*t);
    if memo.bytes + bytes > CAPACITY_BYTES {
        memo.tables.clear();
        memo.bytes = 0;
    }
    // a table larger than the whole bound is used once and not kept
    if bytes <= CAPACITY_BYTES {
        memo.tables.insert(key, t.clone());
        memo.bytes += bytes;
    }
    t
}

/// Upload a host table as a tensor of `shape`.
pub(crate) fn upload<B: Backend, const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_per_key() {
        let key = TableKey::CausalBias { seq: 123_457 };
        let mut builds = 0;
        let a = table(key, || {
            builds += 1;
            vec![1.0, 2.0]
        });
        let b = table(key, || {
            builds += 1;
            vec![3.0]
        });
        assert_eq!(builds, 1);
        assert_eq!(&*a, &*b);
    }

    #[test]
    fn the_memo_never_holds_more_than_its_bytes() {
        let floats = CAPACITY_BYTES / 4 / 3 + 1; // three such tables exceed the bound
        for seq in 0..4 {
            table(TableKey::CausalBias { seq: 987_000 + seq }, || {
                vec![0.0; floats]
            });
            let held = memo().lock().unwrap_or_else(|e| e.into_inner()).bytes;
            assert!(held <= CAPACITY_BYTES, "{held} bytes held");
        }
        let huge = TableKey::CausalBias { seq: 986_999 };
        let t = table(huge, || vec![0.0; CAPACITY_BYTES / 4 + 1]);
        assert_eq!(t.len(), CAPACITY_BYTES / 4 + 1);
        let memo = memo().lock().unwrap_or_else(|e| e.into_inner());
        assert!(!memo.tables.contains_key(&huge) && memo.bytes <= CAPACITY_BYTES);
    }
}
