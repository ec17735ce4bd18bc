//! The loop every controller shares: after each burst of changes under the watched prefixes
//! (seen through the cache, settled for `SETTLE`), at least every `resync` (or sooner when the
//! last pass asked to be run again), and at once when elected, if this replica leads the
//! controllers, run one pass over a fresh cache with the election's fence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_api::{object, Kind};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::cache::Cache;
use super::Context;
use crate::apiserver::registry::{Also, Stored};
use crate::apiserver::ApiService;

/// How long a burst of changes may settle before a pass.
const SETTLE: Duration = Duration::from_millis(100);

/// What one pass works with.
pub struct Pass {
    pub api: Arc<ApiService>,
    pub cache: Arc<Cache>,
    /// Carried by every write of the pass.
    pub fence: Also,
}

/// When a pass wants to run again regardless of changes (a deadline it is waiting for).
pub type Again = Option<Duration>;

/// The sooner of two wishes to run again.
pub fn sooner(a: Again, b: Again) -> Again {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The objects themselves, for the pure plans.
pub fn values(items: &[Arc<Stored>]) -> Vec<&Value> {
    items.iter().map(|s| &s.object).collect()
}

impl Pass {
    /// The objects of `kind` not being deleted: what a controller reconciles.
    pub fn live(&self, kind: &Kind) -> Vec<Arc<Stored>> {
        let mut items = self.cache.list(kind, None);
        items.retain(|s| object::meta_str(&s.object, "deletionTimestamp").is_empty());
        items
    }
}

/// Runs `pass` whenever something under one of `prefixes` changed (and every `resync`), while
/// this replica leads the controllers.
pub async fn run<F, Fut>(ctx: Context, prefixes: &[String], resync: Duration, pass: F)
where
    F: Fn(Pass) -> Fut,
    Fut: Future<Output = Again>,
{
    let mut changes = ctx.cache.subscribe();
    let mut leadership = ctx.leadership.clone();
    // When the next pass is due regardless of changes (kept across irrelevant changes).
    let mut due = tokio::time::Instant::now() + resync;
    loop {
        tokio::select! {
            msg = changes.recv() => {
                match msg {
                    Ok(keys) => {
                        let relevant = keys
                            .iter()
                            .any(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())));
                        if !relevant {
                            continue;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                tokio::time::sleep(SETTLE).await;
            }
            _ = tokio::time::sleep_until(due) => {}
            // Newly elected: act at once.
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let Some(fence) = leadership.borrow().clone() else {
            due = tokio::time::Instant::now() + resync;
            continue;
        };
        if let Err(e) = ctx.cache.fresh().await {
            tracing::debug!(%e, "controller pass postponed");
            due = tokio::time::Instant::now() + Duration::from_millis(200);
            continue;
        }
        // The pass sees everything announced so far.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = changes.try_recv() {}
        let again = pass(Pass {
            api: ctx.api.clone(),
            cache: ctx.cache.clone(),
            fence: fence.also(),
        })
        .await;
        due = tokio::time::Instant::now() + again.map_or(resync, |a| a.min(resync));
    }
}
