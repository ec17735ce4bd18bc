//! The store keeps its history bounded by itself: the leader compacts automatically
//! (`--auto-compaction-*`), compacted records leave the database, and Events expire through
//! store leases after `--event-ttl`.

use std::time::Duration;

use serde_json::json;
use skiff_api::{Client, Kind, Reason};
use tests::cluster::Cluster;
use tests::etcdctl::{ok, run};
use tests::wait;

fn event(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Testing", "message": "an event", "type": "Normal"
    })
}

/// The lease a key was written with, from `etcdctl get -w json` (0: none).
fn lease_of(endpoints: &str, key: &str) -> i64 {
    let json = ok(endpoints, &["get", key, "-w", "json"]);
    json.split("\"lease\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_on_its_own_and_old_revisions_go() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "2s",
        ],
    )
    .await;
    let eps = cluster.endpoints();
    ok(&eps, &["put", "/history/k", "v0"]);
    let first = ok(&eps, &["get", "/history/k", "-w", "json"]);
    let first_rev: i64 = first
        .split("\"mod_revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("mod_revision");
    for i in 1..=20 {
        ok(&eps, &["put", "/history/k", &format!("v{i}")]);
    }
    assert!(
        run(&eps, &["get", "/history/k", &format!("--rev={first_rev}")])
            .status
            .success()
    );
    // Within a few retention periods the leader compacts past the first write: reading it
    // fails as etcd fails, on every replica, and every replica reports the compaction.
    wait::until(
        "the first revision to be compacted",
        Duration::from_secs(30),
        || {
            let eps = eps.clone();
            async move {
                let out = run(&eps, &["get", "/history/k", &format!("--rev={first_rev}")]);
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                (!out.status.success() && err.contains("required revision has been compacted"))
                    .then_some(())
            }
        },
    )
    .await;
    for m in &cluster.members {
        let c = Client::new(&[m.client_url()]).unwrap();
        let st = wait::until(
            "the replica to apply the compaction",
            Duration::from_secs(10),
            || {
                let c = &c;
                async move {
                    let st = c.cluster_status().await.ok()?;
                    (st.compact_revision > first_rev).then_some(st)
                }
            },
        )
        .await;
        assert!(st.db_bytes_in_use <= st.db_bytes, "{st:?}");
        assert!(st.db_bytes > 0, "{st:?}");
    }
    // The newest value is still there.
    assert_eq!(
        ok(&eps, &["get", "/history/k", "--print-value-only"]).trim(),
        "v20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_event_ttl_and_other_objects_do_not() {
    let cluster = Cluster::start_with(1, &["--event-ttl", "3s"]).await;
    let eps = cluster.endpoints();
    let client = Client::new(&cluster.client_urls()).unwrap();
    client.create(&event("web.1"), "default").await.unwrap();
    client.create(&event("web.2"), "default").await.unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stays"}});
    client.create(&cm, "default").await.unwrap();

    // Events written close together share one lease; other kinds have none.
    let l1 = lease_of(&eps, "/registry/events/default/web.1");
    let l2 = lease_of(&eps, "/registry/events/default/web.2");
    assert_ne!(l1, 0, "the event is written with a lease");
    assert_eq!(l1, l2, "events written together share a lease");
    assert_eq!(lease_of(&eps, "/registry/configmaps/default/stays"), 0);

    let events = Kind::named("events").unwrap();
    wait::until("the events to expire", Duration::from_secs(30), || {
        let client = &client;
        let events = &events;
        async move {
            let gone = |r: Result<serde_json::Value, skiff_api::ApiError>| {
                matches!(r, Err(e) if e.reason == Reason::NotFound)
            };
            (gone(client.get(events, "default", "web.1").await)
                && gone(client.get(events, "default", "web.2").await))
            .then_some(())
        }
    })
    .await;
    let cms = Kind::named("configmaps").unwrap();
    assert!(client.get(&cms, "default", "stays").await.is_ok());
    // A later Event gets a new lease and is readable until it expires in turn.
    client.create(&event("web.3"), "default").await.unwrap();
    let l3 = lease_of(&eps, "/registry/events/default/web.3");
    assert!(
        l3 != 0 && l3 != l1,
        "a new lease after the first expired: {l3} vs {l1}"
    );
}
