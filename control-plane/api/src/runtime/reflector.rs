//! A local store of the objects a watcher follows: one `Writer` applies the watcher's events,
//! any number of cheap `Store` clones read them. A `Restarted` list replaces the contents at
//! once, so readers never see half of a relist.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use tokio::sync::watch;

use super::watcher::Event;

/// Namespace ("" for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of<K: Metadata<Ty = ObjectMeta>>(obj: &K) -> Self {
        let meta = obj.metadata();
        Self::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

type Objects<K> = HashMap<ObjectKey, Arc<K>>;

/// Reads the objects; clones share one store.
pub struct Store<K> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// Writes the objects: the only writer of its store.
pub struct Writer<K> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: watch::Sender<bool>,
}

impl<K: Metadata<Ty = ObjectMeta>> Default for Writer<K> {
    fn default() -> Self {
        Self {
            objects: Arc::default(),
            ready: watch::channel(false).0,
        }
    }
}

impl<K: Metadata<Ty = ObjectMeta>> Writer<K> {
    /// A reader of this writer's store.
    pub fn store(&self) -> Store<K> {
        Store {
            objects: self.objects.clone(),
            ready: self.ready.subscribe(),
        }
    }

    /// Applies one watcher event.
    pub fn apply(&mut self, event: &Event<K>)
    where
        K: Clone,
    {
        let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Restarted(list) => {
                *objects = list
                    .iter()
                    .map(|o| (ObjectKey::of(o), Arc::new(o.clone())))
                    .collect();
                drop(objects);
                self.ready.send_replace(true);
            }
            Event::Applied(o) => {
                objects.insert(ObjectKey::of(o), Arc::new(o.clone()));
            }
            Event::Deleted(o) => {
                objects.remove(&ObjectKey::of(o));
            }
        }
    }
}

impl<K> Store<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Waits until the first list has been applied.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        // The sender lives as long as the writer; if it is gone, no list will ever come.
        let _ = ready.wait_for(|r| *r).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str, node: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        });
        p
    }

    fn node_of(p: &Pod) -> &str {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn a_relist_replaces_everything_and_changes_apply_in_order() {
        let mut writer = Writer::<Pod>::default();
        let store = writer.store();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_ready().await }
        });
        writer.apply(&Event::Applied(pod("a", "early", "n1")));
        assert!(!*store.ready.borrow(), "a single change is not a list");
        assert_eq!(store.len(), 1);
        writer.apply(&Event::Restarted(vec![
            pod("a", "x", "n1"),
            pod("b", "y", "n1"),
        ]));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("ready after the first list")
            .expect("no panic");
        assert_eq!(store.len(), 2);
        assert!(store.get(&ObjectKey::new("a", "early")).is_none());

        writer.apply(&Event::Applied(pod("a", "x", "n2")));
        let x = store.get(&ObjectKey::new("a", "x")).expect("x is kept");
        assert_eq!(node_of(&x), "n2");
        writer.apply(&Event::Deleted(pod("b", "y", "n1")));
        assert!(store.get(&ObjectKey::new("b", "y")).is_none());
        assert_eq!(store.len(), 1);
        assert_eq!(ObjectKey::new("", "n").to_string(), "n");
        assert_eq!(ObjectKey::new("a", "x").to_string(), "a/x");
    }
}
