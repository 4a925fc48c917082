//! The decoding state of one attention stream and the attention of new queries against it.
//!
//! Keys are stored already rotated (rotary, xPos) at their absolute positions, so a query only
//! needs its own rotation and the order of the stored keys does not matter: full attention
//! appends into a buffer that grows by doubling, local attention keeps its last `window + 1`
//! keys in a ring. Both are written in place (`slice_assign` on a buffer nothing else holds).

use burn::tensor::{backend::Backend, Tensor};

use crate::kernel::{bias_values, masked_softmax_attend};
use crate::ops::softmax_last;
use crate::rotary::{self, Layout};
use crate::tables::upload;

/// Queries and keys `[batch, heads, m, dim_head]` of new tokens rotated at their absolute
/// positions `start ..` in `layout` (with xPos when `xpos`), queries with the softmax scale:
/// what [`KvCache::attend`] expects.
pub(crate) fn rotate_new<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    start: usize,
    layout: Layout,
    xpos: bool,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [_, _, m, dh] = q.dims();
    let device = q.device();
    let (cos, sin) = rotary::cos_sin::<B>(dh, start..start + m, layout, &device);
    let (cos, sin): (Tensor<B, 4>, Tensor<B, 4>) = (cos.unsqueeze(), sin.unsqueeze());
    let mut q = rotary::apply(q, cos.clone(), sin.clone(), layout);
    let mut k = rotary::apply(k, cos, sin, layout);
    if xpos {
        // logit (i, j) scales with base^((i - j) / 512); the centre cancels, so 0 will do
        let scale: Tensor<B, 4> =
            rotary::xpos_scale::<B>(dh, start..start + m, 0, &device).unsqueeze();
        q = q * scale.clone();
        k = k / scale;
    }
    (q.mul_scalar((dh as f64).powf(-0.5)), k)
}

/// Keys and values of one attention stream (`[batch, heads, slots, dim_head]` buffers) and the
/// absolute position of the next token.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
    /// `Some(w)`: a query at `p` sees keys `p - w ..= p` (a ring of `w + 1` slots).
    window: Option<usize>,
    next: usize,
}

/// Slots a full-attention buffer starts with.
const FIRST_CAPACITY: usize = 64;

impl<B: Backend> KvCache<B> {
    /// An empty cache at position 0; `window: Some(w)` for local attention (query `p` sees keys
    /// `p - w ..= p`), `None` for full causal attention (every key so far).
    pub fn new(window: Option<usize>) -> Self {
        KvCache {
            k: None,
            v: None,
            window,
            next: 0,
        }
    }

    /// Absolute position of the next token.
    pub fn position(&self) -> usize {
        self.next
    }

    /// Keys held (at most `window + 1` for local attention): slots `0..len` of the buffers,
    /// which fill in order.
    pub fn len(&self) -> usize {
        match self.window {
            Some(w) => self.next.min(w + 1),
            None => self.next,
        }
    }

    /// The absolute position held by slot `slot < len()`: full attention's slot `j` holds
    /// position `j`; the ring's slot `s` the latest position `≡ s (mod window + 1)`.
    fn position_of(&self, slot: usize) -> usize {
        match self.window {
            Some(w) => self.next - 1 - (self.next - 1 - slot) % (w + 1),
            None => slot,
        }
    }

    /// No key held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attention of `m` new queries (positions `next .. next + m`) over the stored keys and the
    /// `m` new keys, which are then stored. `q` must carry the softmax scale; `q, k, v`:
    /// `[batch, heads, m, dim_head]`, rotated at their absolute positions. Returns
    /// `[batch, heads, m, dim_head]`.
    pub fn attend(&mut self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
        if q.dims()[2] == 1 {
            // a single query sees every key kept (the ring holds exactly its window)
            self.store(k, v);
            let (keys, values) = self.filled();
            softmax_last(q.matmul(keys.swap_dims(2, 3))).matmul(values)
        } else {
            let out = self.attend_block(q, k.clone(), v.clone());
            self.store(k, v);
            out
        }
    }

    /// Several queries: the stored keys and the new ones side by side, with a mask from their
    /// positions (causal, and the window for local attention).
    fn attend_block(&self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = q.dims()[2];
        let held = self.len();
        let key_positions: Vec<usize> = (0..held)
            .map(|slot| self.position_of(slot))
            .chain(self.next..self.next + m)
            .collect();
        let (keys, values) = if held == 0 {
            (k, v)
        } else {
            let (ck, cv) = self.filled();
            (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2))
        };
        let n_keys = key_positions.len();
        let window = self.window;
        let bias = bias_values([m, n_keys], |[i, j]| {
            let (query, key) = (self.next + i, key_positions[j]);
            key > query || window.is_some_and(|w| query - key > w)
        });
        let bias = upload::<B, 1>(&bias, [m * n_keys], &q.device());
        let sim = q.matmul(keys.swap_dims(2, 3)); // [b, h, m, keys]
        masked_softmax_attend(sim, bias, values)
    }

    /// Store the keys and values of positions `next .. next + m` and advance.
    fn store(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) {
        let m = k.dims()[2];
        match self.window {
            Some(w) => self.store_ring(k, v, w + 1),
            None => self.store_append(k, v),
        }
        self.next += m;
    }

    fn store_append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) {
        let [b, h, m, dh] = k.dims();
        let len = self.next;
        let capacity = self.k.as_ref().map_or(0, |t| t.dims()[2]);
        if len + m > capacity {
            let grown = (2 * capacity).max(len + m).max(FIRST_CAPACITY);
            let grow = |old: Option<Tensor<B, 4>>| {
                let buffer = Tensor::zeros([b, h, grown, dh], &k.device());
                match old {
                    Some(old) if len > 0 => {
                        buffer.slice_assign([0..b, 0..h, 0..len, 0..dh], old.narrow(2, 0, len))
                    }
                    _ => buffer,
                }
            };
            self.k = Some(grow(self.k.take()));
            self.v = Some(grow(self.v.take()));
        }
        let slots = [0..b, 0..h, len..len + m, 0..dh];
        self.k = self.k.take().map(|t| t.slice_assign(slots.clone(), k));
        self.v = self.v.take().map(|t| t.slice_assign(slots, v));
    }

    fn store_ring(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, slots: usize) {
        let [b, h, m, dh] = k.dims();
        if self.k.is_none() {
            self.k = Some(Tensor::zeros([b, h, slots, dh], &k.device()));
            self.v = Some(Tensor::zeros([b, h, slots, dh], &k.device()));
        }
        // only the last `slots` new keys can still be seen by a later query
        for i in m.saturating_sub(slots)..m {
            let position = self.next + i;
            let slot = position % slots;
            let at = [0..b, 0..h, slot..slot + 1, 0..dh];
            let (ki, vi) = (k.clone().narrow(2, i, 1), v.clone().narrow(2, i, 1));
            self.k = self.k.take().map(|t| t.slice_assign(at.clone(), ki));
            self.v = self.v.take().map(|t| t.slice_assign(at, vi));
        }
    }

    /// The held keys and values: slots `0..len()` (both buffers exist once a key is stored).
    fn filled(&self) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let n = self.len();
        let view = |t: &Option<Tensor<B, 4>>| {
            t.clone()
                .expect("the buffers exist once a key is stored")
                .narrow(2, 0, n)
        };
        (view(&self.k), view(&self.v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::host_bias;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    /// Feeding a sequence in chunks of any size equals masked attention over all of it.
    #[test]
    fn chunks_equal_masked_attention_over_the_whole_sequence() {
        let device = Default::default();
        let n = 11;
        let shape = [2, 3, n, 4];
        let q = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
        let k = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
        let v = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
        for window in [None, Some(3)] {
            let bias = host_bias::<Flex, 2>([n, n], &device, |[i, j]| {
                j > i || window.is_some_and(|w| i - j > w)
            });
            let sim = q.clone().matmul(k.clone().swap_dims(2, 3));
            let whole = masked_softmax_attend(sim, bias, v.clone());
            for chunks in [vec![1; n], vec![5, 1, 1, 4], vec![n], vec![2, 7, 1, 1]] {
                let mut cache = KvCache::new(window);
                let mut outs = Vec::new();
                let mut at = 0;
                for m in chunks {
                    let part = |t: &Tensor<Flex, 4>| t.clone().narrow(2, at, m);
                    outs.push(cache.attend(part(&q), part(&k), part(&v)));
                    at += m;
                }
                assert_eq!(cache.position(), n);
                assert_eq!(cache.len(), window.map_or(n, |w| w + 1));
                Tensor::cat(outs, 2)
                    .into_data()
                    .assert_approx_eq::<f32>(&whole.clone().into_data(), Tolerance::absolute(1e-5));
            }
        }
    }
}
