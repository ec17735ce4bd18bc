//! `skiff-agent`: the per-node agent. Pods, cgroups and networking land with the agent issue; this
//! entry point only parses its flags so the workspace builds and operators can see its interface.

use clap::Parser;

/// Runs pods on this node for a Skiff cluster.
#[derive(Parser, Debug)]
#[command(name = "skiff-agent", version, about)]
struct Args {
    /// Comma-separated client URLs of the control-plane replicas.
    #[arg(long, env = "SKIFF_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    endpoints: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "skiff-agent cannot run pods yet (control plane at {}); it arrives with the node-agent issue",
        args.endpoints
    )
}
