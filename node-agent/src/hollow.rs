//! Hollow nodes: N simulated nodes in one process, for tests and benchmarks of the control
//! plane. Each registers a Node (Ready, with capacity), renews its Lease in `kube-node-lease`,
//! and reports the pods bound to it Running with an IP from the pod CIDR the control plane
//! assigned it, without starting anything; a pod being deleted is confirmed gone at once.
//! Stopping the process makes them all go silent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use skiff_api::{object, Client, DeleteOptions, Kind};

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

/// What the node does about one pod: report it Running, finish its deletion, or nothing.
enum Step {
    Run(Value),
    Finish,
    Nothing,
}

fn step(pod: &Value, cidr: Option<&str>, used: &BTreeSet<Ipv4Addr>, host_ip: Ipv4Addr) -> Step {
    if !object::meta_str(pod, "deletionTimestamp").is_empty() {
        return Step::Finish;
    }
    let phase = object::field_string(pod, "status.phase");
    if phase == "Running" || phase == "Succeeded" || phase == "Failed" {
        return Step::Nothing;
    }
    let Some(ip) = cidr.and_then(|c| free_ip(c, used)) else {
        return Step::Nothing;
    };
    let t = now();
    let containers = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.get("name").cloned().unwrap_or_default(),
                "image": c.get("image").cloned().unwrap_or_default(),
                "imageID": "", "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": t}}
            })
        })
        .collect();
    let mut next = pod.clone();
    next["status"] = json!({
        "phase": "Running",
        "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        "hostIP": host_ip.to_string(),
        "startTime": t,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "lastTransitionTime": t}
        ],
        "containerStatuses": statuses
    });
    Step::Run(next)
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
        return serve_pods(&client, &pods, &index, &cidrs).await;
    }
}

async fn serve_pods(
    client: &Arc<Client>,
    pods: &Kind,
    index: &BTreeMap<String, usize>,
    cidrs: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let list = client.list(pods, None, "", "").await?;
    let mut used: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut pending = Vec::new();
    for p in &list.items {
        let node = object::field_string(p, "spec.nodeName");
        if !index.contains_key(&node) {
            continue;
        }
        if let Ok(ip) = object::field_string(p, "status.podIP").parse() {
            used.entry(node.clone()).or_default().insert(ip);
        }
        pending.push(p.clone());
    }
    let mut watch = client.watch(pods, None, "", "", &list.resource_version);
    // Reports go out concurrently (a node reports each pod by itself, so 1,000 nodes report
    // side by side), at most REPORTS_IN_FLIGHT at a time; addresses are chosen before.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(REPORTS_IN_FLIGHT));
    let mut reports = tokio::task::JoinSet::new();
    loop {
        while reports.try_join_next().is_some() {}
        for pod in pending.drain(..) {
            let node = object::field_string(&pod, "spec.nodeName");
            let Some(&i) = index.get(&node) else { continue };
            let node_used = used.entry(node.clone()).or_default();
            match step(
                &pod,
                cidrs.get(&node).map(String::as_str),
                node_used,
                internal_ip(i),
            ) {
                Step::Run(next) => {
                    if let Ok(ip) = object::field_string(&next, "status.podIP").parse() {
                        node_used.insert(ip);
                    }
                    let (client, permit) =
                        (client.clone(), in_flight.clone().acquire_owned().await?);
                    reports.spawn(async move {
                        if let Err(e) = client.update_status(&next, object::namespace(&next)).await
                        {
                            tracing::debug!(%e, pod = object::name(&next), "status not reported");
                        }
                        drop(permit);
                    });
                }
                Step::Finish => {
                    if let Ok(ip) = object::field_string(&pod, "status.podIP").parse() {
                        node_used.remove(&ip);
                    }
                    let (client, permit) =
                        (client.clone(), in_flight.clone().acquire_owned().await?);
                    let pods = *pods;
                    reports.spawn(async move {
                        let options = DeleteOptions {
                            grace_period_seconds: Some(0),
                            propagation_policy: None,
                        };
                        let _ = client
                            .delete_with(
                                &pods,
                                object::namespace(&pod),
                                object::name(&pod),
                                &options,
                            )
                            .await;
                        drop(permit);
                    });
                }
                Step::Nothing => {}
            }
        }
        let Some(ev) = watch.next().await? else {
            anyhow::bail!("the pod watch ended");
        };
        match ev.kind.as_str() {
            "ADDED" | "MODIFIED" => pending.push(ev.object),
            "DELETED" => {
                let node = object::field_string(&ev.object, "spec.nodeName");
                if let Ok(ip) = object::field_string(&ev.object, "status.podIP").parse() {
                    if let Some(u) = used.get_mut(&node) {
                        u.remove(&ip);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_pod_runs_with_an_address_of_its_node() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n-0", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending"}
        });
        let mut used = BTreeSet::new();
        used.insert("10.244.3.2".parse().unwrap());
        let Step::Run(next) = step(&pod, Some("10.244.3.0/24"), &used, internal_ip(0)) else {
            panic!("runs")
        };
        assert_eq!(next["status"]["phase"], "Running");
        assert_eq!(next["status"]["podIP"], "10.244.3.3");
        assert_eq!(next["status"]["containerStatuses"][0]["ready"], true);
        assert!(matches!(
            step(&pod, None, &used, internal_ip(0)),
            Step::Nothing
        ));
        let mut deleting = next.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(matches!(
            step(&deleting, None, &used, internal_ip(0)),
            Step::Finish
        ));
    }
}
