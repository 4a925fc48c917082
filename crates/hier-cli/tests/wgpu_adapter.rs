//! A wgpu build on a machine without a Vulkan adapter stops every command that needs the device
//! with a message naming the problem and the fix (exit 1), not cubecl-wgpu's panic. The Vulkan
//! loader is pointed at a driver list that does not exist, so no adapter is found even where
//! one is installed.
#![cfg(all(feature = "wgpu", not(feature = "cuda")))]

mod common;

use std::process::Command;

use common::hier;

/// `hier` with no Vulkan driver visible.
fn without_adapter(args: &[&str]) -> Command {
    let mut cmd = hier();
    cmd.args(args)
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env_remove("VK_ADD_DRIVER_FILES");
    cmd
}

#[test]
fn wgpu_without_adapter_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let commands: [&[&str]; 3] = [
        &[
            "bench", "--preset", "tiny", "--mode", "infer", "--batch", "1", "--steps", "1",
            "--warmup", "0",
        ],
        &[
            "train",
            "--preset",
            "tiny",
            "--out",
            out,
            "--max-steps",
            "1",
        ],
        &[
            "generate",
            "--model",
            out,
            "--prompt",
            "a",
            "--max-new-tokens",
            "1",
        ],
    ];
    for args in commands {
        let result = without_adapter(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no GPU adapter") && stderr.contains("mesa-vulkan-drivers"),
            "{args:?}: {stderr}"
        );
    }
}

/// `hier data` never needs the device: it goes on to its own work (here a download from a
/// port nothing listens on, which fails) instead of being refused for the adapter.
#[test]
fn wgpu_adapter_check_skips_commands_without_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/enwik8.zip");
    let args = [
        "data",
        "enwik8",
        "--dir",
        dir.path().to_str().unwrap(),
        "--url",
        &url,
    ];
    let result = without_adapter(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("no GPU adapter"), "{stderr}");
}
