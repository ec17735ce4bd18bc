//! What the agent remembers about each pod across its own restarts, in
//! `<root-dir>/pods/<uid>/record.json` (written atomically): the pod's identity, when it was
//! first started, its address, and per container the current container's ID, the restart
//! count, how the previous one ended, and the back-offs in force. With the shims' own files this
//! is all a restarted agent needs to adopt running pods.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::restart::BackOff;
use crate::pod_runtime::Terminated;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The current (or last) container's ID; empty before the first start.
    pub id: String,
    pub restart_count: i32,
    /// How the container before the current one ended.
    pub last: Option<Terminated>,
    /// How the current one ended, once it has (kept until it is replaced).
    pub ended: Option<Terminated>,
    pub crash_backoff: BackOff,
    /// The last failure to pull or create, and when (for ImagePullBackOff and friends).
    pub failure: Option<(String, String, Timestamp)>,
    pub failure_backoff: BackOff,
    pub image_id: String,
    /// The state last announced in Events (a waiting reason, Running, or Terminated), so each
    /// change is told once.
    #[serde(default)]
    pub shown: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub started_at: Option<Timestamp>,
    pub ip: Option<Ipv4Addr>,
    pub containers: BTreeMap<String, ContainerRecord>,
    /// The pod's cgroup exists with its limits written.
    #[serde(default)]
    pub cgroup_ready: bool,
}

/// Where pod records live: `<root>/pods/<uid>/record.json`.
#[derive(Clone, Debug)]
pub struct Records {
    pub dir: PathBuf,
}

impl Records {
    /// The records of the agent whose `--root-dir` is `root_dir`.
    pub fn under(root_dir: &Path) -> Records {
        Records {
            dir: root_dir.join("pods"),
        }
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.dir.join(uid)
    }

    fn file(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("record.json")
    }

    pub fn load(&self, uid: &str) -> Option<PodRecord> {
        let bytes = std::fs::read(self.file(uid)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(uid, %e, "unreadable pod record; starting afresh");
                None
            }
        }
    }

    pub fn save(&self, record: &PodRecord) -> std::io::Result<()> {
        let file = self.file(&record.uid);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = file.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?,
        )?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &file)
    }

    /// The uids that have a directory.
    pub fn uids(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn remove(&self, uid: &str) -> std::io::Result<()> {
        remove_dir(&self.pod_dir(uid))
    }
}

fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = Records {
            dir: dir.path().join("pods"),
        };
        assert!(records.load("u1").is_none());
        let mut r = PodRecord {
            uid: "u1".into(),
            name: "web".into(),
            ..Default::default()
        };
        r.containers.insert(
            "c".into(),
            ContainerRecord {
                id: "abc".into(),
                restart_count: 2,
                ..Default::default()
            },
        );
        records.save(&r).expect("saved");
        assert_eq!(records.load("u1"), Some(r));
        assert_eq!(records.uids(), ["u1"]);
        records.remove("u1").expect("removed");
        assert!(records.uids().is_empty());
        records.remove("u1").expect("removing twice is fine");
    }
}
