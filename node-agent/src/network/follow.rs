//! One watch-backed store of every object of a kind, for the parts of the agent that keep the
//! host in step with the cluster (service rules, pod routes): the store is the only truth they
//! read, and a `watch` channel tells every one of them (each holding a receiver) that something
//! changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use skiff_api::runtime::{Config, Store, Watcher, Writer};
use skiff_api::Client;
use tokio::sync::watch;

/// Follows every object of kind `K` into a store, marking `changed` on every event; `who`
/// names the follower in the log.
pub fn follow<K>(client: Client, changed: watch::Sender<()>, who: &'static str) -> Store<K>
where
    K: k8s_openapi::Resource
        + Metadata<Ty = ObjectMeta>
        + serde::de::DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static,
{
    let mut writer = Writer::<K>::default();
    let store = writer.store();
    tokio::spawn(async move {
        let mut watcher = match Watcher::<K>::new(client, Config::default()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("{who}: cannot follow {}: {e}", K::KIND);
                return;
            }
        };
        loop {
            match watcher.next().await {
                Ok(event) => {
                    writer.apply(&event);
                    changed.send_replace(());
                }
                Err(e) => tracing::debug!("{who}: following {}: {e}", K::KIND),
            }
        }
    });
    store
}
