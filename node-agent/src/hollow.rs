//! Hollow nodes: N simulated nodes in one process, for tests and benchmarks of the control
//! plane. Each registers a Node (Ready, with capacity), renews its Lease in `kube-node-lease`,
//! and reports the pods bound to it Running with an IP from the pod CIDR the control plane
//! assigned it, without starting anything (the `HollowRuntime` behind the same `PodRuntime` seam
//! as the real one, its status made by the same function); a pod being deleted is confirmed gone
//! at once.
//! Stopping the process makes them all go silent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use anyhow::Context;
use serde_json::{json, Value};
use skiff_api::{object, Client, DeleteOptions, Kind};

use crate::pod_runtime::{ContainerObservation, PodObservation, PodRuntime, RunState};
use crate::pods::status::pod_status;

/// Capacity every hollow node reports.
const CPU: &str = "8";
const MEMORY: &str = "32Gi";
const PODS: &str = "110";

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The Node object of hollow node `name`, spec and metadata.
fn node(name: &str, index: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "skiff.io/hollow": "true"},
            "annotations": {"skiff.io/internal-ip": internal_ip(index).to_string()}
        },
        "spec": {}
    })
}

fn internal_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 30, 0, 0)) + index as u32 + 1)
}

/// The status a healthy hollow node reports.
fn node_status(index: usize) -> Value {
    let t = now();
    json!({
        "capacity": {"cpu": CPU, "memory": MEMORY, "pods": PODS},
        "allocatable": {"cpu": CPU, "memory": MEMORY, "pods": PODS},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "hollow node is ready",
            "lastHeartbeatTime": t, "lastTransitionTime": t
        }],
        "addresses": [{"type": "InternalIP", "address": internal_ip(index).to_string()}],
        "nodeInfo": {"kubeletVersion": "skiff-hollow", "operatingSystem": "linux", "architecture": "amd64"}
    })
}

fn lease(name: &str, renew_every: Duration) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": (renew_every.as_secs() * 4).max(1),
            "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        }
    })
}

/// Registers every node (spec, then status).
async fn register(client: &Client, names: &[String]) -> anyhow::Result<()> {
    let nodes = Kind::named("nodes").expect("Node is served");
    for (i, name) in names.iter().enumerate() {
        client
            .apply(&node(name, i), "")
            .await
            .with_context(|| format!("registering node {name}"))?;
        // The control plane may change the Node meanwhile (a pod CIDR): read it again then.
        let mut attempts = 0;
        loop {
            let mut live = client.get(&nodes, "", name).await?;
            live["status"] = node_status(i);
            match client.update_status(&live, "").await {
                Ok(_) => break,
                Err(e) if e.reason == skiff_api::Reason::Conflict && attempts < 10 => {
                    attempts += 1;
                }
                Err(e) => return Err(e).with_context(|| format!("reporting node {name}'s status")),
            }
        }
    }
    Ok(())
}

/// Leases renewed at once (a thousand nodes renew in a few rounds, not one by one).
const RENEWALS_IN_FLIGHT: usize = 32;
/// How many pod status reports (or deletions) the hollow nodes have in flight at once.
const REPORTS_IN_FLIGHT: usize = 64;

/// Renews every node's Lease, for ever.
async fn heartbeat(client: Arc<Client>, names: Vec<String>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for chunk in names.chunks(RENEWALS_IN_FLIGHT) {
            let mut renewals = tokio::task::JoinSet::new();
            for name in chunk {
                let (client, name) = (client.clone(), name.clone());
                renewals.spawn(async move {
                    if let Err(e) = client.apply(&lease(&name, every), "kube-node-lease").await {
                        tracing::warn!(node = %name, %e, "lease not renewed");
                    }
                });
            }
            while renewals.join_next().await.is_some() {}
        }
    }
}

/// The first free address of `cidr` (a /24), skipping the network, gateway and broadcast.
fn free_ip(cidr: &str, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let base: Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
    (2..255u32)
        .map(|i| Ipv4Addr::from(u32::from(base) + i))
        .find(|ip| !used.contains(ip))
}

/// The hollow nodes' pod runtime: nothing runs, every container is reported running from the
/// moment its pod is synced, with an address from its node's pod CIDR.
#[derive(Default)]
pub struct HollowRuntime {
    /// Each node's pod CIDR.
    cidrs: BTreeMap<String, String>,
    state: Mutex<Addresses>,
}

#[derive(Default)]
struct Addresses {
    /// Addresses in use per node.
    used: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Each pod's node and address, by uid.
    pods: BTreeMap<String, (String, Ipv4Addr)>,
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

impl HollowRuntime {
    /// Remembers the address a pod already reports (after a restart of the hollow nodes).
    fn adopt(&self, pod: &Pod) {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
        else {
            return;
        };
        let node = node_of(pod);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.used.entry(node.clone()).or_default().insert(ip);
        if let Some(uid) = pod.metadata.uid.clone() {
            st.pods.insert(uid, (node, ip));
        }
    }

    fn address(&self, pod: &Pod) -> Option<Ipv4Addr> {
        let uid = pod.metadata.uid.clone()?;
        let node = node_of(pod);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, ip)) = st.pods.get(&uid) {
            return Some(*ip);
        }
        let ip = free_ip(
            self.cidrs.get(&node)?,
            st.used.entry(node.clone()).or_default(),
        )?;
        st.used.entry(node.clone()).or_default().insert(ip);
        st.pods.insert(uid, (node, ip));
        Some(ip)
    }

    fn release(&self, uid: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((node, ip)) = st.pods.remove(uid) {
            if let Some(u) = st.used.get_mut(&node) {
                u.remove(&ip);
            }
        }
    }
}

impl PodRuntime for HollowRuntime {
    async fn sync_pod(&self, pod: &Pod) -> PodObservation {
        let Some(ip) = self.address(pod) else {
            return PodObservation {
                sandbox_error: Some("no pod CIDR or no free address on this node".into()),
                ..Default::default()
            };
        };
        let now = jiff::Timestamp::now();
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| ContainerObservation {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                container_id: String::new(),
                state: RunState::Running { started_at: now },
                last_terminated: None,
                restart_count: 0,
                ready: true,
                started: true,
            })
            .collect();
        PodObservation {
            ip: Some(ip),
            started_at: Some(now),
            init_containers: vec![],
            containers,
            sandbox_error: None,
        }
    }

    async fn kill_pod(&self, pod: &Pod, _grace: Duration) -> Result<(), String> {
        self.release(pod.metadata.uid.as_deref().unwrap_or_default());
        Ok(())
    }

    fn pods_held(&self) -> Vec<String> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pods.keys().cloned().collect()
    }

    async fn remove_leftover(&self, uid: &str) -> Result<(), String> {
        self.release(uid);
        Ok(())
    }
}

/// What the node does about one pod: report a status, finish its deletion, or nothing.
enum Step {
    Report(Box<Pod>),
    Finish,
    Nothing,
}

async fn step(runtime: &HollowRuntime, pod: &Pod, host_ip: Ipv4Addr) -> Step {
    if pod.metadata.deletion_timestamp.is_some() {
        return Step::Finish;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
        return Step::Nothing;
    }
    let obs = runtime.sync_pod(pod).await;
    if obs.ip.is_none() {
        return Step::Nothing;
    }
    let mut next = pod.clone();
    next.status = Some(pod_status(pod, &obs, host_ip, jiff::Timestamp::now()));
    Step::Report(Box::new(next))
}

/// Runs `count` hollow nodes named `prefix-0`.. until the process is stopped.
pub async fn run(
    client: Arc<Client>,
    prefix: &str,
    count: usize,
    every: Duration,
) -> anyhow::Result<()> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let index: BTreeMap<String, usize> = names.iter().cloned().zip(0..).collect();
    register(&client, &names).await?;
    tracing::info!(count, prefix, "hollow nodes registered");
    tokio::spawn(heartbeat(client.clone(), names.clone(), every));

    let nodes = Kind::named("nodes").expect("Node is served");
    let pods = Kind::named("pods").expect("Pod is served");
    let mut wait = tokio::time::interval(Duration::from_secs(2));
    loop {
        // Each round: the CIDRs assigned so far, then every pod change from the list on.
        let node_list = client
            .list(&nodes, None, "skiff.io/hollow=true", "")
            .await?;
        let cidrs: BTreeMap<String, String> = node_list
            .items
            .iter()
            .filter(|n| index.contains_key(object::name(n)))
            .filter_map(|n| {
                let c = object::field(n, "spec.podCIDR")?.as_str()?.to_string();
                Some((object::name(n).to_string(), c))
            })
            .collect();
        if cidrs.len() < names.len() {
            wait.tick().await;
            continue;
        }
        return serve_pods(&client, &pods, &index, cidrs).await;
    }
}

async fn serve_pods(
    client: &Arc<Client>,
    pods: &Kind,
    index: &BTreeMap<String, usize>,
    cidrs: BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let runtime = Arc::new(HollowRuntime {
        cidrs,
        ..Default::default()
    });
    let list = client.list(pods, None, "", "").await?;
    let mut pending = Vec::new();
    for p in list.items {
        let Ok(pod) = serde_json::from_value::<Pod>(p) else {
            continue;
        };
        if !index.contains_key(&node_of(&pod)) {
            continue;
        }
        runtime.adopt(&pod);
        pending.push(pod);
    }
    let mut watch = client.watch(pods, None, "", "", &list.resource_version);
    // Reports go out concurrently (a node reports each pod by itself, so 1,000 nodes report
    // side by side), at most REPORTS_IN_FLIGHT at a time; addresses are chosen before.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(REPORTS_IN_FLIGHT));
    let mut reports = tokio::task::JoinSet::new();
    loop {
        while reports.try_join_next().is_some() {}
        for pod in pending.drain(..) {
            let Some(&i) = index.get(&node_of(&pod)) else {
                continue;
            };
            match step(&runtime, &pod, internal_ip(i)).await {
                Step::Report(next) => {
                    let (client, permit) =
                        (client.clone(), in_flight.clone().acquire_owned().await?);
                    reports.spawn(async move {
                        let ns = next.metadata.namespace.clone().unwrap_or_default();
                        match serde_json::to_value(&*next) {
                            Ok(v) => {
                                if let Err(e) = client.update_status(&v, &ns).await {
                                    tracing::debug!(%e, "status not reported");
                                }
                            }
                            Err(e) => tracing::warn!(%e, "cannot encode a pod"),
                        }
                        drop(permit);
                    });
                }
                Step::Finish => {
                    let _ = runtime.kill_pod(&pod, Duration::ZERO).await;
                    let (client, permit) =
                        (client.clone(), in_flight.clone().acquire_owned().await?);
                    let pods = *pods;
                    reports.spawn(async move {
                        let options = DeleteOptions {
                            grace_period_seconds: Some(0),
                            propagation_policy: None,
                        };
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let _ = client.delete_with(&pods, &ns, &name, &options).await;
                        drop(permit);
                    });
                }
                Step::Nothing => {}
            }
        }
        let Some(ev) = watch.next().await? else {
            anyhow::bail!("the pod watch ended");
        };
        let Ok(pod) = serde_json::from_value::<Pod>(ev.object) else {
            continue;
        };
        match ev.kind.as_str() {
            "ADDED" | "MODIFIED" => pending.push(pod),
            "DELETED" => {
                runtime.release(pod.metadata.uid.as_deref().unwrap_or_default());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, node: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending"}
        }))
        .expect("pod")
    }

    #[tokio::test]
    async fn a_bound_pod_runs_with_an_address_of_its_node() {
        let runtime = HollowRuntime {
            cidrs: [("n-0".to_string(), "10.244.3.0/24".to_string())].into(),
            ..Default::default()
        };
        let mut reporting: Pod = pod("old", "n-0");
        reporting.status = Some(k8s_openapi::api::core::v1::PodStatus {
            pod_ip: Some("10.244.3.2".into()),
            ..Default::default()
        });
        runtime.adopt(&reporting);
        let Step::Report(next) = step(&runtime, &pod("p", "n-0"), internal_ip(0)).await else {
            panic!("runs")
        };
        let status = next.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.3.3"));
        assert!(status.container_statuses.as_ref().expect("statuses")[0].ready);
        assert!(
            matches!(
                step(&runtime, &pod("q", "n-1"), internal_ip(1)).await,
                Step::Nothing
            ),
            "a node without a CIDR reports nothing"
        );
        let mut deleting = (*next).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().expect("time"),
            ));
        assert!(matches!(
            step(&runtime, &deleting, internal_ip(0)).await,
            Step::Finish
        ));
        runtime
            .kill_pod(&deleting, Duration::ZERO)
            .await
            .expect("released");
        let Step::Report(again) = step(&runtime, &pod("r", "n-0"), internal_ip(0)).await else {
            panic!("runs")
        };
        assert_eq!(
            again.status.and_then(|s| s.pod_ip).as_deref(),
            Some("10.244.3.3"),
            "a released address is used again"
        );
    }
}
