//! An in-process change feed over a key range: every change from a start revision on, in
//! revision order, with each change's previous value, exactly once. Built the same way as an
//! etcd watch: subscribe to the hub first, replay history out of the store, then follow the
//! hub, skipping what the replay covered; a lagging feed (or one on a replica that installed a
//! snapshot) replays again from where it was. Server-side consumers (the Skiff API's watch)
//! use it instead of a gRPC watch against their own replica.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::hub::Notice;
use crate::mvcc::key_range::KeyRange;
use crate::mvcc::kvstore::Event;
use crate::raft::state_machine::Shared;

/// Why a feed cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The start revision (or the feed's position after a long lag) was compacted away.
    #[error("required revision {wanted} has been compacted (compact revision {compacted})")]
    Compacted { wanted: i64, compacted: i64 },
    /// The replica is shutting down.
    #[error("the replica stopped")]
    Closed,
    #[error("reading history: {0}")]
    Store(String),
}

/// Changes of one or more revisions, in order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Every change up to this revision has been delivered.
    pub revision: i64,
}

pub struct Feed {
    shared: Arc<Shared>,
    range: KeyRange,
    /// The first revision not delivered yet.
    next_rev: i64,
    notices: broadcast::Receiver<Arc<Notice>>,
    /// A replay is due before following the hub.
    replay_due: bool,
}

impl Feed {
    /// A feed of the changes in `range` from revision `from` (inclusive) on.
    pub fn new(shared: Arc<Shared>, range: KeyRange, from: i64) -> Self {
        let notices = shared.hub.subscribe();
        Self {
            shared,
            range,
            next_rev: from,
            notices,
            replay_due: true,
        }
    }

    /// The revision up to which everything has been delivered.
    pub fn synced_revision(&self) -> i64 {
        self.next_rev - 1
    }

    /// History from the next revision up to the store's current one.
    fn replay(&mut self) -> Result<Batch, FeedError> {
        let m = self.shared.read();
        let current = m.kv.current_rev();
        let compacted = m.kv.compact_rev();
        if self.next_rev < compacted {
            return Err(FeedError::Compacted {
                wanted: self.next_rev,
                compacted,
            });
        }
        let events =
            m.kv.history(self.next_rev, current, &self.range, true)
                .map_err(|e| FeedError::Store(e.to_string()))?;
        self.next_rev = self.next_rev.max(current + 1);
        Ok(Batch {
            events,
            revision: self.next_rev - 1,
        })
    }

    /// The next changes. Waits for new revisions; a batch may be empty only right after a
    /// replay (it still reports the revision reached).
    pub async fn next(&mut self) -> Result<Batch, FeedError> {
        loop {
            if self.replay_due {
                self.replay_due = false;
                return self.replay();
            }
            match self.notices.recv().await {
                Ok(notice) => match &*notice {
                    Notice::Changes { revision, events } => {
                        if *revision < self.next_rev {
                            continue;
                        }
                        self.next_rev = revision + 1;
                        let events: Vec<Event> = events
                            .iter()
                            .filter(|e| self.range.contains(&e.kv.key))
                            .cloned()
                            .collect();
                        if events.is_empty() {
                            continue;
                        }
                        return Ok(Batch {
                            events,
                            revision: *revision,
                        });
                    }
                    Notice::Reset => self.replay_due = true,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => self.replay_due = true,
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }
}
