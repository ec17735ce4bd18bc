//! Named network namespaces under the agent's root directory: a new namespace is made on a
//! short-lived thread of its own (`unshare` changes only that thread) and kept alive by bind
//! mounting it onto a file, as `ip netns add` does, so it outlives every process in it and is
//! found again after an agent restart.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {what}: {source}")]
    Sys {
        path: PathBuf,
        what: &'static str,
        source: nix::Error,
    },
    #[error("network namespace {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Makes a network namespace and pins it at `path` (which must not exist yet, or be an
/// unmounted leftover).
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let io = |source| NetnsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::File::create(path).map_err(io)?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), NetnsError> {
        let sys = |what, source| NetnsError::Sys {
            path: target.clone(),
            what,
            source,
        };
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| sys("unshare", e))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| sys("bind mount", e))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("the namespace thread panicked"),
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// The file system type of a namespace file (`NSFS_MAGIC`).
const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);

/// Whether `path` holds a pinned namespace: a bind mount of a namespace shows the namespace
/// file system's type; the empty file left behind after an unmount does not. (A statfs, not a
/// read of /proc/self/mountinfo, which with hundreds of container mounts costs far more.)
pub fn exists(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Unpins and removes the namespace at `path` (nothing to do if it is gone).
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                path: path.to_path_buf(),
                what: "unmount",
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
