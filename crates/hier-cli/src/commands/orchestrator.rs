use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Port to serve on (all interfaces); nodes connect with --orchestrator ws://HOST:PORT.
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

/// Serve the global all-reduce of a multi-node run until Ctrl-C / SIGTERM.
pub fn run(args: Args) -> Result<()> {
    // burn-collective logs a taken port and returns as if stopped: refuse it here
    crate::network::check_port_free(args.port, "--port")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the orchestrator's runtime")?;
    eprintln!(
        "orchestrator listening on port {} (Ctrl-C to stop)",
        args.port
    );
    runtime.block_on(burn_collective::start_global_orchestrator(args.port));
    Ok(())
}
