//! `skiff-agent`: the per-node agent. Without `--hollow` it registers this machine as a Node
//! and runs the pods bound to it; with `--hollow N` it runs N simulated nodes for tests and
//! benchmarks of the control plane.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use node_agent::config::Args;
use node_agent::hollow;

fn main() -> anyhow::Result<()> {
    skiff_shim_monitor::limit_malloc_arenas(2);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    if args.cleanup {
        let ipt = netproxy::Iptables::detect()?;
        ipt.clean_up()?;
        tracing::info!("removed every Skiff rule from {}", ipt.backend.iptables);
        let routes = node_agent::network::route_table::RouteTable::open()?;
        let removed = routes.clean_up().await?;
        tracing::info!("removed {removed} pod routes of Skiff's");
        return Ok(());
    }
    let client = skiff_api::Client::new(&args.endpoint_list())?;
    if args.hollow > 0 {
        return hollow::run(
            Arc::new(client),
            &args.name,
            args.hollow,
            Duration::from_secs(args.heartbeat_every),
        )
        .await;
    }
    // SIGTERM and Ctrl-C stop the agent, never the pods: their shims run on by themselves.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = node_agent::agent::run(client, args) => r,
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping the agent; pods keep running");
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
