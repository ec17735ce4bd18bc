//! `skiff-agent`: the per-node agent. Running real pods (namespaces, cgroups, networking) lands
//! with the node-agent issue; today it runs hollow nodes (`--hollow N`) for tests and benchmarks
//! of the control plane.

mod hollow;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

/// Runs pods on this node for a Skiff cluster.
#[derive(Parser, Debug)]
#[command(name = "skiff-agent", version, about)]
struct Args {
    /// Comma-separated client endpoints of the control-plane replicas.
    #[arg(long, env = "SKIFF_ENDPOINTS", default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// Run this many simulated nodes instead of a real one.
    #[arg(long, default_value_t = 0)]
    hollow: usize,
    /// Name prefix of the hollow nodes (PREFIX-0, PREFIX-1, ...).
    #[arg(long, default_value = "hollow")]
    name: String,
    /// Seconds between Lease renewals of each node.
    #[arg(long, env = "SKIFF_NODE_HEARTBEAT", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    if args.hollow == 0 {
        anyhow::bail!(
            "skiff-agent cannot run real pods yet (control plane at {}); use --hollow N for \
             simulated nodes",
            args.endpoints
        );
    }
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let client = Arc::new(skiff_api::Client::new(&endpoints)?);
    hollow::run(
        client,
        &args.name,
        args.hollow,
        Duration::from_secs(args.heartbeat_every),
    )
    .await
}
