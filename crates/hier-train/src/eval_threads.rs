//! Evaluation spread over CPU threads: the split is cut at window boundaries into one part per
//! thread, each part evaluated by its own copy of the model, and the sums combined. Every window
//! is the one [`evaluate`] would run, so the result equals its within float rounding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use hier_model::HierarchicalTransformer;

use crate::eval::{evaluate, Evaluation};
use crate::parallel::on_threads;

/// [`evaluate`] on `threads` threads (each in a rayon pool of its own with its share of the
/// cores). `progress` is called with (windows done, windows in total).
pub fn evaluate_on_threads<B: Backend>(
    model: &HierarchicalTransformer<B>,
    data: &[u8],
    batch_size: usize,
    threads: usize,
    device: &B::Device,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Evaluation, hier_model::InputError> {
    let parts = window_parts(data.len(), model.spec().seq_len, threads);
    if parts.len() <= 1 {
        return evaluate(model, data, batch_size, device, progress);
    }
    // each thread takes its own copy: a model is Send, not Sync
    let models: Vec<_> = parts
        .iter()
        .map(|_| Mutex::new(Some(model.clone())))
        .collect();
    let windows = data.len().saturating_sub(1).div_ceil(model.spec().seq_len);
    let done = AtomicUsize::new(0);
    let results = on_threads(parts.len(), |r| {
        let model = models[r].lock().map_or(None, |mut m| m.take());
        let model = model.expect("each part's model is taken once");
        let mut last = 0;
        evaluate(
            &model,
            &data[parts[r].clone()],
            batch_size,
            device,
            |d, _| {
                let all = done.fetch_add(d - last, Ordering::Relaxed) + d - last;
                last = d;
                progress(all, windows);
            },
        )
    });
    let mut nats = 0.0;
    let mut tokens = 0;
    for e in results {
        let e = e?;
        nats += e.loss * e.tokens as f64;
        tokens += e.tokens;
    }
    let loss = nats / tokens.max(1) as f64;
    Ok(Evaluation {
        loss,
        bpc: loss / std::f64::consts::LN_2,
        tokens,
    })
}

/// Byte ranges of `len` bytes cut into at most `threads` parts that start at multiples of
/// `seq_len` and overlap the next part by one byte, so every part's windows are the whole
/// split's windows.
fn window_parts(len: usize, seq_len: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let windows = len.saturating_sub(1).div_ceil(seq_len.max(1));
    let threads = threads.clamp(1, windows.max(1));
    (0..threads)
        .map(|r| {
            let (a, b) = (r * windows / threads, (r + 1) * windows / threads);
            a * seq_len..(b * seq_len + 1).min(len)
        })
        .filter(|r| r.len() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::window_parts;

    #[test]
    fn parts_cover_every_window_once() {
        for (len, seq_len, threads) in [(1000, 64, 2), (65, 64, 2), (2, 64, 4), (1001, 10, 3)] {
            let parts = window_parts(len, seq_len, threads);
            assert!(parts.len() <= threads);
            let mut starts = Vec::new();
            for p in &parts {
                assert_eq!(p.start % seq_len, 0);
                starts.extend((p.start..p.end - 1).step_by(seq_len));
            }
            let whole: Vec<usize> = (0..len - 1).step_by(seq_len).collect();
            assert_eq!(
                starts, whole,
                "len {len} seq_len {seq_len} threads {threads}"
            );
        }
    }
}
