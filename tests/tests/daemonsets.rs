//! DaemonSets on hollow nodes: one pod per node, following nodes that join, are labelled into
//! a nodeSelector, and leave; a template change rolls through the nodes one at a time (never
//! two pods on a node, never more than one node without a ready pod).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::cluster::Cluster;
use tests::pod_tracker::{is_active, is_ready, PodTracker, Pods};
use tests::wait;

fn daemon_set(name: &str, image: &str, node_selector: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": node_selector,
                         "containers": [{"name": "c", "image": image}]}
            }
        }
    })
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `name` runs one ready pod of `image` on exactly `nodes`, and says so.
async fn runs_on(client: &Client, name: &str, image: &str, nodes: &[&str]) {
    let pods = Kind::named("pods").unwrap();
    let sets = Kind::named("daemonsets").unwrap();
    let selector = format!("app={name}");
    wait::until(
        &format!("{name} on {nodes:?}"),
        Duration::from_secs(30),
        || async {
            let list = client
                .list(&pods, Some("default"), &selector, "")
                .await
                .ok()?;
            let active: Vec<&Value> = list.items.iter().filter(|p| is_active(p)).collect();
            let mut on: Vec<String> = active
                .iter()
                .filter(|p| is_ready(p) && p["spec"]["containers"][0]["image"] == image)
                .map(|p| node_of(p))
                .collect();
            on.sort();
            let ds = client.get(&sets, "default", name).await.ok()?;
            let s = &ds["status"];
            (on == nodes
                && active.len() == nodes.len()
                && s["desiredNumberScheduled"] == nodes.len()
                && s["numberReady"] == nodes.len()
                && s["updatedNumberScheduled"] == nodes.len())
            .then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_follow_nodes_and_roll_one_node_at_a_time() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let mut first = tests::hollow::start(&cluster, 2, "a", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    client
        .apply(&daemon_set("agent", "agent:1", json!({})), "default")
        .await
        .unwrap();
    client
        .apply(
            &daemon_set("ssd", "ssd:1", json!({"disk": "ssd"})),
            "default",
        )
        .await
        .unwrap();
    runs_on(&client, "agent", "agent:1", &["a-0", "a-1"]).await;

    // A node joins; a cordon does not keep daemon pods away.
    tests::cli::ok(&eps, &["cordon", "a-1"]);
    let mut second = tests::hollow::start(&cluster, 1, "b", &[]);
    runs_on(&client, "agent", "agent:1", &["a-0", "a-1", "b-0"]).await;
    runs_on(&client, "ssd", "ssd:1", &[]).await;
    // A label brings a node into a nodeSelector.
    tests::cli::ok(&eps, &["label", "node", "b-0", "disk=ssd"]);
    runs_on(&client, "ssd", "ssd:1", &["b-0"]).await;

    // A node leaves.
    second.kill().unwrap();
    second.wait().unwrap();
    tests::cli::ok(&eps, &["delete", "node", "b-0"]);
    runs_on(&client, "agent", "agent:1", &["a-0", "a-1"]).await;

    // A new template rolls through: at most one node without a ready pod, one pod per node.
    let tracker = PodTracker::start(
        &cluster.client_urls(),
        "default",
        "app=agent",
        |pods: &Pods| {
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for p in pods.values().filter(|p| is_active(p)) {
                *per_node.entry(node_of(p)).or_default() += 1;
            }
            let ready = pods.values().filter(|p| is_ready(p)).count();
            if per_node.values().any(|n| *n > 1) {
                return Some(format!("two pods on one node: {per_node:?}"));
            }
            (ready < 1).then(|| format!("{ready} ready pods on two nodes"))
        },
    )
    .await;
    client
        .apply(&daemon_set("agent", "agent:2", json!({})), "default")
        .await
        .unwrap();
    runs_on(&client, "agent", "agent:2", &["a-0", "a-1"]).await;
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    assert!(found.states >= 4, "only {} states seen", found.states);
    first.kill().unwrap();
    first.wait().unwrap();
}
