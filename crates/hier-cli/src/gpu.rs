//! The wgpu build's adapter check. cubecl-wgpu panics ("No possible adapter available") when it
//! sets up Burn's device on a machine without a Vulkan driver, so `hier` asks wgpu for an
//! adapter itself first, the way cubecl-wgpu does for the default device, and stops with a
//! message that names the problem and the fix.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::{bail, Result};

/// The graphics API cubecl-wgpu's `AutoGraphicsApi` picks on this platform.
fn graphics_api() -> wgpu::Backend {
    if cfg!(target_os = "macos") {
        wgpu::Backend::Metal
    } else {
        wgpu::Backend::Vulkan
    }
}

/// Fails with what to install when wgpu finds no adapter for the graphics API Burn will use.
pub fn check_adapter() -> Result<()> {
    let api = graphics_api();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: api.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let request = instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
    });
    match block_on(request) {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "no GPU adapter: this hier is the wgpu build, which runs on a {api:?} driver, and \
             wgpu found none ({e}). Install one: your GPU's driver, or Mesa's software Vulkan \
             (`apt-get install mesa-vulkan-drivers`; slow, for checking results); or use the CPU \
             build (`cargo install hier-cli`, without `--features wgpu`)"
        ),
    }
}

/// Native wgpu resolves adapter requests before they are first polled; the loop only guards
/// against a platform that does not.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
