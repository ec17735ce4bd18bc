//! The current snapshot as one file of its own (`<data-dir>/snap/current`), not a value in the
//! state database.
//!
//! sled keeps the recent versions of a value in memory until it consolidates the page that holds
//! them; with the snapshot stored there (one value of many MiB, replaced at every snapshot) a
//! replica held the last four snapshots in memory, and its resident memory stepped up at every
//! snapshot (the soak benchmark, docs/benchmarks.md). A file costs memory only while it is read
//! or written.
//!
//! The file is written beside the current one, synced, renamed over it and the directory synced,
//! so a crash leaves either the old snapshot or the new one, never a torn one. Layout: the magic
//! `SKIFFSNP`, the encoded meta's length (u64, little-endian), the meta (`codec`), the body.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::SnapshotMeta;
use crate::codec;

const MAGIC: &[u8; 8] = b"SKIFFSNP";
const CURRENT: &str = "current";
const TEMPORARY: &str = "current.tmp";
/// The magic and the meta's length.
const HEADER: usize = MAGIC.len() + 8;

/// The directory that holds the current snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// Opens (creating it if needed) the snapshot directory `dir`; a temporary file left by a
    /// crash mid-write is removed.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        match fs::remove_file(dir.join(TEMPORARY)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn current(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Replaces the current snapshot with `meta` and `body`, durably.
    pub fn save(&self, meta: &SnapshotMeta, body: &[u8]) -> io::Result<()> {
        let mut pending = self.begin(meta)?;
        pending.write_all(body)?;
        pending.commit().map(|_| ())
    }

    /// Starts writing a snapshot with `meta` beside the current one: the caller writes the body
    /// into the [`PendingSnapshot`] (as it reads the state, without holding it in memory) and
    /// then commits it.
    pub fn begin(&self, meta: &SnapshotMeta) -> io::Result<PendingSnapshot> {
        let meta = codec::encode(meta);
        let temporary = self.dir.join(TEMPORARY);
        let mut file = io::BufWriter::with_capacity(1 << 20, File::create(&temporary)?);
        file.write_all(MAGIC)?;
        file.write_all(&(meta.len() as u64).to_le_bytes())?;
        file.write_all(&meta)?;
        Ok(PendingSnapshot {
            file,
            header: (HEADER + meta.len()) as u64,
            temporary,
            current: self.current(),
            dir: self.dir.clone(),
        })
    }

    /// The current snapshot's meta and body, if there is one.
    pub fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let mut file = match File::open(self.current()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::with_capacity(file.metadata()?.len() as usize);
        file.read_to_end(&mut bytes)?;
        let meta_end = HEADER + self.meta_len(&bytes)?;
        let meta =
            codec::decode(&bytes[HEADER..meta_end]).map_err(|e| self.bad(&format!("meta: {e}")))?;
        bytes.drain(..meta_end);
        Ok(Some((meta, bytes)))
    }

    /// The size of the current snapshot's body in bytes (0 without one).
    pub fn body_len(&self) -> io::Result<u64> {
        let mut file = match File::open(self.current()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let total = file.metadata()?.len() as usize;
        let mut head = Vec::with_capacity(HEADER);
        (&mut file).take(HEADER as u64).read_to_end(&mut head)?;
        let meta_len = self.meta_len_within(&head, total)?;
        Ok((total - HEADER - meta_len) as u64)
    }

    /// The encoded meta's length from the start of a snapshot file, checked against the bytes
    /// that follow the header.
    fn meta_len(&self, bytes: &[u8]) -> io::Result<usize> {
        self.meta_len_within(bytes, bytes.len())
    }

    /// As [`Self::meta_len`], for a file of `total` bytes whose first bytes are `head`.
    fn meta_len_within(&self, head: &[u8], total: usize) -> io::Result<usize> {
        let rest = head
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| self.bad("not a Skiff snapshot (wrong magic)"))?;
        let (len, _) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| self.bad("truncated before the meta's length"))?;
        usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|len| *len <= total - HEADER)
            .ok_or_else(|| self.bad("truncated meta"))
    }

    fn bad(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot file {}: {what}", self.current().display()),
        )
    }
}

/// A snapshot being written (see [`SnapshotFiles::begin`]); dropped without a commit, it leaves
/// the current snapshot as it was (its temporary file is replaced or removed later).
pub struct PendingSnapshot {
    file: io::BufWriter<File>,
    header: u64,
    temporary: PathBuf,
    current: PathBuf,
    dir: PathBuf,
}

/// Writing to it writes the body.
impl Write for PendingSnapshot {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl PendingSnapshot {
    /// Syncs the file, renames it over the current snapshot and syncs the directory; the size
    /// of the body.
    pub fn commit(self) -> io::Result<u64> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let body = file.metadata()?.len().saturating_sub(self.header);
        drop(file);
        fs::rename(&self.temporary, &self.current)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{StoredMembership, TypeConfig};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(2, 1, index)),
            last_membership: StoredMembership::default(),
        }
    }

    #[test]
    fn saves_replaces_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = SnapshotFiles::open(&dir.path().join("snap")).expect("open");
        assert!(files.load().expect("load").is_none());
        assert_eq!(files.body_len().expect("len"), 0);
        files.save(&meta(7), b"first body").expect("save");
        files.save(&meta(9), b"second").expect("save");
        let (m, body) = files.load().expect("load").expect("a snapshot");
        assert_eq!(m, meta(9));
        assert_eq!(body, b"second");
        assert_eq!(files.body_len().expect("len"), 6);
        // Reopened, as after a restart; a temporary file from a crash mid-write is dropped.
        fs::write(dir.path().join("snap").join(TEMPORARY), b"torn").expect("write");
        let files = SnapshotFiles::open(&dir.path().join("snap")).expect("open");
        assert!(!dir.path().join("snap").join(TEMPORARY).exists());
        assert_eq!(
            files.load().expect("load").expect("a snapshot").1,
            b"second"
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = SnapshotFiles::open(dir.path()).expect("open");
        fs::write(
            dir.path().join(CURRENT),
            b"SKIFFSNP\xff\xff\x00\x00\x00\x00\x00\x00ab",
        )
        .expect("write");
        let e = files.load().expect_err("truncated");
        assert!(e.to_string().contains("truncated meta"), "{e}");
        fs::write(dir.path().join(CURRENT), b"something else").expect("write");
        let e = files.load().expect_err("wrong magic");
        assert!(e.to_string().contains("wrong magic"), "{e}");
        assert!(e.to_string().contains("current"), "{e}");
    }
}
