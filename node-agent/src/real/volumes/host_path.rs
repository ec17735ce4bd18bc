//! hostPath volumes: the `type` check the kubelet makes before a container may use the path
//! (DirectoryOrCreate makes a 0755 directory, FileOrCreate an empty 0644 file; the others only
//! check what is there, following symlinks as stat does). With no type nothing is checked; a
//! path that does not exist then is made a directory, as containerd does for a bind mount's
//! missing source.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::VolumeError;

fn make_dir(path: &Path) -> Result<(), VolumeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| VolumeError::io("creating", path, e))?;
    Ok(())
}

fn make_file(path: &Path) -> Result<(), VolumeError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(_) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| VolumeError::io("setting the mode of", path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(VolumeError::io("creating", path, e)),
    }
}

/// Checks (and for the `…OrCreate` types, makes) the hostPath `path` of type `type_`.
pub fn check(path: &str, type_: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).ok();
    let fail = |what: &'static str| {
        Err(VolumeError::HostPathType {
            path: path.into(),
            what,
        })
    };
    let ft = meta.as_ref().map(|m| m.file_type());
    match type_ {
        "" => match meta {
            None => make_dir(p),
            Some(_) => Ok(()),
        },
        "DirectoryOrCreate" if meta.is_none() => make_dir(p),
        "DirectoryOrCreate" | "Directory" => match ft {
            Some(t) if t.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" if meta.is_none() => make_file(p),
        "FileOrCreate" | "File" => match ft {
            Some(t) if t.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match ft {
            Some(t) if t.is_socket() => Ok(()),
            _ => fail("socket file"),
        },
        "CharDevice" => match ft {
            Some(t) if t.is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match ft {
            Some(t) if t.is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => Err(VolumeError::HostPathTypeUnknown(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0)
    }

    #[test]
    fn types_are_checked_and_made_as_the_kubelet_does() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let dir = root.join("dir");
        let file = root.join("file");
        std::fs::create_dir(&dir).expect("dir");
        std::fs::write(&file, "x").expect("file");
        let sock = root.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("socket");
        let link_to_dir = root.join("link");
        std::os::unix::fs::symlink(&dir, &link_to_dir).expect("symlink");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let missing = root.join("missing");

        for (path, type_, ok) in [
            (s(&dir), "", true),
            (s(&dir), "Directory", true),
            (s(&link_to_dir), "Directory", true),
            (s(&dir), "DirectoryOrCreate", true),
            (s(&file), "Directory", false),
            (s(&missing), "Directory", false),
            (s(&file), "File", true),
            (s(&file), "FileOrCreate", true),
            (s(&dir), "File", false),
            (s(&dir), "FileOrCreate", false),
            (s(&sock), "Socket", true),
            (s(&file), "Socket", false),
            ("/dev/null".into(), "CharDevice", true),
            (s(&file), "CharDevice", false),
            (s(&file), "BlockDevice", false),
        ] {
            assert_eq!(check(&path, type_).is_ok(), ok, "{path} as {type_:?}");
        }
        assert_eq!(
            check(&s(&file), "Directory")
                .expect_err("a file")
                .to_string(),
            format!(
                "hostPath type check failed: {} is not a directory",
                s(&file)
            )
        );
        assert_eq!(
            check(&s(&file), "Socket").expect_err("a file").to_string(),
            format!(
                "hostPath type check failed: {} is not a socket file",
                s(&file)
            )
        );
        assert_eq!(
            check(&s(&dir), "Pipe")
                .expect_err("no such type")
                .to_string(),
            "Pipe is an invalid volume type"
        );

        let made = root.join("a/b/c");
        check(&s(&made), "DirectoryOrCreate").expect("made");
        assert!(made.is_dir());
        assert_eq!(mode(&made), 0o755);
        let new_file = root.join("dir/new.txt");
        check(&s(&new_file), "FileOrCreate").expect("made");
        assert!(new_file.is_file());
        assert_eq!(mode(&new_file), 0o644);
        // FileOrCreate does not make parent directories.
        assert!(check(&s(&root.join("nope/new.txt")), "FileOrCreate").is_err());
        // No type and nothing there: a directory, as containerd makes for a bind source.
        check(&s(&missing), "").expect("made");
        assert!(missing.is_dir());
    }
}
