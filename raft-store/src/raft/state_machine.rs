//! openraft's state machine over [`Machine`]: applies committed entries (one atomic sled batch per
//! entry, including the applied log id), builds and installs snapshots, and publishes every
//! applied change to watchers through the [`WatchHub`].
//!
//! A snapshot is the whole state-machine tree (key history included, so watchers on a replica that
//! installed a snapshot can still replay uncompacted revisions), encoded with `codec`, kept in a
//! file of its own (`snapshot_file`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;

use super::compactor::Compactor;
use super::snapshot_file::SnapshotFiles;
use super::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::codec;
use crate::error::StoreError;
use crate::machine::command::Applied;
use crate::machine::Machine;
use crate::mvcc::backend::{Backend, Batch, SledBackend};
use crate::watch::hub::WatchHub;

const META_APPLIED: &[u8] = b"m/raft/applied";
const META_MEMBERSHIP: &[u8] = b"m/raft/membership";
/// Where snapshots were kept before they had a file of their own (moved out at start).
const OLD_SNAPSHOT_TREE: &str = "snapshot";
const OLD_SNAPSHOT_META: &[u8] = b"meta";
const OLD_SNAPSHOT_DATA: &[u8] = b"data";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The contents of a snapshot: every pair of the state-machine tree.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotBody {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Checks that `data` is a snapshot body this build can install.
pub fn check_snapshot(data: &[u8]) -> Result<(), codec::CodecError> {
    codec::decode::<SnapshotBody>(data).map(|_| ())
}

/// Shared between openraft's state-machine worker and the client-facing services.
pub struct Shared {
    machine: RwLock<Machine>,
    snapshots: SnapshotFiles,
    pub hub: WatchHub,
    /// Deletes compacted records off the apply path.
    pub compactor: Compactor,
    /// Bumped whenever the whole state is replaced (snapshot install), so that work scheduled
    /// for the old state is dropped.
    epoch: AtomicU64,
    /// Size of the current snapshot's body.
    snapshot_bytes: AtomicU64,
    /// Held while the whole state is replaced, and by each batch of compaction (see
    /// `compactor`).
    swap: std::sync::Mutex<()>,
}

impl Shared {
    /// The lock that keeps a state replacement and a compaction batch apart.
    pub fn swap_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.swap.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Size of the current snapshot's body in bytes (0 before the first).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// The current state's epoch (see `epoch`).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Hands the physical half of a compaction just applied (or found at load) to the
    /// compaction thread.
    fn schedule_compaction(&self, m: &mut Machine) {
        if let Some(job) = m.kv.take_compaction() {
            self.compactor.schedule(job, self.epoch());
        }
    }

    /// Read access for serving clients. Never hold it across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, Machine> {
        self.machine.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Machine> {
        self.machine.write().unwrap_or_else(|p| p.into_inner())
    }

    fn applied_state(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let m = self.read();
        let backend = m.backend();
        let applied = match backend.get(META_APPLIED).map_err(io_err)? {
            Some(v) => codec::decode(&v).map_err(io_err)?,
            None => None,
        };
        let membership = match backend.get(META_MEMBERSHIP).map_err(io_err)? {
            Some(v) => codec::decode(&v).map_err(io_err)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    /// Writes the whole state as a snapshot body into `out`, as it reads it: the same bytes as
    /// `codec::encode(&SnapshotBody { pairs })`, without a copy of the state in memory. The
    /// Raft bookkeeping (applied log ID, membership) is left out of the body and returned as the
    /// snapshot's meta, from the same reading, so that the two always match; `out` is asked for
    /// once the meta is known. Holds the state (and compaction) still while it reads.
    fn write_body<W: io::Write>(
        &self,
        out: impl FnOnce(&SnapshotMeta) -> io::Result<W>,
    ) -> io::Result<(SnapshotMeta, W)> {
        let _swap = self.swap_lock();
        let m = self.read();
        let backend = m.backend();
        let everything = (&[][..], &[0xff_u8; 32][..]);
        let mut pairs = 0usize;
        let mut meta = SnapshotMeta::default();
        let mut bad = None;
        backend
            .scan(everything.0, everything.1, &mut |k, v| {
                let decoded = if k == META_APPLIED {
                    codec::decode(v).map(|a| meta.last_log_id = a)
                } else if k == META_MEMBERSHIP {
                    codec::decode(v).map(|m| meta.last_membership = m)
                } else {
                    pairs += 1;
                    Ok(())
                };
                if let Err(e) = decoded {
                    bad = Some(e);
                }
                bad.is_none()
            })
            .map_err(io_err)?;
        if let Some(e) = bad {
            return Err(io_err(e));
        }
        let mut w = out(&meta)?;
        // postcard: a sequence is its length as a varint, then its items; a byte string is its
        // length as a varint, then its bytes.
        let varint = |w: &mut W, n: usize| postcard::to_io(&n, w).map(|_| ()).map_err(io_err);
        w.write_all(&[codec::FORMAT_VERSION])?;
        varint(&mut w, pairs)?;
        let mut written = 0usize;
        let mut failed = None;
        backend
            .scan(everything.0, everything.1, &mut |k, v| {
                if k == META_APPLIED || k == META_MEMBERSHIP {
                    return true;
                }
                let r = varint(&mut w, k.len())
                    .and_then(|_| w.write_all(k))
                    .and_then(|_| varint(&mut w, v.len()))
                    .and_then(|_| w.write_all(v));
                written += 1;
                match r {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })
            .map_err(io_err)?;
        if let Some(e) = failed {
            return Err(e);
        }
        if written != pairs {
            return Err(io_err(format!(
                "the state changed while a snapshot was written ({pairs} pairs, then {written})"
            )));
        }
        Ok((meta, w))
    }

    /// A backup body for Maintenance.Snapshot (see `backup`).
    pub fn backup_body(&self) -> io::Result<Vec<u8>> {
        Ok(self.write_body(|_| Ok(Vec::new()))?.1)
    }

    fn build_snapshot(&self) -> io::Result<Snapshot> {
        let (meta, pending) = self.write_body(|meta| self.snapshots.begin(meta))?;
        // The state database must be durable up to the snapshot before the snapshot is saved:
        // the log is purged behind a saved snapshot.
        let backend = self.read().backend().clone();
        backend.flush().map_err(io_err)?;
        let body_len = pending.commit()?;
        self.snapshot_bytes.store(body_len, Ordering::Relaxed);
        // openraft takes the snapshot's data back, and drops it: one contiguous read, freed
        // whole, rather than a copy of every pair.
        let (_, data) = self
            .snapshots
            .load()?
            .ok_or_else(|| io_err("the snapshot just written is missing"))?;
        crate::memory::release_freed();
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }

    /// Saves an installed snapshot as the current one. `restore` has made the state database
    /// durable already, as it must be before openraft purges the log behind a saved snapshot.
    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        self.snapshots.save(meta, data)?;
        self.snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// openraft's handle on the state machine; cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    pub shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Opens the state machine kept in the sled database `db`, with its snapshot in the
    /// directory `snapshot_dir`.
    pub fn open(db: &sled::Db, snapshot_dir: &std::path::Path) -> io::Result<Self> {
        let tree = db.open_tree("state").map_err(io_err)?;
        let backend: Arc<dyn Backend> = Arc::new(SledBackend::new(db.clone(), tree));
        let machine = Machine::open(backend).map_err(io_err)?;
        let snapshots = SnapshotFiles::open(snapshot_dir)?;
        move_snapshot_out_of(db, &snapshots)?;
        let snapshot_bytes = snapshots.body_len()?;
        let shared = Arc::new_cyclic(|weak| Shared {
            machine: RwLock::new(machine),
            snapshots,
            hub: WatchHub::new(),
            compactor: Compactor::spawn(weak.clone()),
            epoch: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(snapshot_bytes),
            swap: std::sync::Mutex::new(()),
        });
        shared.schedule_compaction(&mut shared.write());
        Ok(Self { shared })
    }

    /// Starts a new cluster's state from a backup body: the key space and leases, without the old
    /// cluster's ID and member attributes.
    pub fn restore_backup(&self, data: &[u8]) -> io::Result<()> {
        let mut body: SnapshotBody = codec::decode(data).map_err(io_err)?;
        body.pairs
            .retain(|(k, _)| !crate::machine::cluster_scoped(k));
        self.restore(&SnapshotMeta::default(), &codec::encode(&body))
    }

    /// Replaces the whole state with a snapshot body (used for InstallSnapshot and restores).
    pub fn restore(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let body: SnapshotBody = codec::decode(data).map_err(io_err)?;
        {
            let _swap = self.shared.swap_lock();
            let mut m = self.shared.write();
            let backend = m.backend().clone();
            backend.clear().map_err(io_err)?;
            let mut batch = Batch::default();
            for (k, v) in body.pairs {
                batch.put(k, v);
            }
            batch.put(META_APPLIED, codec::encode(&meta.last_log_id));
            batch.put(META_MEMBERSHIP, codec::encode(&meta.last_membership));
            backend.write(batch).map_err(io_err)?;
            backend.flush().map_err(io_err)?;
            *m = Machine::open(backend).map_err(io_err)?;
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            self.shared.schedule_compaction(&mut m);
        }
        self.shared.hub.reset();
        crate::memory::release_freed();
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.build_snapshot())
            .await
            .map_err(io_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.shared.applied_state()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        // Everything committed so far is applied under one lock into one sled batch (the key
        // space reads the batch's own records until it is written), then the watchers and
        // the waiting clients are told.
        let mut pending = Vec::new();
        while let Some(item) = entries.try_next().await? {
            pending.push(item);
        }
        if pending.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        crate::stats::WRITE
            .applied
            .fetch_add(pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut published = Vec::new();
        let mut answers = Vec::with_capacity(pending.len());
        {
            let mut m = self.shared.write();
            let mut batch = Batch::default();
            let mut last = None;
            for (entry, responder) in pending {
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Ok(crate::machine::command::CommandResult::Done),
                    EntryPayload::Normal(cmd) => {
                        let (outcome, events) = m.apply(cmd, &mut batch);
                        // A storage failure mid-command leaves memory and disk apart: stop this
                        // replica rather than let it diverge from the others.
                        if let Err(StoreError::Internal(e)) = &outcome {
                            return Err(io::Error::other(format!("applying {cmd}: {e}")));
                        }
                        if !events.is_empty() {
                            published.push((m.kv.current_rev(), events));
                        }
                        outcome
                    }
                    EntryPayload::Membership(mem) => {
                        let stored = StoredMembership::new(Some(entry.log_id), mem.clone());
                        batch.put(META_MEMBERSHIP, codec::encode(&stored));
                        Ok(crate::machine::command::CommandResult::Done)
                    }
                };
                last = Some(entry.log_id);
                answers.push((responder, outcome));
            }
            batch.put(META_APPLIED, codec::encode(&last));
            m.backend().write(batch).map_err(io_err)?;
            m.kv.written();
            self.shared.schedule_compaction(&mut m);
        }
        crate::stats::WRITE.applies.add(started.elapsed());
        for (revision, events) in published {
            self.shared.hub.publish(revision, events);
        }
        for (responder, outcome) in answers {
            if let Some(r) = responder {
                r.send(Applied(outcome));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.restore(meta, &snapshot)?;
        self.shared.save_snapshot(meta, &snapshot)?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = snapshot.len(), "installed snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let files = self.shared.snapshots.clone();
        let loaded = tokio::task::spawn_blocking(move || files.load())
            .await
            .map_err(io_err)??;
        Ok(loaded.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Moves a snapshot kept in the state database by earlier versions into its file, and drops
/// the old tree.
fn move_snapshot_out_of(db: &sled::Db, files: &SnapshotFiles) -> io::Result<()> {
    if !db
        .tree_names()
        .iter()
        .any(|n| n == OLD_SNAPSHOT_TREE.as_bytes())
    {
        return Ok(());
    }
    let old = db.open_tree(OLD_SNAPSHOT_TREE).map_err(io_err)?;
    let meta = old.get(OLD_SNAPSHOT_META).map_err(io_err)?;
    let data = old.get(OLD_SNAPSHOT_DATA).map_err(io_err)?;
    if let (Some(meta), Some(data)) = (meta, data) {
        let meta: SnapshotMeta = codec::decode(&meta).map_err(io_err)?;
        files.save(&meta, &data)?;
        tracing::info!(
            bytes = data.len(),
            "moved the snapshot out of the state database into its own file"
        );
    }
    drop(old);
    db.drop_tree(OLD_SNAPSHOT_TREE).map_err(io_err)?;
    db.flush().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sled database in `dir`.
    fn open_db(dir: &tempfile::TempDir) -> sled::Db {
        sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("db")
    }

    #[tokio::test]
    async fn a_streamed_body_is_the_encoded_pairs_and_installs_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir);
        let sm = StateMachineStore::open(&db, &dir.path().join("snap")).expect("open");
        let applied = Some(openraft::testing::log_id::<TypeConfig>(4, 2, 77));
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..300u32)
            .map(|i| {
                (
                    format!("k/{i:05}").into_bytes(),
                    vec![i as u8; (i as usize * 37) % 700],
                )
            })
            .collect();
        // A key of 0xff bytes and an empty value, at the edges of what a scan must cover.
        pairs.push((vec![0xff; 31], Vec::new()));
        {
            let m = sm.shared.write();
            let mut batch = Batch::default();
            for (k, v) in &pairs {
                batch.put(k.clone(), v.clone());
            }
            batch.put(META_APPLIED, codec::encode(&applied));
            m.backend().write(batch).expect("write");
        }
        pairs.sort();
        let (meta, streamed) = sm.shared.write_body(|_| Ok(Vec::new())).expect("body");
        assert_eq!(meta.last_log_id, applied);
        let expected = codec::encode(&SnapshotBody {
            pairs: pairs.clone(),
        });
        assert_eq!(
            streamed, expected,
            "the same bytes as encoding the pairs at once"
        );

        // Built into its file and installed into another state machine: the same pairs.
        let snap = sm.shared.build_snapshot().expect("build");
        assert_eq!(snap.snapshot, expected);
        assert_eq!(sm.shared.snapshot_bytes(), expected.len() as u64);
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other_db = open_db(&other_dir);
        let mut other =
            StateMachineStore::open(&other_db, &other_dir.path().join("snap")).expect("open");
        other
            .install_snapshot(&snap.meta, snap.snapshot.clone())
            .await
            .expect("install");
        let (_, again) = other.shared.write_body(|_| Ok(Vec::new())).expect("body");
        assert_eq!(again, expected);
        let current = other
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("saved");
        assert_eq!(current.meta, snap.meta);
    }

    #[tokio::test]
    async fn a_snapshot_kept_in_the_database_moves_into_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir);
        let meta = SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(3, 1, 42)),
            last_membership: StoredMembership::default(),
        };
        let body = codec::encode(&SnapshotBody {
            pairs: vec![(b"k".to_vec(), b"v".to_vec())],
        });
        let old = db.open_tree(OLD_SNAPSHOT_TREE).expect("tree");
        old.insert(OLD_SNAPSHOT_META, codec::encode(&meta))
            .expect("meta");
        old.insert(OLD_SNAPSHOT_DATA, body.clone()).expect("data");
        drop(old);

        let mut sm = StateMachineStore::open(&db, &dir.path().join("snap")).expect("open");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("the old snapshot");
        assert_eq!(current.meta, meta);
        assert_eq!(current.snapshot, body);
        assert_eq!(sm.shared.snapshot_bytes(), body.len() as u64);
        assert!(
            !db.tree_names()
                .iter()
                .any(|n| n == OLD_SNAPSHOT_TREE.as_bytes()),
            "the old tree is dropped"
        );
        // Opening again finds the file and nothing to move.
        drop(sm);
        let mut sm = StateMachineStore::open(&db, &dir.path().join("snap")).expect("open");
        let again = sm.get_current_snapshot().await.expect("read");
        assert_eq!(again.map(|s| s.meta), Some(meta));
    }
}
