//! `skiff-shim`: the process that holds one container. The agent runs it (fork and exec of this
//! binary); it forks once more and the first process waits only to tell the agent, by its exit
//! status, whether the container started (0), failed to (1), or the shim itself died (3). The
//! second becomes a session leader and a child subreaper, detached from the agent, so that
//! killing the agent leaves it and the container running. It creates and starts the container
//! with youki's libcontainer, then executes the small `skiff-shim-monitor` in its own process
//! ([`shim_monitor`]), which copies the container's stdout and stderr into the CRI log file,
//! waits for the container's init process, reads the cgroup's OOM kill count, deletes the
//! container (cgroup and libcontainer state), writes `exit.json`, and exits. Everything it
//! reports goes through the files of [`shim_state`](super::shim_state); its own log is
//! `shim.log` in its state directory. `skiff-shim exec …` is the other mode: one command run in
//! a running container (see [`exec_shim`](super::exec_shim)).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{dup2, fork, pipe2, setsid, ForkResult};

use super::log_rotation::{LogRotation, RotatingLog};
use super::shim_monitor::{self, MonitorArgs};
use super::shim_state::{
    process_id, ProcessId, ShimRecord, StartErrorRecord, StartedRecord, StateDir, SHIM, SHIM_LOG,
    STARTED, START_ERROR,
};

/// The program a shim becomes once its container runs (see [`shim_monitor`]).
pub const MONITOR: &str = shim_monitor::PROGRAM;

/// Exit status of the shim's first process: the container runs.
pub const EXIT_STARTED: i32 = 0;
/// The container could not be created or started; `start-error.json` says why.
pub const EXIT_START_FAILED: i32 = 1;
/// Bad arguments or an unusable state directory (message on stderr).
pub const EXIT_USAGE: i32 = 2;
/// The shim died before it could say (see `shim.log`).
pub const EXIT_SHIM_DIED: i32 = 3;

/// The shim's arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-shim",
    about = "Holds one Skiff container: creates it with libcontainer, logs its output, records its exit"
)]
pub struct ShimArgs {
    /// Container ID.
    #[arg(long)]
    pub id: String,
    /// The OCI bundle: a directory holding config.json.
    #[arg(long)]
    pub bundle: PathBuf,
    /// libcontainer's state root (it keeps `<root>/<id>/`).
    #[arg(long)]
    pub state_root: PathBuf,
    /// The container's log file, written in the CRI format.
    #[arg(long)]
    pub log: PathBuf,
    /// Where the shim writes shim.json, started.json, start-error.json, exit.json, shim.log.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Rotate the log once it would pass this many bytes (with `--log-max-files`).
    #[arg(long)]
    pub log_max_size: Option<u64>,
    /// Log files kept when rotating, the current one included.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..))]
    pub log_max_files: Option<u32>,
    /// The monitor program to execute once the container runs (the agent installs its static
    /// one; default: `skiff-shim-monitor` beside this program).
    #[arg(long)]
    pub monitor: Option<PathBuf>,
}

impl ShimArgs {
    /// The argument list that makes a shim with these arguments.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for (flag, value) in [
            ("--id", self.id.as_ref()),
            ("--bundle", self.bundle.as_os_str()),
            ("--state-root", self.state_root.as_os_str()),
            ("--log", self.log.as_os_str()),
            ("--state-dir", self.state_dir.as_os_str()),
        ] {
            out.push(OsString::from(flag));
            out.push(value.to_os_string());
        }
        if let Some(r) = self.log_rotation() {
            out.push("--log-max-size".into());
            out.push(r.max_size.to_string().into());
            out.push("--log-max-files".into());
            out.push(r.max_files.to_string().into());
        }
        if let Some(monitor) = &self.monitor {
            out.push("--monitor".into());
            out.push(monitor.clone().into());
        }
        out
    }

    /// How the log rotates: only when both limits are given.
    pub fn log_rotation(&self) -> Option<LogRotation> {
        Some(LogRotation {
            max_size: self.log_max_size?,
            max_files: self.log_max_files?,
        })
    }
}

/// The whole shim: what `skiff-shim`'s `main` calls. Never returns.
pub fn main() -> ! {
    if std::env::args_os().nth(1).is_some_and(|a| a == "exec") {
        super::exec_shim::main()
    }
    let args = match ShimArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        eprintln!("skiff-shim: cannot create {:?}: {e}", args.state_dir);
        std::process::exit(EXIT_USAGE);
    }
    if let Err(e) = redirect_stdio(&args.state_dir.join(SHIM_LOG)) {
        eprintln!(
            "skiff-shim: cannot open its log in {:?}: {e}",
            args.state_dir
        );
        std::process::exit(EXIT_USAGE);
    }
    let (report_r, report_w) = match pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skiff-shim: pipe: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    // SAFETY: the process is single-threaded here (no runtime, no logging threads yet), so the
    // child may go on running ordinary Rust code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            drop(report_w);
            std::process::exit(await_report(report_r));
        }
        Ok(ForkResult::Child) => {
            drop(report_r);
            std::process::exit(daemon(args, report_w));
        }
        Err(e) => {
            eprintln!("skiff-shim: fork: {e}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// stdin from /dev/null; stdout and stderr appended to the shim's log.
fn redirect_stdio(log: &Path) -> std::io::Result<()> {
    let null = File::open("/dev/null")?;
    let log = OpenOptions::new().create(true).append(true).open(log)?;
    dup2(null.as_raw_fd(), 0)?;
    dup2(log.as_raw_fd(), 1)?;
    dup2(log.as_raw_fd(), 2)?;
    Ok(())
}

/// The first process: one byte from the daemon, or end of file if it died.
fn await_report(report: OwnedFd) -> i32 {
    let mut f = File::from(report);
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte) {
            Ok(1) => return i32::from(byte[0]),
            Ok(_) => return EXIT_SHIM_DIED,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return EXIT_SHIM_DIED,
        }
    }
}

fn report(fd: OwnedFd, status: i32) {
    let mut f = File::from(fd);
    let _ = f.write_all(&[status as u8]);
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// An error with its causes, as one line.
pub(super) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The detached shim. Returns its exit status.
fn daemon(args: ShimArgs, report_fd: OwnedFd) -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,node_agent=info")),
        )
        .try_init();
    // Rust's runtime ignores SIGPIPE, and ignored signals survive exec: restore the default so
    // that the container's processes, cloned from this one, get it.
    // SAFETY: SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let state = StateDir(args.state_dir.clone());
    if let Err(e) = setsid() {
        tracing::warn!("setsid: {e}");
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("PR_SET_CHILD_SUBREAPER: {e}");
    }
    let me = process_id(std::process::id() as i32);
    if let Some(shim) = me {
        if let Err(e) = state.write(SHIM, &ShimRecord { shim }) {
            tracing::error!("cannot write {SHIM}: {e}");
        }
    }

    let fail = |phase: &str, message: String, report_fd: OwnedFd| -> i32 {
        tracing::error!(id = %args.id, phase, "container failed: {message}");
        let record = StartErrorRecord {
            phase: phase.to_string(),
            message,
            at: now(),
        };
        if let Err(e) = state.write(START_ERROR, &record) {
            tracing::error!("cannot write {START_ERROR}: {e}");
        }
        report(report_fd, EXIT_START_FAILED);
        EXIT_START_FAILED
    };

    let log = match open_log(&args.log, args.log_rotation()) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                "create",
                format!("cannot open log file {:?}: {e}", args.log),
                report_fd,
            )
        }
    };
    let pipes = (|| -> std::io::Result<_> {
        let stdin = File::open("/dev/null")?;
        let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok((stdin, out_r, out_w, err_r, err_w))
    })();
    let (stdin, out_r, out_w, err_r, err_w) = match pipes {
        Ok(p) => p,
        Err(e) => {
            return fail(
                "create",
                format!("cannot make the container's stdio: {e}"),
                report_fd,
            )
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.state_root) {
        return fail(
            "create",
            format!("cannot create {:?}: {e}", args.state_root),
            report_fd,
        );
    }

    // Create: libcontainer forks the container's processes from this one (still single-threaded).
    let built = ContainerBuilder::new(args.id.clone(), SyscallType::Linux)
        .with_root_path(&args.state_root)
        .and_then(|b| b.validate_id())
        .map(|b| {
            b.with_stdin(stdin)
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_init(&args.bundle)
                .with_systemd(false)
                .with_detach(true)
        })
        .and_then(|b| b.build());
    // The container's processes have been cloned from this one: from now on a closed pipe
    // must not kill the shim (Rust ignores SIGPIPE at startup; see `daemon`'s start).
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            let detail = drain_failure_output(&out_r, &err_r);
            let mut message = describe(&e);
            if let Some(d) = detail {
                message.push_str(": ");
                message.push_str(&d);
            }
            return fail("create", message, report_fd);
        }
    };
    let started_at = now();
    if let Err(e) = container.start() {
        let message = describe(&e);
        if let Err(e) = container.delete(true) {
            tracing::warn!("deleting the failed container: {}", describe(&e));
        }
        return fail("start", message, report_fd);
    }
    let Some(init) = container.pid() else {
        return fail(
            "start",
            "libcontainer reported no init pid".into(),
            report_fd,
        );
    };
    // An init that already ended has no identity left to check signals against.
    let init_id = process_id(init.as_raw()).unwrap_or(ProcessId {
        pid: init.as_raw(),
        start_ticks: 0,
    });
    let started = StartedRecord {
        init: init_id,
        started_at,
    };
    if let Err(e) = state.write(STARTED, &started) {
        tracing::error!("cannot write {STARTED}: {e}");
    }
    report(report_fd, EXIT_STARTED);
    let monitor = MonitorArgs {
        stdout_fd: out_r.as_raw_fd(),
        stderr_fd: err_r.as_raw_fd(),
        init: init.as_raw(),
        started_at: started.started_at,
        id: args.id.clone(),
        cgroups_path: container_cgroups_path(&args.bundle).unwrap_or_default(),
        container_state: container.root.clone(),
        state_dir: args.state_dir.clone(),
        log: args.log.clone(),
        rotation: args.log_rotation(),
    };
    drop(log);
    drop(container);
    become_monitor(args.monitor.as_deref(), &monitor, [out_r, err_r])
}

/// Executes the monitor program (`program`, else `skiff-shim-monitor` beside this one) in this
/// process with the pipes kept open; if that cannot be done, monitors in this process instead.
fn become_monitor(program: Option<&Path>, monitor: &MonitorArgs, pipes: [OwnedFd; 2]) -> i32 {
    let program = program.map(Path::to_path_buf).or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.join(MONITOR)))
    });
    if let Some(program) = program.filter(|p| p.is_file()) {
        let inheritable = pipes.iter().all(|fd| {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .is_ok()
        });
        if inheritable {
            let err = std::process::Command::new(&program)
                .arg0(MONITOR)
                .args(monitor.to_args())
                .exec();
            tracing::warn!(
                "cannot execute {program:?} ({err}); the shim monitors the container itself"
            );
        }
    }
    // The descriptors now belong to the monitor's code, which takes them by number.
    for fd in pipes {
        let _ = fd.into_raw_fd();
    }
    shim_monitor::run(monitor.clone())
}

/// What the container's processes wrote before failing: libcontainer's init logs the cause of
/// a failed setup there (its stderr is the container's by then). All of it goes to the shim's
/// log; the first error line (the cause), without tracing's prefix, is returned for the message.
fn drain_failure_output(out_r: &OwnedFd, err_r: &OwnedFd) -> Option<String> {
    let mut text = String::new();
    for fd in [out_r, err_r] {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    if text.is_empty() {
        return None;
    }
    tracing::error!("the container's processes said:\n{}", text.trim_end());
    text.lines()
        .find(|l| l.contains("ERROR"))
        .map(|l| match l.find("ERROR ") {
            Some(i) => l[i + 6..].trim().to_string(),
            None => l.trim().to_string(),
        })
}

fn open_log(path: &Path, rotation: Option<LogRotation>) -> std::io::Result<RotatingLog> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    RotatingLog::open(path, rotation)
}

/// The cgroup path in the bundle's config.json.
fn container_cgroups_path(bundle: &Path) -> Option<PathBuf> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    spec.linux().as_ref()?.cgroups_path().clone()
}
