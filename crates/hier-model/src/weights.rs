//! Weights in the reference's layout: PyTorch state_dict key names, `[out, in]` linear weights,
//! `[out, in, k]` conv weights, and the two constant rotary tensors, in safetensors.
//!
//! A parameter's reference key comes from hier's own module structure: its field path (the
//! field names, `Vec` indices and enum variants that Burn's visitors pass to `enter_module`,
//! which mirror the reference), renamed by `reference_names` (burn-store's [`KeyRemapper`])
//! where the reference differs: its `nn.Sequential` indices, and hier's [`crate::Attention`]
//! enum. Layouts are left to burn-store's PyTorch adapters ([`BurnToPyTorchAdapter`],
//! [`PyTorchToBurnAdapter`]: `Linear` weights are `[in, out]` in Burn, `[out, in]` in PyTorch;
//! convolutions and embeddings are stored alike), and loading goes through burn-store's
//! [`ModuleSnapshot::apply`]. hier itself never reads Burn's container-type names.
//!
//! burn-store's `SafetensorsStore` is not used for the file: the reference's state_dict also
//! holds constant rotary buffers that are no Burn parameters, hier's errors name the reference
//! key and the PyTorch-layout shape (the store reports Burn paths and layouts, and loads other
//! dtypes), and files are read and written only through [`crate::files`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot,
    PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError,
};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::error::LoadError;
use crate::model::HierarchicalTransformer;
use crate::spec::{AttentionKind, ModelSpec};

/// A host tensor: shape and row-major f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub values: Vec<f32>,
}

/// The renames from hier's field paths to the reference's keys, applied in order. Every other
/// field already has the reference's name.
fn reference_names(spec: &ModelSpec) -> KeyRemapper {
    let ff_or_merge = r"^(layers\.\d+\.\d+\.ff|hierarchical_merges\.\d+)";
    let mut patterns: Vec<(String, String)> = vec![
        // `Attention` is an enum in hier, one module in the reference
        (
            r"^(layers\.\d+\.\d+\.attn)\.(Local|Full)\.".into(),
            "$1.".into(),
        ),
        // compress_fn = Sequential(pad, CausalConv (.conv), SiLU, Conv1d)
        (
            r"^(compressors\.\d+)\.conv\.".into(),
            "$1.compress_fn.1.conv.".into(),
        ),
        (
            r"^(compressors\.\d+)\.conv_out\.".into(),
            "$1.compress_fn.3.".into(),
        ),
        // FeedForward and HierarchicalMerge: net = Sequential(norm, linear, activation, linear)
        (format!(r"{ff_or_merge}\.norm\."), "$1.net.0.".into()),
        (format!(r"{ff_or_merge}\.proj_in\."), "$1.net.1.".into()),
        (format!(r"{ff_or_merge}\.proj_out\."), "$1.net.3.".into()),
        // NextLatDynamics: net = Sequential(norm, linear, (GELU, linear)...)
        (
            r"^(latent_dynamics\.\d+)\.norm\.".into(),
            "$1.net.0.".into(),
        ),
    ];
    // linear k sits after the norm and k GELUs: net.{2k + 1}
    patterns.extend((0..spec.dynamics_num_layers).map(|k| {
        (
            format!(r"^(latent_dynamics\.\d+)\.layers\.{k}\."),
            format!("$1.net.{}.", 2 * k + 1),
        )
    }));
    KeyRemapper::from_pattern_iter(patterns).expect("hier's key patterns are valid regexes")
}

type DataFn = Rc<dyn Fn() -> Result<TensorData, TensorSnapshotError>>;

/// What the snapshot of a parameter holds; `None` leaves the parameter out.
trait Source<B: Backend> {
    fn data<const D: usize>(&self, param: &Param<Tensor<B, D>>) -> Option<DataFn>;
}

/// Shapes only: the parameters stay unmaterialised.
struct Shapes;

impl<B: Backend> Source<B> for Shapes {
    fn data<const D: usize>(&self, _: &Param<Tensor<B, D>>) -> Option<DataFn> {
        Some(Rc::new(|| {
            Err(TensorSnapshotError::DataError(
                "a description holds no values".into(),
            ))
        }))
    }
}

/// The parameters' values.
struct Values;

impl<B: Backend> Source<B> for Values {
    fn data<const D: usize>(&self, param: &Param<Tensor<B, D>>) -> Option<DataFn> {
        let tensor = param.val();
        Some(Rc::new(move || read_snapshot(tensor.clone())))
    }
}

/// A parameter's (or gradient's) values for a snapshot: a device-to-host read.
fn read_snapshot<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> Result<TensorData, TensorSnapshotError> {
    crate::host::read(tensor).map_err(|e| TensorSnapshotError::DataError(e.to_string()))
}

/// The parameters' gradients, for those that have one.
struct Grads<'a, B: AutodiffBackend>(&'a B::Gradients);

impl<B: AutodiffBackend> Source<B> for Grads<'_, B> {
    fn data<const D: usize>(&self, param: &Param<Tensor<B, D>>) -> Option<DataFn> {
        let grad = param.val().grad(self.0)?;
        Some(Rc::new(move || read_snapshot(grad.clone())))
    }
}

/// A snapshot per parameter, under its field path in hier's modules, in Burn's layout.
struct Snapshots<S> {
    source: S,
    path: Vec<String>,
    containers: Vec<String>,
    snapshots: Vec<TensorSnapshot>,
}

impl<B: Backend, S: Source<B>> ModuleVisitor<B> for Snapshots<S> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        // only handed on to burn-store's adapters, which choose the layout by module type
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(data) = self.source.data(param) {
            self.snapshots.push(TensorSnapshot::from_closure(
                data,
                DType::F32,
                param.lazy_shape(),
                self.path.clone(),
                self.containers.clone(),
                param.id,
            ));
        }
    }
}

/// One parameter of the model: its reference key, its snapshot in PyTorch layout, and its
/// field path in hier's modules (by which burn-store's applier finds it).
struct Reference {
    key: String,
    path: String,
    snapshot: TensorSnapshot,
}

/// Every parameter `source` gives, in module order, under its reference key.
fn reference_params<B: Backend, S: Source<B>>(
    model: &HierarchicalTransformer<B>,
    source: S,
) -> Vec<Reference> {
    let mut visitor = Snapshots {
        source,
        path: Vec::new(),
        containers: Vec::new(),
        snapshots: Vec::new(),
    };
    model.visit(&mut visitor);
    let paths: Vec<String> = visitor.snapshots.iter().map(|s| s.full_path()).collect();
    let adapted = visitor
        .snapshots
        .iter()
        .map(|s| BurnToPyTorchAdapter.adapt(s))
        .collect();
    let (snapshots, _) = reference_names(model.spec()).remap(adapted);
    snapshots
        .into_iter()
        .zip(paths)
        .map(|(snapshot, path)| Reference {
            key: snapshot.full_path(),
            path,
            snapshot,
        })
        .collect()
}

/// The values of a snapshot of a live tensor.
fn host(snapshot: &TensorSnapshot) -> HostTensor {
    let data = snapshot
        .to_data()
        .unwrap_or_else(|e| panic!("reading `{}`: {e}", snapshot.full_path()))
        .convert::<f32>();
    HostTensor {
        shape: data.shape.to_vec(),
        values: data.to_vec::<f32>().unwrap_or_default(),
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
    let mut tensors: BTreeMap<String, HostTensor> = reference_params(model, Values)
        .into_iter()
        .map(|r| (r.key, host(&r.snapshot)))
        .collect();
    tensors.extend(rotary_constants(model.spec()));
    tensors
}

/// How the reference initialises a parameter (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitKind {
    /// `nn.Embedding`: N(0, 1).
    Normal,
    /// `nn.Linear` / `nn.Conv1d` weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Uniform {
        /// Inputs per output unit (`in_features`, or `in_channels * kernel`).
        fan_in: usize,
    },
    /// Norm gains.
    Ones,
    /// Norm shifts, and the last layer of the latent dynamics.
    Zeros,
}

/// One parameter: reference key, PyTorch-layout shape, and how it is initialised.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// The reference's state_dict key, e.g. `layers.0.1.ff.net.1.weight`.
    pub key: String,
    /// Shape in PyTorch's layout (a linear weight is `[out, in]`).
    pub shape: Vec<usize>,
    /// How the reference initialises it.
    pub init: InitKind,
}

/// Every trainable parameter of `model`, in module order, without materialising any tensor.
pub fn describe<B: Backend>(model: &HierarchicalTransformer<B>) -> Vec<ParamInfo> {
    let last_dynamics = format!(".net.{}.", 2 * model.spec().dynamics_num_layers - 1);
    // a bias follows its weight and takes its init from it
    let (mut fan_in, mut after_norm) = (1, false);
    reference_params(model, Shapes)
        .into_iter()
        .map(|r| {
            let shape = r.snapshot.shape.to_vec();
            let init = if r.key.starts_with("latent_dynamics.") && r.key.contains(&last_dynamics) {
                // NextLatDynamics zero-initialises its output layer: it starts as the identity
                InitKind::Zeros
            } else if r.key.ends_with(".bias") {
                if after_norm {
                    InitKind::Zeros
                } else {
                    InitKind::Uniform { fan_in }
                }
            } else if r.key == "token_emb.weight" {
                InitKind::Normal
            } else if shape.len() == 1 {
                // a norm's gain (`weight`, or RMSNorm's `gamma`): the only 1-D weights
                after_norm = true;
                InitKind::Ones
            } else {
                // PyTorch layout [out, in, k...]: fan_in = in * k
                after_norm = false;
                fan_in = shape[1..].iter().product();
                InitKind::Uniform { fan_in }
            };
            ParamInfo {
                key: r.key,
                shape,
                init,
            }
        })
        .collect()
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

/// Load a reference state_dict into a model built from the matching config. Every tensor must
/// be present with the right shape, and nothing else may be there (PyTorch's `strict=True`).
/// The tensors move into the model one at a time: loading holds no second host copy of them.
pub fn load_state_dict<B: Backend>(
    mut model: HierarchicalTransformer<B>,
    mut tensors: HashMap<String, HostTensor>,
) -> Result<HierarchicalTransformer<B>, LoadError> {
    let params = reference_params(&model, Shapes);
    check_present_with_shapes(&params, &tensors)?;
    check_rotary_constants(model.spec(), &mut tensors)?;
    let (snapshots, keys) = snapshots_of(params, &mut tensors);
    if !tensors.is_empty() {
        let mut unexpected: Vec<String> = tensors.into_keys().collect();
        unexpected.sort();
        return Err(LoadError::Unexpected { keys: unexpected });
    }
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    apply_errors(&result, &keys)?;
    Ok(model)
}

/// Every parameter's tensor is there with the shape the config needs (PyTorch layout).
fn check_present_with_shapes(
    params: &[Reference],
    tensors: &HashMap<String, HostTensor>,
) -> Result<(), LoadError> {
    for r in params {
        let expected = r.snapshot.shape.to_vec();
        let Some(found) = tensors.get(&r.key) else {
            return Err(LoadError::Missing {
                key: r.key.clone(),
                expected,
            });
        };
        if found.shape != expected {
            return Err(LoadError::Shape {
                key: r.key.clone(),
                expected,
                found: found.shape.clone(),
            });
        }
    }
    Ok(())
}

/// The reference's constant rotary buffers are there and hold what they must (hier computes
/// them itself); they are taken out of `tensors`.
fn check_rotary_constants(
    spec: &ModelSpec,
    tensors: &mut HashMap<String, HostTensor>,
) -> Result<(), LoadError> {
    for (key, expected) in rotary_constants(spec) {
        let found = tensors.remove(&key).ok_or_else(|| LoadError::Missing {
            key: key.clone(),
            expected: expected.shape.clone(),
        })?;
        if found.shape != expected.shape {
            return Err(LoadError::Shape {
                key,
                expected: expected.shape,
                found: found.shape,
            });
        }
        let difference = found
            .values
            .iter()
            .zip(&expected.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        if difference.is_nan() || difference > 1e-6 {
            return Err(LoadError::Constant { key, difference });
        }
    }
    Ok(())
}

/// Field path → (reference key, shape), to report burn-store's errors under the reference's
/// names.
type KeysByPath = HashMap<String, (String, Vec<usize>)>;

/// Each checked parameter's tensor, moved out of `tensors` into a snapshot for burn-store's
/// applier under its field path, in PyTorch layout (its adapter transposes the `Linear` weights
/// on the host).
fn snapshots_of(
    params: Vec<Reference>,
    tensors: &mut HashMap<String, HostTensor>,
) -> (Vec<TensorSnapshot>, KeysByPath) {
    let mut keys = HashMap::new();
    let mut snapshots = Vec::with_capacity(params.len());
    for r in params {
        let HostTensor { shape, values } = tensors.remove(&r.key).expect("checked above");
        let data = RefCell::new(Some(TensorData::new(values, shape)));
        let data: DataFn = Rc::new(move || {
            data.borrow_mut().take().ok_or_else(|| {
                TensorSnapshotError::DataError("a tensor is loaded only once".into())
            })
        });
        snapshots.push(TensorSnapshot::from_closure(
            data,
            DType::F32,
            r.snapshot.shape.clone(),
            r.path.split('.').map(str::to_string).collect(),
            Vec::new(),
            r.snapshot.tensor_id.unwrap_or_default(),
        ));
        keys.insert(r.path, (r.key, r.snapshot.shape.to_vec()));
    }
    (snapshots, keys)
}

/// burn-store's complaints, not expected after the checks above, reported under the
/// reference's names should one happen.
fn apply_errors(result: &burn_store::ApplyResult, keys: &KeysByPath) -> Result<(), LoadError> {
    let key = |path: &str| keys.get(path).map_or(path.to_string(), |(k, _)| k.clone());
    if let Some((path, _)) = result.missing.first() {
        let (key, expected) = keys
            .get(path)
            .cloned()
            .unwrap_or((path.clone(), Vec::new()));
        return Err(LoadError::Missing { key, expected });
    }
    if !result.unused.is_empty() {
        return Err(LoadError::Unexpected {
            keys: result.unused.iter().map(|p| key(p)).collect(),
        });
    }
    match result.errors.first() {
        None => Ok(()),
        Some(ApplyError::ShapeMismatch {
            path,
            expected,
            found,
        }) => Err(LoadError::Shape {
            key: key(path),
            expected: expected.to_vec(),
            found: found.to_vec(),
        }),
        Some(
            error @ (ApplyError::DTypeMismatch { path, .. }
            | ApplyError::AdapterError { path, .. }
            | ApplyError::LoadError { path, .. }),
        ) => Err(LoadError::Format {
            path: key(path),
            message: error.to_string(),
        }),
    }
}

/// The gradient of every parameter that has one, under its reference key, PyTorch layout.
pub fn gradients<B: AutodiffBackend>(
    model: &HierarchicalTransformer<B>,
    grads: &B::Gradients,
) -> BTreeMap<String, HostTensor> {
    reference_params(model, Grads::<B>(grads))
        .into_iter()
        .map(|r| (r.key, host(&r.snapshot)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HierarchicalTransformerConfig, PerHierarchy};
    use burn::backend::Flex;

    /// Every kind of module: a narrower 1x projection, a convolution with reconstruction, local
    /// and full attention, three dynamics layers, and the heads of the extra objectives.
    fn config() -> HierarchicalTransformerConfig {
        let mut c = HierarchicalTransformerConfig::new(20, 0, 1);
        c.dim = PerHierarchy::Each(vec![8, 12]);
        c.seq_len = 8;
        c.heads = PerHierarchy::All(2);
        c.dim_head = PerHierarchy::All(4);
        c.hierarchies = PerHierarchy::Each(vec![1, 2]);
        c.window_sizes = PerHierarchy::Each(vec![Some(4), None]);
        c.recon_loss_weight = 0.1;
        c.dynamics_num_layers = 3;
        c.prophet_loss_weight = 0.5;
        c.hierarchical_ar_loss_weight = 0.5;
        c
    }

    fn model() -> HierarchicalTransformer<Flex> {
        HierarchicalTransformer::new(&config(), &Default::default()).unwrap()
    }

    #[test]
    fn reference_keys_and_layouts() {
        let params = describe(&model());
        let shape = |key: &str| {
            let p = params.iter().find(|p| p.key == key);
            p.unwrap_or_else(|| panic!("no {key}")).shape.clone()
        };
        // token_dim is the widest hierarchy's width, 12
        assert_eq!(shape("token_emb.weight"), [20, 12]);
        assert_eq!(shape("compressors.0.compress_fn.weight"), [8, 12]);
        assert_eq!(
            shape("compressors.1.compress_fn.1.conv.weight"),
            [48, 12, 2]
        );
        assert_eq!(shape("compressors.1.compress_fn.3.weight"), [12, 48, 1]);
        assert_eq!(shape("compressors.1.to_recon.weight"), [40, 12]);
        assert_eq!(shape("chunk_summarizers.0.proj.weight"), [8, 12]);
        assert_eq!(shape("layers.0.0.attn.to_qkv.weight"), [24, 8]);
        assert_eq!(shape("layers.0.0.attn.norm.bias"), [8]);
        assert_eq!(shape("layers.0.1.attn.norm.gamma"), [12]);
        assert_eq!(shape("layers.0.1.ff.net.3.weight"), [12, 48]);
        assert_eq!(shape("hierarchical_merges.0.net.1.weight"), [16, 20]);
        assert_eq!(shape("latent_dynamics.1.net.0.weight"), [24]);
        assert_eq!(shape("latent_dynamics.1.net.1.weight"), [12, 24]);
        assert_eq!(shape("latent_dynamics.1.net.5.bias"), [12]);
        assert_eq!(shape("prophet_heads.1.weight"), [40, 12]);
        assert_eq!(shape("to_hierarchical_preds.1.weight"), [12, 12]);
        // hier's own names never reach the file
        for p in &params {
            assert!(
                [
                    "Local",
                    "Full",
                    "proj_in",
                    "proj_out",
                    "conv_out",
                    "latent_dynamics.0.layers"
                ]
                .iter()
                .all(|name| !p.key.contains(name)),
                "{}",
                p.key
            );
        }
        // the description is the state_dict without the constants, in shape as in keys
        let tensors = state_dict(&model());
        let constants = rotary_constants(model().spec());
        assert_eq!(params.len() + constants.len(), tensors.len());
        for p in &params {
            assert_eq!(tensors[&p.key].shape, p.shape, "{}", p.key);
        }
    }

    #[test]
    fn initialisations_follow_the_module_kinds() {
        let params = describe(&model());
        let init = |key: &str| params.iter().find(|p| p.key == key).unwrap().init;
        assert_eq!(init("token_emb.weight"), InitKind::Normal);
        assert_eq!(init("norms.0.weight"), InitKind::Ones);
        assert_eq!(init("norms.0.bias"), InitKind::Zeros);
        assert_eq!(init("layers.0.0.attn.norm.bias"), InitKind::Zeros);
        assert_eq!(init("layers.0.1.attn.norm.gamma"), InitKind::Ones);
        assert_eq!(init("latent_dynamics.0.net.0.bias"), InitKind::Zeros);
        assert_eq!(init("latent_dynamics.0.net.5.weight"), InitKind::Zeros);
        assert_eq!(init("latent_dynamics.0.net.5.bias"), InitKind::Zeros);
        let uniform = |fan_in| InitKind::Uniform { fan_in };
        assert_eq!(init("latent_dynamics.0.net.3.bias"), uniform(8));
        assert_eq!(init("compressors.1.compress_fn.1.conv.bias"), uniform(24));
        assert_eq!(init("compressors.1.compress_fn.3.bias"), uniform(48));
        assert_eq!(init("hierarchical_merges.0.net.3.bias"), uniform(16));
        assert_eq!(init("chunk_summarizers.0.proj.bias"), uniform(12));
    }

    #[test]
    fn linear_weights_are_transposed_both_ways() {
        let model = model();
        let mut tensors: HashMap<String, HostTensor> = state_dict(&model).into_iter().collect();
        let key = "layers.0.1.attn.to_out.weight";
        assert_eq!(tensors[key].shape, [12, 8]);
        let values: Vec<f32> = (0..96).map(|i| i as f32).collect();
        tensors.get_mut(key).unwrap().values = values.clone();
        let loaded = load_state_dict(
            HierarchicalTransformer::<Flex>::new(&config(), &Default::default()).unwrap(),
            tensors,
        )
        .unwrap();
        let Some(crate::Attention::Full(attn)) = &loaded.layers[0][1].attn else {
            panic!("hierarchy 2x has full attention")
        };
        // Burn's [in, out]: element (i, o) is PyTorch's (o, i)
        let burn: Vec<f32> = attn.to_out.weight.val().into_data().to_vec().unwrap();
        assert_eq!(burn[12 + 3], values[3 * 8 + 1]);
        assert_eq!(state_dict(&loaded)[key].values, values);
    }

    #[test]
    fn other_dtypes_are_refused_by_name() {
        let data = [0u8; 8];
        let view = TensorView::new(Dtype::F16, vec![4], &data).unwrap();
        let bytes = safetensors::serialize([("norms.0.weight", view)], None).unwrap();
        let e = from_safetensors(&bytes, "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor `norms.0.weight` has dtype F16, expected F32"
        );
    }
}
