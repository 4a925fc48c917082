//! Sampling (top-k filter + Gumbel-max, the reference's `generate`) and the recompute
//! generation loop.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::InputError;
use crate::host;
use crate::model::{check_vocabulary, HierarchicalTransformer};

/// Picks the next token from a row of logits: keep the `k = int((1 - filter_thres) * V)` largest
/// logits, divide by the temperature, add Gumbel noise, take the argmax. Temperature 0 is greedy:
/// the argmax of the logits.
///
/// [`Sampler::sample_device`] (and [`sample_rows`]) run on the device; the Gumbel noise comes
/// from the sampler's own seeded generator (uploaded, `V` numbers per row), so a seed gives the
/// same tokens on every backend, and the same as [`Sampler::sample`] on the host.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f64,
    filter_thres: f64,
    rng: StdRng,
}

/// Number of logits the top-k filter keeps: `int((1 - filter_thres) * vocab)`, computed in f64
/// like Python (so `filter_thres = 0.9`, `V = 256` keeps 25, not 26).
pub fn top_k_count(filter_thres: f64, vocab: usize) -> usize {
    ((1.0 - filter_thres) * vocab as f64) as usize
}

impl Sampler {
    /// A sampler seeded with `seed`. Refuses a temperature that is negative or not finite and
    /// a `filter_thres` outside `[0, 1)`.
    pub fn new(temperature: f64, filter_thres: f64, seed: u64) -> Result<Self, InputError> {
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(InputError::Generation {
                option: "temperature",
                problem: format!("{temperature} is not a finite number >= 0"),
            });
        }
        if !filter_thres.is_finite() || !(0.0..1.0).contains(&filter_thres) {
            return Err(InputError::Generation {
                option: "filter_thres",
                problem: format!("{filter_thres} is outside [0, 1); the top-k filter keeps (1 - filter_thres) of the vocabulary"),
            });
        }
        Ok(Sampler {
            temperature,
            filter_thres,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The top-k filter's `k` for a vocabulary of `vocab`, refusing a filter that keeps nothing.
    fn keep(&self, vocab: usize) -> Result<usize, InputError> {
        match top_k_count(self.filter_thres, vocab) {
            0 => Err(InputError::Generation {
                option: "filter_thres",
                problem: format!(
                    "{} keeps no token of a vocabulary of {vocab}; lower it",
                    self.filter_thres
                ),
            }),
            k => Ok(k),
        }
    }

    fn greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The reference's `max(temperature, 1e-10)`, in the logits' precision.
    fn divisor(&self) -> f32 {
        self.temperature.max(1e-10) as f32
    }

    /// `len` Gumbel numbers `-ln(-ln(u))`, clamped as the reference's `log(t, eps=1e-20)`.
    fn gumbel_noise(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                let u: f32 = self.rng.random();
                -(-(u.max(1e-20)).ln()).max(1e-20).ln()
            })
            .collect()
    }

    /// The next token for one row of logits `[V]`, on the host.
    pub fn sample(&mut self, logits: &[f32]) -> Result<usize, InputError> {
        let k = self.keep(logits.len())?;
        if self.greedy() {
            // the first of equal maxima, as the device's argmax
            let best = (0..logits.len()).fold(0, |best, i| match logits[i] > logits[best] {
                true => i,
                false => best,
            });
            return Ok(best);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // stable: among equal logits the lower id ranks first
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let mut filtered = vec![f32::MIN; logits.len()];
        for &i in &order[..k] {
            filtered[i] = logits[i];
        }
        let divisor = self.divisor();
        let noise = self.gumbel_noise(logits.len());
        let mut best = (0, f32::NEG_INFINITY);
        for (i, (&l, &gumbel)) in filtered.iter().zip(&noise).enumerate() {
            let score = l / divisor + gumbel;
            if score > best.1 {
                best = (i, score);
            }
        }
        Ok(best.0)
    }

    /// One token per row of `logits` (`[batch, V]`), computed on the device and left there:
    /// `[batch]`, with `-1` for a row holding a NaN or infinite logit (broken weights would
    /// otherwise sample one arbitrary token over and over without a word).
    pub fn sample_device<B: Backend>(
        &mut self,
        logits: Tensor<B, 2>,
    ) -> Result<Tensor<B, 1, Int>, InputError> {
        let [batch, vocab] = logits.dims();
        let k = self.keep(vocab)?;
        let broken = logits.clone().is_finite().bool_not().any_dim(1); // [batch, 1]
        let picked = if self.greedy() {
            logits.argmax(1)
        } else {
            // the noise of every id, drawn in the host sampler's order, then only the top k's
            let noise = TensorData::new(self.gumbel_noise(batch * vocab), [batch, vocab]);
            let noise = Tensor::<B, 2>::from_data(noise, &logits.device());
            let (values, indices) = logits.topk_with_indices(k, 1);
            let scores = values.div_scalar(self.divisor()) + noise.gather(1, indices.clone());
            indices.gather(1, scores.argmax(1))
        };
        Ok(picked.mask_fill(broken, -1).reshape([batch]))
    }
}

/// Check that `prompt` holds equal-length, non-empty rows of ids in the vocabulary; returns
/// `(batch, length)`.
pub fn prompt_shape<B: Backend>(
    model: &HierarchicalTransformer<B>,
    prompt: &[Vec<i64>],
) -> Result<(usize, usize), InputError> {
    let spec = model.spec();
    let len = prompt.first().map(Vec::len).unwrap_or(0);
    if len == 0 {
        return Err(InputError::TooShort { min: 1 });
    }
    if prompt.iter().any(|row| row.len() != len) {
        return Err(InputError::Generation {
            option: "prompt",
            problem: "rows have different lengths".into(),
        });
    }
    for row in prompt {
        check_vocabulary(row, spec.num_tokens, spec.ignore_index)?;
    }
    Ok((prompt.len(), len))
}

/// One sampled token per row of `logits` (`[batch, num_tokens]`), sampled on the device: one
/// device-to-host read, of the `[batch]` ids.
pub fn sample_rows<B: Backend>(
    sampler: &mut Sampler,
    logits: Tensor<B, 2>,
) -> Result<Vec<i64>, InputError> {
    let tokens = sampler.sample_device(logits)?;
    let tokens = host::read_vec::<i64, B, 1, Int>(tokens).map_err(|e| InputError::Generation {
        option: "logits",
        problem: e.to_string(),
    })?;
    if tokens.iter().any(|&t| t < 0) {
        return Err(InputError::NonFinite {
            what: "logits".into(),
        });
    }
    Ok(tokens)
}

/// Generate `max_new_tokens` after each prompt row, recomputing the whole (cropped) context
/// for every token exactly as the reference does: once the context exceeds `seq_len` only its
/// last `seq_len` tokens are fed, with positions restarting at 0.
///
/// `prompt`: equal-length rows of ids. Returns only the new tokens, per row.
pub fn generate_recompute<B: Backend>(
    model: &HierarchicalTransformer<B>,
    prompt: &[Vec<i64>],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    device: &B::Device,
) -> Result<Vec<Vec<i64>>, InputError> {
    generate_recompute_with(model, prompt, max_new_tokens, sampler, device, |_| Ok(()))
}

/// [`generate_recompute`], calling `on_token` with each new token of every row (one per row)
/// as soon as it is sampled, so that callers can stream; an error from it stops generation.
pub fn generate_recompute_with<B: Backend, E: From<InputError>>(
    model: &HierarchicalTransformer<B>,
    prompt: &[Vec<i64>],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    device: &B::Device,
    mut on_token: impl FnMut(&[i64]) -> Result<(), E>,
) -> Result<Vec<Vec<i64>>, E> {
    let (batch, len) = prompt_shape(model, prompt)?;
    let (seq_len, vocab) = (model.spec().seq_len, model.spec().num_tokens);
    let mut out: Vec<Vec<i64>> = prompt.to_vec();
    for _ in 0..max_new_tokens {
        let total = out[0].len();
        let start = total.saturating_sub(seq_len);
        let n = total - start;
        let context: Vec<i64> = out.iter().flat_map(|row| row[start..].to_vec()).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(context, [batch, n]), device);
        let logits = model
            .forward(ids)?
            .narrow(1, n - 1, 1)
            .reshape([batch, vocab]);
        let next = sample_rows(sampler, logits)?;
        on_token(&next)?;
        for (row, token) in out.iter_mut().zip(next) {
            row.push(token);
        }
    }
    Ok(out.into_iter().map(|row| row[len..].to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_rounds_like_python() {
        assert_eq!(top_k_count(0.9, 256), 25);
        assert_eq!(top_k_count(0.0, 256), 256);
    }

    #[test]
    fn greedy_takes_the_argmax_and_filter_limits_choices() {
        let mut greedy = Sampler::new(0.0, 0.9, 1).unwrap();
        let logits: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
        let best = (0..20)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(greedy.sample(&logits).unwrap(), best);
        // keep 2 of 20: hot sampling never leaves the top 2
        let mut hot = Sampler::new(5.0, 0.9, 7).unwrap();
        let mut order: Vec<usize> = (0..20).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        for _ in 0..200 {
            assert!(order[..2].contains(&hot.sample(&logits).unwrap()));
        }
    }

    /// The device sampler draws the host sampler's tokens: same seed, same noise, same filter.
    #[test]
    fn device_sampling_equals_host_sampling() {
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|r| {
                (0..40)
                    .map(|i| ((i * 7 + r * 13) as f32 * 0.29).sin() * 3.0)
                    .collect()
            })
            .collect();
        let flat: Vec<f32> = rows.concat();
        let logits = Tensor::<burn::backend::Flex, 2>::from_data(
            TensorData::new(flat, [3, 40]),
            &Default::default(),
        );
        for (temperature, filter) in [(0.0, 0.9), (1.0, 0.9), (0.7, 0.5), (2.0, 0.0)] {
            let mut on_host = Sampler::new(temperature, filter, 11).unwrap();
            let mut on_device = on_host.clone();
            for _ in 0..20 {
                let host: Vec<i64> = rows
                    .iter()
                    .map(|row| on_host.sample(row).unwrap() as i64)
                    .collect();
                let device = sample_rows(&mut on_device, logits.clone()).unwrap();
                assert_eq!(host, device, "temperature {temperature}, filter {filter}");
            }
        }
    }

    #[test]
    fn seeded_sampling_repeats() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.11).cos()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 0.5, seed).unwrap();
            (0..30)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn non_finite_logits_are_an_error() {
        let mut sampler = Sampler::new(0.0, 0.5, 0).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let logits = Tensor::<burn::backend::Flex, 2>::from_floats(
                [[0.5, 1.0], [bad, 0.0]],
                &Default::default(),
            );
            let e = sample_rows(&mut sampler, logits).unwrap_err();
            assert!(e.to_string().contains("not finite"), "{e}");
        }
    }

    #[test]
    fn rejects_bad_options() {
        assert!(Sampler::new(-1.0, 0.9, 0).is_err());
        assert!(Sampler::new(1.0, 1.0, 0).is_err());
        assert!(Sampler::new(f64::NAN, 0.9, 0).is_err());
    }
}
