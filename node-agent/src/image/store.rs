//! The on-disk, content-addressed image store under the root the agent gives
//! (`<root-dir>/images`):
//!
//! ```text
//! blobs/sha256/<hex>          manifests, indexes, configs and compressed layers, as fetched
//! layers/sha256/<hex>/fs/     a layer unpacked once (keyed by its blob digest), shared by images
//! layers/sha256/<hex>/diffid  the digest of its uncompressed tar
//! images/<sha256 of ref>.json one record per normalised reference
//! tmp/                        work in progress, emptied when the store opens
//! ```
//!
//! Nothing appears under `blobs/`, `layers/` or `images/` except by a rename from `tmp/` once it
//! is complete (and, for blobs, verified), so a crash mid-download or mid-unpack leaves nothing a
//! later pull could mistake for content. All functions here block; the service calls them off
//! the async threads.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempfile::{NamedTempFile, TempDir};

use super::pull::{sha256_digest, sha256_hex, PullError};

/// One stored image, as `images/<…>.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The digest the reference resolved to (an index's for multi-platform images).
    pub repo_digest: String,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The image config's digest.
    pub config_digest: String,
    /// Layers, lowest first.
    pub layers: Vec<LayerRecord>,
    /// Bytes of the config plus the compressed layers.
    pub size: u64,
    /// When it was last pulled (resolved against a registry) or imported from a tarball.
    #[serde(with = "rfc3339")]
    pub pulled_at: jiff::Timestamp,
    /// When a container last asked for it.
    #[serde(with = "rfc3339")]
    pub last_used: jiff::Timestamp,
}

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// The compressed blob's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: String,
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<jiff::Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The store's directories.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Creates the layout under `root` if missing and empties `tmp/`.
    pub fn open(root: &Path) -> io::Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in ["blobs/sha256", "layers/sha256", "images", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        for entry in fs::read_dir(store.tmp())? {
            let path = entry?.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover work");
            }
        }
        Ok(store)
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where blob `digest` is (or would be).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, PullError> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    /// Whether blob `digest` is stored.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The directory of layer `digest` (its `fs/` is the overlay lower dir).
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf, PullError> {
        Ok(self.root.join("layers/sha256").join(sha256_hex(digest)?))
    }

    /// The unpacked content of layer `digest`, for overlayfs.
    pub fn layer_fs(&self, digest: &str) -> Result<PathBuf, PullError> {
        Ok(self.layer_dir(digest)?.join("fs"))
    }

    /// Whether layer `digest` is unpacked.
    pub fn has_layer(&self, digest: &str) -> bool {
        self.layer_fs(digest).is_ok_and(|p| p.is_dir())
    }

    /// A new file in `tmp/`, removed when dropped unless committed.
    pub fn temp_file(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp())
    }

    /// A new directory in `tmp/`, removed when dropped unless committed.
    pub fn temp_dir(&self) -> io::Result<TempDir> {
        tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.tmp())
    }

    /// Moves a complete, verified temp file into place as blob `digest`.
    pub fn commit_blob(&self, file: NamedTempFile, digest: &str) -> Result<PathBuf, PullError> {
        let path = self.blob_path(digest)?;
        file.persist(&path).map_err(|e| PullError::Io {
            what: format!("storing blob {digest}"),
            source: e.error,
        })?;
        Ok(path)
    }

    /// Stores `bytes` as a blob, named by their own sha256 (which must be `digest`).
    pub fn put_blob_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), PullError> {
        let got = sha256_digest(bytes);
        if got != digest {
            return Err(PullError::DigestMismatch {
                what: "blob".into(),
                expected: digest.to_string(),
                got,
            });
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        let io_error = |source| PullError::Io {
            what: format!("storing blob {digest}"),
            source,
        };
        let mut file = self.temp_file().map_err(io_error)?;
        file.write_all(bytes).map_err(io_error)?;
        file.as_file().sync_all().map_err(io_error)?;
        self.commit_blob(file, digest)?;
        Ok(())
    }

    /// Reads a stored blob whole (manifests and configs; never layers).
    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, PullError> {
        let path = self.blob_path(digest)?;
        let io_error = |source| PullError::Io {
            what: format!("reading blob {digest}"),
            source,
        };
        let len = fs::metadata(&path).map_err(io_error)?.len();
        if len > limit {
            return Err(PullError::Unsupported(format!(
                "blob {digest} is {len} bytes, more than the {limit} accepted"
            )));
        }
        fs::read(&path).map_err(io_error)
    }

    /// Moves a complete unpack (`tmp/…/fs`) into place as layer `digest`, recording its diff
    /// ID. If another pull got there first, keeps theirs.
    pub fn commit_layer(
        &self,
        dir: TempDir,
        digest: &str,
        diff_id: &str,
    ) -> Result<PathBuf, PullError> {
        let target = self.layer_dir(digest)?;
        let io_error = |source| PullError::Io {
            what: format!("storing unpacked layer {digest}"),
            source,
        };
        fs::write(dir.path().join("diffid"), diff_id).map_err(io_error)?;
        let staged = dir.keep();
        if let Err(e) = fs::rename(&staged, &target) {
            let lost_race = target.join("fs").is_dir();
            if let Err(cleanup) = fs::remove_dir_all(&staged) {
                tracing::warn!(path = %staged.display(), error = %cleanup, "cannot remove a staged layer");
            }
            if !lost_race {
                return Err(io_error(e));
            }
        }
        Ok(target.join("fs"))
    }

    /// The diff ID recorded for an unpacked layer.
    pub fn layer_diff_id(&self, digest: &str) -> Option<String> {
        let path = self.layer_dir(digest).ok()?.join("diffid");
        fs::read_to_string(path).ok().map(|s| s.trim().to_string())
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let key = sha256_digest(reference.as_bytes());
        self.root.join("images").join(format!("{}.json", &key[7..]))
    }

    /// The record for a normalised reference, if stored.
    pub fn record(&self, reference: &str) -> io::Result<Option<ImageRecord>> {
        match fs::read(self.record_path(reference)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("image record for {reference}: {e}"),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a record atomically (temp file, fsync, rename).
    pub fn put_record(&self, record: &ImageRecord) -> io::Result<()> {
        let mut file = self.temp_file()?;
        serde_json::to_writer_pretty(&mut file, record).map_err(io::Error::other)?;
        file.as_file().sync_all()?;
        file.persist(self.record_path(&record.reference))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes the record of `reference` (its blobs and layers stay until [`Self::sweep`]).
    pub fn remove_record(&self, reference: &str) -> io::Result<()> {
        match fs::remove_file(self.record_path(reference)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every blob and unpacked layer whose digest hex is not in `keep_blobs` /
    /// `keep_layers`; returns the bytes they took on disk. A layer is first renamed into
    /// `tmp/`, so it leaves `layers/` at once and a crash mid-removal leaves only work that the
    /// next [`Self::open`] clears.
    pub fn sweep(
        &self,
        keep_blobs: &HashSet<String>,
        keep_layers: &HashSet<String>,
    ) -> io::Result<u64> {
        let mut freed = 0;
        for entry in fs::read_dir(self.root.join("blobs/sha256"))? {
            let entry = entry?;
            if keep_blobs.contains(&*entry.file_name().to_string_lossy()) {
                continue;
            }
            freed += disk_bytes(&entry.path());
            fs::remove_file(entry.path())?;
        }
        for entry in fs::read_dir(self.root.join("layers/sha256"))? {
            let entry = entry?;
            if keep_layers.contains(&*entry.file_name().to_string_lossy()) {
                continue;
            }
            freed += disk_bytes(&entry.path());
            let doomed = self.temp_dir()?.keep();
            fs::rename(entry.path(), &doomed)?;
            fs::remove_dir_all(&doomed)?;
        }
        Ok(freed)
    }

    /// Every stored record, ordered by reference. Unreadable records are logged and skipped.
    pub fn records(&self) -> io::Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("images"))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path).map(|b| serde_json::from_slice::<ImageRecord>(&b)) {
                Ok(Ok(record)) => out.push(record),
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a malformed image record")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable image record")
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }
}

/// The bytes `path` (a file, or a directory and all below it) takes on disk; what cannot be
/// read counts as nothing.
fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| disk_bytes(&e.path()))
                .sum::<u64>()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reference: &str) -> ImageRecord {
        let t: jiff::Timestamp = "2024-05-01T10:00:00Z".parse().expect("timestamp");
        ImageRecord {
            reference: reference.into(),
            repo_digest: sha256_digest(b"index"),
            manifest_digest: sha256_digest(b"manifest"),
            config_digest: sha256_digest(b"config"),
            layers: vec![LayerRecord {
                digest: sha256_digest(b"layer"),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: 5,
                diff_id: sha256_digest(b"tar"),
            }],
            size: 11,
            pulled_at: t,
            last_used: t,
        }
    }

    #[test]
    fn records_round_trip_and_list_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(
            store
                .record("docker.io/library/busybox:latest")
                .expect("read"),
            None
        );
        for r in ["docker.io/library/b:1", "docker.io/library/a:1"] {
            store.put_record(&record(r)).expect("write");
        }
        assert_eq!(
            store.record("docker.io/library/b:1").expect("read"),
            Some(record("docker.io/library/b:1"))
        );
        let refs: Vec<String> = store
            .records()
            .expect("list")
            .into_iter()
            .map(|r| r.reference)
            .collect();
        assert_eq!(refs, ["docker.io/library/a:1", "docker.io/library/b:1"]);
        // Nothing is left in tmp/ after atomic writes.
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        let text = fs::read_to_string(store.record_path("docker.io/library/a:1")).expect("json");
        assert!(
            text.contains("\"pulledAt\": \"2024-05-01T10:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn blobs_are_content_addressed_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let digest = sha256_digest(b"hello");
        assert!(!store.has_blob(&digest));
        store.put_blob_bytes(&digest, b"hello").expect("put");
        assert!(store.has_blob(&digest));
        assert_eq!(store.read_blob(&digest, 100).expect("read"), b"hello");
        assert!(store.read_blob(&digest, 2).is_err(), "limit applies");
        let wrong = store
            .put_blob_bytes(&sha256_digest(b"other"), b"hello")
            .expect_err("mismatch");
        assert!(wrong.to_string().contains("digest mismatch"), "{wrong}");
        assert!(store.blob_path("md5:abc").is_err());
        assert_eq!(
            store.blob_path(&digest).expect("path"),
            dir.path().join("blobs/sha256").join(&digest[7..])
        );
    }

    #[test]
    fn layers_commit_once_and_leftovers_are_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let digest = sha256_digest(b"layer");
        for content in ["first", "second"] {
            let staged = store.temp_dir().expect("temp");
            fs::create_dir(staged.path().join("fs")).expect("fs");
            fs::write(staged.path().join("fs/file"), content).expect("file");
            let fs_dir = store
                .commit_layer(staged, &digest, "sha256:d")
                .expect("commit");
            assert_eq!(fs_dir, store.layer_fs(&digest).expect("path"));
        }
        // The first commit stays; the second is discarded.
        assert_eq!(
            fs::read_to_string(store.layer_fs(&digest).expect("fs").join("file")).expect("read"),
            "first"
        );
        assert!(store.has_layer(&digest));
        assert_eq!(store.layer_diff_id(&digest).as_deref(), Some("sha256:d"));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );

        // Work left in tmp/ by a crash is removed when the store opens again.
        let leftover = store.temp_dir().expect("temp").keep();
        let partial = store.temp_file().expect("temp").keep().expect("keep").1;
        Store::open(dir.path()).expect("reopen");
        assert!(!leftover.exists());
        assert!(!partial.exists());
    }
}
