//! `skiff-shim exec`: one command run in a running container, for the agent's `Exec`. The agent
//! runs it with the report socket (`exec_report`) as `--control-fd` and, without a terminal,
//! the command's stdin, stdout and stderr as its own; the shim hands those to the command and
//! keeps none. It joins the container with libcontainer's tenant builder (its namespaces and
//! cgroup; the process part of its config.json: env, cwd, user, capabilities, no_new_privs,
//! rlimits, OOM score; the command in [`ExecWorkload`](super::exec_workload), which adds the
//! seccomp filter), then reports `Started` (with a terminal's master end), waits for the
//! command and reports `Exited`.
//!
//! libcontainer writes only under a directory of this exec's own, `<exec-root>/exec-XXXX/`,
//! removed at the end: a copy of the container's state.json (the tenant builder reads it and
//! keeps its sockets beside it), the process.json it runs, and the terminal's console socket.
//! The container's own state and the shim's records are only read.
//!
//! The command is a session leader (libcontainer makes it one). When the agent's end of the
//! report socket closes, or SIGTERM, SIGINT or SIGHUP arrives, the shim kills the command's
//! whole session with SIGKILL; if the shim itself is killed, the parent-death signal ends the
//! command. Those three signals are held back until the command runs, so that a request to
//! end it during the start is not lost.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::{Capability, LinuxCapabilities, LinuxSeccomp, Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recv, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{dup, dup2, Pid};

use super::exec_report::{self, FailureKind, Report};
use super::exec_workload::ExecWorkload;
use super::pty::WindowSize;
use super::shim::{describe, EXIT_START_FAILED, EXIT_USAGE};

/// The file in libcontainer's state directory that says the container exists.
const STATE_FILE: &str = "state.json";
/// The process the tenant runs, in the exec's directory.
const PROCESS_FILE: &str = "process.json";
/// The console socket's name in the exec's directory.
const CONSOLE_SOCKET: &str = "console.sock";

/// `skiff-shim exec`'s arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-shim exec",
    about = "Runs one command in a running Skiff container and reports to the agent"
)]
pub struct ExecArgs {
    /// Container ID.
    #[arg(long)]
    pub id: String,
    /// The container's OCI bundle (its config.json).
    #[arg(long)]
    pub bundle: PathBuf,
    /// libcontainer's state root of the container (it keeps `<root>/<id>/`).
    #[arg(long)]
    pub state_root: PathBuf,
    /// Where this exec makes its own directory.
    #[arg(long)]
    pub exec_root: PathBuf,
    /// The descriptor of the report socket (`exec_report`).
    #[arg(long)]
    pub control_fd: i32,
    /// Run the command on a new terminal; its master end goes to the agent.
    #[arg(long)]
    pub tty: bool,
    /// The terminal's first height.
    #[arg(long, requires = "tty")]
    pub rows: Option<u16>,
    /// The terminal's first width.
    #[arg(long, requires = "tty")]
    pub cols: Option<u16>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl ExecArgs {
    /// The argument list (after the binary) that makes a shim with these arguments.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["exec".into()];
        for (flag, value) in [
            ("--id", self.id.as_ref()),
            ("--bundle", self.bundle.as_os_str()),
            ("--state-root", self.state_root.as_os_str()),
            ("--exec-root", self.exec_root.as_os_str()),
        ] {
            out.push(flag.into());
            out.push(value.to_os_string());
        }
        out.push("--control-fd".into());
        out.push(self.control_fd.to_string().into());
        if self.tty {
            out.push("--tty".into());
        }
        for (flag, value) in [("--rows", self.rows), ("--cols", self.cols)] {
            if let Some(v) = value {
                out.push(flag.into());
                out.push(v.to_string().into());
            }
        }
        out.push("--".into());
        out.extend(self.command.iter().map(OsString::from));
        out
    }

    fn window_size(&self) -> Option<WindowSize> {
        match (self.rows, self.cols) {
            (Some(rows), Some(cols)) if rows > 0 && cols > 0 => Some(WindowSize { rows, cols }),
            _ => None,
        }
    }
}

/// Why the command did not start (or was lost): reported as `Failed`.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    message: String,
}

fn runtime(message: impl Into<String>) -> Failure {
    Failure {
        kind: FailureKind::Runtime,
        message: message.into(),
    }
}

/// The whole `skiff-shim exec` (its arguments after the binary name start with `exec`).
/// Never returns.
pub fn main() -> ! {
    let args = match ExecArgs::try_parse_from(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let control = match take_control_fd(args.control_fd) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            eprintln!("skiff-shim exec: --control-fd {}: {e}", args.control_fd);
            std::process::exit(EXIT_USAGE);
        }
    };
    match run(&args, &control) {
        Ok(code) => std::process::exit(code),
        Err(f) => {
            let _ = exec_report::send(control.as_fd(), &Report::failed(f.kind, f.message), None);
            std::process::exit(EXIT_START_FAILED)
        }
    }
}

/// The report socket the agent passed: checked to be a socket, made close-on-exec.
fn take_control_fd(fd: i32) -> Result<OwnedFd, String> {
    if fd < 3 {
        return Err("must be 3 or more (0, 1 and 2 are the command's)".into());
    }
    let stat = nix::sys::stat::fstat(fd).map_err(|e| e.to_string())?;
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err("not a socket".into());
    }
    // SAFETY: the descriptor is open (fstat succeeded), was handed to this process by its
    // parent for this purpose, and nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        owned.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| e.to_string())?;
    Ok(owned)
}

/// The signals that ask the shim to end the command.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// The process the tenant runs: the container's, with the command, the terminal flag, and
/// (see [`ExecWorkload::restore_capabilities`]) CAP_SYS_ADMIN and CAP_SETPCAP added while the
/// seccomp filter goes in, when the container has a filter but no no_new_privs. Returns the
/// process, the filter and the capabilities to drop back to. Pure.
pub fn exec_process(
    spec: &Spec,
    command: &[String],
    tty: bool,
) -> Result<(Process, Option<LinuxSeccomp>, Option<LinuxCapabilities>), String> {
    let mut process = spec
        .process()
        .clone()
        .ok_or("the container's config.json has no process")?;
    process
        .set_args(Some(command.to_vec()))
        .set_terminal(Some(tty))
        .set_console_size(None);
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let mut restore = None;
    if seccomp.is_some() && process.no_new_privileges() != Some(true) {
        let original = process.capabilities().clone().unwrap_or_default();
        let mut raised = original.clone();
        let add = |set: &Option<libcontainer::oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.insert(Capability::SysAdmin);
            set.insert(Capability::Setpcap);
            Some(set)
        };
        raised
            .set_bounding(add(original.bounding()))
            .set_effective(add(original.effective()))
            .set_permitted(add(original.permitted()));
        process.set_capabilities(Some(raised));
        restore = Some(original);
    }
    Ok((process, seccomp, restore))
}

/// This exec's directory under the exec root; removed when dropped.
fn make_exec_dir(exec_root: &Path) -> Result<tempfile::TempDir, Failure> {
    std::fs::create_dir_all(exec_root)
        .map_err(|e| runtime(format!("creating {exec_root:?}: {e}")))?;
    tempfile::Builder::new()
        .prefix("exec-")
        .tempdir_in(exec_root)
        .map_err(|e| runtime(format!("creating a directory in {exec_root:?}: {e}")))
}

/// Copies the container's state.json into the exec's directory, as `<dir>/<id>/state.json`.
fn copy_state(args: &ExecArgs, dir: &Path) -> Result<(), Failure> {
    let from = args.state_root.join(&args.id).join(STATE_FILE);
    let bytes = match std::fs::read(&from) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure {
                kind: FailureKind::NotRunning,
                message: format!("container {} is not running", args.id),
            })
        }
        Err(e) => return Err(runtime(format!("reading {from:?}: {e}"))),
    };
    let to = dir.join(&args.id);
    std::fs::create_dir_all(&to).map_err(|e| runtime(format!("creating {to:?}: {e}")))?;
    std::fs::write(to.join(STATE_FILE), bytes)
        .map_err(|e| runtime(format!("writing {:?}: {e}", to.join(STATE_FILE))))
}

/// The console socket, bound by a name relative to its directory (a full path may be longer
/// than a socket address holds).
fn bind_console(dir: &Path) -> Result<UnixListener, Failure> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    std::env::set_current_dir(dir).map_err(|e| runtime(format!("entering {dir:?}: {e}")))?;
    let listener = UnixListener::bind(CONSOLE_SOCKET)
        .map_err(|e| runtime(format!("binding the console socket in {dir:?}: {e}")));
    let _ = std::env::set_current_dir(cwd);
    listener
}

/// Receives the terminal's master end that the command's process sent to the console socket.
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, Failure> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    let (conn, _) = listener
        .accept()
        .map_err(|e| runtime(format!("accepting on the console socket: {e}")))?;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| runtime(format!("receiving the terminal: {e}")))?;
    let cmsgs = msg
        .cmsgs()
        .map_err(|e| runtime(format!("receiving the terminal: {e}")))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = c {
            let mut owned: Vec<OwnedFd> = fds
                .into_iter()
                // SAFETY: descriptors received through SCM_RIGHTS are new in this process
                // and owned by nothing else.
                .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
                .collect();
            if let Some(master) = owned.pop() {
                return Ok(master);
            }
        }
    }
    Err(runtime("the command's process sent no terminal"))
}

/// Everything up to the command's end. Returns its exit code.
fn run(args: &ExecArgs, control: &Arc<OwnedFd>) -> Result<i32, Failure> {
    let stop = stop_signals();
    stop.thread_block()
        .map_err(|e| runtime(format!("blocking signals: {e}")))?;
    // Rust ignores SIGPIPE, and ignored signals survive exec: the command gets the default.
    // SAFETY: SIG_DFL installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };

    let dir = make_exec_dir(&args.exec_root)?;
    copy_state(args, dir.path())?;
    let spec = Spec::load(args.bundle.join("config.json"))
        .map_err(|e| runtime(format!("reading the container's config.json: {e}")))?;
    let (process, seccomp, restore_capabilities) =
        exec_process(&spec, &args.command, args.tty).map_err(runtime)?;
    let process_file = dir.path().join(PROCESS_FILE);
    let json = serde_json::to_vec(&process).map_err(|e| runtime(e.to_string()))?;
    std::fs::write(&process_file, json)
        .map_err(|e| runtime(format!("writing {process_file:?}: {e}")))?;
    let (reason_r, reason_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| runtime(format!("pipe: {e}")))?;
    let console = if args.tty {
        Some(bind_console(dir.path())?)
    } else {
        None
    };

    let workload = ExecWorkload {
        shim: Pid::this(),
        seccomp,
        restore_capabilities,
        window_size: args.window_size(),
        reason: Some(Arc::new(File::from(reason_w))),
    };
    let stdio = || -> nix::Result<(OwnedFd, OwnedFd, OwnedFd)> {
        let fd = |n| dup(n).map(owned_dup);
        Ok((fd(0)?, fd(1)?, fd(2)?))
    };
    let built = ContainerBuilder::new(args.id.clone(), SyscallType::Linux)
        .with_root_path(dir.path())
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            let b = b.with_executor(workload.clone());
            let b = match &console {
                Some(_) => b.with_console_socket(Some(dir.path().join(CONSOLE_SOCKET))),
                None => {
                    let (i, o, e) = stdio().map_err(LibcontainerError::OtherSyscall)?;
                    b.with_stdin(i).with_stdout(o).with_stderr(e)
                }
            };
            b.as_tenant()
                .with_process(Some(&process_file))
                .with_detach(args.tty)
                .build()
        });
    drop(workload);
    let pid = match built {
        Ok(pid) => pid,
        Err(e) => return Err(start_failure(&e, reason_r)),
    };
    // SAFETY: SIG_IGN installs no handler code. From here on a closed socket must not kill
    // the shim.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };

    let started = (|| -> Result<(), Failure> {
        let master = match &console {
            Some(listener) => Some(receive_master(listener)?),
            None => None,
        };
        if !args.tty {
            release_stdio();
        }
        exec_report::send(
            control.as_fd(),
            &Report::Started { pid: pid.as_raw() },
            master.as_ref().map(|m| m.as_fd()),
        )
        .map_err(|e| runtime(format!("telling the agent the command started: {e}")))
    })();
    if let Err(f) = started {
        kill_session(pid);
        let _ = wait_for(pid);
        return Err(f);
    }
    drop(console);

    let signals = match SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            kill_session(pid);
            let _ = wait_for(pid);
            return Err(runtime(format!("signalfd: {e}")));
        }
    };
    let watched = control.clone();
    let killing = Arc::new(Mutex::new(()));
    let watcher_killing = killing.clone();
    std::thread::spawn(move || watch(&watched, &signals, pid, &watcher_killing));

    let code = wait_for(pid);
    // The command may have died of a kill of its session still going on: let it finish, or
    // the shim's exit would cut it short.
    drop(killing.lock());
    drop(dir);
    let _ = exec_report::send(control.as_fd(), &Report::Exited { code }, None);
    Ok(code)
}

/// A descriptor fresh from `dup`, owned.
fn owned_dup(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `dup` just returned this descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The shim's own stdin, stdout and stderr become /dev/null, so that only the command holds
/// the agent's pipes (their ends are the command's ends).
fn release_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for n in 0..3 {
            let _ = dup2(null.as_raw_fd(), n);
        }
    }
}

/// Why the start failed: the message the command's process wrote to the reason pipe, word for
/// word, else libcontainer's.
fn start_failure(err: &LibcontainerError, reason: OwnedFd) -> Failure {
    let _ = nix::fcntl::fcntl(
        reason.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut said = String::new();
    let _ = File::from(reason).read_to_string(&mut said);
    if !said.trim().is_empty() {
        return Failure {
            kind: FailureKind::Command,
            message: said.trim().to_string(),
        };
    }
    let message = describe(err);
    if matches!(err, LibcontainerError::IncorrectStatus(_)) {
        return Failure {
            kind: FailureKind::NotRunning,
            message: format!("the container is not running: {message}"),
        };
    }
    runtime(message)
}

/// Waits for the command; its exit code, 128 + the signal that killed it.
fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// Kills the command's session when the agent's end of the report socket closes or a stop
/// signal arrives, holding `killing` while it does.
fn watch(control: &OwnedFd, signals: &SignalFd, command: Pid, killing: &Mutex<()>) {
    let end = || {
        let _held = killing.lock();
        kill_session(command);
    };
    loop {
        let mut fds = [
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        }
        let fired = |p: &PollFd| !p.revents().unwrap_or(PollFlags::empty()).is_empty();
        let (agent_event, signal_event) = (fired(&fds[0]), fired(&fds[1]));
        if agent_event {
            let mut b = [0u8; 1];
            match recv(control.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n > 0 => {} // the agent sends nothing; ignore
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                _ => return end(),
            }
        }
        if signal_event {
            let _ = signals.read_signal();
            return end();
        }
    }
}

/// The state and session of a process, from its /proc/<pid>/stat line.
pub fn stat_session(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let session = fields.nth(2)?.parse().ok()?;
    Some((state, session))
}

/// The live processes (not zombies) in session `sid`, by /proc.
fn session_members(sid: i32) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_session(&s))
                .is_some_and(|(state, s)| s == sid && state != 'Z' && state != 'X')
        })
        .map(Pid::from_raw)
        .collect()
}

/// SIGKILLs every process of the command's session (the command and what it started, unless
/// they made sessions of their own), until none is left alive or a few seconds pass.
fn kill_session(command: Pid) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let _ = kill(command, Signal::SIGKILL);
    loop {
        let members = session_members(command.as_raw());
        if members.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in members {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{
        Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxSeccompAction,
        LinuxSeccompBuilder, ProcessBuilder, SpecBuilder,
    };

    fn spec(seccomp: bool, no_new_privs: Option<bool>) -> Spec {
        let caps: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        let mut process = ProcessBuilder::default()
            .args(vec!["sleep".to_string(), "1".to_string()])
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/work")
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps.clone())
                    .build()
                    .expect("caps"),
            )
            .build()
            .expect("process");
        process.set_no_new_privileges(no_new_privs);
        let mut linux = LinuxBuilder::default().build().expect("linux");
        if seccomp {
            linux.set_seccomp(Some(
                LinuxSeccompBuilder::default()
                    .default_action(LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .expect("seccomp"),
            ));
        }
        SpecBuilder::default()
            .process(process)
            .linux(linux)
            .build()
            .expect("spec")
    }

    #[test]
    fn the_process_is_the_containers_with_the_command() {
        let cmd = vec!["echo".to_string(), "hi".to_string()];
        let (p, seccomp, restore) = exec_process(&spec(false, None), &cmd, true).expect("ok");
        assert_eq!(p.args().as_deref(), Some(&cmd[..]));
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.cwd(), Path::new("/work"));
        assert_eq!(p.env().as_deref(), Some(&["PATH=/bin".to_string()][..]));
        assert!(seccomp.is_none() && restore.is_none());
        let caps = p.capabilities().clone().expect("caps");
        assert!(!caps
            .bounding()
            .clone()
            .unwrap_or_default()
            .contains(&Capability::SysAdmin));
    }

    #[test]
    fn a_filter_without_no_new_privs_borrows_sys_admin_until_it_is_in() {
        let cmd = vec!["id".to_string()];
        let (p, seccomp, restore) = exec_process(&spec(true, None), &cmd, false).expect("ok");
        assert!(seccomp.is_some());
        let restore = restore.expect("capabilities to drop back to");
        let original: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        assert_eq!(restore.bounding().as_ref(), Some(&original));
        let raised = p.capabilities().clone().expect("caps");
        for set in [raised.bounding(), raised.effective(), raised.permitted()] {
            let set = set.clone().unwrap_or_default();
            assert!(set.contains(&Capability::SysAdmin) && set.contains(&Capability::Setpcap));
            assert!(set.contains(&Capability::Chown));
        }

        // With no_new_privs the filter needs no privilege: nothing is borrowed.
        let (p, seccomp, restore) = exec_process(&spec(true, Some(true)), &cmd, false).expect("ok");
        assert!(seccomp.is_some() && restore.is_none());
        assert_eq!(
            p.capabilities().clone().and_then(|c| c.bounding().clone()),
            Some(original)
        );
    }

    #[test]
    fn sessions_are_read_from_stat_lines() {
        let line = "4242 (sh (x) y) S 4200 4242 4242 34817 4242 4194560 0 0";
        assert_eq!(stat_session(line), Some(('S', 4242)));
        assert_eq!(stat_session("1 (init) Z 0 1 7"), Some(('Z', 7)));
        assert_eq!(stat_session("garbage"), None);
        let me = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let sid = nix::unistd::getsid(None).expect("getsid").as_raw();
        assert_eq!(stat_session(&me).map(|(_, s)| s), Some(sid));
    }

    #[test]
    fn arguments_round_trip() {
        let args = ExecArgs {
            id: "c1".into(),
            bundle: "/b".into(),
            state_root: "/b/libcontainer".into(),
            exec_root: "/b/exec".into(),
            control_fd: 3,
            tty: true,
            rows: Some(24),
            cols: Some(80),
            command: vec!["sh".into(), "-c".into(), "--x".into()],
        };
        let mut argv = vec![OsString::from("skiff-shim")];
        argv.extend(args.to_args().into_iter().skip(1));
        let back = ExecArgs::try_parse_from(argv).expect("parse");
        assert_eq!(back.to_args(), args.to_args());
        assert_eq!(back.window_size(), Some(WindowSize { rows: 24, cols: 80 }));
    }
}
