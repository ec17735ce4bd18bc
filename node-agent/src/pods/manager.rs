//! Follows the pods bound to this node and keeps one worker per pod (by uid): a worker is
//! started for a pod seen for the first time, handed every newer version of it, and told when
//! the pod is gone from the API. After the first list, whatever the runtime still holds for
//! pods that no longer exist is cleaned up (an agent restarted while pods were deleted).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::runtime::{Config, Event, Watcher};
use skiff_api::Client;
use tokio::sync::{mpsc, watch};

use super::worker::{self, Worker};
use crate::pod_runtime::PodRuntime;

pub struct PodManager<R> {
    pub client: Client,
    pub node_name: String,
    pub host_ip: Ipv4Addr,
    pub runtime: Arc<R>,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl<R: PodRuntime> PodManager<R> {
    /// Runs until the process ends.
    pub async fn run(self) -> anyhow::Result<()> {
        let config = Config::default().fields(format!("spec.nodeName={}", self.node_name));
        let mut watcher = Watcher::<Pod>::new(self.client.clone(), config)?;
        let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut cleaned = false;
        loop {
            tokio::select! {
                ev = watcher.next() => match ev {
                    Ok(Event::Restarted(pods)) => {
                        let live: HashSet<String> = pods.iter().map(uid).collect();
                        for (u, tx) in &workers {
                            if !live.contains(u) {
                                tx.send_replace(None);
                            }
                        }
                        for pod in pods {
                            self.dispatch(&mut workers, &done_tx, pod);
                        }
                        if !cleaned {
                            cleaned = true;
                            self.clean_leftovers(&live).await;
                        }
                    }
                    Ok(Event::Applied(pod)) => self.dispatch(&mut workers, &done_tx, pod),
                    Ok(Event::Deleted(pod)) => {
                        if let Some(tx) = workers.get(&uid(&pod)) {
                            tx.send_replace(None);
                        }
                    }
                    Err(e) => tracing::warn!(%e, "pod watch"),
                },
                Some(u) = done_rx.recv() => {
                    // A worker ends only after its pod is gone; a pod that came back with the
                    // same uid meanwhile (it cannot) would get a new worker on its next event.
                    workers.remove(&u);
                }
            }
        }
    }

    fn dispatch(
        &self,
        workers: &mut HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
        done: &mpsc::UnboundedSender<String>,
        pod: Pod,
    ) {
        let u = uid(&pod);
        if u.is_empty() {
            return;
        }
        let pod = Arc::new(pod);
        if let Some(tx) = workers.get(&u) {
            tx.send_replace(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        workers.insert(u.clone(), tx);
        let w = Worker {
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            host_ip: self.host_ip,
        };
        let done = done.clone();
        tokio::spawn(async move {
            worker::run(w, rx).await;
            let _ = done.send(u);
        });
    }

    async fn clean_leftovers(&self, live: &HashSet<String>) {
        for held in self.runtime.pods_held() {
            if live.contains(&held) {
                continue;
            }
            tracing::info!(uid = %held, "removing what is left of a pod that no longer exists");
            if let Err(e) = self.runtime.remove_leftover(&held).await {
                tracing::warn!(uid = %held, %e, "leftover not removed");
            }
        }
    }
}
