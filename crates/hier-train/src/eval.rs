//! Deterministic evaluation of a whole split: mean next-token cross-entropy and bits per
//! character.

use burn::tensor::{backend::Backend, Float, Int, Tensor, TensorData};
use hier_model::loss::cross_entropy;
use hier_model::{host, HierarchicalTransformer, InputError};

/// Mean loss over every predicted byte of a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy in nats per byte.
    pub loss: f64,
    /// `loss / ln 2`.
    pub bpc: f64,
    /// Bytes predicted.
    pub tokens: usize,
}

/// The mean cross-entropy (on the device) of the windows of `data` starting at `group`, all of
/// one length, and the number of labels it averages; `None` when every label is ignored.
fn batch_loss<B: Backend>(
    model: &HierarchicalTransformer<B>,
    data: &[u8],
    group: &[usize],
    device: &B::Device,
) -> Result<Option<(usize, Tensor<B, 1>)>, InputError> {
    let seq_len = model.spec().seq_len;
    let len = (data.len() - group[0]).min(seq_len + 1);
    let ids: Vec<i64> = group
        .iter()
        .flat_map(|&s| data[s..s + len].iter().map(|&b| b as i64))
        .collect();
    // the mean runs over the labels that are not ignore_index
    let ignore = model.spec().ignore_index;
    let count = ids
        .chunks(len)
        .map(|row| row[1..].iter().filter(|&&t| t != ignore).count())
        .sum::<usize>();
    if count == 0 {
        return Ok(None);
    }
    // only the logits are needed: no auxiliary losses
    let (inputs, labels): (Vec<i64>, Vec<i64>) = (
        ids.chunks(len)
            .flat_map(|row| row[..len - 1].to_vec())
            .collect(),
        ids.chunks(len).flat_map(|row| row[1..].to_vec()).collect(),
    );
    let rows = group.len();
    // the ids are on the host here: checked before they index the embedding
    hier_model::check_vocabulary(&inputs, model.spec().num_tokens, ignore)?;
    hier_model::check_vocabulary(&labels, model.spec().num_tokens, ignore)?;
    let n = rows * (len - 1);
    let inputs = Tensor::<B, 2, Int>::from_data(TensorData::new(inputs, [rows, len - 1]), device);
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
    let logits = model.forward(inputs)?.reshape([n, model.spec().num_tokens]);
    Ok(Some((count, cross_entropy(logits, labels, ignore))))
}

/// Cut `data` into consecutive windows of `seq_len + 1` bytes overlapping by one (every byte
/// after the first is predicted exactly once, from up to `seq_len` bytes of context), run them in
/// batches and average the cross-entropy over all predicted bytes. The final short window is
/// included. `progress` is called with (windows done, windows in total).
pub fn evaluate<B: Backend>(
    model: &HierarchicalTransformer<B>,
    data: &[u8],
    batch_size: usize,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Evaluation, InputError> {
    let seq_len = model.spec().seq_len;
    let starts: Vec<usize> = (0..data.len().saturating_sub(1)).step_by(seq_len).collect();
    // per batch: its first byte, its labels that count, and its mean cross-entropy on the device
    let mut batches: Vec<(usize, usize, Tensor<B, 1>)> = Vec::new();
    let mut done = 0;
    // windows of equal length batch together; only the last one can be shorter
    let (full, tail): (Vec<usize>, Vec<usize>) =
        starts.iter().partition(|&&s| s + seq_len < data.len());
    for group in full.chunks(batch_size).chain(tail.chunks(1)) {
        done += group.len();
        if let Some((count, ce)) = batch_loss(model, data, group, device)? {
            batches.push((group[0], count, ce));
        }
        progress(done, starts.len());
    }
    // one device-to-host read for the whole split
    let values: Vec<f32> = match batches.is_empty() {
        true => Vec::new(),
        false => {
            let all = Tensor::cat(batches.iter().map(|(_, _, ce)| ce.clone()).collect(), 0);
            host::read_vec::<f32, B, 1, Float>(all).map_err(|e| InputError::Generation {
                option: "losses",
                problem: e.to_string(),
            })?
        }
    };
    let mut total_nats = 0.0f64;
    let mut tokens = 0usize;
    for ((first_byte, count, _), ce) in batches.iter().zip(values) {
        // broken weights must not average into a number
        if !ce.is_finite() {
            return Err(InputError::NonFinite {
                what: format!("losses (window at byte {first_byte})"),
            });
        }
        total_nats += ce as f64 * *count as f64;
        tokens += count;
    }
    // (a split of 2 ..= seq_len bytes is one short window, evaluated like the last one)
    if tokens == 0 {
        // nothing was predicted: a mean over no bytes is not a result
        return Err(InputError::TooLittleData {
            len: data.len(),
            needed: seq_len.saturating_add(1),
        });
    }
    let loss = total_nats / tokens as f64;
    Ok(Evaluation {
        loss,
        bpc: loss / std::f64::consts::LN_2,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use hier_model::HierarchicalTransformerConfig;

    #[test]
    fn too_little_data_is_an_error_not_a_zero() {
        let config = HierarchicalTransformerConfig::new(256, 8, 1);
        let model = HierarchicalTransformer::<Flex>::new(&config, &Default::default()).unwrap();
        for data in [&b""[..], b"a"] {
            let e = evaluate(&model, data, 4, &Default::default(), |_, _| {}).unwrap_err();
            let message = e.to_string();
            assert!(
                message.contains("too little data")
                    && message.contains(&format!("{} bytes", data.len())),
                "{message}"
            );
        }
        let ok = evaluate(&model, b"abc", 4, &Default::default(), |_, _| {}).unwrap();
        assert_eq!(ok.tokens, 2);
    }
}
