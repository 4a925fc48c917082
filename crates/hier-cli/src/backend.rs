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
