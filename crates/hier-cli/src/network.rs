//! Checks a multi-node run and the orchestrator make before they start, so that a taken port
//! or an orchestrator that is not there is a clear error (burn-communication would panic on
//! the first, and burn-collective retry forever on the second).

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Bind `port` on every interface (as burn-communication's servers do) and release it.
pub fn check_port_free(port: u16, flag: &str) -> Result<()> {
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) => bail!(
            "{flag}: port {port} cannot be served on this machine ({e}); another program (or \
             another hier process) holds it — stop it or choose a free port"
        ),
    }
}

/// `ws://HOST:PORT[/...]` -> `(HOST:PORT, PORT)`.
fn host_port(address: &str, flag: &str) -> Result<(String, u16)> {
    let rest = address.strip_prefix("ws://").with_context(|| {
        format!("{flag} `{address}` is not a WebSocket address; write it as ws://HOST:PORT")
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("{flag} `{address}` has no port; write it as ws://HOST:PORT"))?;
    Ok((authority.to_string(), port))
}

/// The port of this node's `--node-address`.
pub fn port_of(address: &str, flag: &str) -> Result<u16> {
    host_port(address, flag).map(|(_, port)| port)
}

/// Wait until something accepts TCP connections at `address` (the orchestrator), at most
/// `wait`; an error after that.
pub fn wait_for_orchestrator(address: &str, wait: Duration) -> Result<()> {
    let (authority, port) = host_port(address, "--orchestrator")?;
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        let addrs: Vec<_> = authority
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default();
        let attempt = Duration::from_secs(2).min(wait.max(Duration::from_millis(100)));
        if addrs
            .iter()
            .any(|a| TcpStream::connect_timeout(a, attempt).is_ok())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the orchestrator at {address} did not accept a connection within {} s; start \
                 it first (`hier orchestrator --port {port}` on that host), check the address \
                 and firewall, or wait longer with --orchestrator-wait SECONDS",
                wait.as_secs()
            );
        }
        if !told {
            eprintln!(
                "waiting for the orchestrator at {address} (up to {} s)",
                wait.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
