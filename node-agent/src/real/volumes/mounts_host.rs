//! The mounts the agent itself makes for volumes, on the host: a tmpfs on a volume's
//! directory (emptyDir medium Memory, secrets, projected volumes), found again through
//! /proc/self/mountinfo (so a restarted agent does not mount twice), and every mount under a
//! pod's directory undone, deepest first, before the directory is removed.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::VolumeError;

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let oct = bytes
            .get(i + 1..i + 4)
            .filter(|o| bytes[i] == b'\\' && o.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(o) = oct {
            let v = o.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points listed in a mountinfo text (the fifth field of each line).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .collect()
}

fn current_mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| mount_points(&t))
        .unwrap_or_default()
}

/// The mount points at or below `dir`, deepest (and latest) first.
pub fn below(points: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = points
        .iter()
        .rev()
        .filter(|p| p.starts_with(dir))
        .cloned()
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Whether something is mounted on `path`.
pub fn is_mount_point(path: &Path) -> bool {
    let path = absolute(path);
    current_mount_points().contains(&path)
}

/// Mounts a tmpfs of `size` bytes (the kernel's default when None) on the directory `path`,
/// unless one is there already.
pub fn ensure_tmpfs(path: &Path, size: Option<u64>) -> Result<(), VolumeError> {
    if is_mount_point(path) {
        return Ok(());
    }
    let data = size.map(|s| format!("size={s}"));
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::empty(),
        data.as_deref(),
    )
    .map_err(|e| VolumeError::io("mounting a tmpfs on", path, e.into()))
}

/// Unmounts everything at or below `dir` (a busy mount is detached).
pub fn unmount_below(dir: &Path) -> Result<(), VolumeError> {
    let dir = absolute(dir);
    for point in below(&current_mount_points(), &dir) {
        match umount2(&point, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => umount2(&point, MntFlags::MNT_DETACH)
                .map_err(|e| VolumeError::io("unmounting", &point, e.into()))?,
            // Already gone (a parent's unmount took it along).
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(VolumeError::io("unmounting", &point, e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_their_mount_points() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
98 22 0:50 / /var/lib/skiff/pods/u1/volumes/kubernetes.io~secret/creds rw,relatime shared:50 - tmpfs tmpfs rw
99 22 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw
100 98 0:52 / /var/lib/skiff/pods/u1/volumes/kubernetes.io~secret/creds/deeper rw - tmpfs tmpfs rw
101 22 0:53 / /var/lib/skiff/pods/u10 rw - tmpfs tmpfs rw
";
        let points = mount_points(text);
        assert_eq!(points[2], PathBuf::from("/mnt/with space"));
        let pod = Path::new("/var/lib/skiff/pods/u1");
        assert_eq!(
            below(&points, pod),
            [
                PathBuf::from("/var/lib/skiff/pods/u1/volumes/kubernetes.io~secret/creds/deeper"),
                PathBuf::from("/var/lib/skiff/pods/u1/volumes/kubernetes.io~secret/creds"),
            ],
            "deepest first, and not the pod u10 beside it"
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
    }
}
