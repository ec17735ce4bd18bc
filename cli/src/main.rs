//! `skiff`: the command-line client, kubectl-shaped. It talks `skiff.v1` to any control-plane
//! replica and moves on to the next endpoint when one is down. Errors go to stderr as kubectl
//! prints them (`Error from server (NotFound): pods "web" not found`) with exit status 1.

mod commands;
mod config;
mod jsonpath;
mod manifest;
mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Drives a Skiff cluster.
#[derive(Parser, Debug)]
#[command(name = "skiff", version, about, propagate_version = true)]
pub struct Cli {
    /// Control-plane endpoints, comma-separated (host:port); the first that answers is used.
    #[arg(long, global = true, env = "SKIFF_ENDPOINTS")]
    endpoints: Option<String>,
    /// Context of the config file to use instead of its current-context.
    #[arg(long, global = true, env = "SKIFF_CONTEXT")]
    context: Option<String>,
    /// Config file [default: ~/.skiff/config].
    #[arg(long, global = true, env = "SKIFF_CONFIG")]
    config: Option<PathBuf>,
    /// Namespace for this request [default: the context's, else "default"].
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update objects from manifests (file, directory or - for stdin).
    Apply(commands::apply::Args),
    /// Create objects from manifests; fails for objects that exist.
    Create(commands::apply::Args),
    /// List objects, or show some by name.
    Get(commands::get::Args),
    /// Delete objects by name, by label selector, all of a kind, or those in manifests.
    Delete(commands::delete::Args),
    /// Show an object in detail, with its events.
    Describe(commands::describe::Args),
    /// Edit an object as YAML in $EDITOR and update it.
    Edit(commands::edit::Args),
    /// Print the output of a container of a pod (`-f` to follow it).
    Logs(commands::logs::Args),
    /// Run a command in a container of a pod (`-it` for a shell).
    Exec(commands::exec::Args),
    /// Forward local ports to a pod's ports (`8080:80`, `:80` for a random local port).
    PortForward(commands::port_forward::Args),
    /// Images on the nodes: import tarballs, list, write the example image.
    #[command(subcommand)]
    Image(commands::image::Command),
    /// Add, change (--overwrite) or remove (`key-`) labels.
    Label(commands::modify::LabelArgs),
    /// Set the replicas of a deployment, replica set or stateful set.
    Scale(commands::modify::ScaleArgs),
    /// Manage the rollout of a deployment: status, history, undo, restart, pause, resume.
    #[command(subcommand)]
    Rollout(commands::rollout::Command),
    /// Mark nodes unschedulable: no new pods go there.
    Cordon(commands::node::CordonArgs),
    /// Mark nodes schedulable again.
    Uncordon(commands::node::CordonArgs),
    /// Cordon nodes and evict their pods, so that their controllers recreate them elsewhere.
    Drain(commands::node::DrainArgs),
    /// The control plane itself.
    #[command(subcommand)]
    Cluster(commands::cluster::Command),
    /// Print a shell completion script (bash, zsh or fish).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the client version.
    Version,
}

/// A failure already reported to the user; only the exit status remains to be set.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported")
    }
}

impl std::error::Error for Reported {}

/// The command is over and the process leaves with this status (`skiff exec` passes on the
/// remote command's exit code).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A read of stdin may still be waiting on its thread (`exec -i`): do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ExitWith(code)) = e.downcast_ref::<ExitWith>() {
                return std::process::ExitCode::from(*code);
            }
            if e.downcast_ref::<Reported>().is_none() {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(*shell, &mut Cli::command(), "skiff", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Version = cli.command {
        println!(
            "skiff {} (API {})",
            env!("CARGO_PKG_VERSION"),
            skiff_api::API_VERSION
        );
        return Ok(());
    }
    let target = config::resolve(
        cli.endpoints.as_deref(),
        cli.context.as_deref(),
        cli.namespace.as_deref(),
        cli.config.as_deref(),
    )?;
    let client = skiff_api::Client::new(&target.endpoints)?;
    let ctx = commands::Ctx {
        client,
        namespace: target.namespace,
        namespace_flag: cli.namespace.is_some(),
    };
    match cli.command {
        Command::Apply(args) => commands::apply::run(&ctx, &args, true).await,
        Command::Create(args) => commands::apply::run(&ctx, &args, false).await,
        Command::Get(args) => commands::get::run(&ctx, &args).await,
        Command::Delete(args) => commands::delete::run(&ctx, &args).await,
        Command::Describe(args) => commands::describe::run(&ctx, &args).await,
        Command::Edit(args) => commands::edit::run(&ctx, &args).await,
        Command::Logs(args) => commands::logs::run(&ctx, &args).await,
        Command::Exec(args) => commands::exec::run(&ctx, &args).await,
        Command::PortForward(args) => commands::port_forward::run(&ctx, &args).await,
        Command::Image(command) => commands::image::run(&ctx, &command).await,
        Command::Label(args) => commands::modify::label(&ctx, &args).await,
        Command::Scale(args) => commands::modify::scale(&ctx, &args).await,
        Command::Rollout(command) => commands::rollout::run(&ctx, &command).await,
        Command::Cluster(command) => commands::cluster::run(&ctx, &command).await,
        Command::Cordon(args) => commands::node::cordon(&ctx, &args, true).await,
        Command::Uncordon(args) => commands::node::cordon(&ctx, &args, false).await,
        Command::Drain(args) => commands::node::drain(&ctx, &args).await,
        Command::Completion { .. } | Command::Version => Ok(()),
    }
}
