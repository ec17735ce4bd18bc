//! The agent's side of a command run in a running container: [`ExecProcess::start`] runs a
//! `skiff-shim exec` for it (see [`exec_shim`](super::exec_shim)), with the command's stdin,
//! stdout and stderr as pipes, or with a terminal whose master end the shim sends back, and
//! waits, with a deadline, for the shim to say whether the command started. Then the caller
//! relays [`ExecIo`] and waits for the exit code; [`ExecProcess::terminate`] (or dropping the
//! process) makes the shim kill the command and everything it started in its session.
//!
//! An exec of container `<id>` uses the container's directory `<dir>` (see
//! [`containers`](super::containers)): `<dir>/config.json` and `<dir>/libcontainer/<id>/`
//! are read; the shim's own files go in a directory under `<dir>/exec/`, removed when the
//! command ends, and removed with the container anyway.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::exec_report::{self, FailureKind, Report, ReportReceiver};
use super::exec_shim::ExecArgs;
use super::pty::{PtyMaster, WindowSize};

/// How long `start` waits for the shim to say whether the command started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `terminate` gives the shim to end the command before it kills the shim.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// The descriptor the report socket has in the shim.
const CONTROL_FD: i32 = 3;

/// A command to run in a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecCommand {
    /// The container's directory, `<root-dir>/containers/<id>`.
    pub container_dir: PathBuf,
    pub id: String,
    /// argv; the first word is looked up in the container's PATH.
    pub command: Vec<String>,
    /// Give the command a stdin to write to; without it, its stdin is /dev/null (no terminal).
    pub stdin: bool,
    /// Run it on a terminal.
    pub tty: bool,
    /// The terminal's first size.
    pub size: Option<WindowSize>,
}

impl ExecCommand {
    fn shim_args(&self) -> ExecArgs {
        ExecArgs {
            id: self.id.clone(),
            bundle: self.container_dir.clone(),
            state_root: self.container_dir.join("libcontainer"),
            exec_root: self.container_dir.join("exec"),
            control_fd: CONTROL_FD,
            tty: self.tty,
            rows: self.size.filter(|_| self.tty).map(|s| s.rows),
            cols: self.size.filter(|_| self.tty).map(|s| s.cols),
            command: self.command.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command could not be run: not found, not executable (runc's words).
    #[error("{0}")]
    Command(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("exec in container {id}: running {shim:?}: {source}")]
    Spawn {
        id: String,
        shim: PathBuf,
        source: std::io::Error,
    },
    #[error("exec in container {id}: the shim did not say within {timeout:?} whether the command started")]
    Timeout { id: String, timeout: Duration },
    #[error("exec in container {id}: {message}")]
    Runtime { id: String, message: String },
}

/// The command's stdio, for the caller to relay.
#[derive(Debug)]
pub enum ExecIo {
    /// Without a terminal: stdin (if asked for), stdout and stderr.
    Pipes {
        stdin: Option<ChildStdin>,
        stdout: ChildStdout,
        stderr: ChildStderr,
    },
    /// On a terminal: its master end carries input and output both.
    Tty(PtyMaster),
}

/// A command that started, held through its shim.
#[derive(Debug)]
pub struct ExecProcess {
    id: String,
    child: Child,
    reports: ReportReceiver,
    pid: i32,
}

impl ExecProcess {
    /// Runs `command` through the `skiff-shim` at `shim` and returns once it runs (or why it
    /// could not).
    pub async fn start(
        shim: &Path,
        command: &ExecCommand,
        timeout: Duration,
    ) -> Result<(ExecProcess, ExecIo), ExecError> {
        let id = command.id.clone();
        let runtime = |message: String| ExecError::Runtime {
            id: id.clone(),
            message,
        };
        let (agent_end, shim_end) =
            exec_report::pair().map_err(|e| runtime(format!("socketpair: {e}")))?;
        let mut cmd = Command::new(shim);
        // A clean environment: the command's comes from the container's config, and the
        // agent's own (LISTEN_FDS, say) must not reach libcontainer.
        cmd.args(command.shim_args().to_args())
            .env_clear()
            .current_dir("/")
            .stdin(if command.stdin && !command.tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if command.tty {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(if command.tty {
                Stdio::null()
            } else {
                Stdio::piped()
            });
        let raw = shim_end.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-
        // safe calls (dup2, fcntl) on a descriptor the parent keeps open until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || pass_as_control_fd(raw));
        }
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            id: id.clone(),
            shim: shim.to_path_buf(),
            source,
        })?;
        drop(shim_end);
        let reports = ReportReceiver::new(agent_end)
            .map_err(|e| runtime(format!("the report socket: {e}")))?;
        let stdio = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let mut process = ExecProcess {
            id: id.clone(),
            child,
            reports,
            pid: 0,
        };

        let first = match tokio::time::timeout(timeout, process.reports.recv()).await {
            Ok(r) => r.map_err(|e| runtime(format!("reading the shim's report: {e}")))?,
            Err(_) => {
                process.terminate(TERMINATE_GRACE).await;
                return Err(ExecError::Timeout { id, timeout });
            }
        };
        match first {
            Some((Report::Started { pid }, master)) => {
                process.pid = pid;
                let io = if command.tty {
                    let master =
                        master.ok_or_else(|| runtime("the shim sent no terminal".into()))?;
                    ExecIo::Tty(
                        PtyMaster::new(master)
                            .map_err(|e| runtime(format!("the terminal: {e}")))?,
                    )
                } else {
                    match stdio {
                        (stdin, Some(stdout), Some(stderr)) => ExecIo::Pipes {
                            stdin,
                            stdout,
                            stderr,
                        },
                        _ => return Err(runtime("the command's pipes are missing".into())),
                    }
                };
                Ok((process, io))
            }
            Some((Report::Failed { kind, message }, _)) => {
                let _ = process.child.wait().await;
                Err(match kind {
                    FailureKind::Command => ExecError::Command(message),
                    FailureKind::NotRunning => ExecError::NotRunning(id),
                    FailureKind::Runtime => runtime(message),
                })
            }
            Some((Report::Exited { .. }, _)) => {
                process.terminate(TERMINATE_GRACE).await;
                Err(runtime("the shim reported an exit before a start".into()))
            }
            None => {
                let status = process.child.wait().await;
                Err(runtime(format!(
                    "the shim ended ({}) before it said whether the command started",
                    describe_status(status)
                )))
            }
        }
    }

    /// The command's process, in the agent's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the command to end: its exit code (128 + N when signal N killed it).
    /// Cancel safe.
    pub async fn wait(&mut self) -> Result<i32, ExecError> {
        let status = self.child.wait().await;
        let mut failure = None;
        loop {
            match self.reports.try_recv() {
                Ok(Some((Report::Exited { code }, _))) => return Ok(code),
                Ok(Some((Report::Failed { message, .. }, _))) => failure = Some(message),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        Err(ExecError::Runtime {
            id: self.id.clone(),
            message: failure.unwrap_or_else(|| {
                format!(
                    "the shim ended ({}) without the command's exit code",
                    describe_status(status)
                )
            }),
        })
    }

    /// Ends the command (and what it started in its session): asks the shim with SIGTERM,
    /// and kills the shim if it has not ended within `grace` (the command then dies of its
    /// parent-death signal).
    pub async fn terminate(&mut self, grace: Duration) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(id = %self.id, "the exec shim did not end within {grace:?}: killing it");
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for ExecProcess {
    /// A process dropped while its shim runs is ended: the shim sees its report socket close
    /// (and SIGTERM), kills the command's session and exits; tokio reaps it.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

/// In the forked child: the report socket becomes descriptor [`CONTROL_FD`], inherited by exec.
fn pass_as_control_fd(raw: i32) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    if raw == CONTROL_FD {
        fcntl(raw, FcntlArg::F_SETFD(FdFlag::empty()))?;
    } else {
        nix::unistd::dup2(raw, CONTROL_FD)?;
    }
    Ok(())
}

fn describe_status(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("not known: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_gets_the_containers_paths() {
        let cmd = ExecCommand {
            container_dir: "/r/containers/c1".into(),
            id: "c1".into(),
            command: vec!["ls".into()],
            stdin: true,
            tty: false,
            size: Some(WindowSize { rows: 2, cols: 3 }),
        };
        let args = cmd.shim_args();
        assert_eq!(args.bundle, Path::new("/r/containers/c1"));
        assert_eq!(args.state_root, Path::new("/r/containers/c1/libcontainer"));
        assert_eq!(args.exec_root, Path::new("/r/containers/c1/exec"));
        assert_eq!((args.rows, args.cols), (None, None), "no terminal, no size");
        let tty = ExecCommand { tty: true, ..cmd }.shim_args();
        assert_eq!((tty.rows, tty.cols), (Some(2), Some(3)));
        assert!(tty.tty);
    }
}
