//! A container's CRI log that rotates as the kubelet's container log manager rotates it: once
//! a write would take the file past `max_size` bytes, the file is renamed to
//! `<file>.<UTC time, %Y%m%d-%H%M%S.nanoseconds>` and a new one begun, and only the newest
//! `max_files - 1` rotated files are kept beside the current one. As the kubelet does, every
//! rotated file but the newest is then gzipped (`<file>.<time>.gz`, written beside it as
//! `….gz.tmp` and renamed, on a thread of its own so the container's output never waits on
//! it); the newest stays plain because a follower may still be reading it. The shim writes
//! whole batches of records in one call, so a record is never split across files; `skiff logs`
//! reads the current file (and a follower moves on to the new one).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The kubelet's defaults: `--container-log-max-size=10Mi`, `--container-log-max-files=5`.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u32 = 5;

/// When a log rotates and how many files it keeps (the current one included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for LogRotation {
    fn default() -> LogRotation {
        LogRotation {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// The log file of one container run, rotated by [`LogRotation`] (or never, without one).
pub struct RotatingLog {
    path: PathBuf,
    rotation: Option<LogRotation>,
    file: File,
    size: u64,
    /// The compression of older rotated files started at the last rotation.
    compressing: Option<std::thread::JoinHandle<()>>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The suffix of a compressed rotated file.
const GZ: &str = ".gz";
/// The suffix of a compression in progress.
const PARTIAL: &str = ".tmp";

/// The rotated files of `path`, plain or compressed, oldest first (their names sort by time).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && !name.ends_with(PARTIAL)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

impl RotatingLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, rotation: Option<LogRotation>) -> io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            rotation,
            file,
            size,
            compressing: None,
        })
    }

    /// Waits for the compression started at the last rotation, if any.
    fn finish_compressing(&mut self) {
        if let Some(running) = self.compressing.take() {
            if running.join().is_err() {
                tracing::warn!(log = %self.path.display(), "compressing rotated logs panicked");
            }
        }
    }

    fn rotate(&mut self, keep: u32) -> io::Result<()> {
        self.file.flush()?;
        // Fixed-width times with nanoseconds, so that names sort as the files were made.
        let now = jiff::Timestamp::now();
        let stamp = format!(
            "{}.{:09}",
            now.strftime("%Y%m%d-%H%M%S"),
            now.subsec_nanosecond()
        );
        let mut target = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}.{n}", self.path.display()));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        // The last compression has had a whole file's worth of writes to finish; it must not
        // rename a file into place after the pruning below removed its source.
        self.finish_compressing();
        let old = rotated_files(&self.path);
        let excess = old.len().saturating_sub(keep.saturating_sub(1) as usize);
        for gone in &old[..excess] {
            std::fs::remove_file(gone)?;
        }
        let Some((_newest, older)) = old[excess..].split_last() else {
            return Ok(());
        };
        let plain: Vec<PathBuf> = older
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with(GZ))
            .cloned()
            .collect();
        if !plain.is_empty() {
            self.compressing = Some(std::thread::spawn(move || {
                for file in plain {
                    if let Err(e) = compress(&file) {
                        tracing::warn!(log = %file.display(), error = %e, "cannot compress a rotated log");
                    }
                }
            }));
        }
        Ok(())
    }
}

impl Drop for RotatingLog {
    fn drop(&mut self) {
        self.finish_compressing();
    }
}

/// Replaces `file` by `file.gz`: written as `file.gz.tmp`, synced, renamed, then the plain one
/// removed, so an interruption leaves the plain file (and a partial the next pass ignores).
pub fn compress(file: &Path) -> io::Result<()> {
    let done = PathBuf::from(format!("{}{GZ}", file.display()));
    let partial = PathBuf::from(format!("{}{GZ}{PARTIAL}", file.display()));
    let mut source = File::open(file)?;
    let out = File::create(&partial)?;
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let written = io::copy(&mut source, &mut encoder)
        .and_then(|_| encoder.finish())
        .and_then(|out| out.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &done)?;
    std::fs::remove_file(file)
}

impl Write for RotatingLog {
    /// Writes all of `buf` to one file: the current one, or a new one when it would pass
    /// the size limit.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(r) = self.rotation {
            if self.size > 0 && self.size + buf.len() as u64 > r.max_size {
                self.rotate(r.max_files)?;
            }
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_rotated(file: &Path) -> String {
        let bytes = std::fs::read(file).expect("rotated");
        if file.to_string_lossy().ends_with(".gz") {
            let mut text = String::new();
            io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
                .expect("gzip");
            text
        } else {
            String::from_utf8(bytes).expect("utf-8")
        }
    }

    #[test]
    fn the_log_rotates_past_its_size_and_keeps_its_newest_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let rotation = LogRotation {
            max_size: 100,
            max_files: 3,
        };
        let mut log = RotatingLog::open(&path, Some(rotation)).expect("open");
        let record = |i: usize| format!("record {i:03} {}\n", "x".repeat(30));
        for i in 0..20 {
            log.write_all(record(i).as_bytes()).expect("write");
        }
        log.flush().expect("flush");
        let current = std::fs::read_to_string(&path).expect("current");
        assert!(current.len() <= 100, "{} bytes", current.len());
        assert!(current.ends_with(&record(19)), "{current}");
        // Whole records only, in every file; all but the newest rotated one compressed.
        drop(log);
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(rotated[0].to_string_lossy().ends_with(".gz"), "{rotated:?}");
        assert!(
            !rotated[1].to_string_lossy().ends_with(".gz"),
            "{rotated:?}"
        );
        for f in &rotated {
            let text = read_rotated(f);
            assert!(text.lines().all(|l| l.starts_with("record ")), "{text}");
            assert!(text.len() <= 100);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            3,
            "no partial compressions are left"
        );
        // The newest rotated file holds the records just before the current file's.
        let newest = read_rotated(rotated.last().expect("one"));
        let first_current: usize = current[7..10].parse().expect("number");
        assert!(newest.contains(&record(first_current - 1)), "{newest}");

        // Without rotation the file only grows.
        let plain = dir.path().join("1.log");
        let mut log = RotatingLog::open(&plain, None).expect("open");
        for i in 0..20 {
            log.write_all(record(i).as_bytes()).expect("write");
        }
        assert_eq!(std::fs::metadata(&plain).expect("meta").len(), 20 * 42);
        assert!(rotated_files(&plain).is_empty());
    }
}
