//! The statically linked `skiff-shim-monitor` that node-agent's build script made, embedded in
//! this library, and its installation as a file the shims can execute: once per agent start,
//! into the containers' root (`.monitor/skiff-shim-monitor`), replaced only when it differs (a
//! running monitor keeps the program it was started from).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The program, or nothing when the build could not link it statically (see build.rs).
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/skiff-shim-monitor"));

/// The directory under the containers' root that holds the program.
pub const DIR: &str = ".monitor";

/// Whether this build embeds the static monitor.
pub fn embedded() -> bool {
    !PROGRAM.is_empty()
}

/// Writes the embedded monitor into `dir` unless the same program is there already; its path,
/// or `None` when this build embeds none.
pub fn install(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    if !embedded() {
        return Ok(None);
    }
    let path = dir.join(skiff_shim_monitor::monitor::PROGRAM);
    if std::fs::read(&path).is_ok_and(|existing| existing == PROGRAM) {
        return Ok(Some(path));
    }
    std::fs::create_dir_all(dir)?;
    // Written beside and renamed over: a monitor running from the old file keeps it.
    let partial = dir.join(format!(".{}.partial", skiff_shim_monitor::monitor::PROGRAM));
    {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(PROGRAM)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, &path)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_replaces_what_differs() {
        if !embedded() {
            // The build script warned why; a machine that runs the tests for real must have it.
            assert!(
                std::env::var_os("CI").is_none(),
                "this build has no static skiff-shim-monitor (see the build's warnings)"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let at = dir.path().join(DIR);
        let path = install(&at).expect("install").expect("embedded");
        assert_eq!(std::fs::read(&path).expect("read"), PROGRAM);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let inode =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("meta"));
        let first = inode(&path);
        install(&at).expect("install again");
        assert_eq!(inode(&path), first, "the same program is left alone");
        std::fs::write(&path, b"older").expect("write");
        install(&at).expect("install over an older one");
        assert_eq!(std::fs::read(&path).expect("read"), PROGRAM);
    }
}
