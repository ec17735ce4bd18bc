//! Entry point of `skiff-server`; see the `control_plane` crate.

use clap::Parser;
use control_plane::config::Args;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = control_plane::serve::run(args).await {
        eprintln!("skiff-server: {e:#}");
        std::process::exit(1);
    }
}
