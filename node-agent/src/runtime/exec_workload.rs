//! The last steps of an exec'd command inside its container: libcontainer's tenant process
//! (in the container's namespaces and cgroup, as the container's user, with its capabilities)
//! calls [`ExecWorkload`] to run the command. It finds the executable in the container's PATH
//! as runc does (Go's `exec.LookPath`, with its messages: `exec: "x": executable file not
//! found in $PATH`), ties the command's life to the shim's (parent-death signal), clears the
//! signal mask the shim set, sets the terminal's first size, applies the container's seccomp
//! filter (libcontainer's tenant builder drops it) and execs. Messages of failures also go to
//! the shim through `reason`, word for word.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libcontainer::oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{AccessFlags, Pid};

use super::pty::{set_window_size, WindowSize};

/// The PATH a command is looked up in when the container's environment has none (runc's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An errno as Go prints it: "no such file or directory".
fn errno_text(e: nix::Error) -> String {
    let desc = e.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => desc.to_string(),
    }
}

/// Whether `path` is a file this process may execute.
fn check_executable(path: &Path) -> Result<(), nix::Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(nix::libc::ENOENT)))?;
    if meta.is_dir() {
        return Err(nix::Error::EISDIR);
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(nix::Error::EACCES);
    }
    nix::unistd::access(path, AccessFlags::X_OK)
}

/// The executable `name` names, looked up as Go's `exec.LookPath` does: a name with a slash
/// is taken as it is, any other is searched in `path_var`'s directories (an empty entry is
/// the current directory). Errors are the messages runc shows.
pub fn look_path(name: &str, path_var: &str) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("exec: no command".to_string());
    }
    if name.contains('/') {
        let path = PathBuf::from(name);
        return match check_executable(&path) {
            Ok(()) => Ok(path),
            Err(nix::Error::ENOENT) => Err(format!(
                "exec: {name:?}: stat {name}: no such file or directory"
            )),
            Err(e) => Err(format!("exec: {name:?}: {}", errno_text(e))),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let path = Path::new(dir).join(name);
        if check_executable(&path).is_ok() {
            return Ok(path);
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

/// The PATH of a process's environment (`NAME=value` entries), or [`DEFAULT_PATH`].
pub fn path_of(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// How the command runs, beyond what libcontainer does for a tenant.
#[derive(Clone, Debug)]
pub struct ExecWorkload {
    /// The shim: the command's parent, whose death kills it.
    pub shim: Pid,
    /// The container's seccomp filter, applied just before the exec.
    pub seccomp: Option<LinuxSeccomp>,
    /// The container's capabilities, when the process was given more to install the filter
    /// (without no_new_privs that takes CAP_SYS_ADMIN): dropped back to these once it is in.
    pub restore_capabilities: Option<LinuxCapabilities>,
    /// The terminal's first size (its stdin is the terminal then).
    pub window_size: Option<WindowSize>,
    /// Where a failure's message goes, for the shim to report.
    pub reason: Option<Arc<File>>,
}

impl ExecWorkload {
    fn tell(&self, message: &str) {
        if let Some(f) = &self.reason {
            let _ = (&**f).write_all(message.as_bytes());
        }
    }

    fn args(spec: &Spec) -> Option<(&[String], &str)> {
        let process = spec.process().as_ref()?;
        let args = process.args().as_deref().filter(|a| !a.is_empty())?;
        let env = process.env().as_deref().unwrap_or(&[]);
        Some((args, path_of(env)))
    }

    fn run(&self, spec: &Spec) -> Result<(), String> {
        let (args, path_var) = Self::args(spec).ok_or("exec: no command")?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| format!("setting the parent-death signal: {e}"))?;
        // Seen from inside a pid namespace the shim, outside it, is pid 0; any other parent
        // means the shim died before the signal was set.
        let parent = nix::unistd::getppid();
        if parent != Pid::from_raw(0) && parent != self.shim {
            return Err("the exec shim is gone".to_string());
        }
        SigSet::empty()
            .thread_set_mask()
            .map_err(|e| format!("clearing the signal mask: {e}"))?;
        if let Some(size) = self.window_size {
            set_window_size(std::io::stdin().as_fd(), size)
                .map_err(|e| format!("setting the terminal's size: {e}"))?;
        }
        let path = look_path(&args[0], path_var)?;
        if let Some(seccomp) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(seccomp)
                .map_err(|e| format!("applying the container's seccomp filter: {e}"))?;
            if let Some(caps) = &self.restore_capabilities {
                libcontainer::capabilities::drop_privileges(
                    caps,
                    &*SyscallType::Linux.create_syscall(),
                )
                .map_err(|e| format!("dropping capabilities: {e}"))?;
            }
        }
        let c = |s: &str| CString::new(s).map_err(|_| format!("exec: {s:?}: contains NUL"));
        let file = c(&path.to_string_lossy())?;
        let argv = args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
        let err = match nix::unistd::execv(&file, &argv) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        Err(format!("exec: {:?}: {}", args[0], errno_text(err)))
    }
}

impl Executor for ExecWorkload {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let (args, path_var) = Self::args(spec).ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("exec: no command".into())
        })?;
        look_path(&args[0], path_var).map(drop).map_err(|m| {
            self.tell(&m);
            ExecutorValidationError::ArgValidationError(m)
        })
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // Returns only when the command could not be exec'd.
        let message = match self.run(spec) {
            Ok(()) => "exec returned".to_string(),
            Err(m) => m,
        };
        self.tell(&message);
        Err(ExecutorError::Other(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn commands_are_found_as_runc_finds_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(&a).expect("a");
        std::fs::create_dir_all(&b).expect("b");
        file(&a, "tool", 0o644); // not executable: skipped
        let tool = file(&b, "tool", 0o755);
        std::fs::create_dir_all(a.join("dir")).expect("dir");
        let path = format!("{}:{}", a.display(), b.display());

        assert_eq!(look_path("tool", &path), Ok(tool.clone()));
        assert_eq!(
            look_path("nosuch", &path),
            Err(r#"exec: "nosuch": executable file not found in $PATH"#.to_string())
        );
        assert_eq!(
            look_path("dir", &path),
            Err(r#"exec: "dir": executable file not found in $PATH"#.to_string())
        );
        let tool_s = tool.to_string_lossy().to_string();
        assert_eq!(look_path(&tool_s, ""), Ok(tool));
        let missing = tmp.path().join("missing").to_string_lossy().to_string();
        assert_eq!(
            look_path(&missing, &path),
            Err(format!(
                "exec: {missing:?}: stat {missing}: no such file or directory"
            ))
        );
        let plain = a.join("tool").to_string_lossy().to_string();
        assert_eq!(
            look_path(&plain, &path),
            Err(format!("exec: {plain:?}: permission denied"))
        );
        let dir = a.join("dir").to_string_lossy().to_string();
        assert_eq!(
            look_path(&dir, &path),
            Err(format!("exec: {dir:?}: is a directory"))
        );
    }

    #[test]
    fn the_path_comes_from_the_environment() {
        let env = vec!["HOME=/root".to_string(), "PATH=/bin".to_string()];
        assert_eq!(path_of(&env), "/bin");
        assert_eq!(path_of(&env[..1]), DEFAULT_PATH);
    }
}
