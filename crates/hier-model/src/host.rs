//! The one way hier reads tensors back from the device.
//!
//! On a GPU every device-to-host read waits for the queued work to finish, so a read inside
//! forward, a loss, backward or the optimizer step stalls the device once per step. hier reads
//! only where a value must reach the host (a metrics line, a sampled token, a file being
//! written), and every such read goes through this module, which counts the reads of the
//! calling thread: the host-read test asserts a budget for a training step and a decode step.
//! `clippy.toml` forbids Burn's reading methods everywhere else.

use std::cell::Cell;

use burn::tensor::{backend::Backend, BasicOps, Element, Tensor, TensorData};
use thiserror::Error;

thread_local! {
    // per thread: tests that run in parallel (and data-parallel replicas) count apart
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// A device-to-host read that failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The backend could not read the tensor (a device error surfaced at the read).
    #[error("reading a tensor from the device failed: {0}")]
    Device(String),
    /// The tensor's values could not be converted to the requested element type.
    #[error("a tensor read from the device holds unexpected data: {0}")]
    Data(String),
}

/// Device-to-host reads made through this module by the calling thread so far.
pub fn reads() -> u64 {
    READS.with(Cell::get)
}

/// `f`'s result and the device-to-host reads it made on the calling thread.
pub fn count_reads<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = reads();
    let out = f();
    (out, reads() - before)
}

/// Read `tensor` to the host (one read).
#[allow(clippy::disallowed_methods)] // the choke point itself
pub fn read<B: Backend, const D: usize, K: BasicOps<B>>(
    tensor: Tensor<B, D, K>,
) -> Result<TensorData, ReadError> {
    READS.with(|r| r.set(r.get() + 1));
    tensor
        .try_into_data()
        .map_err(|e| ReadError::Device(format!("{e:?}")))
}

/// Read `tensor` to the host as row-major values of type `E` (one read).
pub fn read_vec<E: Element, B: Backend, const D: usize, K: BasicOps<B>>(
    tensor: Tensor<B, D, K>,
) -> Result<Vec<E>, ReadError> {
    read(tensor)?
        .convert::<E>()
        .to_vec::<E>()
        .map_err(|e| ReadError::Data(format!("{e:?}")))
}

/// Read a tensor of one element to the host as an `f64` (one read).
pub fn read_f64<B: Backend, const D: usize, K: BasicOps<B>>(
    tensor: Tensor<B, D, K>,
) -> Result<f64, ReadError> {
    let values = read_vec::<f64, B, D, K>(tensor)?;
    match values.as_slice() {
        [value] => Ok(*value),
        _ => Err(ReadError::Data(format!(
            "expected one value, got {}",
            values.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn reads_are_counted_per_thread() {
        let t = Tensor::<Flex, 1>::from_floats([1.5, 2.0], &Default::default());
        let (values, n) = count_reads(|| read_vec::<f32, _, 1, _>(t.clone()).unwrap());
        assert_eq!((values, n), (vec![1.5, 2.0], 1));
        let other = std::thread::spawn(reads).join().unwrap();
        assert_eq!(other, 0, "another thread's count is its own");
        let (_, n) = count_reads(|| read_f64(t.clone().sum()).unwrap());
        assert_eq!(n, 1);
        assert!(read_f64(t).is_err(), "two values are not one");
    }
}
