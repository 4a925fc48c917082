//! Constant tables (rotary angles with their xPos and softmax scales, additive attention
//! masks) as device tensors, memoised per backend and device by what determines them.
//!
//! Every layer of every step needs the same tables; computing `cos`/`sin` for `seq × features`
//! entries per layer per step was measurable on the CPU, and uploading them per layer is a
//! host-to-device copy on a GPU. A device table is uploaded once and shared: cloning a tensor
//! shares its buffer, and a constant is never part of an autodiff graph.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::tensor::backend::{Backend, DeviceId, DeviceOps};
use burn::tensor::{Tensor, TensorData};

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

/// At most this many bytes of tables are kept (over all backends and devices);
/// generation with recomputation asks for every sequence length once (and a causal mask grows
/// with its square), so a memo is cleared rather than grown without bound.
pub(crate) const CAPACITY_BYTES: usize = 64 << 20;

/// Tables by key, with the bytes they hold.
struct Memo<K, V> {
    tables: HashMap<K, V>,
    bytes: usize,
}

impl<K: Hash + Eq, V> Memo<K, V> {
    fn new() -> Self {
        Memo {
            tables: HashMap::new(),
            bytes: 0,
        }
    }

    /// Keep `value` (`bytes` large) under `key`, clearing the memo first if it would exceed its
    /// bound; a table larger than the whole bound is not kept.
    fn keep(&mut self, key: K, value: V, bytes: usize) {
        if self.bytes + bytes > CAPACITY_BYTES {
            self.tables.clear();
            self.bytes = 0;
        }
        if bytes <= CAPACITY_BYTES {
            self.tables.insert(key, value);
            self.bytes += bytes;
        }
    }
}

/// A device table's identity: the backend's type, the device, the table and its shape.
type DeviceKey = (TypeId, DeviceId, TableKey, Vec<usize>);

/// Device tensors (`Tensor<B, D>` behind `Any`) by [`DeviceKey`].
type DeviceMemo = Memo<DeviceKey, Box<dyn Any + Send>>;

fn memo() -> MutexGuard<'static, DeviceMemo> {
    static MEMO: OnceLock<Mutex<DeviceMemo>> = OnceLock::new();
    // A poisoned memo only means another thread panicked while inserting; the map is intact.
    MEMO.get_or_init(|| Mutex::new(Memo::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The table for `key` as a tensor of `shape` on `device`: built by `build` and uploaded the
/// first time per backend and device, then shared.
pub(crate) fn device_table<B: Backend, const D: usize>(
    key: TableKey,
    shape: [usize; D],
    device: &B::Device,
    build: impl FnOnce() -> Vec<f32>,
) -> Tensor<B, D> {
    let id: DeviceKey = (TypeId::of::<B>(), device.id(), key, shape.to_vec());
    let mut memo = memo();
    let held = memo
        .tables
        .get(&id)
        .and_then(|t| t.downcast_ref::<Tensor<B, D>>());
    if let Some(t) = held {
        return t.clone();
    }
    let t = upload::<B, D>(&build(), shape, device);
    let bytes = shape.iter().product::<usize>() * std::mem::size_of::<f32>();
    memo.keep(id, Box::new(t.clone()), bytes);
    t
}

/// Upload host values as a tensor of `shape`.
pub(crate) fn upload<B: Backend, const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // tests read tensors
    use super::*;
    use burn::backend::{Autodiff, Flex, NdArray};

    fn values<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// One test, so that no other test of this module clears the memo in between.
    #[test]
    fn uploads_once_per_backend_and_key_within_the_bound() {
        let key = TableKey::CausalBias { seq: 123_457 };
        let mut builds = 0;
        let mut build = |v: f32| {
            builds += 1;
            vec![v, v]
        };
        let a = device_table::<Flex, 1>(key, [2], &Default::default(), || build(1.0));
        let b = device_table::<Flex, 1>(key, [2], &Default::default(), || build(2.0));
        let c = device_table::<NdArray, 1>(key, [2], &Default::default(), || build(3.0));
        let d = device_table::<Autodiff<Flex>, 1>(key, [2], &Default::default(), || build(4.0));
        let e = device_table::<Flex, 1>(
            TableKey::CausalBias { seq: 123_458 },
            [2],
            &Default::default(),
            || build(5.0),
        );
        assert_eq!(builds, 4, "one upload per backend and key");
        assert_eq!(values(a), [1.0, 1.0]);
        assert_eq!(values(b), [1.0, 1.0]);
        assert_eq!(values(c), [3.0, 3.0]);
        assert_eq!(values(d), [4.0, 4.0]);
        assert_eq!(values(e), [5.0, 5.0]);

        let floats = CAPACITY_BYTES / 4 / 3 + 1; // three such tables exceed the bound
        for seq in 0..4 {
            let key = TableKey::CausalBias { seq: 987_000 + seq };
            device_table::<Flex, 1>(key, [floats], &Default::default(), || vec![0.0; floats]);
            let held = memo().bytes;
            assert!(held <= CAPACITY_BYTES, "{held} bytes held");
        }
        let huge = TableKey::CausalBias { seq: 986_999 };
        let len = CAPACITY_BYTES / 4 + 1;
        let t = device_table::<Flex, 1>(huge, [len], &Default::default(), || vec![0.0; len]);
        assert_eq!(t.dims(), [len]);
        let memo = memo();
        assert!(memo.bytes <= CAPACITY_BYTES);
        assert!(!memo.tables.keys().any(|(_, _, key, _)| *key == huge));
    }
}
