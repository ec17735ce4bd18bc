//! The physical half of compaction: a thread of its own deletes the records a compaction dropped
//! from the key index, a batch at a time, so that applying a Compact command costs only the
//! in-memory index work and writes never wait for more than one batch.
//!
//! The records a job deletes are at or below the compacted revision and no reader or writer
//! touches them any more, so batches run beside applying without its lock (applying never
//! waits for compaction). Only a snapshot install, which replaces the whole state, must not
//! interleave with a batch: both take the state machine's swap lock. A job is dropped when the
//! state was replaced since it was scheduled (its epoch is stale); the new state schedules its
//! own.

use std::sync::mpsc;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::state_machine::Shared;
use crate::mvcc::kvstore::CompactJob;

/// Records examined per batch (etcd: `--experimental-compaction-batch-limit`, 1000 by default;
/// smaller here, as sled contends more than bbolt with writes beside it).
pub const BATCH: usize = 256;
/// Pause between batches, leaving the disk and the cores to the write path.
pub const PAUSE: Duration = Duration::from_millis(1);

/// Where a job came from: the state epoch it belongs to.
struct Scheduled {
    job: CompactJob,
    epoch: u64,
}

/// Hands jobs to the compaction thread and reports how far compaction has physically got.
pub struct Compactor {
    tx: mpsc::Sender<Scheduled>,
    done: watch::Sender<i64>,
}

impl Compactor {
    /// Starts the thread. It ends when the state machine is dropped.
    pub fn spawn(shared: Weak<Shared>) -> Self {
        let (tx, rx) = mpsc::channel::<Scheduled>();
        let (done, _) = watch::channel(0);
        let done_tx = done.clone();
        let spawned = std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                while let Ok(s) = rx.recv() {
                    let rev = s.job.rev;
                    match run(&shared, s) {
                        Outcome::Finished => {
                            done_tx.send_if_modified(|d| {
                                let newer = rev > *d;
                                *d = (*d).max(rev);
                                newer
                            });
                        }
                        Outcome::Abandoned => {}
                        Outcome::Stopped => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(%e, "cannot start the compaction thread; compacted records stay on disk");
        }
        Self { tx, done }
    }

    /// Queues a job for the state of epoch `epoch`.
    pub fn schedule(&self, job: CompactJob, epoch: u64) {
        let _ = self.tx.send(Scheduled { job, epoch });
    }

    /// The highest revision whose compaction has been physically applied here.
    pub fn physically_compacted(&self) -> watch::Receiver<i64> {
        self.done.subscribe()
    }
}

enum Outcome {
    Finished,
    /// The state was replaced (the job no longer applies) or storage failed (logged; the next
    /// start finds the leftovers).
    Abandoned,
    /// The state machine is gone.
    Stopped,
}

fn run(shared: &Weak<Shared>, mut s: Scheduled) -> Outcome {
    let started = Instant::now();
    let Some(backend) = shared.upgrade().map(|sm| sm.read().backend().clone()) else {
        return Outcome::Stopped;
    };
    loop {
        let Some(sm) = shared.upgrade() else {
            return Outcome::Stopped;
        };
        let step = {
            let _swap = sm.swap_lock();
            if sm.epoch() != s.epoch {
                return Outcome::Abandoned;
            }
            s.job.step(&*backend, BATCH)
        };
        match step {
            Ok(true) => {
                tracing::info!(
                    revision = s.job.rev,
                    deleted = s.job.deleted,
                    took_ms = started.elapsed().as_millis() as u64,
                    "finished compaction"
                );
                return Outcome::Finished;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(%e, revision = s.job.rev, "compaction stopped");
                return Outcome::Abandoned;
            }
        }
        drop(sm);
        std::thread::sleep(PAUSE);
    }
}
