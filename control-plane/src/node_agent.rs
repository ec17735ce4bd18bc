//! The replica's own node, as `k3s server` runs its agent: unless `--disable-agent`, a replica
//! started as root runs `skiff-agent` (found beside `skiff-server`, else on PATH) as a child
//! process pointed at this replica's client URLs, with `--agent-arg` flags passed on. The
//! child is restarted with a back-off when it dies, and stopped with SIGTERM (which leaves its
//! containers running, as the agent promises) before the replica stops. The crates stay
//! apart: the control plane knows the agent only as a program to run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The agent's program name.
pub const AGENT_BINARY: &str = "skiff-agent";
/// Longest wait before restarting an agent that died.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopped agent has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// An agent that ran this long before dying is restarted at once again.
const STEADY: Duration = Duration::from_secs(60);

/// Why the replica runs without a node, when it does.
#[derive(Debug, PartialEq, Eq)]
pub enum NoAgent {
    Disabled,
    NotRoot,
    NotFound(Vec<PathBuf>),
}

impl std::fmt::Display for NoAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAgent::Disabled => f.write_str("--disable-agent: this replica runs no node"),
            NoAgent::NotRoot => f.write_str(
                "not running as root: this replica runs no node (pods stay Pending until a node \
                 joins; run skiff-server as root, or skiff-agent on a node)",
            ),
            NoAgent::NotFound(tried) => write!(
                f,
                "{AGENT_BINARY} not found (looked at {}): this replica runs no node; build it \
                 with `cargo build --release -p node-agent` or pass --disable-agent",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Where the agent's program is: beside `server_exe`, else in a directory of `path` (the
/// PATH variable's value).
pub fn find_agent(server_exe: Option<&Path>, path: Option<&str>) -> Result<PathBuf, NoAgent> {
    let mut tried = Vec::new();
    let beside = server_exe
        .and_then(Path::parent)
        .map(|d| d.join(AGENT_BINARY));
    let on_path = path
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(AGENT_BINARY));
    for candidate in beside.into_iter().chain(on_path) {
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    Err(NoAgent::NotFound(tried))
}

/// The agent's command line: this replica's client URLs and the cluster's pod network, then
/// the user's `--agent-arg`s (which come last, so that they win).
pub fn agent_args(client_urls: &[String], cluster_cidr: &str, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--endpoints".to_string(),
        client_urls.join(","),
        "--cluster-cidr".to_string(),
        cluster_cidr.to_string(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// The running agent; [`EmbeddedAgent::stop`] ends it.
pub struct EmbeddedAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EmbeddedAgent {
    /// Starts the agent if this replica should run one; says why not otherwise.
    pub fn start(
        disabled: bool,
        client_urls: &[String],
        cluster_cidr: &str,
        extra: &[String],
    ) -> Result<EmbeddedAgent, NoAgent> {
        if disabled {
            return Err(NoAgent::Disabled);
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(NoAgent::NotRoot);
        }
        let exe = std::env::current_exe().ok();
        let path = std::env::var("PATH").ok();
        let program = find_agent(exe.as_deref(), path.as_deref())?;
        let args = agent_args(client_urls, cluster_cidr, extra);
        tracing::info!(program = %program.display(), ?args, "starting this replica's node agent");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(program, args, stopped));
        Ok(EmbeddedAgent { stop, task })
    }

    /// Stops the agent (SIGTERM; SIGKILL after a grace period) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn spawn(program: &Path, args: &[String]) -> std::io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        // Its own process group: a Ctrl-C at the terminal reaches the replica, which stops
        // the agent in its turn.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec and makes one async-signal-safe call.
    // A replica that dies without stopping its agent (SIGKILL, SIGHUP) still stops it: the
    // agent gets SIGTERM, which leaves its containers running.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("the node agent did not stop after SIGTERM; killing it");
        let _ = child.kill().await;
    }
}

async fn supervise(program: PathBuf, args: Vec<String>, mut stopped: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match spawn(&program, &args) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(program = %program.display(), "cannot start the node agent: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tokio::select! {
            status = child.wait() => {
                match status {
                    Ok(s) => tracing::error!(%s, "the node agent exited; restarting it"),
                    Err(e) => tracing::error!("waiting for the node agent: {e}; restarting it"),
                }
                if started.elapsed() >= STEADY {
                    backoff = Duration::from_secs(1);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ = stopped.changed() => {
                terminate(&mut child).await;
                tracing::info!("the node agent stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_found_beside_the_server_then_on_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(&other).expect("other");
        let server = bin.join("skiff-server");
        let path = other.display().to_string();
        let err = find_agent(Some(&server), Some(&path)).expect_err("none yet");
        assert_eq!(
            err,
            NoAgent::NotFound(vec![bin.join(AGENT_BINARY), other.join(AGENT_BINARY)])
        );
        std::fs::write(other.join(AGENT_BINARY), b"").expect("write");
        assert_eq!(
            find_agent(Some(&server), Some(&path)).expect("on PATH"),
            other.join(AGENT_BINARY)
        );
        std::fs::write(bin.join(AGENT_BINARY), b"").expect("write");
        assert_eq!(
            find_agent(Some(&server), Some(&path)).expect("beside"),
            bin.join(AGENT_BINARY)
        );
    }

    #[test]
    fn user_flags_come_after_the_endpoints() {
        assert_eq!(
            agent_args(
                &["http://127.0.0.1:2379".into()],
                "10.244.0.0/16",
                &["--node-name=a".into(), "--port=10251".into()]
            ),
            vec![
                "--endpoints",
                "http://127.0.0.1:2379",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--node-name=a",
                "--port=10251"
            ]
        );
    }
}
