//! Weights in the reference's layout: PyTorch state_dict key names, `[out, in]` linear weights,
//! `[out, in, k]` conv weights, and the two constant rotary tensors, in safetensors.
//!
//! Burn's module paths are derived from the field names, which mirror the reference; the few
//! places where the reference uses `nn.Sequential` indices are renamed here, in one function.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::error::LoadError;
use crate::model::HierarchicalTransformer;
use crate::spec::{AttentionKind, ModelSpec};

/// A host tensor: shape and row-major f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The module path of the parameter being visited: `(field or index, containing type)`.
#[derive(Default)]
struct Path(Vec<(String, String)>);

impl Path {
    fn enter(&mut self, name: &str, container: &str) {
        self.0.push((name.to_string(), container.to_string()));
    }
    fn exit(&mut self) {
        self.0.pop();
    }

    /// The reference's state_dict key, and whether the tensor is a `Linear` weight (stored
    /// `[in, out]` by Burn, `[out, in]` by PyTorch).
    fn torch_key(&self) -> (String, bool) {
        let mut parts: Vec<String> = Vec::new();
        let mut segments = self.0.iter().peekable();
        while let Some((name, container)) = segments.next() {
            if container.starts_with("Enum:") {
                continue; // enum variants have no name in the reference
            }
            let part = match (container.as_str(), name.as_str()) {
                ("Struct:Compressor", "conv") => "compress_fn.1.conv".to_string(),
                ("Struct:Compressor", "conv_out") => "compress_fn.3".to_string(),
                (
                    "Struct:FeedForward" | "Struct:HierarchicalMerge" | "Struct:NextLatDynamics",
                    "norm",
                ) => "net.0".to_string(),
                ("Struct:FeedForward" | "Struct:HierarchicalMerge", "proj_in") => {
                    "net.1".to_string()
                }
                ("Struct:FeedForward" | "Struct:HierarchicalMerge", "proj_out") => {
                    "net.3".to_string()
                }
                ("Struct:NextLatDynamics", "layers") => {
                    // linear k sits after the norm and k GELUs: net.{2k + 1}
                    let k: usize = segments
                        .next()
                        .map(|(i, _)| i.parse().unwrap_or(0))
                        .unwrap_or(0);
                    format!("net.{}", 2 * k + 1)
                }
                _ => name.clone(),
            };
            parts.push(part);
        }
        let linear_weight =
            matches!(self.0.last(), Some((n, c)) if n == "weight" && c == "Struct:Linear");
        (parts.join("."), linear_weight)
    }
}

/// The `enter_module` / `exit_module` pair every visitor and mapper here uses to keep its
/// [`Path`] (in a field named `path`) in step with Burn's traversal.
macro_rules! track_path {
    () => {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
    };
}

struct Collector {
    path: Path,
    tensors: BTreeMap<String, HostTensor>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    track_path!();
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (key, linear_weight) = self.path.torch_key();
        let mut tensor = param.val();
        if linear_weight && D == 2 {
            tensor = tensor.swap_dims(0, 1);
        }
        let data = tensor.into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data.to_vec::<f32>().unwrap_or_default();
        self.tensors.insert(key, HostTensor { shape, values });
    }
}

/// The constant rotary frequency tensors the reference keeps in its state_dict.
pub(crate) fn rotary_constants(spec: &ModelSpec) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    for l in 0..spec.depth {
        for (i, h) in spec.hierarchies.iter().enumerate() {
            let key = match h.attention {
                AttentionKind::None => continue,
                AttentionKind::Local { .. } => {
                    format!("layers.{l}.{i}.attn.attn_fn.rel_pos.inv_freq")
                }
                AttentionKind::Full => format!("layers.{l}.{i}.attn.rotary_emb.freqs"),
            };
            let values = hier_attn::rotary::inv_freq(h.dim_head);
            out.insert(
                key,
                HostTensor {
                    shape: vec![values.len()],
                    values,
                },
            );
        }
    }
    out
}

/// Every tensor of the model under its reference key, PyTorch layout.
pub fn state_dict<B: Backend>(model: &HierarchicalTransformer<B>) -> BTreeMap<String, HostTensor> {
    let mut collector = Collector {
        path: Path::default(),
        tensors: BTreeMap::new(),
    };
    model.visit(&mut collector);
    let mut tensors = collector.tensors;
    tensors.extend(rotary_constants(model.spec()));
    tensors
}

/// How the reference initialises a parameter (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitKind {
    /// `nn.Embedding`: N(0, 1).
    Normal,
    /// `nn.Linear` / `nn.Conv1d` weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Uniform { fan_in: usize },
    /// Norm gains.
    Ones,
    /// Norm shifts, and the last layer of the latent dynamics.
    Zeros,
}

/// One parameter: reference key, PyTorch-layout shape, and how it is initialised.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub key: String,
    pub shape: Vec<usize>,
    pub init: InitKind,
}

struct Describer {
    path: Path,
    fan_in: usize,
    params: Vec<ParamInfo>,
}

impl<B: Backend> ModuleVisitor<B> for Describer {
    track_path!();
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (key, linear_weight) = self.path.torch_key();
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if linear_weight {
            shape.reverse();
        }
        let (name, container) = self.path.0.last().cloned().unwrap_or_default();
        let init = match (container.as_str(), name.as_str()) {
            ("Struct:Embedding", _) => InitKind::Normal,
            ("Struct:LayerNorm", "weight") | ("Struct:RmsNorm", "gamma") => InitKind::Ones,
            ("Struct:LayerNorm", "bias") => InitKind::Zeros,
            (_, "weight") => {
                // PyTorch layout [out, in, k...]: fan_in = in * k
                self.fan_in = shape[1..].iter().product();
                InitKind::Uniform {
                    fan_in: self.fan_in,
                }
            }
            _ => InitKind::Uniform {
                fan_in: self.fan_in,
            }, // a bias follows its weight
        };
        self.params.push(ParamInfo { key, shape, init });
    }
}

/// Every trainable parameter of `model`, in module order, without materialising any tensor.
pub fn describe<B: Backend>(model: &HierarchicalTransformer<B>) -> Vec<ParamInfo> {
    let mut describer = Describer {
        path: Path::default(),
        fan_in: 1,
        params: Vec::new(),
    };
    model.visit(&mut describer);
    let last_dynamics = 2 * model.spec().dynamics_num_layers - 1;
    for p in &mut describer.params {
        // NextLatDynamics zero-initialises its output layer so that it starts as the identity
        if p.key.starts_with("latent_dynamics.")
            && p.key.contains(&format!(".net.{last_dynamics}."))
        {
            p.init = InitKind::Zeros;
        }
    }
    describer.params
}

/// The trainable parameters' keys (the state_dict without the rotary constants).
pub fn parameter_keys<B: Backend>(model: &HierarchicalTransformer<B>) -> Vec<String> {
    let mut collector = Collector {
        path: Path::default(),
        tensors: BTreeMap::new(),
    };
    model.visit(&mut collector);
    collector.tensors.into_keys().collect()
}

/// Serialise a state_dict to safetensors bytes.
pub fn to_safetensors(tensors: &BTreeMap<String, HostTensor>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.shape.clone(),
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes.iter().map(|(k, shape, data)| {
        (
            k.as_str(),
            TensorView::new(Dtype::F32, shape.clone(), data).expect("consistent view"),
        )
    });
    safetensors::serialize(views, None).expect("f32 tensors serialise")
}

/// Parse safetensors bytes into host tensors (F32 only).
pub fn from_safetensors(
    bytes: &[u8],
    path: &str,
) -> Result<HashMap<String, HostTensor>, LoadError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| LoadError::Format {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(LoadError::Dtype {
                key: name,
                found: format!("{:?}", view.dtype()),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

struct Loader<'a, B: Backend> {
    path: Path,
    tensors: &'a HashMap<String, HostTensor>,
    used: std::collections::HashSet<String>,
    error: Option<LoadError>,
    device: B::Device,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    track_path!();
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let (key, linear_weight) = self.path.torch_key();
        let mut expected = param.lazy_shape().dims::<D>().to_vec();
        if linear_weight && D == 2 {
            expected.reverse();
        }
        let Some(found) = self.tensors.get(&key) else {
            self.error = Some(LoadError::Missing { key, expected });
            return param;
        };
        if found.shape != expected {
            self.error = Some(LoadError::Shape {
                key,
                expected,
                found: found.shape.clone(),
            });
            return param;
        }
        // transpose linear weights on the host: a transposed view would be copied to a
        // contiguous layout by every matmul that reads it
        let data = if linear_weight && D == 2 {
            let (rows, cols) = (found.shape[0], found.shape[1]);
            let mut t = vec![0.0; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = found.values[r * cols + c];
                }
            }
            TensorData::new(t, vec![cols, rows])
        } else {
            TensorData::new(found.values.clone(), found.shape.clone())
        };
        let tensor = Tensor::<B, D>::from_data(data, &self.device);
        self.used.insert(key);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Load a reference state_dict into a model built from the matching config. Every tensor must
/// be present with the right shape, and nothing else may be there (PyTorch's `strict=True`).
pub fn load_state_dict<B: Backend>(
    model: HierarchicalTransformer<B>,
    tensors: &HashMap<String, HostTensor>,
    device: &B::Device,
) -> Result<HierarchicalTransformer<B>, LoadError> {
    let constants = rotary_constants(model.spec());
    let mut loader = Loader {
        path: Path::default(),
        tensors,
        used: Default::default(),
        error: None,
        device: device.clone(),
    };
    let model = model.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    for (key, expected) in &constants {
        let found = tensors.get(key).ok_or_else(|| LoadError::Missing {
            key: key.clone(),
            expected: expected.shape.clone(),
        })?;
        if found.shape != expected.shape {
            return Err(LoadError::Shape {
                key: key.clone(),
                expected: expected.shape.clone(),
                found: found.shape.clone(),
            });
        }
        let difference = found
            .values
            .iter()
            .zip(&expected.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        if difference.is_nan() || difference > 1e-6 {
            return Err(LoadError::Constant {
                key: key.clone(),
                difference,
            });
        }
        loader.used.insert(key.clone());
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !loader.used.contains(*k))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(LoadError::Unexpected { keys: unexpected });
    }
    Ok(model)
}

struct GradCollector<'a, B: burn::tensor::backend::AutodiffBackend> {
    path: Path,
    grads: &'a B::Gradients,
    tensors: BTreeMap<String, HostTensor>,
}

impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for GradCollector<'_, B> {
    track_path!();
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (key, linear_weight) = self.path.torch_key();
        let Some(mut grad) = param.val().grad(self.grads) else {
            return;
        };
        if linear_weight && D == 2 {
            grad = grad.swap_dims(0, 1);
        }
        let data = grad.into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        self.tensors.insert(
            key,
            HostTensor {
                shape,
                values: data.to_vec().unwrap_or_default(),
            },
        );
    }
}

/// The gradient of every parameter that has one, under its reference key, PyTorch layout.
pub fn gradients<B: burn::tensor::backend::AutodiffBackend>(
    model: &HierarchicalTransformer<B>,
    grads: &B::Gradients,
) -> BTreeMap<String, HostTensor> {
    let mut collector = GradCollector {
        path: Path::default(),
        grads,
        tensors: BTreeMap::new(),
    };
    model.visit(&mut collector);
    collector.tensors
}
