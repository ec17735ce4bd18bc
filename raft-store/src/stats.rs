//! Counters of the write path, for finding where a write's time goes: how many log syncs
//! (fsyncs) were made and how long they took, how many appends each sync covered, how long
//! applying took, and how long writes took on the leader (propose to applied) and through
//! forwarding. One set per process (one replica per process); logged now and then at debug
//! level by the duties loop (`SKIFF_LOG=raft_store::stats=debug`) and read by benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A count and a total time.
pub struct Timed {
    count: AtomicU64,
    micros: AtomicU64,
}

impl Timed {
    const fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        }
    }

    pub fn add(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.micros.load(Ordering::Relaxed),
        )
    }
}

pub struct WriteStats {
    /// Log syncs (sled flush + fdatasync) and their time.
    pub log_syncs: Timed,
    /// Appends made durable (openraft append calls).
    pub appends: AtomicU64,
    /// Entries appended.
    pub entries: AtomicU64,
    /// Apply calls and their time (lock, state machine, sled batches).
    pub applies: Timed,
    /// Entries applied.
    pub applied: AtomicU64,
    /// Writes proposed on this replica as leader, propose to applied.
    pub leader_writes: Timed,
    /// Writes forwarded to the leader, send to answer.
    pub forwarded: Timed,
}

pub static WRITE: WriteStats = WriteStats::new();

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub log_syncs: u64,
    pub log_sync_micros: u64,
    pub appends: u64,
    pub entries: u64,
    pub applies: u64,
    pub apply_micros: u64,
    pub applied: u64,
    pub leader_writes: u64,
    pub leader_write_micros: u64,
    pub forwarded: u64,
    pub forward_micros: u64,
}

impl WriteStats {
    const fn new() -> Self {
        Self {
            log_syncs: Timed::new(),
            appends: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            applies: Timed::new(),
            applied: AtomicU64::new(0),
            leader_writes: Timed::new(),
            forwarded: Timed::new(),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let (log_syncs, log_sync_micros) = self.log_syncs.read();
        let (applies, apply_micros) = self.applies.read();
        let (leader_writes, leader_write_micros) = self.leader_writes.read();
        let (forwarded, forward_micros) = self.forwarded.read();
        Snapshot {
            log_syncs,
            log_sync_micros,
            appends: self.appends.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            applies,
            apply_micros,
            applied: self.applied.load(Ordering::Relaxed),
            leader_writes,
            leader_write_micros,
            forwarded,
            forward_micros,
        }
    }
}

impl Snapshot {
    /// What happened between `earlier` and this one.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            log_syncs: self.log_syncs - earlier.log_syncs,
            log_sync_micros: self.log_sync_micros - earlier.log_sync_micros,
            appends: self.appends - earlier.appends,
            entries: self.entries - earlier.entries,
            applies: self.applies - earlier.applies,
            apply_micros: self.apply_micros - earlier.apply_micros,
            applied: self.applied - earlier.applied,
            leader_writes: self.leader_writes - earlier.leader_writes,
            leader_write_micros: self.leader_write_micros - earlier.leader_write_micros,
            forwarded: self.forwarded - earlier.forwarded,
            forward_micros: self.forward_micros - earlier.forward_micros,
        }
    }

    /// One log line's worth.
    pub fn summary(&self) -> String {
        let per = |total: u64, n: u64| if n == 0 { 0.0 } else { total as f64 / n as f64 };
        format!(
            "{} entries appended in {} appends, {} log syncs ({:.2} ms each, {:.1} appends and \
             {:.1} entries per sync); {} entries applied in {} applies ({:.0} us each); {} leader \
             writes ({:.2} ms propose to applied); {} forwarded ({:.2} ms)",
            self.entries,
            self.appends,
            self.log_syncs,
            per(self.log_sync_micros, self.log_syncs) / 1000.0,
            per(self.appends, self.log_syncs),
            per(self.entries, self.log_syncs),
            self.applied,
            self.applies,
            per(self.apply_micros, self.applies),
            self.leader_writes,
            per(self.leader_write_micros, self.leader_writes) / 1000.0,
            self.forwarded,
            per(self.forward_micros, self.forwarded) / 1000.0,
        )
    }
}
