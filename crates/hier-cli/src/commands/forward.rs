use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::memory::{self, Pass};
use hier_model::weights::{to_safetensors, HostTensor};
use hier_model::HierarchicalTransformerConfig;

use crate::backend::{device, Backend};
use crate::resources;

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
    let config = resources::model_config(&args.model)?;
    let (batch, width, ids) = read_ids(&args.ids)?;
    let spec = config.validate()?;
    if width == 0 {
        bail!(hier_model::InputError::TooShort { min: 1 });
    }
    hier_model::check_vocabulary(&ids, spec.num_tokens, spec.ignore_index)
        .with_context(|| format!("in {}", args.ids.display()))?;
    if width > spec.seq_len + usize::from(args.with_loss) {
        // the model refuses it too; say so before loading anything
        let len = width - usize::from(args.with_loss);
        bail!(hier_model::InputError::TooLong {
            len,
            seq_len: spec.seq_len
        });
    }
    if args.with_loss {
        // the losses are means over the whole batch: it runs as one
        resources::check_memory(&config, resources::work(Pass::Infer, batch, width))?;
        return with_loss(&args, batch, width, ids);
    }
    let rows = rows_per_pass(&config, batch, width)?;
    let device = device();
    let model = resources::load_model(&args.model, &device)?;
    let vocab = spec.num_tokens;
    let mut out = LogitsWriter::create(&args.out, [batch, width, vocab])?;
    for chunk in ids.chunks(rows * width) {
        let n = chunk.len() / width;
        let input = TensorData::new(chunk.to_vec(), [n, width]);
        let logits = model
            .forward(Tensor::<Backend, 2, Int>::from_data(input, &device))
            .context("running the model")?;
        out.write(&host(logits)?.values)?;
    }
    out.finish()
}

/// The most rows one forward pass may take: all of them when they fit in half the memory
/// available (the estimate is an upper bound, the other half is headroom), else fewer.
fn rows_per_pass(
    config: &HierarchicalTransformerConfig,
    batch: usize,
    width: usize,
) -> Result<usize> {
    resources::check_memory(config, resources::work(Pass::Infer, 1, width))?;
    let spec = config.validate()?;
    let Some(available) = memory::available_bytes() else {
        return Ok(batch.min(64));
    };
    let one = memory::estimate(&spec, &resources::work(Pass::Infer, 1, width));
    let per_row = one.activation_bytes.max(1.0);
    let room = (available as f64 / 2.0 - one.model_bytes).max(per_row);
    Ok(((room / per_row) as usize).clamp(1, batch))
}

fn host(t: Tensor<Backend, 3>) -> Result<HostTensor> {
    let data = hier_model::host::read(t)?.convert::<f32>();
    let values: Vec<f32> = data.to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // on the host anyway: refuse to write what broken weights produced
    if values.iter().any(|v| !v.is_finite()) {
        bail!(hier_model::InputError::NonFinite {
            what: "logits".into()
        });
    }
    Ok(HostTensor {
        shape: data.shape.to_vec(),
        values,
    })
}

fn scalar(t: Tensor<Backend, 1>) -> Result<HostTensor> {
    let values: Vec<f32> = hier_model::host::read_vec(t)?;
    if values.iter().any(|v| !v.is_finite()) {
        bail!(hier_model::InputError::NonFinite {
            what: "losses".into()
        });
    }
    Ok(HostTensor {
        shape: vec![],
        values,
    })
}

/// `--with-loss`: logits and the reference's losses of the whole batch in one pass.
fn with_loss(args: &Args, batch: usize, width: usize, ids: Vec<i64>) -> Result<()> {
    let device = device();
    let model = resources::load_model(&args.model, &device)?;
    let ids = Tensor::<Backend, 2, Int>::from_data(TensorData::new(ids, [batch, width]), &device);
    let losses = model.forward_loss(ids).context("computing the losses")?;
    let mut out = BTreeMap::new();
    out.insert("logits".to_string(), host(losses.logits)?);
    out.insert("total_loss".to_string(), scalar(losses.total)?);
    out.insert("ce_loss".to_string(), scalar(losses.ce)?);
    out.insert("next_latent_loss".to_string(), scalar(losses.next_latent)?);
    out.insert("recon_loss".to_string(), scalar(losses.recon)?);
    hier_model::files::write_new(&args.out, &to_safetensors(&out))
        .with_context(|| format!("writing {}", args.out.display()))
}

/// A safetensors file holding one F32 tensor `logits`, written as the rows are computed (its
/// header only needs the shape), into a temporary file renamed over `path` when complete.
struct LogitsWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl LogitsWriter {
    fn create(path: &Path, shape: [usize; 3]) -> Result<Self> {
        let bytes = shape.iter().try_fold(4usize, |a, &d| a.checked_mul(d));
        let bytes = bytes.context("the logits would be larger than this machine can address")?;
        let mut header = serde_json::json!({
            "logits": {"dtype": "F32", "shape": shape, "data_offsets": [0, bytes]}
        })
        .to_string();
        // the data starts 8-byte aligned, as the safetensors writer pads it
        while !(8 + header.len()).is_multiple_of(8) {
            header.push(' ');
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut writer = LogitsWriter {
            path: path.to_path_buf(),
            file: Some(BufWriter::new(
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
            )),
            tmp,
        };
        writer.put(&(header.len() as u64).to_le_bytes())?;
        writer.put(header.as_bytes())?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().context("the output is already closed")?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", self.tmp.display()))
    }

    fn write(&mut self, values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.put(&bytes)
    }

    fn finish(mut self) -> Result<()> {
        let file = self.file.take().context("the output is already closed")?;
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all().map(|_| f))
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        drop(file);
        hier_model::files::publish_new(&self.tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for LogitsWriter {
    /// An error left the file incomplete: remove it rather than leave a torn output.
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
