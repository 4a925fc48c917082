//! What the CLI tests share: the binary, running it to success or to an error, a free port.
#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::process::Command;

/// The `hier` binary, with the memory check as it is by default.
pub fn hier() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hier"));
    cmd.env_remove("HIER_MEMORY_CHECK");
    cmd
}

/// Run `cmd`, which must succeed; its stdout (generated text is raw bytes, not necessarily
/// UTF-8).
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `cmd`, which must fail without a panic; its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "unexpectedly succeeded: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    stderr
}

/// A TCP port free at the moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
