//! The Skiff API's watch on a three-replica cluster: creates, updates and deletes arrive in
//! order with their resourceVersions; a watch resumes on another replica after the one serving
//! it is killed, without gaps or repeats; selectors turn changes in and out of a selection into
//! ADDED and DELETED; a compacted resourceVersion ends the watch with 410 Expired; and
//! `skiff get -w` prints changes as they happen.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::cli::ok_with_input;
use tests::cluster::Cluster;

fn config_map(name: &str, value: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"v": value}
    })
}

/// The next event other than a bookmark, within 10 s.
async fn next(w: &mut skiff_api::Watch) -> skiff_api::Event {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("a watch event in time")
            .expect("watch")
            .expect("watch still open");
        if ev.kind != "BOOKMARK" {
            return ev;
        }
    }
}

fn summary(ev: &skiff_api::Event) -> (String, String, String) {
    (
        ev.kind.clone(),
        ev.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ev.object["data"]["v"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_in_order_and_a_watch_resumes_after_its_replica_dies() {
    let mut cluster = Cluster::start(3).await;
    let writer = Client::new(&[
        cluster.members[0].client_url(),
        cluster.members[1].client_url(),
    ])
    .unwrap();
    let cms = Kind::named("configmaps").unwrap();
    writer
        .apply(&config_map("before", "0", json!({})), "default")
        .await
        .unwrap();

    // Replica 2 serves the watch first; the client knows replica 0 too.
    let watcher = Client::new(&[
        cluster.members[2].client_url(),
        cluster.members[0].client_url(),
    ])
    .unwrap();
    let mut w = watcher.watch(&cms, Some("default"), "", "", "");
    assert_eq!(
        summary(&next(&mut w).await),
        ("ADDED".into(), "before".into(), "0".into())
    );

    let created = writer
        .apply(&config_map("a", "1", json!({})), "default")
        .await
        .unwrap();
    writer
        .apply(&config_map("a", "2", json!({})), "default")
        .await
        .unwrap();
    let deleted = writer.delete(&cms, "default", "a").await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(summary(&ev), ("ADDED".into(), "a".into(), "1".into()));
    assert_eq!(
        ev.object["metadata"]["resourceVersion"],
        created.object["metadata"]["resourceVersion"]
    );
    assert_eq!(
        summary(&next(&mut w).await),
        ("MODIFIED".into(), "a".into(), "2".into())
    );
    let ev = next(&mut w).await;
    assert_eq!(summary(&ev), ("DELETED".into(), "a".into(), "2".into()));
    let delete_rv: i64 = ev.object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let last_rv: i64 = deleted.object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        delete_rv > last_rv,
        "a delete is reported at its own revision"
    );

    // Kill the replica serving the watch while writes go on; the watch resumes on replica 0.
    for i in 0..10 {
        writer
            .apply(
                &config_map(&format!("seq-{i:02}"), &i.to_string(), json!({})),
                "default",
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(summary(&next(&mut w).await).1);
    }
    cluster.kill(2);
    for i in 10..20 {
        writer
            .apply(
                &config_map(&format!("seq-{i:02}"), &i.to_string(), json!({})),
                "default",
            )
            .await
            .unwrap();
    }
    while seen.len() < 20 {
        let ev = next(&mut w).await;
        assert_eq!(ev.kind, "ADDED");
        seen.push(summary(&ev).1);
    }
    let expected: Vec<String> = (0..20).map(|i| format!("seq-{i:02}")).collect();
    assert_eq!(seen, expected, "no gaps, no repeats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_compaction_and_resuming_from_a_resource_version() {
    let cluster = Cluster::start(3).await;
    let client = Client::new(&cluster.client_urls()).unwrap();
    let cms = Kind::named("configmaps").unwrap();
    let first = client
        .apply(&config_map("x", "1", json!({"app": "web"})), "default")
        .await
        .unwrap();
    let rv = first.object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // From a resourceVersion: only what came after it.
    let mut labelled = client.watch(&cms, Some("default"), "app=web", "", &rv);
    client
        .apply(&config_map("x", "2", json!({"app": "db"})), "default")
        .await
        .unwrap();
    client
        .apply(&config_map("x", "3", json!({"app": "web"})), "default")
        .await
        .unwrap();
    client
        .apply(&config_map("y", "1", json!({"app": "db"})), "default")
        .await
        .unwrap();
    client
        .apply(&config_map("z", "1", json!({"app": "web"})), "default")
        .await
        .unwrap();
    let got: Vec<_> = [
        next(&mut labelled).await,
        next(&mut labelled).await,
        next(&mut labelled).await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        got,
        [
            ("DELETED".to_string(), "x".to_string(), "2".to_string()),
            ("ADDED".to_string(), "x".to_string(), "3".to_string()),
            ("ADDED".to_string(), "z".to_string(), "1".to_string()),
        ]
    );

    // After a compaction, an old resourceVersion ends the watch with 410 Expired.
    let mut etcd = cluster.client_for(&[0]).await;
    let now = etcd
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(now, None).await.unwrap();
    let mut old = client.watch(&cms, Some("default"), "", "", &rv);
    let ev = tokio::time::timeout(Duration::from_secs(10), old.next())
        .await
        .expect("in time")
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, "ERROR");
    assert_eq!(ev.object["code"], 410);
    assert_eq!(ev.object["reason"], "Expired");
    assert!(old.next().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_get_watch_prints_changes_as_they_happen() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    ok_with_input(
        &eps,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n",
    );
    let mut child = Command::new(tests::bins::bin("skiff"))
        .args([
            "--endpoints",
            &eps,
            "--config",
            "/nonexistent",
            "get",
            "configmaps",
            "-w",
            "-o",
            "name",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = |rx: &std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a line from skiff get -w")
    };
    assert_eq!(line(&rx), "configmap/first");
    ok_with_input(
        &eps,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: second\n",
    );
    assert_eq!(line(&rx), "configmap/second");
    tests::cli::ok(&eps, &["delete", "configmap", "first"]);
    assert_eq!(line(&rx), "configmap/first");
    let _ = child.kill();
    let _ = child.wait();
}
