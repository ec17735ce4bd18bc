//! The kubelet's atomic writer: a volume's files live in a timestamped directory
//! (`..2026_12_04_10_00_00.123456789`), `..data` is a symlink to it, and each top-level name is
//! a symlink through `..data` (`key -> ..data/key`). An update writes a new timestamped
//! directory, points `..data_tmp` at it and renames that over `..data` (one atomic step, so a
//! reader sees the old files or the new ones, never a mix), adds links for new names, then
//! removes the old directory and the links of names that went away. Nothing is written when the
//! content and modes are the same. The plan is pure; `write` carries it out.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use jiff::Timestamp;

use super::error::VolumeError;
use super::payload::{File, Payload};

/// The symlink to the current timestamped directory.
pub const DATA_LINK: &str = "..data";
/// The name the next `..data` is made under before it is renamed into place.
const DATA_TMP: &str = "..data_tmp";

const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// Checks a payload path as the kubelet does: relative, no `..` element, not starting with
/// `..` (names the writer keeps for itself), within the length limits.
pub fn validate_path(p: &str) -> Result<(), VolumeError> {
    let bad = |why: String| Err(VolumeError::InvalidPath(why));
    if p.is_empty() {
        return bad("must not be empty: \"\"".into());
    }
    if p.starts_with('/') {
        return bad(format!("must be relative path: {p}"));
    }
    if p.len() > MAX_PATH {
        return bad(format!(
            "must be less than or equal to {MAX_PATH} characters"
        ));
    }
    let items: Vec<&str> = p.split('/').collect();
    for item in &items {
        if *item == ".." {
            return bad(format!("must not contain '..': {p}"));
        }
        if item.len() > MAX_NAME {
            return bad(format!(
                "filenames must be less than or equal to {MAX_NAME} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return bad(format!("must not start with '..': {p}"));
    }
    Ok(())
}

/// The name of a timestamped data directory made at `t` (UTC).
pub fn data_dir_name(t: Timestamp) -> String {
    format!(
        "..{}.{:09}",
        t.strftime("%Y_%m_%d_%H_%M_%S"),
        t.subsec_nanosecond()
    )
}

/// The first element of a payload path: the name the user sees at the volume's top.
fn top(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// What one write does.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// A new timestamped directory is written and swapped in.
    pub write: bool,
    /// The top-level names that must be links through `..data`.
    pub links: Vec<String>,
    /// Top-level links of names the new payload no longer has.
    pub remove: Vec<String>,
}

/// The plan to go from `current` (None when nothing was written yet) to `new`.
pub fn plan(current: Option<&Payload>, new: &Payload) -> Plan {
    let wanted: BTreeSet<&str> = new.keys().map(|p| top(p)).collect();
    let had: BTreeSet<&str> = current
        .into_iter()
        .flat_map(|c| c.keys())
        .map(|p| top(p))
        .collect();
    Plan {
        write: current != Some(new),
        links: wanted.iter().map(|s| s.to_string()).collect(),
        remove: had.difference(&wanted).map(|s| s.to_string()).collect(),
    }
}

/// Reads the files under a timestamped directory (regular files only), by relative path.
fn read_tree(root: &Path) -> std::io::Result<Payload> {
    let mut out = Payload::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.insert(
                    rel,
                    File {
                        data: std::fs::read(entry.path())?,
                        mode: meta.permissions().mode() & 0o777,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// The current timestamped directory's name and files, if `..data` points at one.
pub fn current(dir: &Path) -> Option<(String, Payload)> {
    let name = std::fs::read_link(dir.join(DATA_LINK)).ok()?;
    let name = name.to_string_lossy().into_owned();
    let files = read_tree(&dir.join(&name)).ok()?;
    Some((name, files))
}

/// Whether the volume has been written at least once.
pub fn written(dir: &Path) -> bool {
    dir.join(DATA_LINK).symlink_metadata().is_ok()
}

fn chmod(path: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("setting the mode of", path, e))
}

/// Writes the payload into a new timestamped directory under `dir`; returns its name.
fn write_data_dir(dir: &Path, payload: &Payload, now: Timestamp) -> Result<String, VolumeError> {
    let mut t = now;
    let (name, path) = loop {
        let name = data_dir_name(t);
        let path = dir.join(&name);
        match std::fs::create_dir(&path) {
            Ok(()) => break (name, path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                t = t
                    .checked_add(jiff::SignedDuration::from_nanos(1))
                    .map_err(|_| VolumeError::io("creating", &path, e))?;
            }
            Err(e) => return Err(VolumeError::io("creating", &path, e)),
        }
    };
    // 0755 whatever the umask, so any user in the container can walk to the files.
    chmod(&path, 0o755)?;
    for (rel, file) in payload {
        let target = path.join(rel);
        if let Some(parent) = target.parent().filter(|p| *p != path) {
            std::fs::create_dir_all(parent).map_err(|e| VolumeError::io("creating", parent, e))?;
            chmod(parent, 0o755)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&target)
            .map_err(|e| VolumeError::io("creating", &target, e))?;
        f.write_all(&file.data)
            .map_err(|e| VolumeError::io("writing", &target, e))?;
        chmod(&target, file.mode)?;
    }
    Ok(name)
}

/// Projects `payload` into the volume directory `dir` (which exists). Returns whether anything
/// changed on disk.
pub fn write(dir: &Path, payload: &Payload, now: Timestamp) -> Result<bool, VolumeError> {
    for p in payload.keys() {
        validate_path(p)?;
    }
    let old = current(dir);
    let plan = plan(old.as_ref().map(|(_, files)| files), payload);
    let mut changed = false;
    if plan.write {
        let name = write_data_dir(dir, payload, now)?;
        let tmp = dir.join(DATA_TMP);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(VolumeError::io("removing", &tmp, e))
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&name, &tmp).map_err(|e| VolumeError::io("linking", &tmp, e))?;
        let data = dir.join(DATA_LINK);
        std::fs::rename(&tmp, &data).map_err(|e| VolumeError::io("renaming onto", &data, e))?;
        changed = true;
    }
    for name in &plan.links {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(name), &link)
                .map_err(|e| VolumeError::io("linking", &link, e))?;
            changed = true;
        }
    }
    if plan.write {
        if let Some((old_name, _)) = &old {
            let old_dir = dir.join(old_name);
            std::fs::remove_dir_all(&old_dir)
                .map_err(|e| VolumeError::io("removing", &old_dir, e))?;
        }
    }
    for name in &plan.remove {
        let link = dir.join(name);
        if link.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            std::fs::remove_file(&link).map_err(|e| VolumeError::io("removing", &link, e))?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    File {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn paths_are_checked_as_the_kubelet_checks_them() {
        for ok in ["a", "a/b", ".a", "a/..b", "a..", "a/b/c.txt"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "invalid path: must not be empty: \"\""),
            (
                "/etc/passwd",
                "invalid path: must be relative path: /etc/passwd",
            ),
            ("a/../b", "invalid path: must not contain '..': a/../b"),
            ("..", "invalid path: must not contain '..': .."),
            (
                "..data/x",
                "invalid path: must not start with '..': ..data/x",
            ),
            ("..a", "invalid path: must not start with '..': ..a"),
        ] {
            assert_eq!(validate_path(bad).expect_err(bad).to_string(), why, "{bad}");
        }
        assert!(validate_path(&"x".repeat(256)).is_err());
    }

    #[test]
    fn data_directories_are_named_by_time() {
        let t: Timestamp = "2026-12-04T10:00:00.123456789Z".parse().expect("time");
        assert_eq!(data_dir_name(t), "..2026_12_04_10_00_00.123456789");
        let t: Timestamp = "2026-01-02T03:04:05Z".parse().expect("time");
        assert_eq!(data_dir_name(t), "..2026_01_02_03_04_05.000000000");
    }

    #[test]
    fn plans_write_only_what_changed() {
        let a = payload(&[("a", "1", 0o644), ("dir/b", "2", 0o644)]);
        let first = plan(None, &a);
        assert_eq!(
            first,
            Plan {
                write: true,
                links: vec!["a".into(), "dir".into()],
                remove: vec![],
            }
        );
        assert!(!plan(Some(&a), &a).write, "same content, nothing written");
        let mode_changed = payload(&[("a", "1", 0o600), ("dir/b", "2", 0o644)]);
        assert!(plan(Some(&a), &mode_changed).write);
        let fewer = payload(&[("dir/b", "3", 0o644)]);
        assert_eq!(
            plan(Some(&a), &fewer),
            Plan {
                write: true,
                links: vec!["dir".into()],
                remove: vec!["a".into()],
            }
        );
    }

    fn link(dir: &Path, name: &str) -> String {
        std::fs::read_link(dir.join(name))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn writes_swap_data_atomically_and_remove_what_went_away() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let t1: Timestamp = "2026-12-04T10:00:00.1Z".parse().expect("time");
        let v1 = payload(&[("greeting", "hello", 0o644), ("sub/key", "k", 0o400)]);
        assert!(write(dir, &v1, t1).expect("first write"));
        assert_eq!(link(dir, "..data"), "..2026_12_04_10_00_00.100000000");
        assert_eq!(link(dir, "greeting"), "..data/greeting");
        assert_eq!(link(dir, "sub"), "..data/sub");
        assert_eq!(
            std::fs::read_to_string(dir.join("greeting")).expect("read"),
            "hello"
        );
        let mode = |p: &str| {
            std::fs::metadata(dir.join(p))
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0)
        };
        assert_eq!(mode("sub/key"), 0o400);
        assert_eq!(mode("..data"), 0o755);

        // The same payload again: nothing changes.
        let t2: Timestamp = "2026-12-04T10:00:05Z".parse().expect("time");
        assert!(!write(dir, &v1, t2).expect("same write"));
        assert_eq!(link(dir, "..data"), "..2026_12_04_10_00_00.100000000");

        // A changed payload: a new directory, the old one and the dropped name gone.
        let v2 = payload(&[("greeting", "bye", 0o600), ("new", "n", 0o644)]);
        assert!(write(dir, &v2, t2).expect("second write"));
        assert_eq!(link(dir, "..data"), "..2026_12_04_10_00_05.000000000");
        assert_eq!(
            std::fs::read_to_string(dir.join("greeting")).expect("read"),
            "bye"
        );
        assert_eq!(mode("greeting"), 0o600);
        assert_eq!(link(dir, "new"), "..data/new");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "..2026_12_04_10_00_05.000000000",
                "..data",
                "greeting",
                "new"
            ]
        );
        assert_eq!(current(dir).map(|(_, f)| f), Some(v2));

        // A payload with a path that escapes is refused before anything is written.
        let bad = payload(&[("../x", "no", 0o644)]);
        assert!(write(dir, &bad, t2).is_err());
        assert_eq!(link(dir, "..data"), "..2026_12_04_10_00_05.000000000");
    }
}
