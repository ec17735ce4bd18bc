//! Reading what the host contributes to a container's spec ([`HostInfo`]): the capability
//! bounding set, the hard RLIMIT_NOFILE, and (for privileged containers) the device nodes under
//! /dev, skipping what every container gets its own of, as runc does.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::resource::{getrlimit, Resource};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use super::capabilities::{self, CapabilityError};
use super::spec::HostInfo;

/// Directories under /dev that containers get their own of (or that are not devices).
const SKIPPED: [&str; 6] = ["pts", "shm", "mqueue", "fd", ".lxc", ".udev"];

impl HostInfo {
    /// Reads the host's facts; `devices` only when `with_devices` (privileged containers).
    pub fn detect(with_devices: bool) -> Result<HostInfo, CapabilityError> {
        let bounding_set = capabilities::host_bounding_set()?;
        let nofile_hard_limit = getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard)
            .unwrap_or(super::spec::NOFILE_LIMIT);
        let devices = if with_devices {
            host_devices(Path::new("/dev"))
        } else {
            Vec::new()
        };
        Ok(HostInfo {
            bounding_set,
            devices,
            nofile_hard_limit,
        })
    }
}

/// Every character and block device under `dir`, recursively, except /dev/console and the
/// [`SKIPPED`] directories. Unreadable entries are left out.
pub fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !SKIPPED.iter().any(|s| name == *s) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        if path == Path::new("/dev/console") {
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(path.clone())
            .typ(typ)
            .major(nix::sys::stat::major(rdev) as i64)
            .minor(nix::sys::stat::minor(rdev) as i64)
            .file_mode(meta.permissions().mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build();
        if let Ok(device) = device {
            out.push(device);
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}
