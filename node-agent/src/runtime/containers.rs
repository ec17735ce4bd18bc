//! The agent's side of containers: [`Containers`] starts a container (writes its bundle, mounts its
//! rootfs, runs a `skiff-shim` for it and waits, with a deadline, for the shim to say whether it
//! started), and reads, signals and removes containers through their directories only, so an
//! agent restarted from scratch adopts every container it finds on disk. Nothing here forks a
//! container: the shim does. `start` and `remove` do their mount and file work on tokio's
//! blocking pool; `state`, `list`, `record` and `signal` read a few small files directly.
//!
//! One container's directory, `<root>/<id>/`:
//! - `container.json`: what the agent asked for ([`ContainerRecord`]);
//! - `config.json`: the OCI runtime spec (the directory is the OCI bundle);
//! - `rootfs/` (the overlay mount), `upper/`, `work/` (and `empty/` for an image without layers);
//! - `libcontainer/<id>/`: libcontainer's state while the container exists;
//! - `state/`: the shim's files (`shim.json`, `started.json`, `start-error.json`, `exit.json`,
//!   `shim.log`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::log_rotation::LogRotation;
use super::rootfs::{self, RootfsError};
use super::shim::{ShimArgs, EXIT_SHIM_DIED, EXIT_STARTED, EXIT_START_FAILED};
use super::shim_state::{
    is_alive, read_json, write_atomic, ExitRecord, ShimRecord, StartErrorRecord, StartedRecord,
    StateDir, EXIT, SHIM, SHIM_LOG, STARTED, START_ERROR,
};
use super::spec::{build_spec, valid_id, ContainerConfig, HostInfo, SpecError};

/// The agent's record of a container, `container.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub config: ContainerConfig,
    /// The image's unpacked layers, lowest first.
    pub layers: Vec<PathBuf>,
    /// The CRI log file the shim writes.
    pub log_path: PathBuf,
    /// RFC 3339.
    pub created_at: String,
}

/// What to start: the container, the image's unpacked layers (lowest first) and the CRI log
/// file its output goes to.
#[derive(Clone, Copy, Debug)]
pub struct StartRequest<'a> {
    pub config: &'a ContainerConfig,
    pub layers: &'a [PathBuf],
    pub log_path: &'a Path,
}

/// A container that started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub dir: PathBuf,
    /// The container's init process, in the agent's pid namespace.
    pub pid: i32,
    pub started_at: Timestamp,
    pub log_path: PathBuf,
}

/// What the files of a container say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running {
        pid: i32,
        started_at: Timestamp,
    },
    Exited(ExitStatus),
    /// Not found, not started yet, or its shim died without recording an exit.
    Unknown,
}

/// How a container ended, as Kubernetes reports a terminated container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// "Completed", "Error", "OOMKilled" or "StartError".
    pub reason: String,
    /// Why it could not start (libcontainer's message), or what went wrong cleaning up.
    pub message: String,
    /// `None` when it never started.
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
    pub fn is_exited(&self) -> bool {
        matches!(self, ContainerState::Exited(_))
    }
}

/// What the files say, with why a container is in no known state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Observed {
    Known(ContainerState),
    /// The shim runs but has not said whether the container started.
    Starting,
    /// The shim is gone and left no exit record; `init_alive` if the container's init still runs.
    Orphaned {
        init_alive: bool,
    },
    Missing,
}

/// Exit code Kubernetes shows for a container that could not start (containerd's).
pub const START_ERROR_EXIT_CODE: i32 = 128;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container id {0:?} is invalid: use letters, digits, '_', '+', '-', '.'")]
    InvalidId(String),
    #[error("container {0} exists already")]
    Exists(String),
    #[error("no container {0}")]
    NotFound(String),
    /// The container could not be set up (spec, rootfs): Kubernetes' CreateContainerError.
    #[error("container {id}: {message}")]
    Create { id: String, message: String },
    /// The shim could not create or start it: Kubernetes' StartError.
    #[error("container {id} failed to start: {message}")]
    Start { id: String, message: String },
    #[error("container {id}: its shim did not say within {timeout:?} whether it started")]
    StartTimeout { id: String, timeout: Duration },
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is still running")]
    StillRunning(String),
    #[error("container {id}: {what}: {source}")]
    Io {
        id: String,
        what: String,
        source: std::io::Error,
    },
    #[error("container {id}: {source}")]
    Rootfs { id: String, source: RootfsError },
    #[error("sending {signal} to container {id}: {source}")]
    Signal {
        id: String,
        signal: Signal,
        source: nix::Error,
    },
    #[error("runtime task failed: {0}")]
    Join(String),
}

impl RuntimeError {
    /// The reason Kubernetes shows for a container this error kept from running, if any.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            RuntimeError::Create { .. } | RuntimeError::InvalidId(_) => {
                Some("CreateContainerError")
            }
            RuntimeError::Start { .. } | RuntimeError::StartTimeout { .. } => Some("StartError"),
            _ => None,
        }
    }
}

/// How long `start` waits for a shim to report, unless told otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's record file in a container's directory.
const RECORD: &str = "container.json";

/// The containers under one root directory (e.g. `<root-dir>/containers`).
#[derive(Clone, Debug)]
pub struct Containers {
    root: PathBuf,
    shim_binary: PathBuf,
    /// The static monitor installed under the root (see `monitor_program`), if this build has one.
    monitor: Option<PathBuf>,
    start_timeout: Duration,
    /// How containers' logs rotate (None: never).
    log_rotation: Option<LogRotation>,
}

fn io_err(id: &str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let id = id.to_string();
    let what = what.into();
    move |source| RuntimeError::Io { id, what, source }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Join(e.to_string()))?
}

/// The last `n` lines of a text file, for messages about a shim that died.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

fn exited(exit: ExitRecord) -> ContainerState {
    ContainerState::Exited(ExitStatus {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: exit.reason().to_string(),
        message: exit.cleanup_error.clone().unwrap_or_default(),
        started_at: parse_time(&exit.started_at),
        finished_at: parse_time(&exit.finished_at),
    })
}

/// What the files of the container in `dir` say.
fn observe(dir: &Path) -> Result<Observed, std::io::Error> {
    if !dir.join(RECORD).exists() {
        return Ok(Observed::Missing);
    }
    let state = StateDir(dir.join("state"));
    if let Some(exit) = state.read::<ExitRecord>(EXIT)? {
        return Ok(Observed::Known(exited(exit)));
    }
    if let Some(err) = state.read::<StartErrorRecord>(START_ERROR)? {
        return Ok(Observed::Known(ContainerState::Exited(ExitStatus {
            exit_code: START_ERROR_EXIT_CODE,
            signal: None,
            reason: "StartError".into(),
            message: err.message,
            started_at: None,
            finished_at: parse_time(&err.at),
        })));
    }
    let shim_alive = state
        .read::<ShimRecord>(SHIM)?
        .is_some_and(|s| is_alive(&s.shim));
    let started = state.read::<StartedRecord>(STARTED)?;
    match (started, shim_alive) {
        (Some(s), true) => Ok(Observed::Known(ContainerState::Running {
            pid: s.init.pid,
            started_at: parse_time(&s.started_at).unwrap_or_else(Timestamp::now),
        })),
        (None, true) => Ok(Observed::Starting),
        (started, false) => {
            // The shim may have written exit.json just before it ended.
            if let Some(exit) = state.read::<ExitRecord>(EXIT)? {
                return Ok(Observed::Known(exited(exit)));
            }
            Ok(Observed::Orphaned {
                init_alive: started.is_some_and(|s| is_alive(&s.init)),
            })
        }
    }
}

/// Whether container `id` has ended (or failed to start) by its files: one stat each, for the
/// agent's cheap checks between full syncs.
pub fn has_ended(root: &Path, id: &str) -> bool {
    let state = root.join(id).join("state");
    state.join(EXIT).exists() || state.join(START_ERROR).exists()
}

/// The state of the container in `dir` (Unknown when it cannot be told; logged).
pub fn read_state(dir: &Path) -> ContainerState {
    match observe(dir) {
        Ok(Observed::Known(state)) => state,
        Ok(other) => {
            tracing::debug!(?dir, ?other, "container in no known state");
            ContainerState::Unknown
        }
        Err(e) => {
            tracing::warn!(?dir, "cannot read the container's state: {e}");
            ContainerState::Unknown
        }
    }
}

impl Containers {
    /// The containers under `root` (created if missing), started with the `skiff-shim` at
    /// `shim_binary`.
    pub fn open(
        root: impl Into<PathBuf>,
        shim_binary: impl Into<PathBuf>,
    ) -> Result<Containers, RuntimeError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_err("-", format!("creating {root:?}")))?;
        let monitor = super::monitor_program::install(&root.join(super::monitor_program::DIR))
            .map_err(io_err("-", "installing the shim monitor"))?;
        Ok(Containers {
            root,
            shim_binary: shim_binary.into(),
            monitor,
            start_timeout: DEFAULT_START_TIMEOUT,
            log_rotation: None,
        })
    }

    /// Rotates the logs of the containers started from now on.
    pub fn with_log_rotation(mut self, rotation: LogRotation) -> Containers {
        self.log_rotation = Some(rotation);
        self
    }

    /// How long `start` waits for the shim to say whether the container started.
    pub fn with_start_timeout(mut self, timeout: Duration) -> Containers {
        self.start_timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `skiff-shim` program that runs containers and commands in them.
    pub fn shim_binary(&self) -> &Path {
        &self.shim_binary
    }

    /// Whether container `id` has ended or failed to start (see [`has_ended`]).
    pub fn has_ended(&self, id: &str) -> bool {
        has_ended(&self.root, id)
    }

    /// The directory of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Sets the container up on an overlay of the layers, starts it with its own shim writing
    /// its output to the log file, and returns once the shim says it runs. The container's
    /// rootfs is the overlay, whatever `config.rootfs` says. A container the shim could not
    /// start stays on disk, Exited with reason StartError, until removed.
    pub async fn start(&self, request: StartRequest<'_>) -> Result<ContainerInfo, RuntimeError> {
        let id = request.config.id.clone();
        if !valid_id(&id) {
            return Err(RuntimeError::InvalidId(id));
        }
        let dir = self.container_dir(&id);
        let record = ContainerRecord {
            config: request.config.clone(),
            layers: request.layers.to_vec(),
            log_path: request.log_path.to_path_buf(),
            created_at: Timestamp::now().to_string(),
        };
        {
            let dir = dir.clone();
            blocking(move || prepare(&dir, record)).await?;
        }

        let shim_args = ShimArgs {
            id: id.clone(),
            bundle: dir.clone(),
            state_root: dir.join("libcontainer"),
            log: request.log_path.to_path_buf(),
            state_dir: dir.join("state"),
            log_max_size: self.log_rotation.map(|r| r.max_size),
            log_max_files: self.log_rotation.map(|r| r.max_files),
            monitor: self.monitor.clone(),
        };
        let child = tokio::process::Command::new(&self.shim_binary)
            .args(shim_args.to_args())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(&id, format!("running {:?}", self.shim_binary)))?;
        let timeout = self.start_timeout;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out.map_err(io_err(&id, "waiting for the shim"))?,
            Err(_) => return Err(RuntimeError::StartTimeout { id, timeout }),
        };
        let state = StateDir(shim_args.state_dir.clone());
        match output.status.code() {
            Some(EXIT_STARTED) => {
                let started = state
                    .read::<StartedRecord>(STARTED)
                    .map_err(io_err(&id, format!("reading {STARTED}")))?
                    .ok_or_else(|| RuntimeError::Start {
                        id: id.clone(),
                        message: format!("the shim said it started but wrote no {STARTED}"),
                    })?;
                Ok(ContainerInfo {
                    id,
                    dir,
                    pid: started.init.pid,
                    started_at: parse_time(&started.started_at).unwrap_or_else(Timestamp::now),
                    log_path: request.log_path.to_path_buf(),
                })
            }
            Some(EXIT_START_FAILED) => {
                let message = state
                    .read::<StartErrorRecord>(START_ERROR)
                    .ok()
                    .flatten()
                    .map(|e| e.message)
                    .unwrap_or_else(|| tail(&state.file(SHIM_LOG), 5));
                Err(RuntimeError::Start { id, message })
            }
            Some(EXIT_SHIM_DIED) => Err(RuntimeError::Start {
                message: format!("the shim died: {}", tail(&state.file(SHIM_LOG), 5)),
                id,
            }),
            other => Err(RuntimeError::Start {
                message: format!(
                    "the shim failed ({other:?}): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                id,
            }),
        }
    }

    /// What container `id`'s files say (a few small reads: cheap enough to call anywhere).
    pub fn state(&self, id: &str) -> ContainerState {
        if !valid_id(id) {
            return ContainerState::Unknown;
        }
        read_state(&self.container_dir(id))
    }

    /// Every container under the root, with its state, by id: what a restarted agent adopts.
    pub fn list(&self) -> Result<Vec<(String, ContainerState)>, RuntimeError> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(io_err("-", format!("listing {:?}", self.root)))?;
        let mut out: Vec<(String, ContainerState)> = entries
            .flatten()
            .filter(|e| e.path().join(RECORD).exists())
            .filter_map(|e| {
                let id = e.file_name().to_str()?.to_string();
                Some((id, read_state(&e.path())))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The agent's record of container `id`.
    pub fn record(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        if !valid_id(id) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        read_json::<ContainerRecord>(&self.container_dir(id).join(RECORD))
            .map_err(io_err(id, format!("reading {RECORD}")))?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    /// Sends `signal` to container `id`'s init process, if it still runs: no exit recorded, and
    /// the process with the recorded pid has the recorded start time (not a reused pid). The
    /// init is PID 1 of the container's namespace: the kernel delivers only SIGKILL, SIGSTOP
    /// and the signals it has a handler for.
    pub fn signal(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        if !valid_id(id) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        let dir = self.container_dir(id);
        if !dir.join(RECORD).exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let state = StateDir(dir.join("state"));
        let not_running = || RuntimeError::NotRunning(id.to_string());
        if state.file(EXIT).exists() {
            return Err(not_running());
        }
        let started = state
            .read::<StartedRecord>(STARTED)
            .map_err(io_err(id, format!("reading {STARTED}")))?
            .ok_or_else(not_running)?;
        if !is_alive(&started.init) {
            return Err(not_running());
        }
        nix::sys::signal::kill(Pid::from_raw(started.init.pid), signal).map_err(|source| {
            match source {
                nix::Error::ESRCH => not_running(),
                source => RuntimeError::Signal {
                    id: id.to_string(),
                    signal,
                    source,
                },
            }
        })
    }

    /// Waits until container `id` has exited, or `timeout` passes; returns its last state.
    /// It looks every millisecond at first (short-lived containers end within a few), then
    /// backs off to every 5 ms.
    pub async fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerState {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let state = self.state(id);
            if state.is_exited() || tokio::time::Instant::now() >= deadline {
                return state;
            }
            tokio::time::sleep(pause).await;
            pause = (pause + pause / 4).min(Duration::from_millis(5));
        }
    }

    /// Deletes container `id`, which must have ended: unmounts its rootfs and removes its
    /// directory. A container whose shim died is cleaned up too (its cgroup removed) once its
    /// init process is gone. Removing a container that does not exist does nothing.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if !valid_id(id) {
            return Err(RuntimeError::InvalidId(id.to_string()));
        }
        let id = id.to_string();
        let dir = self.container_dir(&id);
        blocking(move || {
            if !dir.exists() {
                return Ok(());
            }
            match observe(&dir).map_err(io_err(&id, "reading its state"))? {
                Observed::Known(ContainerState::Running { .. })
                | Observed::Starting
                | Observed::Orphaned { init_alive: true } => {
                    return Err(RuntimeError::StillRunning(id))
                }
                Observed::Orphaned { init_alive: false } => {
                    // No shim cleaned up after it: its cgroup may be left.
                    if let Ok(Some(record)) = read_json::<ContainerRecord>(&dir.join(RECORD)) {
                        let path = &record.config.cgroups_path;
                        if !path.as_os_str().is_empty() {
                            if let Err(e) = super::cgroups::remove_cgroup(path) {
                                tracing::warn!(%id, "removing cgroup {path:?}: {e}");
                            }
                        }
                    }
                }
                Observed::Known(_) | Observed::Missing => {}
            }
            rootfs::unmount_rootfs(&dir).map_err(|source| RuntimeError::Rootfs {
                id: id.clone(),
                source,
            })?;
            std::fs::remove_dir_all(&dir).map_err(io_err(&id, format!("removing {dir:?}")))
        })
        .await
    }
}

/// Writes the container's directory: rootfs mounted, config.json, container.json. Undoes it
/// all on failure.
fn prepare(dir: &Path, mut record: ContainerRecord) -> Result<(), RuntimeError> {
    let id = record.config.id.clone();
    if dir.exists() {
        return Err(RuntimeError::Exists(id));
    }
    std::fs::create_dir_all(dir).map_err(io_err(&id, format!("creating {dir:?}")))?;
    let result = (|| {
        let create = |message: String| RuntimeError::Create {
            id: id.clone(),
            message,
        };
        let rootfs =
            rootfs::mount_rootfs(dir, &record.layers).map_err(|e| create(e.to_string()))?;
        record.config.rootfs = rootfs;
        let host = HostInfo::detect(record.config.privileged).map_err(|e| create(e.to_string()))?;
        let spec =
            build_spec(&record.config, &host).map_err(|e: SpecError| create(e.to_string()))?;
        spec.save(dir.join("config.json"))
            .map_err(|e| create(format!("writing config.json: {e}")))?;
        write_atomic(&dir.join(RECORD), &record).map_err(io_err(&id, format!("writing {RECORD}")))
    })();
    if result.is_err() {
        let _ = rootfs::unmount_rootfs(dir);
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}
