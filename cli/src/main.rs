//! `skiff`: the command-line client. The kubectl-like commands land with the API-server issue; today
//! it only reports its version.

use clap::{Parser, Subcommand};

/// Drives a Skiff cluster.
#[derive(Parser, Debug)]
#[command(name = "skiff", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the client version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => {
            println!(
                "skiff {} (API {})",
                env!("CARGO_PKG_VERSION"),
                skiff_api::API_VERSION
            );
            Ok(())
        }
    }
}
