//! `skiff-shim-monitor`: what a shim becomes once its container runs. The shim needs
//! libcontainer to create and start a container, and that makes a large program; holding a
//! running container needs much less: copy its output into the CRI log, reap its init, read the
//! OOM kill count, remove its cgroup and libcontainer's state directory, write `exit.json`. So
//! after reporting the start the shim executes this small program in its own process (same pid,
//! session, child-subreaper flag and open pipes; see node-agent's `runtime::shim`), and only the monitor's
//! few pages stay resident for the life of the container. When the program cannot be executed
//! the shim calls [`run`] itself: one code path either way.
//!
//! The arguments are an internal interface between the two, positional and produced only by
//! [`MonitorArgs::to_args`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup;
use crate::cri_log::{self, Stream};
use crate::log_rotation::{LogRotation, RotatingLog};
use crate::shim_state::{ExitRecord, StateDir, EXIT};

/// The program's name.
pub const PROGRAM: &str = "skiff-shim-monitor";

/// Everything the monitor needs, passed from the shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorArgs {
    /// The read ends of the container's stdout and stderr pipes (open across exec).
    pub stdout_fd: RawFd,
    pub stderr_fd: RawFd,
    /// The container's init process (a child of this process, through the subreaper flag).
    pub init: i32,
    /// When it started (RFC 3339), for `exit.json`.
    pub started_at: String,
    pub id: String,
    /// The container's cgroup (empty: none).
    pub cgroups_path: PathBuf,
    /// libcontainer's directory for the container, removed at the end.
    pub container_state: PathBuf,
    /// The shim's state directory (`exit.json` goes there).
    pub state_dir: PathBuf,
    /// The CRI log file and how it rotates.
    pub log: PathBuf,
    pub rotation: Option<LogRotation>,
}

/// Why the arguments are not a monitor's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("skiff-shim-monitor is started by skiff-shim only: {0}")]
pub struct ArgsError(String);

impl MonitorArgs {
    /// The argument list (without the program name) that [`Self::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let (size, files) = match self.rotation {
            Some(r) => (r.max_size.to_string(), r.max_files.to_string()),
            None => ("-".into(), "-".into()),
        };
        vec![
            self.stdout_fd.to_string().into(),
            self.stderr_fd.to_string().into(),
            self.init.to_string().into(),
            self.started_at.clone().into(),
            self.id.clone().into(),
            self.cgroups_path.clone().into(),
            self.container_state.clone().into(),
            self.state_dir.clone().into(),
            self.log.clone().into(),
            size.into(),
            files.into(),
        ]
    }

    /// Reads what [`Self::to_args`] wrote.
    pub fn parse(args: &[OsString]) -> Result<MonitorArgs, ArgsError> {
        let [out, err, init, started_at, id, cgroups_path, container_state, state_dir, log, size, files] =
            args
        else {
            return Err(ArgsError(format!(
                "expected 11 arguments, got {}",
                args.len()
            )));
        };
        let text = |what: &str, v: &OsStr| {
            v.to_str()
                .map(str::to_string)
                .ok_or_else(|| ArgsError(format!("{what} is not UTF-8")))
        };
        let number = |what: &str, v: &OsStr| -> Result<i64, ArgsError> {
            text(what, v)?
                .parse()
                .map_err(|_| ArgsError(format!("{what} {v:?} is not a number")))
        };
        let rotation = match (text("size", size)?.as_str(), text("files", files)?.as_str()) {
            ("-", "-") => None,
            _ => Some(LogRotation {
                max_size: number("log size", size)? as u64,
                max_files: number("log files", files)? as u32,
            }),
        };
        Ok(MonitorArgs {
            stdout_fd: number("stdout fd", out)? as RawFd,
            stderr_fd: number("stderr fd", err)? as RawFd,
            init: number("init pid", init)? as i32,
            started_at: text("start time", started_at)?,
            id: text("id", id)?,
            cgroups_path: cgroups_path.into(),
            container_state: container_state.into(),
            state_dir: state_dir.into(),
            log: log.into(),
            rotation,
        })
    }
}

/// `skiff-shim-monitor`'s `main`. Never returns.
pub fn main() -> ! {
    crate::limit_malloc_arenas(1);
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match MonitorArgs::parse(&args) {
        Ok(args) => std::process::exit(run(args)),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2)
        }
    }
}

/// One line in the shim's log (its stderr).
fn say(id: &str, message: &str) {
    eprintln!(
        "{} skiff-shim-monitor {id}: {message}",
        jiff::Timestamp::now()
    );
}

/// Holds the running container to its end. Returns the process's exit status.
pub fn run(args: MonitorArgs) -> i32 {
    // Only the agent's signals to the container matter; SIGKILL still ends the monitor (and
    // then the container runs on, as an orphan the agent cleans up).
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let log = match RotatingLog::open(&args.log, args.rotation) {
        Ok(log) => Some(Arc::new(Mutex::new(log))),
        Err(e) => {
            say(
                &args.id,
                &format!("cannot open log file {:?}: {e}", args.log),
            );
            None
        }
    };
    // SAFETY: the shim handed these descriptors over open and owned by nobody else here.
    let streams = unsafe {
        [
            (OwnedFd::from_raw_fd(args.stdout_fd), Stream::Stdout),
            (OwnedFd::from_raw_fd(args.stderr_fd), Stream::Stderr),
        ]
    };
    let pumps: Vec<_> = streams
        .into_iter()
        .map(|(fd, stream)| {
            let log = log.clone();
            let id = args.id.clone();
            std::thread::spawn(move || {
                let copied = match log {
                    Some(sink) => cri_log::pump(File::from(fd), stream, sink),
                    None => std::io::copy(&mut File::from(fd), &mut std::io::sink()).map(|_| ()),
                };
                if let Err(e) = copied {
                    say(
                        &id,
                        &format!("copying the container's {}: {e}", stream.as_str()),
                    );
                }
            })
        })
        .collect();

    let (exit_code, signal) = wait_for(Pid::from_raw(args.init));
    let finished_at = jiff::Timestamp::now().to_string();
    for p in pumps {
        let _ = p.join();
    }
    drop(log);

    let has_cgroup = !args.cgroups_path.as_os_str().is_empty();
    let oom_killed =
        has_cgroup && cgroup::oom_kill_count(&args.cgroups_path).is_some_and(|n| n > 0);
    let mut problems = Vec::new();
    if has_cgroup {
        if let Err(e) = cgroup::remove_cgroup(&args.cgroups_path) {
            problems.push(format!("removing cgroup {:?}: {e}", args.cgroups_path));
        }
    }
    match std::fs::remove_dir_all(&args.container_state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            problems.push(format!("removing {:?}: {e}", args.container_state))
        }
        _ => {}
    }
    let cleanup_error = (!problems.is_empty()).then(|| problems.join("; "));
    if let Some(e) = &cleanup_error {
        say(&args.id, &format!("deleting the container: {e}"));
    }
    let exit = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        started_at: args.started_at,
        finished_at,
        cleanup_error,
    };
    if let Err(e) = StateDir(args.state_dir).write(EXIT, &exit) {
        say(&args.id, &format!("cannot write {EXIT}: {e}"));
        return 1;
    }
    0
}

/// Reaps children until `init` ends; its exit code (128 + signal when killed) and signal.
fn wait_for(init: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => return (code, None),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                return (128 + sig as i32, Some(sig as i32))
            }
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("skiff-shim-monitor: waiting for the container's init {init}: {e}");
                return (255, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let mut args = MonitorArgs {
            stdout_fd: 5,
            stderr_fd: 7,
            init: 4242,
            started_at: "2026-12-04T10:00:00Z".into(),
            id: "abc".into(),
            cgroups_path: "/skiff/pod1/abc".into(),
            container_state: "/var/lib/skiff-agent/containers/abc/libcontainer/abc".into(),
            state_dir: "/var/lib/skiff-agent/containers/abc/state".into(),
            log: "/var/lib/skiff-agent/logs/x/c/0.log".into(),
            rotation: Some(LogRotation {
                max_size: 1024,
                max_files: 3,
            }),
        };
        assert_eq!(MonitorArgs::parse(&args.to_args()), Ok(args.clone()));
        args.rotation = None;
        args.cgroups_path = PathBuf::new();
        assert_eq!(MonitorArgs::parse(&args.to_args()), Ok(args.clone()));
        let mut bad = args.to_args();
        bad[2] = "x".into();
        assert_eq!(
            MonitorArgs::parse(&bad).map_err(|e| e.to_string()),
            Err(
                "skiff-shim-monitor is started by skiff-shim only: init pid \"x\" is not a number"
                    .into()
            )
        );
        assert!(MonitorArgs::parse(&bad[..3]).is_err());
    }
}
