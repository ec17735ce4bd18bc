//! The loop every controller shares: after each burst of changes under the watched prefixes
//! (the store's change feed over `/registry/`, settled for 200 ms), at least every `resync`,
//! and at once when elected, if this replica leads the controllers, run one pass with the
//! election's fence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raft_store::mvcc::key_range::KeyRange;
use raft_store::watch::feed::{Feed, FeedError};

use super::election::Leadership;
use crate::apiserver::registry::{prefix_end, Also};
use crate::apiserver::ApiService;

/// How long a burst of changes may settle before a pass.
const SETTLE: Duration = Duration::from_millis(200);

/// Runs `pass(api, fence)` whenever something under one of `prefixes` changed (and every
/// `resync`), while this replica leads the controllers.
pub async fn run<F, Fut>(
    api: Arc<ApiService>,
    leadership: Leadership,
    prefixes: &[String],
    resync: Duration,
    pass: F,
) where
    F: Fn(Arc<ApiService>, Also) -> Fut,
    Fut: Future<Output = ()>,
{
    let replica = api.registry().replica().clone();
    let all = skiff_api::kinds::REGISTRY;
    let feed_from_now = || {
        let range = KeyRange::new(all.as_bytes(), &prefix_end(all));
        let from = replica.sm.read().kv.current_rev() + 1;
        Feed::new(replica.sm.clone(), range, from)
    };
    let mut feed = feed_from_now();
    let mut every = tokio::time::interval(resync);
    let mut leadership = leadership;
    loop {
        tokio::select! {
            batch = feed.next() => {
                match batch {
                    Ok(batch) => {
                        let relevant = batch.events.iter().any(|e| {
                            prefixes.iter().any(|p| e.kv.key.starts_with(p.as_bytes()))
                        });
                        if !relevant {
                            continue;
                        }
                    }
                    Err(FeedError::Closed) => return,
                    // Compacted: start over from now (each pass reads what it needs anyway).
                    Err(_) => {
                        feed = feed_from_now();
                        continue;
                    }
                }
                tokio::time::sleep(SETTLE).await;
            }
            _ = every.tick() => {}
            // Newly elected: act at once.
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let Some(fence) = leadership.borrow().clone() else {
            continue;
        };
        pass(api.clone(), fence.also()).await;
    }
}
