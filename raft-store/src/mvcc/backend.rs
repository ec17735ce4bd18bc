//! The byte-level storage under the state machine: an ordered key-value tree with atomic batches.
//!
//! [`SledBackend`] is the real one. [`MemBackend`] keeps the same contract in memory for unit tests
//! of the layers above.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Failure of the storage engine itself (disk, corruption); never caused by client input.
#[derive(Debug, thiserror::Error)]
#[error("storage backend: {0}")]
pub struct BackendError(pub String);

impl From<sled::Error> for BackendError {
    fn from(e: sled::Error) -> Self {
        BackendError(e.to_string())
    }
}

/// A set of writes applied all-or-nothing.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered byte tree.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;
    /// Calls `visit` on every pair with `start <= key < end`, in key order, until it returns false.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError>;
    /// Applies the batch atomically. Durability is the Raft log's job; this need not fsync.
    fn write(&self, batch: Batch) -> Result<(), BackendError>;
    /// Removes everything (before installing a snapshot).
    fn clear(&self) -> Result<(), BackendError>;
    /// Forces written batches to disk.
    fn flush(&self) -> Result<(), BackendError>;
    /// Bytes on disk and bytes of them in use (live data), for status reports. May take a
    /// while on a large database: call it off the async threads.
    fn usage(&self) -> Usage;
}

/// How much of the database's disk space is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// What the database's files take.
    pub on_disk: u64,
    /// What its live pages take (the rest is space sled has yet to reuse or give back).
    pub in_use: u64,
}

/// sled's default segment size (not changed by Skiff).
const SLED_SEGMENT_BYTES: u64 = 512 * 1024;

/// A sled tree as the backend.
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledBackend {
    pub fn new(db: sled::Db, tree: sled::Tree) -> Self {
        Self { db, tree }
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        for item in self.tree.range(start..end) {
            let (k, v) = item?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: Batch) -> Result<(), BackendError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        Ok(self.tree.apply_batch(b)?)
    }

    fn clear(&self) -> Result<(), BackendError> {
        Ok(self.tree.clear()?)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.tree.flush()?;
        Ok(())
    }

    fn usage(&self) -> Usage {
        let on_disk = self.db.size_on_disk().unwrap_or(0);
        // sled reports its space amplification as on_disk / (live pages + one segment); the
        // live size is derived from it (sled 0.34 has no more direct figure).
        let in_use = match self.db.space_amplification() {
            Ok(amp) if amp > 0.0 => {
                ((on_disk as f64 / amp) as u64).saturating_sub(SLED_SEGMENT_BYTES)
            }
            _ => on_disk,
        };
        Usage {
            on_disk,
            in_use: in_use.min(on_disk),
        }
    }
}

/// In-memory backend for unit tests.
#[derive(Default)]
pub struct MemBackend {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for MemBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().get(key).cloned())
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        for (k, v) in self.lock().range(start.to_vec()..end.to_vec()) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: Batch) -> Result<(), BackendError> {
        let mut map = self.lock();
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn clear(&self) -> Result<(), BackendError> {
        self.lock().clear();
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn usage(&self) -> Usage {
        let bytes = self
            .lock()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        Usage {
            on_disk: bytes,
            in_use: bytes,
        }
    }
}
