use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::model_dir;
use hier_model::weights::{to_safetensors, HostTensor};

use crate::backend::{device, Backend};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// JSON list of equal-length lists of token ids.
    #[arg(long)]
    ids: PathBuf,
    /// Treat the ids like the reference's `return_loss=True`: inputs ids[:, :-1], labels ids[:, 1:].
    #[arg(long)]
    with_loss: bool,
    /// Output safetensors file: `logits` and, with --with-loss, the losses.
    #[arg(long)]
    out: PathBuf,
}

/// Parse a JSON list of equal-length lists of ids into (rows, columns, row-major ids).
pub fn read_ids(path: &Path) -> Result<(usize, usize, Vec<i64>)> {
    let text = hier_model::files::read_text(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Vec<i64>> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} must be a JSON list of lists of integer token ids, e.g. [[1, 2, 3]]",
            path.display()
        )
    })?;
    let Some(width) = rows.first().map(Vec::len) else {
        bail!("{} holds no rows of ids", path.display())
    };
    if let Some(bad) = rows.iter().position(|r| r.len() != width) {
        bail!(
            "{}: row {bad} has {} ids but row 0 has {width}; all rows must have the same length",
            path.display(),
            rows[bad].len()
        );
    }
    Ok((rows.len(), width, rows.concat()))
}

pub fn run(args: Args) -> Result<()> {
    // before any work: hier never overwrites an existing output file
    hier_model::files::prepare_new_file(&args.out)
        .with_context(|| format!("--out {}", args.out.display()))?;
    let device = device();
    let model = model_dir::load::<Backend>(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let (batch, width, ids) = read_ids(&args.ids)?;
    hier_model::check_vocabulary(&ids, model.spec().num_tokens, model.spec().ignore_index)
        .with_context(|| format!("in {}", args.ids.display()))?;
    let host = |t: Tensor<Backend, 3>| -> Result<HostTensor> {
        let data = t.into_data().convert::<f32>();
        Ok(HostTensor {
            shape: data.shape.to_vec(),
            values: data.to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?,
        })
    };
    let scalar = |t: Tensor<Backend, 1>| -> Result<HostTensor> {
        let values: Vec<f32> = t
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(HostTensor {
            shape: vec![],
            values,
        })
    };
    let ids = Tensor::<Backend, 2, Int>::from_data(TensorData::new(ids, [batch, width]), &device);
    let mut out = BTreeMap::new();
    if args.with_loss {
        let losses = model.forward_loss(ids).context("computing the losses")?;
        out.insert("logits".to_string(), host(losses.logits)?);
        out.insert("total_loss".to_string(), scalar(losses.total)?);
        out.insert("ce_loss".to_string(), scalar(losses.ce)?);
        out.insert("next_latent_loss".to_string(), scalar(losses.next_latent)?);
        out.insert("recon_loss".to_string(), scalar(losses.recon)?);
    } else {
        out.insert(
            "logits".to_string(),
            host(model.forward(ids).context("running the model")?)?,
        );
    }
    hier_model::files::write_new(&args.out, &to_safetensors(&out))
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
