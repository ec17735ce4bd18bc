//! The files through which a shim tells the agent about its container, in the shim's state
//! directory: who the shim is (`shim.json`), that the container started (`started.json`) or
//! could not (`start-error.json`), and how it ended (`exit.json`). Each is JSON written
//! atomically (temporary file, rename), so a reader sees all of one or nothing. Also the
//! process identity check (pid plus start time from /proc) that guards against pid reuse.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The shim's own log (its tracing output and anything it prints).
pub const SHIM_LOG: &str = "shim.log";
pub const SHIM: &str = "shim.json";
pub const STARTED: &str = "started.json";
pub const START_ERROR: &str = "start-error.json";
pub const EXIT: &str = "exit.json";

/// A process as the kernel knows it: a pid and the start time that tells it from a later
/// process given the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat: clock ticks after boot.
    pub start_ticks: u64,
}

/// `shim.json`: the shim daemon (written before it creates the container).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRecord {
    pub shim: ProcessId,
}

/// `started.json`: the container's init process runs the user's program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRecord {
    pub init: ProcessId,
    /// RFC 3339.
    pub started_at: String,
}

/// `start-error.json`: the container could not be created or started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartErrorRecord {
    /// What failed: "create" (libcontainer's create: namespaces, mounts, the executable) or
    /// "start".
    pub phase: String,
    /// libcontainer's message, with its causes.
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// `exit.json`: how the container's init process ended; written after the container was
/// deleted (cgroup and libcontainer state), as the shim's last act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status, or 128 + the signal that killed it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The container's cgroup counted an OOM kill.
    pub oom_killed: bool,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// What went wrong deleting the container, if anything.
    pub cleanup_error: Option<String>,
}

impl ExitRecord {
    /// Kubernetes' reason for a terminated container.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// Paths of the files in one shim state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> std::io::Result<()> {
        write_atomic(&self.file(name), value)
    }
    pub fn read<T: DeserializeOwned>(&self, name: &str) -> std::io::Result<Option<T>> {
        read_json(&self.file(name))
    }
}

/// Writes `value` as JSON to `path` so that readers see the old file, or all of the new one
/// (a temporary file renamed over it). Not fsynced: the files must survive the agent and the
/// shim, not the machine, whose restart ends every container anyway.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses /proc/<pid>/stat: (state, start time in ticks). The command name may hold spaces
/// and parentheses, so fields are counted after the last ')'.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is fields[0], field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The identity of a live process, `None` if there is none with this pid.
pub fn process_id(pid: i32) -> Option<ProcessId> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, start_ticks) = parse_stat(&stat)?;
    Some(ProcessId { pid, start_ticks })
}

/// Whether the process `id` names still runs: same pid, same start time, not a zombie.
pub fn is_alive(id: &ProcessId) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", id.pid)) else {
        return false;
    };
    matches!(parse_stat(&stat), Some((state, start)) if start == id.start_ticks && state != 'Z' && state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let cases = [
            ("42 (sleep) S 1 42 42 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 1 0 123456 2334720 131 18446744073709551615", Some(('S', 123456))),
            ("7 (a) b) c) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0 0", Some(('Z', 99))),
            ("garbage", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_stat(line), want, "{line}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_is_not() {
        let me = process_id(std::process::id() as i32).unwrap();
        assert!(is_alive(&me));
        assert!(!is_alive(&ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        }));
    }

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir(dir.path().to_path_buf());
        assert_eq!(state.read::<ExitRecord>(EXIT).unwrap(), None);
        let exit = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            started_at: "2026-12-04T10:00:00Z".into(),
            finished_at: "2026-12-04T10:00:01Z".into(),
            cleanup_error: None,
        };
        state.write(EXIT, &exit).unwrap();
        assert_eq!(state.read::<ExitRecord>(EXIT).unwrap(), Some(exit.clone()));
        assert!(!state.file("exit.tmp").exists());
        for (code, oom, want) in [
            (0, false, "Completed"),
            (3, false, "Error"),
            (137, true, "OOMKilled"),
        ] {
            let e = ExitRecord {
                exit_code: code,
                oom_killed: oom,
                ..exit.clone()
            };
            assert_eq!(e.reason(), want);
        }
    }
}
