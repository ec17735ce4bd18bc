//! Deletion as Kubernetes does it, on a three-replica cluster: dependents are garbage-collected
//! through ownerReferences (background, foreground and orphan propagation), finalizers hold an
//! object until removed, and a pod bound to a node stays Terminating until deleted with grace 0.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, DeleteOptions, Kind, Reason};
use tests::cli::{ok, skiff};
use tests::cluster::Cluster;
use tests::wait;

fn cm(name: &str, owners: &[&Value]) -> Value {
    let refs: Vec<Value> = owners
        .iter()
        .map(|o| {
            json!({
                "apiVersion": o["apiVersion"], "kind": o["kind"],
                "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": refs},
        "data": {"k": "v"}
    })
}

async fn gone(client: &Client, kind: &Kind, name: &str) {
    wait::until(
        &format!("{name} to be deleted"),
        Duration::from_secs(20),
        || async move {
            match client.get(kind, "default", name).await {
                Err(e) if e.reason == Reason::NotFound => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_follow_their_owners() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(&cluster.client_urls()).unwrap();
    let cms = Kind::named("configmaps").unwrap();

    // Background (the default): a chain owner -> middle -> leaf goes after the owner.
    let owner = client
        .create(&cm("owner", &[]), "default")
        .await
        .unwrap()
        .object;
    let middle = client
        .create(&cm("middle", &[&owner]), "default")
        .await
        .unwrap()
        .object;
    client
        .create(&cm("leaf", &[&middle]), "default")
        .await
        .unwrap();
    let other = client
        .create(&cm("other", &[]), "default")
        .await
        .unwrap()
        .object;
    // Two owners: losing one only drops that reference.
    client
        .create(&cm("shared", &[&owner, &other]), "default")
        .await
        .unwrap();
    ok(&cluster.endpoints(), &["delete", "configmap", "owner"]);
    gone(&client, &cms, "middle").await;
    gone(&client, &cms, "leaf").await;
    let shared = wait::until(
        "the dead owner's reference to be dropped",
        Duration::from_secs(20),
        || {
            let client = &client;
            async move {
                let s = client.get(&cms, "default", "shared").await.ok()?;
                (s["metadata"]["ownerReferences"].as_array()?.len() == 1).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(shared["metadata"]["ownerReferences"][0]["name"], "other");

    // Orphan: the owner goes, the dependent stays without the reference.
    let parent = client
        .create(&cm("parent", &[]), "default")
        .await
        .unwrap()
        .object;
    client
        .create(&cm("child", &[&parent]), "default")
        .await
        .unwrap();
    ok(
        &cluster.endpoints(),
        &["delete", "cm", "parent", "--cascade=orphan"],
    );
    gone(&client, &cms, "parent").await;
    let child = client.get(&cms, "default", "child").await.unwrap();
    assert_eq!(child["metadata"]["ownerReferences"], json!([]));

    // Foreground: the owner stays (being deleted) until its dependents are gone.
    let top = client
        .create(&cm("top", &[]), "default")
        .await
        .unwrap()
        .object;
    client
        .create(&cm("below", &[&top]), "default")
        .await
        .unwrap();
    let marked = client
        .delete_with(
            &cms,
            "default",
            "top",
            &DeleteOptions {
                propagation_policy: Some("Foreground".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .object;
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    gone(&client, &cms, "below").await;
    gone(&client, &cms, "top").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_graceful_pod_deletion() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let client = Client::new(&cluster.client_urls()).unwrap();
    let cms = Kind::named("configmaps").unwrap();
    let pods = Kind::named("pods").unwrap();

    let mut held = cm("held", &[]);
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    client.create(&held, "default").await.unwrap();
    ok(&eps, &["delete", "cm", "held"]);
    let live = client.get(&cms, "default", "held").await.unwrap();
    assert!(live["metadata"]["deletionTimestamp"].is_string());
    let mut release = live.clone();
    release["metadata"]["finalizers"] = json!([]);
    client.update(&release, "default").await.unwrap();
    let err = client.get(&cms, "default", "held").await.unwrap_err();
    assert_eq!(err.reason, Reason::NotFound);

    let pod = |name: &str, node: Option<&str>| {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
        });
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    };
    // Not on a node: gone at once.
    client
        .create(&pod("unbound", None), "default")
        .await
        .unwrap();
    ok(&eps, &["delete", "pod", "unbound"]);
    assert_eq!(
        client
            .get(&pods, "default", "unbound")
            .await
            .unwrap_err()
            .reason,
        Reason::NotFound
    );
    // On a node: Terminating until deleted with grace 0.
    client
        .create(&pod("bound", Some("node-1")), "default")
        .await
        .unwrap();
    let out = ok(&eps, &["delete", "pod", "bound"]);
    assert_eq!(out.trim(), "pod \"bound\" deleted");
    let live = client.get(&pods, "default", "bound").await.unwrap();
    assert_eq!(live["metadata"]["deletionGracePeriodSeconds"], 30);
    let table = ok(&eps, &["get", "pods"]);
    assert!(table.contains("Terminating"), "{table}");
    let run = skiff(&eps, &["delete", "pod", "bound", "--force"], None);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        client
            .get(&pods, "default", "bound")
            .await
            .unwrap_err()
            .reason,
        Reason::NotFound
    );
}
