//! The MVCC key space: an in-memory [`KeyIndex`] per key over revision-keyed records in a
//! [`Backend`], with etcd's read, write-transaction and compaction semantics.
//!
//! Backend layout (inside the state machine's tree): `r<revision>` → [`Record`], plus the meta keys
//! [`META_CURRENT`] and [`META_COMPACT`]. Writes are gathered into a [`Batch`] that the caller
//! commits together with its own bookkeeping, so one applied Raft entry is one atomic write.
//!
//! Compaction has two halves, as in etcd: [`KvStore::compact`] drops history from the in-memory
//! index (cheap, done while applying the command) and schedules a [`CompactJob`]; the records
//! the index no longer refers to are then deleted in batches by [`CompactJob::step`], off the
//! apply path. A store reopened before a job finished (or loaded from a snapshot taken while
//! one ran) finds the leftovers again and schedules a new job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::backend::{Backend, Batch};
use super::key_index::KeyIndex;
use super::key_range::KeyRange;
use super::revision::Revision;
use crate::codec;
use crate::error::StoreError;

const REV_PREFIX: u8 = b'r';
/// Revision of an empty store, as in etcd: the first write is revision 2.
pub const INITIAL_REVISION: i64 = 1;
pub const META_CURRENT: &[u8] = b"m/kv/current";
pub const META_COMPACT: &[u8] = b"m/kv/compact";

/// One stored change of a key. A tombstone records a delete and carries only key and mod_revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub tombstone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: Record,
    pub prev: Option<Record>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<Record>,
    /// Number of keys in the range, regardless of limit.
    pub count: usize,
    /// The revision the read was served at.
    pub rev: i64,
}

fn rev_key(rev: Revision) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(REV_PREFIX);
    k.extend_from_slice(&rev.to_bytes());
    k
}

fn read_i64(backend: &dyn Backend, key: &[u8], default: i64) -> Result<i64, StoreError> {
    match backend.get(key)? {
        None => Ok(default),
        Some(v) => codec::decode(&v).map_err(|e| StoreError::Internal(e.to_string())),
    }
}

/// A consistent view to read ranges from: the committed store, or a write transaction in flight.
pub trait ReadView {
    /// Reads `range` at revision `at` (`<= 0` means the newest). `limit == 0` means no limit.
    fn range(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<RangeResult, StoreError>;
    /// (newest revision visible, compact revision).
    fn revisions(&self) -> (i64, i64);
}

impl ReadView for KvStore {
    fn range(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<RangeResult, StoreError> {
        KvStore::range(self, range, at, limit, count_only)
    }
    fn revisions(&self) -> (i64, i64) {
        (self.current, self.compacted)
    }
}

impl ReadView for WriteTxn<'_> {
    fn range(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<RangeResult, StoreError> {
        WriteTxn::range(self, range, at, limit, count_only)
    }
    fn revisions(&self) -> (i64, i64) {
        (self.view(), self.store.compacted)
    }
}

/// The key space.
pub struct KvStore {
    backend: Arc<dyn Backend>,
    index: BTreeMap<Vec<u8>, KeyIndex>,
    current: i64,
    compacted: i64,
    /// Records to delete after a compaction, for the caller to run (see [`CompactJob`]).
    scheduled: Option<CompactJob>,
    /// Records of finished transactions whose batch the caller has not written yet (several
    /// commands applied into one batch read each other's changes from here).
    unwritten: HashMap<Revision, Record>,
}

/// The physical half of a compaction at `rev`: every record at or below `rev` that the index no
/// longer holds is deleted, a batch at a time.
#[derive(Debug)]
pub struct CompactJob {
    pub rev: i64,
    /// The records at or below `rev` that stay.
    keep: HashSet<Revision>,
    /// Where the next step starts.
    cursor: Revision,
    /// Records deleted so far.
    pub deleted: usize,
    /// The compaction dropped nothing from the index: no record needs deleting.
    nothing: bool,
}

impl CompactJob {
    /// A job with nothing to delete.
    fn nothing(rev: i64) -> Self {
        Self {
            rev,
            keep: HashSet::new(),
            cursor: Revision::new(0, 0),
            deleted: 0,
            nothing: true,
        }
    }

    /// Deletes up to `limit` records' worth of history in one backend batch; returns true when
    /// nothing is left to delete. Records above `rev` are never touched, so the store may keep
    /// writing meanwhile.
    pub fn step(&mut self, backend: &dyn Backend, limit: usize) -> Result<bool, StoreError> {
        if self.nothing {
            return Ok(true);
        }
        let start = rev_key(self.cursor);
        let end = rev_key(Revision::new(self.rev.saturating_add(1), 0));
        let mut batch = Batch::default();
        let mut seen = 0;
        let mut last = None;
        backend.scan(&start, &end, &mut |k, _| {
            let Some(rev) = Revision::from_bytes(&k[1..]) else {
                return true;
            };
            if !self.keep.contains(&rev) {
                batch.delete(k.to_vec());
            }
            last = Some(rev);
            seen += 1;
            seen < limit
        })?;
        self.deleted += batch.ops.len();
        if !batch.is_empty() {
            backend.write(batch)?;
        }
        match last {
            Some(rev) if seen >= limit => {
                self.cursor = Revision::new(rev.main, rev.sub.saturating_add(1));
                Ok(false)
            }
            _ => Ok(true),
        }
    }
}

impl KvStore {
    /// Loads the key space from the backend, rebuilding the index from the stored records.
    pub fn open(backend: Arc<dyn Backend>) -> Result<Self, StoreError> {
        let current = read_i64(&*backend, META_CURRENT, INITIAL_REVISION)?;
        // Nothing compacted yet is -1, as in etcd (so compacting at 0 succeeds).
        let compacted = read_i64(&*backend, META_COMPACT, -1)?;
        let mut index: BTreeMap<Vec<u8>, KeyIndex> = BTreeMap::new();
        let mut failure = None;
        // Records a compaction left behind that the index cannot hold (a tombstone whose
        // generation's puts are already gone).
        let mut orphans = 0;
        backend.scan(&[REV_PREFIX], &[REV_PREFIX + 1], &mut |k, v| {
            let (Some(rev), Ok(rec)) = (Revision::from_bytes(&k[1..]), codec::decode::<Record>(v))
            else {
                failure = Some(StoreError::Internal(format!("corrupt record at {k:?}")));
                return false;
            };
            let ki = index.entry(rec.key.clone()).or_default();
            if rec.tombstone {
                if !ki.tombstone(rev) {
                    orphans += 1;
                }
            } else {
                ki.restore(rev, rec.create_revision, rec.version);
            }
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut store = Self {
            backend,
            index,
            current,
            compacted,
            scheduled: None,
            unwritten: HashMap::new(),
        };
        // Redo the index half of the last compaction: records it dropped may still be stored
        // (the process stopped before its job finished, or a snapshot was taken meanwhile).
        if compacted > 0 {
            let dropped = store.compact_index(compacted);
            if dropped + orphans > 0 {
                store.scheduled = Some(store.job(compacted));
            }
        }
        Ok(store)
    }

    /// Compacts every key's index at `rev`; returns how many revisions were dropped.
    fn compact_index(&mut self, rev: i64) -> usize {
        let mut dropped = 0;
        self.index.retain(|_, ki| {
            dropped += ki.compact(rev);
            !ki.is_empty()
        });
        dropped
    }

    /// The physical half of a compaction at `rev` whose index half is done.
    fn job(&self, rev: i64) -> CompactJob {
        let keep = self
            .index
            .values()
            .flat_map(|ki| ki.kept_upto(rev))
            .collect();
        CompactJob {
            rev,
            keep,
            cursor: Revision::new(0, 0),
            deleted: 0,
            nothing: false,
        }
    }

    /// The records left to delete after the last compaction, if any; the caller runs the job
    /// once the compaction's batch is written.
    pub fn take_compaction(&mut self) -> Option<CompactJob> {
        self.scheduled.take()
    }

    pub fn current_rev(&self) -> i64 {
        self.current
    }

    pub fn compact_rev(&self) -> i64 {
        self.compacted
    }

    fn record(&self, rev: Revision) -> Result<Record, StoreError> {
        if let Some(rec) = self.unwritten.get(&rev) {
            return Ok(rec.clone());
        }
        let raw = self
            .backend
            .get(&rev_key(rev))?
            .ok_or_else(|| StoreError::Internal(format!("missing record for revision {rev:?}")))?;
        codec::decode(&raw).map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// Reads `range` at revision `at` (`<= 0` means the newest). `limit == 0` means no limit.
    pub fn range(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<RangeResult, StoreError> {
        self.range_with(range, at, limit, count_only, self.current, &HashMap::new())
    }

    fn range_with(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
        newest: i64,
        pending: &HashMap<Revision, Record>,
    ) -> Result<RangeResult, StoreError> {
        let at = if at <= 0 { newest } else { at };
        if at > newest {
            return Err(StoreError::FutureRev);
        }
        if at < self.compacted {
            return Err(StoreError::Compacted);
        }
        let mut result = RangeResult {
            rev: newest,
            ..Default::default()
        };
        let Some(bounds) = range.bounds() else {
            return Ok(result);
        };
        let mut revs = Vec::new();
        for (_, ki) in self.index.range(bounds) {
            if let Some(found) = ki.get(at) {
                result.count += 1;
                if !count_only && (limit == 0 || revs.len() < limit) {
                    revs.push(found.modified);
                }
            }
        }
        for rev in revs {
            match pending.get(&rev) {
                Some(rec) => result.kvs.push(rec.clone()),
                None => result.kvs.push(self.record(rev)?),
            }
        }
        Ok(result)
    }

    /// The key's value as of revision `at`, if it existed then (for watch `prev_kv`).
    pub fn get_at(&self, key: &[u8], at: i64) -> Result<Option<Record>, StoreError> {
        match self.index.get(key).and_then(|ki| ki.get(at)) {
            Some(found) => Ok(Some(self.record(found.modified)?)),
            None => Ok(None),
        }
    }

    /// Every change with `from <= main revision <= to` whose key is in `range`, in revision order.
    /// The caller checks `from` against the compact revision first.
    fn changes(&self, from: i64, to: i64, range: &KeyRange) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut failure = None;
        let start = rev_key(Revision::new(from, 0));
        let end = rev_key(Revision::new(to.saturating_add(1), 0));
        self.backend.scan(&start, &end, &mut |_, v| {
            match codec::decode::<Record>(v) {
                Ok(rec) if range.contains(&rec.key) => out.push(rec),
                Ok(_) => {}
                Err(e) => {
                    failure = Some(StoreError::Internal(e.to_string()));
                    return false;
                }
            }
            true
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The changes with `from <= main revision <= to` in `range` as watchers see them, in
    /// revision order, each with its previous value when `with_prev`: the one history replay
    /// every watcher (etcd watch streams, in-process change feeds) uses. `from` must not be
    /// compacted.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        range: &KeyRange,
        with_prev: bool,
    ) -> Result<Vec<Event>, StoreError> {
        if from < self.compacted {
            return Err(StoreError::Compacted);
        }
        if from > to {
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        for rec in self.changes(from, to, range)? {
            let prev = if with_prev {
                self.get_at(&rec.key, rec.mod_revision - 1)?
            } else {
                None
            };
            let kind = if rec.tombstone {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            events.push(Event {
                kind,
                kv: rec,
                prev,
            });
        }
        Ok(events)
    }

    /// Tells the store that the batches its transactions filled are written: their records
    /// are read from the backend from now on.
    pub fn written(&mut self) {
        self.unwritten.clear();
    }

    /// Starts a write transaction at revision `current + 1`.
    pub fn write(&mut self) -> WriteTxn<'_> {
        let rev = self.current + 1;
        WriteTxn {
            store: self,
            rev,
            sub: 0,
            pending: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Drops history before `rev`; reads at `rev` and later are unaffected. Only the index
    /// changes here; the dropped records are deleted by the job [`KvStore::take_compaction`]
    /// hands out.
    pub fn compact(&mut self, rev: i64, batch: &mut Batch) -> Result<(), StoreError> {
        if rev <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if rev > self.current {
            return Err(StoreError::FutureRev);
        }
        // A job is scheduled even when nothing was dropped, so that its end marks the
        // compaction as physically done.
        let dropped = self.compact_index(rev);
        self.scheduled = Some(if dropped > 0 {
            self.job(rev)
        } else {
            CompactJob::nothing(rev)
        });
        self.compacted = rev;
        batch.put(META_COMPACT, codec::encode(&rev));
        Ok(())
    }

    /// Runs a compaction's job to its end at once (tests and tools; the replica runs jobs in
    /// batches off the apply path).
    pub fn finish_compaction(&mut self) -> Result<usize, StoreError> {
        let Some(mut job) = self.take_compaction() else {
            return Ok(0);
        };
        while !job.step(&*self.backend, 1000)? {}
        Ok(job.deleted)
    }
}

/// A write transaction: every change gets the same main revision; reads see earlier changes of the
/// same transaction. [`WriteTxn::finish`] puts the changes into a batch and publishes the revision.
pub struct WriteTxn<'a> {
    store: &'a mut KvStore,
    rev: i64,
    sub: i64,
    pending: HashMap<Revision, Record>,
    events: Vec<Event>,
}

impl WriteTxn<'_> {
    /// The revision reads inside this transaction see.
    fn view(&self) -> i64 {
        if self.events.is_empty() {
            self.rev - 1
        } else {
            self.rev
        }
    }

    pub fn range(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<RangeResult, StoreError> {
        self.store
            .range_with(range, at, limit, count_only, self.view(), &self.pending)
    }

    fn latest(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let Some(found) = self.store.index.get(key).and_then(|ki| ki.get(self.rev)) else {
            return Ok(None);
        };
        match self.pending.get(&found.modified) {
            Some(rec) => Ok(Some(rec.clone())),
            None => self.store.record(found.modified).map(Some),
        }
    }

    fn next_rev(&mut self) -> Revision {
        let r = Revision::new(self.rev, self.sub);
        self.sub += 1;
        r
    }

    /// Writes `key`; returns the previous value, if any.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Option<Record>, StoreError> {
        let prev = self.latest(key)?;
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (self.rev, 1),
        };
        let rev = self.next_rev();
        let rec = Record {
            key: key.to_vec(),
            value,
            create_revision,
            mod_revision: self.rev,
            version,
            lease,
            tombstone: false,
        };
        self.store.index.entry(key.to_vec()).or_default().put(rev);
        self.pending.insert(rev, rec.clone());
        self.events.push(Event {
            kind: EventKind::Put,
            kv: rec,
            prev: prev.clone(),
        });
        Ok(prev)
    }

    /// Deletes every live key in `range`; returns their values before the delete.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<Record>, StoreError> {
        let Some(bounds) = range.bounds() else {
            return Ok(Vec::new());
        };
        let keys: Vec<Vec<u8>> = self
            .store
            .index
            .range(bounds)
            .filter(|(_, ki)| ki.is_alive())
            .map(|(k, _)| k.clone())
            .collect();
        let mut deleted = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(prev) = self.latest(&key)? else {
                continue;
            };
            let rev = self.next_rev();
            let tomb = Record {
                key: key.clone(),
                mod_revision: self.rev,
                tombstone: true,
                ..Default::default()
            };
            if let Some(ki) = self.store.index.get_mut(&key) {
                ki.tombstone(rev);
            }
            self.pending.insert(rev, tomb.clone());
            self.events.push(Event {
                kind: EventKind::Delete,
                kv: tomb,
                prev: Some(prev.clone()),
            });
            deleted.push(prev);
        }
        Ok(deleted)
    }

    /// Ends the transaction: adds its records to `batch` and returns its events. A transaction that
    /// changed nothing leaves the revision as it was.
    pub fn finish(self, batch: &mut Batch) -> Vec<Event> {
        if self.events.is_empty() {
            return Vec::new();
        }
        for (rev, rec) in self.pending {
            batch.put(rev_key(rev), codec::encode(&rec));
            self.store.unwritten.insert(rev, rec);
        }
        self.store.current = self.rev;
        batch.put(META_CURRENT, codec::encode(&self.rev));
        self.events
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mvcc::backend::MemBackend;

    fn single(k: &str) -> KeyRange {
        KeyRange::new(k.as_bytes(), b"")
    }

    fn commit(
        store: &mut KvStore,
        backend: &MemBackend,
        f: impl FnOnce(&mut WriteTxn<'_>),
    ) -> Vec<Event> {
        let mut batch = Batch::default();
        let mut txn = store.write();
        f(&mut txn);
        let events = txn.finish(&mut batch);
        backend.write(batch).unwrap();
        store.written();
        events
    }

    fn values(r: &RangeResult) -> Vec<(String, String, i64, i64, i64)> {
        r.kvs
            .iter()
            .map(|k| {
                (
                    String::from_utf8_lossy(&k.key).into(),
                    String::from_utf8_lossy(&k.value).into(),
                    k.create_revision,
                    k.mod_revision,
                    k.version,
                )
            })
            .collect()
    }

    /// A backend shared by the store under test and the test itself. The store's history starts
    /// at revision 0 here so that the numbers in these tests read simply (the first write is 1).
    fn open() -> (KvStore, Arc<MemBackend>) {
        let backend = Arc::new(MemBackend::default());
        backend.write(zero_based()).unwrap();
        (KvStore::open(backend.clone()).unwrap(), backend)
    }

    pub(crate) fn zero_based() -> Batch {
        let mut b = Batch::default();
        b.put(META_CURRENT, codec::encode(&0i64));
        b
    }

    #[test]
    fn a_fresh_store_starts_at_etcds_initial_revision() {
        let backend = Arc::new(MemBackend::default());
        let mut s = KvStore::open(backend.clone()).unwrap();
        assert_eq!(s.current_rev(), INITIAL_REVISION);
        assert_eq!(s.range(&single("a"), 0, 0, false).unwrap().rev, 1);
        let mut batch = Batch::default();
        let mut t = s.write();
        t.put(b"a", b"1".to_vec(), 0).unwrap();
        assert_eq!(t.finish(&mut batch)[0].kv.mod_revision, 2);
    }

    #[test]
    fn revisions_versions_and_history() {
        let (mut s, b) = open();
        commit(&mut s, &b, |t| {
            t.put(b"a", b"1".to_vec(), 0).unwrap();
        });
        commit(&mut s, &b, |t| {
            t.put(b"a", b"2".to_vec(), 0).unwrap();
            t.put(b"b", b"x".to_vec(), 0).unwrap();
        });
        assert_eq!(s.current_rev(), 2);
        let now = s.range(&KeyRange::new(b"a", b"\0"), 0, 0, false).unwrap();
        assert_eq!(
            values(&now),
            vec![
                ("a".into(), "2".into(), 1, 2, 2),
                ("b".into(), "x".into(), 2, 2, 1)
            ]
        );
        let then = s.range(&single("a"), 1, 0, false).unwrap();
        assert_eq!(values(&then), vec![("a".into(), "1".into(), 1, 1, 1)]);
        assert_eq!(
            s.range(&single("a"), 3, 0, false),
            Err(StoreError::FutureRev)
        );

        let events = commit(&mut s, &b, |t| {
            assert_eq!(t.delete_range(&KeyRange::new(b"a", b"c")).unwrap().len(), 2);
        });
        assert_eq!(events.len(), 2);
        assert!(events
            .iter()
            .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 3));
        assert_eq!(
            s.range(&KeyRange::new(b"a", b"\0"), 0, 0, false)
                .unwrap()
                .count,
            0
        );

        // A transaction that changes nothing does not bump the revision.
        let none = commit(&mut s, &b, |t| {
            assert!(t.delete_range(&single("zz")).unwrap().is_empty());
        });
        assert!(none.is_empty());
        assert_eq!(s.current_rev(), 3);

        commit(&mut s, &b, |t| {
            t.put(b"a", b"new".to_vec(), 0).unwrap();
        });
        let re = s.range(&single("a"), 0, 0, false).unwrap();
        assert_eq!(values(&re), vec![("a".into(), "new".into(), 4, 4, 1)]);
    }

    #[test]
    fn limit_count_and_reads_inside_a_transaction() {
        let (mut s, b) = open();
        commit(&mut s, &b, |t| {
            for k in ["k1", "k2", "k3"] {
                t.put(k.as_bytes(), b"v".to_vec(), 0).unwrap();
            }
        });
        let r = s.range(&KeyRange::new(b"k", b"l"), 0, 2, false).unwrap();
        assert_eq!((r.kvs.len(), r.count), (2, 3));
        let c = s.range(&KeyRange::new(b"k", b"l"), 0, 0, true).unwrap();
        assert_eq!((c.kvs.len(), c.count), (0, 3));

        commit(&mut s, &b, |t| {
            t.put(b"k1", b"w".to_vec(), 0).unwrap();
            let seen = t.range(&single("k1"), 0, 0, false).unwrap();
            assert_eq!(seen.kvs[0].value, b"w");
            assert_eq!(seen.rev, 2);
        });
    }

    #[test]
    fn compaction_and_reopen() {
        let (mut s, b) = open();
        for v in 1..=5 {
            commit(&mut s, &b, |t| {
                t.put(b"a", v.to_string().into_bytes(), 0).unwrap();
            });
        }
        commit(&mut s, &b, |t| {
            t.delete_range(&single("a")).unwrap();
            t.put(b"b", b"b".to_vec(), 0).unwrap();
        });
        let mut batch = Batch::default();
        s.compact(3, &mut batch).unwrap();
        b.write(batch).unwrap();
        assert_eq!(
            s.range(&single("a"), 2, 0, false),
            Err(StoreError::Compacted)
        );
        assert_eq!(
            values(&s.range(&single("a"), 3, 0, false).unwrap())[0].1,
            "3"
        );
        assert_eq!(
            s.compact(3, &mut Batch::default()),
            Err(StoreError::Compacted)
        );
        assert_eq!(
            s.compact(99, &mut Batch::default()),
            Err(StoreError::FutureRev)
        );

        // Reopened before the job ran, the store finds the leftovers and schedules it again.
        let mut reopened = KvStore::open(b.clone()).unwrap();
        assert_eq!((reopened.current_rev(), reopened.compact_rev()), (6, 3));
        assert_eq!(
            reopened.finish_compaction().unwrap(),
            2,
            "revisions 1 and 2 of a"
        );
        assert_eq!(s.finish_compaction().unwrap(), 0, "already deleted");
        assert!(KvStore::open(b.clone())
            .unwrap()
            .take_compaction()
            .is_none());
        for at in 3..=6 {
            assert_eq!(
                reopened.range(&KeyRange::new(b"a", b"\0"), at, 0, false),
                s.range(&KeyRange::new(b"a", b"\0"), at, 0, false),
                "at {at}"
            );
        }
        let changes = reopened.changes(4, 6, &single("a")).unwrap();
        assert_eq!(
            changes.iter().map(|r| r.mod_revision).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert!(changes[2].tombstone);

        // Compacting past the delete removes the key entirely.
        let mut batch = Batch::default();
        let mut s = reopened;
        s.compact(6, &mut batch).unwrap();
        b.write(batch).unwrap();
        assert_eq!(s.finish_compaction().unwrap(), 4, "revisions 3 to 6 of a");
        assert!(s.changes(0, 6, &single("a")).unwrap().is_empty());
        assert_eq!(s.range(&single("b"), 0, 0, false).unwrap().count, 1);
    }

    fn stored_revisions(b: &MemBackend) -> Vec<i64> {
        let mut out = Vec::new();
        b.scan(&[REV_PREFIX], &[REV_PREFIX + 1], &mut |k, _| {
            out.push(Revision::from_bytes(&k[1..]).unwrap().main);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn a_compaction_job_deletes_only_dropped_records_while_writes_go_on() {
        let (mut s, b) = open();
        for v in 1..=50 {
            commit(&mut s, &b, |t| {
                t.put(
                    format!("k{}", v % 5).as_bytes(),
                    v.to_string().into_bytes(),
                    0,
                )
                .unwrap();
            });
        }
        let mut batch = Batch::default();
        s.compact(40, &mut batch).unwrap();
        b.write(batch).unwrap();
        let mut job = s.take_compaction().expect("a job");
        let mut steps = 0;
        loop {
            steps += 1;
            // Writes between the steps are never touched.
            commit(&mut s, &b, |t| {
                t.put(b"live", b"x".to_vec(), 0).unwrap();
            });
            if job.step(&*b, 3).unwrap() {
                break;
            }
        }
        assert!(steps > 10, "took {steps} steps of 3");
        // k0..k4 keep their newest revision at or below 40 (36..=40), then everything after.
        let stored = stored_revisions(&b);
        let expected: Vec<i64> = (36..=50).chain(51..51 + steps).collect();
        assert_eq!(stored, expected);
        assert_eq!(job.deleted, 35);
        for at in 40..=s.current_rev() {
            for k in 0..5 {
                let key = format!("k{k}");
                assert!(s.range(&single(&key), at, 0, false).unwrap().count == 1);
            }
        }
    }

    #[test]
    fn transactions_read_each_others_records_before_their_batch_is_written() {
        let (mut s, b) = open();
        let mut batch = Batch::default();
        let mut t = s.write();
        t.put(b"a", b"1".to_vec(), 0).unwrap();
        t.finish(&mut batch);
        let mut t = s.write();
        let prev = t.put(b"a", b"2".to_vec(), 0).unwrap();
        assert_eq!(prev.map(|p| p.value), Some(b"1".to_vec()));
        t.finish(&mut batch);
        assert_eq!(
            values(&s.range(&single("a"), 1, 0, false).unwrap()),
            vec![("a".into(), "1".into(), 1, 1, 1)]
        );
        b.write(batch).unwrap();
        s.written();
        let reopened = KvStore::open(b.clone()).unwrap();
        assert_eq!(
            values(&reopened.range(&single("a"), 0, 0, false).unwrap()),
            vec![("a".into(), "2".into(), 1, 2, 2)]
        );
    }

    #[test]
    fn history_replays_changes_with_previous_values_and_surfaces_unreadable_records() {
        let (mut s, b) = open();
        for v in ["1", "2"] {
            commit(&mut s, &b, |t| {
                t.put(b"a", v.as_bytes().to_vec(), 0).unwrap();
            });
        }
        commit(&mut s, &b, |t| {
            t.delete_range(&single("a")).unwrap();
        });
        let h = s.history(1, 3, &single("a"), true).unwrap();
        let seen: Vec<_> = h
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.kv.mod_revision,
                    e.prev.as_ref().map(|p| p.value.clone()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (EventKind::Put, 1, None),
                (EventKind::Put, 2, Some(b"1".to_vec())),
                (EventKind::Delete, 3, Some(b"2".to_vec())),
            ]
        );
        assert!(s.history(2, 3, &single("a"), false).unwrap()[0]
            .prev
            .is_none());
        assert!(s.history(4, 3, &single("a"), true).unwrap().is_empty());
        // A record that cannot be read is an error, not a gap in what watchers see.
        let mut corrupt = Batch::default();
        corrupt.put(rev_key(Revision::new(2, 0)), b"not a record".to_vec());
        b.write(corrupt).unwrap();
        assert!(matches!(
            s.history(1, 3, &single("a"), true),
            Err(StoreError::Internal(_))
        ));
        let mut batch = Batch::default();
        s.compact(3, &mut batch).unwrap();
        assert_eq!(
            s.history(2, 3, &single("a"), true),
            Err(StoreError::Compacted)
        );
    }

    #[test]
    fn an_orphaned_tombstone_left_by_an_interrupted_job_is_found_at_reopen() {
        let (mut s, b) = open();
        commit(&mut s, &b, |t| {
            t.put(b"a", b"1".to_vec(), 0).unwrap();
        });
        commit(&mut s, &b, |t| {
            t.delete_range(&single("a")).unwrap();
        });
        commit(&mut s, &b, |t| {
            t.put(b"b", b"1".to_vec(), 0).unwrap();
        });
        let mut batch = Batch::default();
        s.compact(2, &mut batch).unwrap();
        b.write(batch).unwrap();
        // The job stops after deleting the put, before the tombstone.
        let mut job = s.take_compaction().unwrap();
        assert!(!job.step(&*b, 1).unwrap());
        assert_eq!(stored_revisions(&b), vec![2, 3]);
        let mut reopened = KvStore::open(b.clone()).unwrap();
        assert_eq!(reopened.finish_compaction().unwrap(), 1);
        assert_eq!(stored_revisions(&b), vec![3]);
    }
}
