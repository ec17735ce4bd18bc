//! The controllers' shared view of the cluster: every object under `/registry/`, decoded once
//! and kept current from the store's change feed (a list at one revision, then every change
//! after it, relisting if the feed falls behind compaction). Controllers read it instead of
//! listing the store on each pass; `fresh` makes a pass see every write acknowledged before it
//! started, including the controllers' own.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use raft_store::mvcc::key_range::{prefix_end, KeyRange};
use raft_store::mvcc::kvstore::EventKind;
use raft_store::pb::etcdserverpb::RangeRequest;
use raft_store::replica::Replica;
use raft_store::watch::feed::{Feed, FeedError};
use skiff_api::{ApiError, Kind, Reason};
use tokio::sync::{broadcast, watch};

use crate::apiserver::registry::{decode, unavailable, Stored};

/// The keys that changed at one or more revisions.
pub type Changes = Arc<Vec<String>>;

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<Stored>>,
}

pub struct Cache {
    replica: Arc<Replica>,
    state: RwLock<State>,
    /// The store revision the cache reflects.
    synced: watch::Sender<i64>,
    changes: broadcast::Sender<Changes>,
}

impl Cache {
    /// A cache of `replica`'s objects, filled and followed by a task of its own.
    pub fn start(replica: Arc<Replica>) -> Arc<Cache> {
        let (changes, _) = broadcast::channel(1024);
        let cache = Arc::new(Cache {
            replica,
            state: RwLock::new(State::default()),
            synced: watch::channel(0).0,
            changes,
        });
        tokio::spawn(cache.clone().follow());
        cache
    }

    /// Every object under `/registry/` now, and the revision read at.
    fn load(&self) -> Result<(BTreeMap<String, Arc<Stored>>, i64), ApiError> {
        let all = skiff_api::kinds::REGISTRY;
        let resp = self
            .replica
            .sm
            .read()
            .range(&RangeRequest {
                key: all.as_bytes().to_vec(),
                range_end: prefix_end(all.as_bytes()),
                ..Default::default()
            })
            .map_err(unavailable)?;
        let revision = resp.header.map(|h| h.revision).unwrap_or_default();
        let mut objects = BTreeMap::new();
        for kv in resp.kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            match decode(&kv.value, kv.mod_revision) {
                Ok(s) => {
                    objects.insert(key, Arc::new(s));
                }
                Err(e) => tracing::warn!(%key, %e, "cache skips an unreadable object"),
            }
        }
        Ok((objects, revision))
    }

    async fn follow(self: Arc<Self>) {
        let all = skiff_api::kinds::REGISTRY;
        loop {
            let (objects, revision) = match self.load() {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::warn!(%e, "cache cannot list the store");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            let keys: Vec<String> = objects.keys().cloned().collect();
            self.write().objects = objects;
            self.synced.send_replace(revision);
            // Whatever was there before may have changed: tell everyone.
            let _ = self.changes.send(Arc::new(keys));
            // The feed follows every key, so that the cache's revision moves with the store's
            // even when only keys outside `/registry/` change (`fresh` waits for it).
            let range = KeyRange::new(b"\0", b"\0");
            let mut feed = Feed::new(self.replica.sm.clone(), range, revision + 1);
            loop {
                match feed.next().await {
                    Ok(batch) => {
                        let mut changed = Vec::with_capacity(batch.events.len());
                        {
                            let mut state = self.write();
                            for e in batch.events {
                                if !e.kv.key.starts_with(all.as_bytes()) {
                                    continue;
                                }
                                let key = String::from_utf8_lossy(&e.kv.key).into_owned();
                                match e.kind {
                                    EventKind::Delete => {
                                        state.objects.remove(&key);
                                    }
                                    EventKind::Put => {
                                        match decode(&e.kv.value, e.kv.mod_revision) {
                                            Ok(s) => {
                                                state.objects.insert(key.clone(), Arc::new(s));
                                            }
                                            Err(err) => {
                                                tracing::warn!(%key, %err, "cache skips an unreadable object")
                                            }
                                        }
                                    }
                                }
                                changed.push(key);
                            }
                        }
                        self.synced.send_replace(batch.revision);
                        if !changed.is_empty() {
                            let _ = self.changes.send(Arc::new(changed));
                        }
                    }
                    Err(FeedError::Closed) => return,
                    Err(e) => {
                        tracing::info!(%e, "cache relists");
                        break;
                    }
                }
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the cache holds every write acknowledged (anywhere) before the call.
    pub async fn fresh(&self) -> Result<(), ApiError> {
        self.replica.linearize().await.map_err(unavailable)?;
        let target = self.replica.sm.read().kv.current_rev();
        self.reached(target).await
    }

    /// Waits until the cache reflects store revision `revision`.
    pub async fn reached(&self, revision: i64) -> Result<(), ApiError> {
        let mut synced = self.synced.subscribe();
        synced
            .wait_for(|r| *r >= revision)
            .await
            .map(|_| ())
            .map_err(|_| ApiError::new(Reason::Unavailable, "the cache stopped"))
    }

    /// The keys that change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Changes> {
        self.changes.subscribe()
    }

    /// Every object of `kind` (in `namespace`, if given), in key order.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Arc<Stored>> {
        self.under(&kind.prefix(namespace))
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub fn under(&self, prefix: &str) -> Vec<Arc<Stored>> {
        let state = self.read();
        state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The object of `kind` named `name` (in `namespace` if namespaced).
    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Option<Arc<Stored>> {
        self.read().objects.get(&kind.key(namespace, name)).cloned()
    }
}
