//! The trainer's Adam ([`FusedAdam`]) against Burn's: the same parameters to the bit after several
//! steps, on Flex (hier's one-pass kernel) and on NdArray (Burn's operations), and Burn's
//! optimizer records load into it, so checkpoints written with either resume with the other.

#![allow(clippy::disallowed_methods)] // tests read parameters back

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use hier_model::synthetic::token_ids;
use hier_model::HierarchicalTransformer;
use hier_train::adam::FusedAdam;
use hier_train::presets::preset;

type Model<B> = HierarchicalTransformer<B>;

fn model<B: AutodiffBackend>() -> Model<B> {
    let config = preset("tiny").unwrap().model;
    Model::<B>::init(&config, 7, &Default::default()).unwrap()
}

fn grads<B: AutodiffBackend>(model: &Model<B>, step: u64) -> GradientsParams {
    let n = model.config.seq_len;
    let ids = token_ids(2 * (n + 1), 256, step);
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, n + 1]), &Default::default());
    let loss = model.forward_loss(ids).unwrap().total;
    GradientsParams::from_grads(loss.backward(), model)
}

/// Every parameter's values, in module order.
fn values<B: AutodiffBackend>(model: &Model<B>) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .push(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

/// The same gradients twice (NdArray's threaded products are not bit-reproducible, so each
/// gradient is computed once and given to both optimizers).
fn twice<B: AutodiffBackend>(grads: GradientsParams, model: &Model<B>) -> [GradientsParams; 2] {
    struct Copy(GradientsParams, GradientsParams);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Copy {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.0.get::<B::InnerBackend, D>(param.id) {
                self.1.register(param.id, g);
            }
        }
    }
    let mut copy = Copy(grads, GradientsParams::new());
    model.visit(&mut copy);
    [copy.0, copy.1]
}

fn same_bits_as_burn<B: AutodiffBackend>() {
    let mut ours = model::<B>();
    let mut burns = ours.clone(); // the same parameter ids, so the same optimizer records
    let mut fused = FusedAdam::default().init::<B, Model<B>>();
    let mut adam = AdamConfig::new().with_epsilon(1e-8).init::<B, Model<B>>();
    for (step, lr) in [(0, 1e-2), (1, 3e-3), (2, 1e-3), (3, 5e-4)] {
        let [g1, g2] = twice(grads(&ours, step), &ours);
        ours = fused.step(lr, ours, g1);
        burns = adam.step(lr, burns, g2);
        let (a, b) = (values(&ours), values(&burns));
        assert!(
            a.len() > 10 && a == b,
            "parameters differ after step {step}"
        );
    }
    // Burn's record, through the checkpoints' recorder, into ours: the next step is again the same
    let bytes = Recorder::<B>::record(&recorder(), adam.to_record(), ()).unwrap();
    let record = Recorder::<B>::load(&recorder(), bytes, &Default::default()).unwrap();
    let mut resumed = FusedAdam::default()
        .init::<B, Model<B>>()
        .load_record(record);
    let [g1, g2] = twice(grads(&burns, 4), &burns);
    let next = resumed.step(1e-3, burns.clone(), g1);
    let burns = adam.step(1e-3, burns, g2);
    assert!(
        values(&next) == values(&burns),
        "a step after loading Burn's record differs"
    );
}

#[test]
fn fused_adam_equals_burn_adam_on_flex() {
    same_bits_as_burn::<Autodiff<Flex>>();
}

#[test]
fn fused_adam_equals_burn_adam_on_ndarray() {
    same_bits_as_burn::<Autodiff<NdArray>>();
}
