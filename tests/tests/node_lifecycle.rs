//! Node lifecycle on hollow nodes: when one agent process (two nodes) stops, its nodes turn
//! NotReady (Ready Unknown, unreachable taints, an Event) after the grace period, their pods are
//! evicted after the eviction timeout and the ReplicaSet runs replacements on the live nodes;
//! when the agent comes back its nodes are Ready and untainted again.

use std::time::Duration;

use serde_json::Value;
use skiff_api::{Client, Kind};
use tests::cluster::Cluster;
use tests::pod_tracker::{is_active, is_ready};
use tests::wait;

const REPLICA_SET: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 6\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: c\n          image: nginx:1.27\n";

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn has_unreachable_taint(node: &Value) -> bool {
    node["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_dead_node_are_replaced_and_the_node_recovers() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--node-monitor-grace-period",
            "3",
            "--pod-eviction-timeout",
            "2",
        ],
    )
    .await;
    let eps = cluster.endpoints();
    let beat = ["--heartbeat-every", "1"];
    let mut doomed = tests::hollow::start(&cluster, 2, "a", &beat);
    let mut healthy = tests::hollow::start(&cluster, 2, "b", &beat);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let pods = Kind::named("pods").unwrap();
    let nodes = Kind::named("nodes").unwrap();
    tests::cli::ok_with_input(&eps, &["apply", "-f", "-"], REPLICA_SET);

    let running = |on: &'static str| {
        let client = &client;
        let pods = &pods;
        async move {
            let list = client
                .list(pods, Some("default"), "app=web", "")
                .await
                .ok()?;
            let ready: Vec<Value> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == 6 && ready.iter().all(|p| node_of(p).starts_with(on))).then_some(ready)
        }
    };
    let spread = wait::until("6 pods on the four nodes", Duration::from_secs(30), || {
        running("")
    })
    .await;
    let on_doomed: Vec<String> = spread
        .iter()
        .filter(|p| node_of(p).starts_with("a-"))
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !on_doomed.is_empty(),
        "the scheduler spreads pods over all nodes"
    );

    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let marked = wait::until(
        "a-0 and a-1 to turn NotReady",
        Duration::from_secs(30),
        || async {
            let list = client.list(&nodes, None, "", "").await.ok()?;
            let down: Vec<&Value> = list
                .items
                .iter()
                .filter(|n| ready_status(n) == "Unknown" && has_unreachable_taint(n))
                .collect();
            let names: Vec<&str> = down
                .iter()
                .map(|n| n["metadata"]["name"].as_str().unwrap())
                .collect();
            (names == ["a-0", "a-1"]).then_some(list.items.clone())
        },
    )
    .await;
    assert!(marked
        .iter()
        .filter(|n| n["metadata"]["name"].as_str().unwrap().starts_with("b-"))
        .all(|n| ready_status(n) == "True"));

    // Replacements run on the live nodes; the evicted pods stay Terminating (their node is
    // gone) and count no more.
    let replaced = wait::until("6 ready pods on b-*", Duration::from_secs(30), || {
        running("b-")
    })
    .await;
    assert!(replaced
        .iter()
        .all(|p| !on_doomed.contains(&p["metadata"]["name"].as_str().unwrap().to_string())));
    for name in &on_doomed {
        let p = client.get(&pods, "default", name).await.unwrap();
        assert!(!is_active(&p), "{name} was evicted");
    }
    let events = tests::cli::ok(&eps, &["get", "events", "-A"]);
    assert!(events.contains("NodeNotReady"), "{events}");
    assert!(events.contains("TaintManagerEviction"), "{events}");

    // The agent comes back: Ready, no taints, and it finishes the evicted pods.
    let mut back = tests::hollow::start(&cluster, 2, "a", &beat);
    wait::until(
        "a-0 and a-1 to be Ready again",
        Duration::from_secs(30),
        || async {
            let list = client.list(&nodes, None, "", "").await.ok()?;
            list.items
                .iter()
                .all(|n| ready_status(n) == "True" && !has_unreachable_taint(n))
                .then_some(())
        },
    )
    .await;
    wait::until(
        "the evicted pods to be gone",
        Duration::from_secs(30),
        || async {
            let list = client
                .list(&pods, Some("default"), "app=web", "")
                .await
                .ok()?;
            (list.items.len() == 6).then_some(())
        },
    )
    .await;
    for agent in [&mut healthy, &mut back] {
        agent.kill().unwrap();
        agent.wait().unwrap();
    }
}
