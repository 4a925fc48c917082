//! The backend this binary was built for, chosen by cargo feature. Accelerators win over the
//! default CPU backend, so `--features cuda` needs no `--no-default-features`.

#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Backend = burn::backend::Wgpu;

#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "wgpu"))))]
pub type Backend = burn::backend::NdArray;

#[cfg(all(
    feature = "flex",
    not(any(feature = "cuda", feature = "wgpu", feature = "ndarray"))
))]
pub type Backend = burn::backend::Flex;

#[cfg(not(any(
    feature = "flex",
    feature = "ndarray",
    feature = "cuda",
    feature = "wgpu"
)))]
compile_error!("enable one backend feature: flex (default), ndarray, cuda or wgpu");

pub type Device = <Backend as burn::tensor::backend::BackendTypes>::Device;

pub fn device() -> Device {
    Default::default()
}

/// Whether this build runs on the CPU (Flex or NdArray), where hier spreads work over the cores
/// with replicas on threads unless `--devices` says otherwise.
pub const ON_CPU: bool = cfg!(not(any(feature = "cuda", feature = "wgpu")));

/// The data-parallel replicas a command runs with for a batch of `batch` rows, and how they
/// share it: `--devices N` gives N replicas with a batch each; without it, the CPU gets one
/// replica per core sharing each batch (the same results as one replica, on all cores) and a
/// GPU build one device.
pub fn replicas(devices: Option<usize>, batch: usize) -> (Vec<Device>, hier_train::BatchSplit) {
    let (count, split) = replica_plan(devices, batch);
    (self::devices(count), split)
}

/// How many replicas [`replicas`] gives, and how they share the batch.
pub fn replica_plan(devices: Option<usize>, batch: usize) -> (usize, hier_train::BatchSplit) {
    match devices {
        Some(n) => (n, hier_train::BatchSplit::PerReplica),
        None if ON_CPU => (
            hier_train::cpu_replicas(batch),
            hier_train::BatchSplit::Shared,
        ),
        None => (1, hier_train::BatchSplit::Shared),
    }
}

/// `n` devices for data-parallel training: the first `n` GPUs, or the CPU `n` times (one
/// replica per thread).
pub fn devices(n: usize) -> Vec<Device> {
    (0..n).map(nth_device).collect()
}

#[cfg(feature = "cuda")]
fn nth_device(i: usize) -> Device {
    burn::backend::cuda::CudaDevice::new(i)
}

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
fn nth_device(i: usize) -> Device {
    match i {
        0 => Default::default(),
        i => burn::backend::wgpu::WgpuDevice::DiscreteGpu(i),
    }
}

#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn nth_device(_: usize) -> Device {
    Default::default()
}

/// Stops with a message instead of Burn's panic when this build's device cannot be set up
/// here: a wgpu build on a machine without an adapter.
pub fn check_device() -> anyhow::Result<()> {
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    return crate::gpu::check_adapter();
    #[cfg(not(all(feature = "wgpu", not(feature = "cuda"))))]
    Ok(())
}
