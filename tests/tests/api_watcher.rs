//! skiff-api's typed watcher and local store against a three-replica cluster: the first event
//! is the whole list; changes follow as typed objects; when the replica serving the watch dies
//! the watcher resumes on another without a relist; when what it missed was compacted away
//! meanwhile it lists again and the store is replaced by the new list.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use skiff_api::runtime::{Config, Event, ObjectKey, Watcher, Writer};
use skiff_api::Client;
use tests::cluster::Cluster;
use tests::wait;

fn cm(name: &str, v: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default"}, "data": {"v": v}})
}

async fn next(w: &mut Watcher<ConfigMap>) -> Event<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("an event in time")
        .expect("the watcher goes on")
}

fn names(list: &[ConfigMap]) -> Vec<String> {
    let mut n: Vec<String> = list
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    n.sort();
    n
}

fn describe(ev: &Event<ConfigMap>) -> String {
    match ev {
        Event::Restarted(l) => format!("restarted {:?}", names(l)),
        Event::Applied(c) => format!(
            "applied {} {}",
            c.metadata.name.as_deref().unwrap_or_default(),
            c.data
                .as_ref()
                .and_then(|d| d.get("v"))
                .cloned()
                .unwrap_or_default()
        ),
        Event::Deleted(c) => format!("deleted {}", c.metadata.name.as_deref().unwrap_or_default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_lists_follows_resumes_and_relists_after_compaction() {
    let mut cluster = Cluster::start(3).await;
    let writer = Client::new(&[cluster.members[2].client_url()]).expect("client");
    writer.create(&cm("a", "1"), "default").await.expect("a");
    writer.create(&cm("b", "1"), "default").await.expect("b");

    // Replica 0 serves the watch first; the watcher knows replica 1 too (and only it, so which
    // replica serves it is known at every step).
    let watching = Client::new(&[
        cluster.members[0].client_url(),
        cluster.members[1].client_url(),
    ])
    .expect("client");
    let mut w =
        Watcher::<ConfigMap>::new(watching, Config::default().namespace("default")).expect("kind");
    let mut writer_store = Writer::<ConfigMap>::default();
    let store = writer_store.store();

    let first = next(&mut w).await;
    assert_eq!(describe(&first), "restarted [\"a\", \"b\"]");
    writer_store.apply(&first);
    store.wait_until_ready().await;

    writer.apply(&cm("a", "2"), "default").await.expect("a2");
    writer
        .delete(&skiff_api::Kind::named("cm").expect("cm"), "default", "b")
        .await
        .expect("b deleted");
    for want in ["applied a 2", "deleted b"] {
        let ev = next(&mut w).await;
        assert_eq!(describe(&ev), want);
        writer_store.apply(&ev);
    }
    assert_eq!(store.len(), 1);
    let a = store.get(&ObjectKey::new("default", "a")).expect("a kept");
    assert_eq!(
        a.data.as_ref().and_then(|d| d.get("v")).map(String::as_str),
        Some("2")
    );

    // The serving replica dies; writes meanwhile arrive through another, with no relist.
    cluster.kill(0);
    writer.create(&cm("c", "1"), "default").await.expect("c");
    let ev = next(&mut w).await;
    assert_eq!(describe(&ev), "applied c 1");
    writer_store.apply(&ev);

    // Now the watcher is not read while the replica serving it (1) dies and the history it
    // would resume from is compacted: it resumes on replica 0, lists again, and the store holds
    // exactly the new list.
    cluster.restart(0);
    wait::until(
        "replica 0 to serve again",
        Duration::from_secs(30),
        || async {
            let c = Client::new(&[cluster.members[0].client_url()]).ok()?;
            c.get(&skiff_api::Kind::named("cm")?, "default", "c")
                .await
                .ok()
        },
    )
    .await;
    cluster.kill(1);
    // Two writes, so that the compaction below removes one the watcher has not seen.
    writer.create(&cm("d", "1"), "default").await.expect("d");
    writer.create(&cm("e", "1"), "default").await.expect("e");
    // Through replica 0, which answers once it has applied the compaction itself.
    let mut etcd = cluster.client_for(&[0]).await;
    let now = etcd
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    tests::cluster::compact(&etcd, now).await;
    let mut restarted = None;
    for _ in 0..10 {
        let ev = next(&mut w).await;
        let relisted = matches!(ev, Event::Restarted(_));
        writer_store.apply(&ev);
        if relisted {
            restarted = Some(ev);
            break;
        }
    }
    let restarted = restarted.expect("a relist after the compaction");
    let Event::Restarted(list) = &restarted else {
        unreachable!()
    };
    assert_eq!(names(list), ["a", "c", "d", "e"]);
    assert_eq!(store.len(), 4);
    assert!(store.get(&ObjectKey::new("default", "d")).is_some());
}
