//! One pod's worker: syncs the pod through the runtime whenever it changes and every second
//! while it lives (restarts and probes are due by time), writes its status when it differs from
//! what the API holds, and when the pod is being deleted stops it within its grace period and
//! finishes the deletion (the kubelet's final delete with grace 0).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::{Client, DeleteOptions, Kind, Reason};
use tokio::sync::watch;

use super::status::pod_status;
use crate::pod_runtime::PodRuntime;

/// How often a live pod is synced without a change to it.
const RESYNC: Duration = Duration::from_secs(1);
/// The grace period when the pod names none (Kubernetes' default).
const DEFAULT_GRACE: i64 = 30;

pub struct Worker<R> {
    pub client: Client,
    pub runtime: Arc<R>,
    pub host_ip: Ipv4Addr,
}

fn pods() -> Kind {
    Kind::of("v1", "Pod").expect("Pod is served")
}

fn grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE);
    Duration::from_secs(secs.max(0) as u64)
}

fn name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Runs until the pod is gone (deleted from the API and stopped here).
pub async fn run<R: PodRuntime>(w: Worker<R>, mut updates: watch::Receiver<Option<Arc<Pod>>>) {
    let mut last: Option<Arc<Pod>> = None;
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first pass, and every pass after a change to the pod, syncs in full; a tick only
    // when the runtime says something changed or is due.
    let mut synced_now = true;
    loop {
        let current = updates.borrow_and_update().clone();
        match current {
            None => {
                // Gone from the API (deleted with grace 0, or never to come back).
                if let Some(pod) = &last {
                    if let Err(e) = w.runtime.kill_pod(pod, Duration::ZERO).await {
                        tracing::warn!(pod = %name(pod), %e, "pod not stopped");
                    }
                }
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                tracing::info!(pod = %name(&pod), "stopping a deleted pod");
                if let Err(e) = w.runtime.kill_pod(&pod, grace(&pod)).await {
                    tracing::warn!(pod = %name(&pod), %e, "pod not stopped; trying again");
                    last = Some(pod);
                    tick.tick().await;
                    continue;
                }
                let options = DeleteOptions {
                    grace_period_seconds: Some(0),
                    propagation_policy: None,
                };
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let n = pod.metadata.name.clone().unwrap_or_default();
                match w.client.delete_with(&pods(), &ns, &n, &options).await {
                    Ok(_) => return,
                    Err(e) if e.reason == Reason::NotFound => return,
                    Err(e) => {
                        tracing::warn!(pod = %name(&pod), %e, "deletion not finished");
                        last = Some(pod);
                    }
                }
            }
            Some(pod) if !synced_now && !w.runtime.needs_sync(&pod) => {
                last = Some(pod);
            }
            Some(pod) => {
                let obs = w.runtime.sync_pod(&pod).await;
                let status = pod_status(&pod, &obs, w.host_ip, jiff::Timestamp::now());
                if pod.status.as_ref() != Some(&status) {
                    report(&w.client, &pod, status).await;
                }
                last = Some(pod);
            }
        }
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                synced_now = true;
            }
            _ = tick.tick() => synced_now = false,
        }
    }
}

async fn report(client: &Client, pod: &Pod, status: k8s_openapi::api::core::v1::PodStatus) {
    let mut next = pod.clone();
    next.status = Some(status);
    let value = match serde_json::to_value(&next) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(pod = %name(pod), %e, "cannot encode the pod's status");
            return;
        }
    };
    match client.update_status(&value, "").await {
        Ok(_) => tracing::debug!(pod = %name(pod), "status reported"),
        // A newer version is on its way through the watch; the next sync reports against it.
        Err(e) if e.reason == Reason::Conflict => {}
        Err(e) => tracing::warn!(pod = %name(pod), %e, "status not reported"),
    }
}
