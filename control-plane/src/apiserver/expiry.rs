//! Objects that expire: Events are written with a store lease so that the store deletes them
//! `--event-ttl` after their last write (Kubernetes: 1 hour), as kube-apiserver does.
//!
//! One lease serves every Event written within a reuse window (5% of the TTL, at most a minute;
//! kube-apiserver's lease manager does the same), granted for the TTL plus that window: an Event
//! lives between the TTL and the TTL plus the window, and the store holds about one lease per
//! window instead of one per Event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_store::replica::Replica;
use skiff_api::{ApiError, Kind};
use tokio::sync::Mutex;

use super::registry::{unavailable, Also};

/// The kinds whose objects expire.
fn expires(kind: &Kind) -> bool {
    kind.kind == "Event"
}

/// How long one lease is handed out: 5% of the TTL, at most a minute.
fn reuse_window(ttl: Duration) -> Duration {
    (ttl / 20).min(Duration::from_secs(60))
}

/// The lease handed out now, and until when it may be.
#[derive(Clone, Copy, Debug)]
struct Current {
    id: i64,
    /// Until when an object written with it still lives at least the TTL.
    usable_until: Instant,
}

pub struct Expiry {
    replica: Arc<Replica>,
    ttl: Duration,
    current: Mutex<Option<Current>>,
}

impl Expiry {
    pub fn new(replica: Arc<Replica>, ttl: Duration) -> Self {
        Self {
            replica,
            ttl,
            current: Mutex::new(None),
        }
    }

    /// What an object of `kind` is written with so that it expires (nothing for most kinds).
    pub async fn also_for(&self, kind: &Kind) -> Result<Also, ApiError> {
        let mut also = Also::default();
        if expires(kind) {
            also.expire_with(self.lease().await?);
        }
        Ok(also)
    }

    /// Stops handing out lease `id` (the store no longer has it).
    pub async fn forget(&self, id: i64) {
        let mut current = self.current.lock().await;
        if current.is_some_and(|c| c.id == id) {
            *current = None;
        }
    }

    async fn lease(&self) -> Result<i64, ApiError> {
        let mut current = self.current.lock().await;
        let now = Instant::now();
        if let Some(c) = *current {
            if now < c.usable_until {
                return Ok(c.id);
            }
        }
        let window = reuse_window(self.ttl);
        let secs = (self.ttl + window).as_secs_f64().ceil() as i64;
        let granted = self
            .replica
            .grant_lease(0, secs)
            .await
            .map_err(unavailable)?;
        *current = Some(Current {
            id: granted.id,
            usable_until: now + window,
        });
        Ok(granted.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reuse_window_is_five_percent_of_the_ttl_and_at_most_a_minute() {
        assert_eq!(
            reuse_window(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            reuse_window(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            reuse_window(Duration::from_secs(20)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn only_events_expire() {
        assert!(expires(&Kind::named("events").unwrap()));
        assert!(!expires(&Kind::named("pods").unwrap()));
        assert!(!expires(&Kind::named("configmaps").unwrap()));
    }
}
