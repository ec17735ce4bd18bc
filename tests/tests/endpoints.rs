//! Endpoints on hollow nodes: a Service's Endpoints follow the ready pods it selects (their IPs
//! and the named targetPort resolved), a pod that stops being ready moves to
//! notReadyAddresses, scaling changes the list, and the Endpoints go with their Service.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use skiff_api::{Client, Kind, Reason};
use tests::cluster::Cluster;
use tests::pod_tracker::is_ready;
use tests::wait;

const APP: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n    - {name: http, port: 80, targetPort: http}\n---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: c\n          image: nginx:1.27\n          ports: [{name: http, containerPort: 8080}]\n";

fn ips(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the Endpoints list exactly the IPs of the ready pods (and `not_ready` others).
async fn endpoints_match(client: &Client, ready: usize, not_ready: usize) -> Value {
    let pods = Kind::named("pods").unwrap();
    let endpoints = Kind::named("endpoints").unwrap();
    wait::until(
        &format!("endpoints with {ready} ready and {not_ready} not-ready addresses"),
        Duration::from_secs(30),
        || async {
            let list = client
                .list(&pods, Some("default"), "app=web", "")
                .await
                .ok()?;
            let want: BTreeSet<String> = list
                .items
                .iter()
                .filter(|p| is_ready(p))
                .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
                .collect();
            let e = client.get(&endpoints, "default", "web").await.ok()?;
            let subset = &e["subsets"][0];
            (want.len() == ready
                && ips(&subset["addresses"]) == want
                && ips(&subset["notReadyAddresses"]).len() == not_ready
                && subset["ports"][0]["port"] == 8080)
                .then_some(e)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_ready_pods_and_their_service() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let mut agent = tests::hollow::start(&cluster, 2, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    tests::cli::ok_with_input(&eps, &["apply", "-f", "-"], APP);
    let e = endpoints_match(&client, 3, 0).await;
    assert_eq!(e["subsets"][0]["ports"][0]["name"], "http");
    assert_eq!(e["subsets"][0]["addresses"][0]["targetRef"]["kind"], "Pod");
    let shown = tests::cli::ok(&eps, &["get", "endpoints", "web"]);
    assert!(shown.contains(":8080"), "{shown}");

    // A pod stops being ready (as its node would report it).
    let pods = Kind::named("pods").unwrap();
    let list = client
        .list(&pods, Some("default"), "app=web", "")
        .await
        .unwrap();
    let mut sick = list.items[0].clone();
    for c in sick["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["status"] = "False".into();
        }
    }
    client.update_status(&sick, "default").await.unwrap();
    let e = endpoints_match(&client, 2, 1).await;
    assert_eq!(
        e["subsets"][0]["notReadyAddresses"][0]["ip"],
        sick["status"]["podIP"]
    );

    tests::cli::ok(&eps, &["scale", "rs/web", "--replicas=1"]);
    wait::until("one pod left", Duration::from_secs(30), || async {
        let list = client
            .list(&pods, Some("default"), "app=web", "")
            .await
            .ok()?;
        (list.items.len() == 1).then_some(())
    })
    .await;
    let left = client
        .list(&pods, Some("default"), "app=web", "")
        .await
        .unwrap();
    let ready = usize::from(is_ready(&left.items[0]));
    endpoints_match(&client, ready, 1 - ready).await;

    tests::cli::ok(&eps, &["delete", "service", "web"]);
    let endpoints = Kind::named("endpoints").unwrap();
    wait::until(
        "the endpoints to go with the service",
        Duration::from_secs(30),
        || async {
            match client.get(&endpoints, "default", "web").await {
                Err(e) if e.reason == Reason::NotFound => Some(()),
                _ => None,
            }
        },
    )
    .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
}
