//! Fan-out of applied changes from the state machine to every watch stream on this replica.
//!
//! A subscriber that falls behind (or sees a [`Notice::Reset`] after a snapshot install) catches
//! up by replaying history from the store, as etcd's unsynced watchers do.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::mvcc::kvstore::Event;

/// How many applied transactions a slow subscriber may lag before it must replay from the store.
const CAPACITY: usize = 4096;

#[derive(Debug)]
pub enum Notice {
    /// The changes of one write transaction at `revision`.
    Changes { revision: i64, events: Vec<Event> },
    /// The state was replaced (snapshot install): resynchronise from the store.
    Reset,
}

pub struct WatchHub {
    tx: broadcast::Sender<Arc<Notice>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchHub {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.tx.subscribe()
    }

    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        // No subscribers is fine.
        let _ = self.tx.send(Arc::new(Notice::Changes { revision, events }));
    }

    pub fn reset(&self) {
        let _ = self.tx.send(Arc::new(Notice::Reset));
    }
}
