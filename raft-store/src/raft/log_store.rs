//! The Raft log and vote in sled. Appends and votes are flushed to disk before openraft is told
//! they are persisted (sled's own background flush runs only every 500 ms).
//!
//! Appends commit as a group: `append` writes its entries to sled and returns at once, handing
//! its completion to the flusher task, which makes every append that arrived while the previous
//! flush ran durable with one flush (one fsync of sled's log) and then reports them all. Under
//! load many client writes share an fsync; alone, a write waits for exactly one.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use super::{Entry, LogId, TypeConfig, Vote};
use crate::codec;

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// Log entries keyed by big-endian index, plus vote and purge/commit markers. Cloning shares the
/// same trees (used for log readers).
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: tokio::sync::mpsc::UnboundedSender<IOFlushed<TypeConfig>>,
}

/// Makes what was written to sled durable. sled's own flush writes its buffers out with
/// `sync_file_range`, which neither flushes the device's cache nor the file's metadata (its
/// background thread fsyncs only every 500 ms), so an fdatasync of sled's data file follows:
/// acknowledged entries survive a power loss, not only a crash of the process.
#[derive(Clone)]
struct Disk {
    db: sled::Db,
    file: Arc<std::fs::File>,
}

impl Disk {
    async fn sync(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        self.db.flush_async().await.map_err(io_err)?;
        let file = self.file.clone();
        let synced = tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(io::Error::other)?;
        crate::stats::WRITE.log_syncs.add(started.elapsed());
        synced
    }
}

/// Syncs for every batch of appends waiting, then completes them (see the module comment).
/// Ends when every `LogStore` clone is gone.
async fn flush_appends(
    disk: Disk,
    mut waiting: tokio::sync::mpsc::UnboundedReceiver<IOFlushed<TypeConfig>>,
) {
    let mut group = Vec::new();
    while waiting.recv_many(&mut group, usize::MAX).await > 0 {
        let result = disk.sync().await.map_err(|e| e.to_string());
        crate::stats::WRITE
            .appends
            .fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for done in group.drain(..) {
            done.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

/// Moves the log of a data directory written before the log had a database of its own (trees
/// `raft_log` and `raft_meta` in the state database) into `log_db`, once.
pub fn move_from_shared_db(state_db: &sled::Db, log_db: &sled::Db) -> io::Result<()> {
    for name in ["raft_log", "raft_meta"] {
        let old = state_db.open_tree(name).map_err(io_err)?;
        if old.is_empty() {
            continue;
        }
        let new = log_db.open_tree(name).map_err(io_err)?;
        let mut batch = sled::Batch::default();
        for item in old.iter() {
            let (k, v) = item.map_err(io_err)?;
            batch.insert(k, v);
        }
        new.apply_batch(batch).map_err(io_err)?;
        log_db.flush().map_err(io_err)?;
        old.clear().map_err(io_err)?;
        state_db.flush().map_err(io_err)?;
        tracing::info!(tree = name, "moved the Raft log into its own database");
    }
    Ok(())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn get<T: serde::de::DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> io::Result<Option<T>> {
    match tree.get(key).map_err(io_err)? {
        Some(v) => codec::decode(&v).map(Some).map_err(io_err),
        None => Ok(None),
    }
}

impl LogStore {
    /// Opens the log of the sled database `db` kept in directory `dir`; starts its flusher on
    /// the current Tokio runtime.
    pub fn open(db: &sled::Db, dir: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::File::open(dir.join("db"))?;
        let disk = Disk {
            db: db.clone(),
            file: Arc::new(file),
        };
        let (flusher, waiting) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(flush_appends(disk.clone(), waiting));
        Ok(Self {
            disk,
            log: db.open_tree("raft_log").map_err(io_err)?,
            meta: db.open_tree("raft_meta").map_err(io_err)?,
            flusher,
        })
    }

    async fn flush(&self) -> io::Result<()> {
        self.disk.sync().await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(io_err)?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(io_err)?);
            if !range.contains(&idx) {
                break;
            }
            out.push(codec::decode(&v).map_err(io_err)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        get(&self.meta, VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = get(&self.meta, LAST_PURGED)?;
        let last = match self.log.last().map_err(io_err)? {
            Some((_, v)) => Some(codec::decode::<Entry>(&v).map_err(io_err)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta
            .insert(VOTE, codec::encode(vote))
            .map_err(io_err)?;
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed: losing it only means re-applying from the snapshot after a crash.
        self.meta
            .insert(COMMITTED, codec::encode(&committed))
            .map_err(io_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(get::<Option<LogId>>(&self.meta, COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), codec::encode(&entry));
            count += 1;
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        crate::stats::WRITE
            .entries
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        // Readable now; durable once the flusher's next flush is done.
        if let Err(unsent) = self.flusher.send(callback) {
            // The flusher is gone (shutting down): flush here.
            let result = self.flush().await;
            unsent.0.io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
            return result;
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let mut batch = sled::Batch::default();
        for item in self.log.range(from.to_be_bytes()..) {
            batch.remove(item.map_err(io_err)?.0);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.meta
            .insert(LAST_PURGED, codec::encode(&log_id))
            .map_err(io_err)?;
        // Keys are the indices, so the range is known without reading the entries (which
        // can be large); the removal runs off the async threads, as it can take a while.
        let Some((first, _)) = self.log.first().map_err(io_err)? else {
            return self.flush().await;
        };
        let first = first
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| io::Error::other("log key is not an index"))?;
        let (log, upto) = (self.log.clone(), log_id.index);
        tokio::task::spawn_blocking(move || {
            let mut batch = sled::Batch::default();
            for index in first..=upto {
                batch.remove(&index.to_be_bytes());
            }
            log.apply_batch(batch)
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io_err)?;
        tracing::info!(upto = log_id.index, "purged log");
        self.flush().await
    }
}
