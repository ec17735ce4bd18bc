//! A container's root filesystem: an overlay of the image's unpacked layers (read-only lower
//! dirs, highest first in the mount option) with a per-container upper and work dir, mounted at
//! `<container dir>/rootfs`; its unmounting; and the bind-mount entries of per-pod files
//! (/etc/hosts, /etc/hostname, /etc/resolv.conf) that the agent writes.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::spec::MountSpec;

/// Where a container's root filesystem parts live under its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsLayout {
    /// The overlay's mount point, the bundle's `root.path`.
    pub rootfs: PathBuf,
    /// The container's writable layer.
    pub upper: PathBuf,
    /// overlayfs' scratch directory (same filesystem as `upper`).
    pub work: PathBuf,
    /// An empty lower dir, for an image without layers.
    pub empty: PathBuf,
}

impl RootfsLayout {
    pub fn new(container_dir: &Path) -> RootfsLayout {
        RootfsLayout {
            rootfs: container_dir.join("rootfs"),
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
            empty: container_dir.join("empty"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("layer path {0:?} cannot be given to overlayfs (it contains ',', ':' or a newline)")]
    BadPath(PathBuf),
    #[error("overlay mount options are {0} bytes, over the kernel's limit of 4095: too many or too long layer paths")]
    TooLong(usize),
    #[error("layer directory {0:?} does not exist")]
    MissingLayer(PathBuf),
    #[error("cannot create {path:?}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount the overlay at {path:?} ({options}): {source}")]
    Mount {
        path: PathBuf,
        options: String,
        source: nix::Error,
    },
    #[error("cannot unmount {path:?}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
}

/// The options of an overlay mount of `layers` (lowest first, as images list them) under
/// `upper`/`work`. `index_off` asks the kernel not to index hard links across layers, which
/// lets many containers share lower dirs (containerd sets it when the kernel knows it).
pub fn overlay_options(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    index_off: bool,
) -> Result<String, RootfsError> {
    for p in layers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\n']) {
            return Err(RootfsError::BadPath(p.to_path_buf()));
        }
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if index_off {
        options.push_str(",index=off");
    }
    if options.len() > 4095 {
        return Err(RootfsError::TooLong(options.len()));
    }
    Ok(options)
}

/// Whether `path` is a mount point: its device differs from its parent's (an overlay always
/// has a device of its own). A stat of each, where reading /proc/self/mountinfo would cost a
/// millisecond on a node with a hundred pods.
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(parent), Ok(own)) = (path.parent(), std::fs::symlink_metadata(path)) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != own.dev())
}

fn create(path: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(path).map_err(|source| RootfsError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// Mounts the overlay of `layers` (lowest first) at `<container_dir>/rootfs`, creating the
/// directories. Mounting an already mounted rootfs does nothing.
pub fn mount_rootfs(container_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, RootfsError> {
    let layout = RootfsLayout::new(container_dir);
    if let Some(missing) = layers.iter().find(|l| !l.is_dir()) {
        return Err(RootfsError::MissingLayer(missing.clone()));
    }
    for dir in [&layout.rootfs, &layout.upper, &layout.work] {
        create(dir)?;
    }
    if is_mounted(&layout.rootfs) {
        return Ok(layout.rootfs);
    }
    let lowers = if layers.is_empty() {
        create(&layout.empty)?;
        vec![layout.empty.clone()]
    } else {
        layers.to_vec()
    };
    let index_off = Path::new("/sys/module/overlay/parameters/index").exists();
    let options = overlay_options(&lowers, &layout.upper, &layout.work, index_off)?;
    let overlay = |options: &str| {
        mount(
            Some("overlay"),
            &layout.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    };
    // `volatile` (Linux 5.10 and later) skips syncing the upper dir, which nothing needs: a
    // container's writable layer does not outlive the machine. Its unmount then does not wait
    // for a sync either. Older kernels refuse the option: mount without it.
    let volatile = format!("{options},volatile");
    overlay(&volatile)
        .or_else(|_| overlay(&options))
        .map_err(|source| RootfsError::Mount {
            path: layout.rootfs.clone(),
            options,
            source,
        })?;
    Ok(layout.rootfs)
}

/// Unmounts `<container_dir>/rootfs` (lazily if busy). Not mounted is fine.
pub fn unmount_rootfs(container_dir: &Path) -> Result<(), RootfsError> {
    let rootfs = RootfsLayout::new(container_dir).rootfs;
    while is_mounted(&rootfs) {
        match umount2(&rootfs, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::Error::EBUSY) => {
                umount2(&rootfs, MntFlags::MNT_DETACH).map_err(|source| RootfsError::Unmount {
                    path: rootfs.clone(),
                    source,
                })?
            }
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(RootfsError::Unmount {
                    path: rootfs,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// One per-pod file to bind into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFile {
    /// The file on the host (written by the agent).
    pub host_path: PathBuf,
    /// Where it appears in the container, e.g. `/etc/hosts`.
    pub container_path: PathBuf,
    pub readonly: bool,
}

/// The mount entries that bind `files` into a container, in order (add them to
/// [`ContainerConfig::mounts`](super::spec::ContainerConfig)).
pub fn file_mounts(files: &[PodFile]) -> Vec<MountSpec> {
    files
        .iter()
        .map(|f| MountSpec::Bind {
            source: f.host_path.clone(),
            destination: f.container_path.clone(),
            readonly: f.readonly,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_order_and_checks() {
        let up = Path::new("/c/upper");
        let work = Path::new("/c/work");
        let cases: Vec<(Vec<&str>, bool, Result<&str, &str>)> = vec![
            (
                vec!["/l/base"],
                false,
                Ok("lowerdir=/l/base,upperdir=/c/upper,workdir=/c/work"),
            ),
            (
                vec!["/l/base", "/l/mid", "/l/top"],
                true,
                Ok("lowerdir=/l/top:/l/mid:/l/base,upperdir=/c/upper,workdir=/c/work,index=off"),
            ),
            (vec!["/l/a,b"], false, Err("cannot be given to overlayfs")),
            (vec!["/l/a:b"], false, Err("cannot be given to overlayfs")),
        ];
        for (layers, index_off, want) in cases {
            let layers: Vec<PathBuf> = layers.into_iter().map(PathBuf::from).collect();
            let got = overlay_options(&layers, up, work, index_off).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{layers:?}: got {g:?}, want {w:?}"),
            }
        }
        let many: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/skiff-agent/layers/sha256/{i:064}")))
            .collect();
        assert!(matches!(
            overlay_options(&many, up, work, false),
            Err(RootfsError::TooLong(_))
        ));
    }

    #[test]
    fn mount_points_are_told_by_their_device() {
        assert!(is_mounted(Path::new("/proc")));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_mounted(dir.path()));
        assert!(!is_mounted(&dir.path().join("missing")));
    }

    #[test]
    fn pod_files_become_bind_mounts() {
        let files = [PodFile {
            host_path: "/var/lib/skiff-agent/pods/u/etc-hosts".into(),
            container_path: "/etc/hosts".into(),
            readonly: false,
        }];
        assert_eq!(
            file_mounts(&files),
            vec![MountSpec::Bind {
                source: "/var/lib/skiff-agent/pods/u/etc-hosts".into(),
                destination: "/etc/hosts".into(),
                readonly: false,
            }]
        );
    }
}
