//! Unpacks one image layer (a tar, plain, gzip or zstd) into a directory for use as an overlayfs
//! lower dir.
//!
//! OCI whiteouts become overlay whiteouts: `.wh.NAME` is a 0/0 character device `NAME`, and
//! `.wh..wh..opq` is the xattr `trusted.overlay.opaque=y` on its directory (both need root).
//! Owners, modes, modification times, symlinks, hard links, device nodes, FIFOs and `SCHILY.xattr`
//! extended attributes are kept. An entry whose path is absolute, has a `..` component, or passes
//! through a symlink (or a hard link whose target does) is refused, naming the entry: every path
//! is created one component at a time, never following a link. Directory modes and times are set
//! last, so a read-only directory does not stop its own entries. The digest of the uncompressed
//! tar (the layer's diff ID) is computed on the way and returned for checking against the image
//! config.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

/// The name prefix of an OCI whiteout entry.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

/// What unpacking produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:…` of the uncompressed tar: the layer's diff ID.
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The media type is not a layer this agent can unpack.
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    /// An entry would be written outside the layer root.
    #[error("layer entry {entry:?} escapes the layer root: {why}")]
    Escape {
        /// The entry's path as the tar has it.
        entry: String,
        /// How it escapes.
        why: String,
    },
    /// An entry is malformed or of a kind this agent does not unpack.
    #[error("layer entry {entry:?}: {message}")]
    Entry {
        /// The entry's path as the tar has it.
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// Writing an entry failed.
    #[error("layer entry {entry:?}: {source}")]
    EntryIo {
        /// The entry's path as the tar has it.
        entry: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The archive could not be read (truncated, corrupt compression, not a tar).
    #[error("reading the layer: {0}")]
    Read(io::Error),
}

/// The compression a layer media type announces; an error for media types that are not layers.
pub fn compression_for_media_type(media_type: &str) -> Result<Compression, UnpackError> {
    let m = media_type;
    if m.ends_with("tar+gzip") || m.ends_with("tar.gzip") {
        Ok(Compression::Gzip)
    } else if m.ends_with("tar+zstd") || m.ends_with("tar.zstd") {
        Ok(Compression::Zstd)
    } else if m.ends_with(".tar") {
        Ok(Compression::None)
    } else {
        Err(UnpackError::MediaType(media_type.to_string()))
    }
}

/// The compression the first bytes of a blob show.
pub fn detect_compression(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Unpacks the layer blob read from `blob` into the existing, empty directory `dest`. The
/// compression is taken from the blob's magic bytes (the media type must still name a layer; a
/// disagreement is logged).
pub fn unpack_layer(
    blob: impl Read,
    media_type: &str,
    dest: &Path,
) -> Result<Unpacked, UnpackError> {
    let announced = compression_for_media_type(media_type)?;
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let magic = buffered.fill_buf().map_err(UnpackError::Read)?;
    let actual = detect_compression(magic);
    if actual != announced {
        tracing::warn!(
            media_type,
            ?actual,
            "layer compression differs from its media type; following its content"
        );
    }
    let decompressed: Box<dyn Read> = match actual {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Read)?)
        }
    };
    let mut hashing = HashingReader {
        inner: decompressed,
        hasher: Sha256::new(),
        count: 0,
    };
    unpack_tar(&mut hashing, dest)?;
    // The rest after the end-of-archive marker belongs to the diff ID too.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        tar_size: hashing.count,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Metadata applied once every entry is written.
struct DirMeta {
    path: PathBuf,
    meta: Meta,
}

#[derive(Clone, Copy)]
struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: i64,
}

fn unpack_tar(reader: impl Read, dest: &Path) -> Result<(), UnpackError> {
    let am_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<DirMeta> = Vec::new();
    let mut root_meta: Option<Meta> = None;
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let path_bytes = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&path_bytes).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let components = clean_path(Path::new(OsStr::from_bytes(&path_bytes))).map_err(|why| {
            UnpackError::Escape {
                entry: name.clone(),
                why,
            }
        })?;
        let io_err = |source: io::Error| UnpackError::EntryIo {
            entry: name.clone(),
            source,
        };
        let mut meta = Meta {
            uid: entry.header().uid().map_err(io_err)?,
            gid: entry.header().gid().map_err(io_err)?,
            mode: entry.header().mode().map_err(io_err)?,
            mtime: entry.header().mtime().map_err(io_err)? as i64,
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(io_err)? {
            for extension in extensions {
                let extension = extension.map_err(io_err)?;
                let Ok(key) = extension.key() else { continue };
                let value = extension.value_bytes();
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    "uid" => meta.uid = number().map_or(meta.uid, |n| n as u64),
                    "gid" => meta.gid = number().map_or(meta.gid, |n| n as u64),
                    "mtime" => meta.mtime = number().unwrap_or(meta.mtime),
                    _ => {
                        if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((attr.to_string(), value.to_vec()));
                        }
                    }
                }
            }
        }

        let Some((file_name, parents)) = components.split_last() else {
            // The layer root itself (`./`).
            if kind == tar::EntryType::Directory {
                root_meta = Some(meta);
            }
            continue;
        };
        if let Some(hidden) = file_name
            .as_bytes()
            .strip_prefix(WHITEOUT_PREFIX.as_bytes())
        {
            let parent = make_parents(dest, parents, &name)?;
            if file_name.as_bytes() == OPAQUE_MARKER.as_bytes() {
                xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(|e| {
                    UnpackError::Entry {
                        entry: name.clone(),
                        message: format!("setting {OVERLAY_OPAQUE_XATTR} on its directory: {e}"),
                    }
                })?;
            } else if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other AUFS metadata (`.wh..wh.plnk`, …) has no overlay meaning.
            } else if matches!(hidden, b"" | b"." | b"..") {
                return Err(UnpackError::Entry {
                    entry: name,
                    message: "a whiteout must name a file".into(),
                });
            } else {
                let target = parent.join(OsStr::from_bytes(hidden));
                remove_existing(&target).map_err(io_err)?;
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| {
                    UnpackError::Entry {
                        entry: name.clone(),
                        message: format!(
                            "creating the overlay whiteout (a 0/0 character device, needs root): {e}"
                        ),
                    }
                })?;
            }
            continue;
        }

        let parent = make_parents(dest, parents, &name)?;
        let target = parent.join(file_name);
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&target).map_err(io_err)?;
                        fs::create_dir(&target).map_err(io_err)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&target).map_err(io_err)?
                    }
                    Err(e) => return Err(io_err(e)),
                }
                dirs.push(DirMeta {
                    path: target.clone(),
                    meta,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&target).map_err(io_err)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io_err)?;
                io::copy(&mut entry, &mut file).map_err(io_err)?;
                drop(file);
                set_owner_mode_time(&target, meta, am_root, true).map_err(io_err)?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| UnpackError::Entry {
                    entry: name.clone(),
                    message: "symlink without a target".into(),
                })?;
                remove_existing(&target).map_err(io_err)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(io_err)?;
                set_owner_mode_time(&target, meta, am_root, false).map_err(io_err)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name_bytes().ok_or_else(|| UnpackError::Entry {
                    entry: name.clone(),
                    message: "hard link without a target".into(),
                })?;
                let link_text = String::from_utf8_lossy(&link).into_owned();
                let source_components =
                    clean_path(Path::new(OsStr::from_bytes(&link))).map_err(|why| {
                        UnpackError::Escape {
                            entry: name.clone(),
                            why: format!("hard link target {link_text:?}: {why}"),
                        }
                    })?;
                let source =
                    existing_path(dest, &source_components).map_err(|why| UnpackError::Escape {
                        entry: name.clone(),
                        why: format!("hard link target {link_text:?}: {why}"),
                    })?;
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => {
                        return Err(UnpackError::Entry {
                            entry: name,
                            message: format!("hard link target {link_text:?} is a directory"),
                        })
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(UnpackError::Entry {
                            entry: name,
                            message: format!(
                                "hard link target {link_text:?} is not in the layer before it: {e}"
                            ),
                        })
                    }
                }
                if source != target {
                    remove_existing(&target).map_err(io_err)?;
                    fs::hard_link(&source, &target).map_err(io_err)?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (flag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = entry.header().device_major().map_err(io_err)?.unwrap_or(0);
                        let minor = entry.header().device_minor().map_err(io_err)?.unwrap_or(0);
                        let flag = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, makedev(u64::from(major), u64::from(minor)))
                    }
                };
                remove_existing(&target).map_err(io_err)?;
                mknod(&target, flag, Mode::from_bits_truncate(0o600), dev).map_err(|e| {
                    UnpackError::Entry {
                        entry: name.clone(),
                        message: format!("creating the device node or FIFO: {e}"),
                    }
                })?;
                set_owner_mode_time(&target, meta, am_root, true).map_err(io_err)?;
            }
            other => {
                return Err(UnpackError::Entry {
                    entry: name,
                    message: format!("unsupported tar entry type {other:?}"),
                })
            }
        }
        for (attr, value) in xattrs {
            if let Err(e) = xattr::set(&target, &attr, &value) {
                tracing::warn!(entry = %name, attr, error = %e, "cannot keep an extended attribute");
            }
        }
    }
    for dir in dirs.iter().rev() {
        set_owner_mode_time(&dir.path, dir.meta, am_root, true).map_err(|source| {
            UnpackError::EntryIo {
                entry: dir
                    .path
                    .strip_prefix(dest)
                    .unwrap_or(&dir.path)
                    .display()
                    .to_string(),
                source,
            }
        })?;
    }
    let root = root_meta.unwrap_or(Meta {
        uid: 0,
        gid: 0,
        mode: 0o755,
        mtime: 0,
    });
    set_owner_mode_time(dest, root, am_root, root_meta.is_some()).map_err(|source| {
        UnpackError::EntryIo {
            entry: "./".into(),
            source,
        }
    })?;
    if root_meta.is_none() {
        fs::set_permissions(dest, Permissions::from_mode(0o755)).map_err(|source| {
            UnpackError::EntryIo {
                entry: "./".into(),
                source,
            }
        })?;
    }
    Ok(())
}

/// The path's normal components; an error saying why for absolute paths and `..`.
fn clean_path(path: &Path) -> Result<Vec<&OsStr>, String> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path has a '..' component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute".into()),
        }
    }
    Ok(out)
}

/// Creates (0755, root) the missing directories of `parents` under `root`, refusing to pass
/// through a symlink or a non-directory; returns the innermost.
fn make_parents(root: &Path, parents: &[&OsStr], entry: &str) -> Result<PathBuf, UnpackError> {
    let mut path = root.to_path_buf();
    for component in parents {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Escape {
                    entry: entry.to_string(),
                    why: format!(
                        "its parent {:?} is a symlink",
                        path.strip_prefix(root).unwrap_or(&path)
                    ),
                })
            }
            Ok(_) => {
                return Err(UnpackError::Entry {
                    entry: entry.to_string(),
                    message: format!(
                        "its parent {:?} is not a directory",
                        path.strip_prefix(root).unwrap_or(&path)
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|source| UnpackError::EntryIo {
                    entry: entry.to_string(),
                    source,
                })?;
                fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(|source| {
                    UnpackError::EntryIo {
                        entry: entry.to_string(),
                        source,
                    }
                })?;
            }
            Err(source) => {
                return Err(UnpackError::EntryIo {
                    entry: entry.to_string(),
                    source,
                })
            }
        }
    }
    Ok(path)
}

/// `root` joined with `components`, checking that no parent on the way is a symlink.
fn existing_path(root: &Path, components: &[&OsStr]) -> Result<PathBuf, String> {
    let Some((last, parents)) = components.split_last() else {
        return Err("it names the layer root".into());
    };
    let mut path = root.to_path_buf();
    for component in parents {
        path.push(component);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "its parent {:?} is a symlink",
                path.strip_prefix(root).unwrap_or(&path)
            ));
        }
    }
    path.push(last);
    Ok(path)
}

/// Removes whatever is at `path` (a directory with its content), never following a symlink.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Owner (when root), then mode (chown clears set-id bits; not for symlinks), then times.
fn set_owner_mode_time(path: &Path, meta: Meta, am_root: bool, chmod: bool) -> io::Result<()> {
    if am_root {
        let uid = u32::try_from(meta.uid).map_err(|_| io::Error::other("uid out of range"))?;
        let gid = u32::try_from(meta.gid).map_err(|_| io::Error::other("gid out of range"))?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    if chmod {
        fs::set_permissions(path, Permissions::from_mode(meta.mode & 0o7777))?;
    }
    let time = TimeSpec::new(meta.mtime, 0);
    utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// Root-only checks run when root; they never skip under CI=true.
    fn running_as_root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs root, and CI runs as root"
        );
        eprintln!("skipping {test}: needs root");
        false
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    /// A tar in memory, entry by entry.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn dir(mut self, path: &str, mode: u32) -> Self {
            let mut h = header(tar::EntryType::Directory, mode, 0, 0);
            self.0.append_data(&mut h, path, io::empty()).expect("dir");
            self
        }
        fn file(mut self, path: &str, mode: u32, uid: u64, data: &[u8]) -> Self {
            let mut h = header(tar::EntryType::Regular, mode, uid, uid);
            h.set_size(data.len() as u64);
            self.0.append_data(&mut h, path, data).expect("file");
            self
        }
        fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
            self.0.append_link(&mut h, path, target).expect("symlink");
            self
        }
        fn hardlink(mut self, path: &str, target: &str) -> Self {
            let mut h = header(tar::EntryType::Link, 0o644, 0, 0);
            self.0.append_link(&mut h, path, target).expect("hardlink");
            self
        }
        fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
            let mut h = header(kind, 0o666, 0, 0);
            h.set_device_major(major).expect("major");
            h.set_device_minor(minor).expect("minor");
            self.0
                .append_data(&mut h, path, io::empty())
                .expect("device");
            self
        }
        /// An entry whose name is written raw, bypassing the builder's own checks.
        fn raw(mut self, name: &[u8], kind: tar::EntryType) -> Self {
            let mut h = header(kind, 0o644, 0, 0);
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            self.0.append(&h, io::empty()).expect("raw");
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().expect("tar finishes")
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).expect("zstd")
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn unpack(blob: &[u8], media_type: &str) -> (tempfile::TempDir, Result<Unpacked, UnpackError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = unpack_layer(blob, media_type, dir.path());
        (dir, result)
    }

    fn sample() -> Vec<u8> {
        Tar::new()
            .dir("./", 0o755)
            .dir("bin", 0o755)
            .file("bin/busybox", 0o4755, 0, b"#!busybox")
            .symlink("bin/sh", "busybox")
            .symlink("bin/abs", "/bin/busybox")
            .hardlink("bin/hard", "bin/busybox")
            .dir("etc", 0o700)
            .file("etc/passwd", 0o644, 0, b"root:x:0:0::/root:/bin/sh\n")
            .file("home/nobody/f", 0o640, 65534, b"mine")
            .dir("ro", 0o555)
            .file("ro/inside", 0o444, 0, b"x")
            .bytes()
    }

    #[test]
    fn media_types_and_magic() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            (
                "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            ("application/wasm", None),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                compression_for_media_type(media_type).ok(),
                want,
                "{media_type}"
            );
        }
        assert_eq!(detect_compression(&gzip(b"x")), Compression::Gzip);
        assert_eq!(detect_compression(&zstd(b"x")), Compression::Zstd);
        assert_eq!(detect_compression(b"bin/\0\0"), Compression::None);
        assert_eq!(detect_compression(b""), Compression::None);
    }

    #[test]
    fn unpacks_plain_gzip_and_zstd_with_the_same_diff_id() {
        let tar = sample();
        let want = sha(&tar);
        let blobs = [
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            (
                gzip(&tar),
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (zstd(&tar), "application/vnd.oci.image.layer.v1.tar+zstd"),
            // Mislabelled: the content decides.
            (zstd(&tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
        ];
        for (blob, media_type) in blobs {
            let (dir, result) = unpack(&blob, media_type);
            let unpacked = result.unwrap_or_else(|e| panic!("{media_type}: {e}"));
            assert_eq!(unpacked.diff_id, want, "{media_type}");
            assert_eq!(unpacked.tar_size, tar.len() as u64);
            let root = dir.path();
            assert_eq!(
                fs::read(root.join("bin/busybox")).expect("busybox"),
                b"#!busybox"
            );
            assert_eq!(
                fs::read_link(root.join("bin/sh")).expect("sh"),
                Path::new("busybox")
            );
            assert_eq!(
                fs::read_link(root.join("bin/abs")).expect("abs"),
                Path::new("/bin/busybox")
            );
            let busybox = fs::metadata(root.join("bin/busybox")).expect("meta");
            let hard = fs::metadata(root.join("bin/hard")).expect("meta");
            assert_eq!(busybox.ino(), hard.ino(), "hard link shares the inode");
            assert_eq!(busybox.mode() & 0o7777, 0o4755, "set-uid bit kept");
            assert_eq!(busybox.mtime(), 1_600_000_000);
            assert_eq!(
                fs::metadata(root.join("etc")).expect("etc").mode() & 0o7777,
                0o700
            );
            assert_eq!(
                fs::metadata(root.join("ro")).expect("ro").mode() & 0o7777,
                0o555
            );
            assert_eq!(
                fs::metadata(root.join("home")).expect("home").mode() & 0o7777,
                0o755
            );
            assert_eq!(fs::metadata(root).expect("root").mode() & 0o7777, 0o755);
            if nix::unistd::geteuid().is_root() {
                let f = fs::metadata(root.join("home/nobody/f")).expect("f");
                assert_eq!((f.uid(), f.gid()), (65534, 65534));
            }
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !running_as_root("whiteouts_become_overlay_whiteouts") {
            return;
        }
        let tar = Tar::new()
            .dir("etc", 0o755)
            .file("etc/.wh.motd", 0o644, 0, b"")
            .dir("var/cache", 0o755)
            .file("var/cache/.wh..wh..opq", 0o644, 0, b"")
            .file("var/cache/kept", 0o644, 0, b"new")
            .file("gone/.wh.deep", 0o644, 0, b"")
            .file(".wh..wh.plnk", 0o644, 0, b"")
            .device("dev/null", tar::EntryType::Char, 1, 3)
            .device("dev/loop0", tar::EntryType::Block, 7, 0)
            .device("run/fifo", tar::EntryType::Fifo, 0, 0)
            .bytes();
        let (dir, result) = unpack(&tar, "application/vnd.oci.image.layer.v1.tar");
        result.expect("unpacks");
        let root = dir.path();
        let whiteout = fs::symlink_metadata(root.join("etc/motd")).expect("whiteout exists");
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0, "a whiteout is device 0/0");
        assert!(!root.join("etc/.wh.motd").exists());
        let deep = fs::symlink_metadata(root.join("gone/deep")).expect("whiteout in a new dir");
        assert!(deep.file_type().is_char_device());
        assert_eq!(
            xattr::get(root.join("var/cache"), OVERLAY_OPAQUE_XATTR).expect("xattr"),
            Some(b"y".to_vec())
        );
        assert!(!root.join("var/cache/.wh..wh..opq").exists());
        assert_eq!(fs::read(root.join("var/cache/kept")).expect("kept"), b"new");
        assert!(!root.join(".wh..wh.plnk").exists());
        let null = fs::symlink_metadata(root.join("dev/null")).expect("null");
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = fs::symlink_metadata(root.join("dev/loop0")).expect("loop0");
        assert!(lp.file_type().is_block_device());
        assert_eq!(lp.rdev(), makedev(7, 0));
        assert!(fs::symlink_metadata(root.join("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo());
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tar = Tar::new()
            .file("a", 0o644, 0, b"one")
            .file("a", 0o600, 0, b"two")
            .symlink("b", "a")
            .file("b", 0o644, 0, b"file now")
            .file("c/x", 0o644, 0, b"")
            .file("c", 0o644, 0, b"not a dir")
            .bytes();
        let (dir, result) = unpack(&tar, "application/vnd.oci.image.layer.v1.tar");
        result.expect("unpacks");
        let root = dir.path();
        assert_eq!(fs::read(root.join("a")).expect("a"), b"two");
        assert!(!fs::symlink_metadata(root.join("b"))
            .expect("b")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(root.join("c")).expect("c"), b"not a dir");
    }

    #[test]
    fn escaping_entries_are_refused_by_name() {
        let outside = tempfile::tempdir().expect("tempdir");
        let outside_path = outside.path().display().to_string();
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                Tar::new().raw(b"../evil", tar::EntryType::Regular).bytes(),
                "../evil",
                "'..'",
            ),
            (
                Tar::new()
                    .raw(b"a/../../evil", tar::EntryType::Regular)
                    .bytes(),
                "a/../../evil",
                "'..'",
            ),
            (
                Tar::new()
                    .raw(b"/etc/evil", tar::EntryType::Regular)
                    .bytes(),
                "/etc/evil",
                "absolute",
            ),
            (
                Tar::new()
                    .symlink("link", &outside_path)
                    .file("link/evil", 0o644, 0, b"x")
                    .bytes(),
                "link/evil",
                "parent \"link\" is a symlink",
            ),
            (
                Tar::new()
                    .symlink("up", "..")
                    .file("up/evil", 0o644, 0, b"x")
                    .bytes(),
                "up/evil",
                "symlink",
            ),
            (
                Tar::new()
                    .symlink("d", &outside_path)
                    .file("d/.wh.x", 0o644, 0, b"")
                    .bytes(),
                "d/.wh.x",
                "symlink",
            ),
            (
                Tar::new().hardlink("h", "../../etc/passwd").bytes(),
                "h",
                "hard link target \"../../etc/passwd\"",
            ),
            (
                Tar::new()
                    .symlink("l", &outside_path)
                    .hardlink("h", "l/secret")
                    .bytes(),
                "h",
                "hard link target \"l/secret\": its parent \"l\" is a symlink",
            ),
        ];
        fs::write(outside.path().join("secret"), b"s").expect("secret");
        for (tar, entry, why) in cases {
            let (dir, result) = unpack(&tar, "application/vnd.oci.image.layer.v1.tar");
            let e = result.expect_err(entry);
            assert!(matches!(e, UnpackError::Escape { .. }), "{entry}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("{entry:?}")),
                "{text} names {entry:?}"
            );
            assert!(text.contains(why), "{text} says {why:?}");
            assert!(!outside.path().join("evil").exists());
            assert!(!dir.path().parent().expect("parent").join("evil").exists());
        }
        assert_eq!(fs::read_dir(outside.path()).expect("outside").count(), 1);
    }

    #[test]
    fn malformed_layers_are_errors() {
        let tar = sample();
        let mut truncated = gzip(&tar);
        truncated.truncate(truncated.len() / 2);
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                truncated,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "reading the layer",
            ),
            (
                tar.clone(),
                "application/vnd.oci.image.config.v1+json",
                "unsupported layer media type",
            ),
            (
                Tar::new().hardlink("h", "missing").bytes(),
                "application/vnd.oci.image.layer.v1.tar",
                "not in the layer before it",
            ),
            (
                Tar::new()
                    .dir("d", 0o755)
                    .file("d/.wh..", 0o644, 0, b"")
                    .bytes(),
                "application/vnd.oci.image.layer.v1.tar",
                "a whiteout must name a file",
            ),
            (
                Tar::new()
                    .file("f", 0o644, 0, b"")
                    .file("f/x", 0o644, 0, b"")
                    .bytes(),
                "application/vnd.oci.image.layer.v1.tar",
                "parent \"f\" is not a directory",
            ),
        ];
        for (blob, media_type, want) in cases {
            let (_dir, result) = unpack(&blob, media_type);
            let e = result.expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }
}
