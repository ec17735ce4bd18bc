//! The replica that runs the controllers is elected through the store: one holder at a time, a
//! new one soon after the holder dies, and a deposed holder's writes are fenced (here: the
//! garbage collector, which stops collecting while an impostor holds the election and resumes
//! once a real replica holds it again).

use std::time::{Duration, Instant};

use serde_json::json;
use skiff_api::{Client, Kind, Reason};
use tests::cluster::Cluster;
use tests::wait;

const TERM_KEY: &str = "/skiff/controllers/term";
const RENEW_KEY: &str = "/skiff/controllers/renew";

async fn holder(client: &mut etcd_client::Client) -> Option<String> {
    let r = client.get(TERM_KEY, None).await.ok()?;
    r.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_replaced_and_one_replica_holds_at_a_time() {
    let mut cluster = Cluster::start(3).await;
    let mut etcd = cluster.client_for(&[0, 1, 2]).await;
    let first = wait::until("a controller leader", Duration::from_secs(20), || {
        let mut etcd = etcd.clone();
        async move { holder(&mut etcd).await }
    })
    .await;
    let index = cluster
        .members
        .iter()
        .position(|m| m.name == first)
        .expect("the holder is a member");
    // Exactly one holder: the term key changes hands only on takeover, so it stays put while
    // the holder lives.
    let revision = etcd.get(TERM_KEY, None).await.unwrap().kvs()[0].mod_revision();
    let renewed = etcd.get(RENEW_KEY, None).await.unwrap().kvs()[0].mod_revision();
    wait::until("the holder to renew", Duration::from_secs(10), || {
        let mut etcd = etcd.clone();
        async move {
            let r = etcd.get(RENEW_KEY, None).await.ok()?;
            (r.kvs()[0].mod_revision() > renewed).then_some(())
        }
    })
    .await;
    assert_eq!(
        etcd.get(TERM_KEY, None).await.unwrap().kvs()[0].mod_revision(),
        revision
    );

    let killed_at = Instant::now();
    cluster.kill(index);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != index).collect();
    let etcd = cluster.client_for(&survivors).await;
    let next = wait::until("another controller leader", Duration::from_secs(20), || {
        let mut etcd = etcd.clone();
        let first = first.clone();
        async move { holder(&mut etcd).await.filter(|h| *h != first) }
    })
    .await;
    let took = killed_at.elapsed();
    eprintln!("controller leadership moved from {first} to {next} in {took:?}");
    assert_ne!(next, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_holder_cannot_write() {
    let cluster = Cluster::start(3).await;
    let mut etcd = cluster.client_for(&[0, 1, 2]).await;
    wait::until("a controller leader", Duration::from_secs(20), || {
        let mut etcd = etcd.clone();
        async move { holder(&mut etcd).await }
    })
    .await;
    // An impostor takes the election over and keeps renewing it.
    etcd.put(TERM_KEY, "impostor", None).await.unwrap();
    let renewing = {
        let mut etcd = etcd.clone();
        tokio::spawn(async move {
            loop {
                let _ = etcd.put(RENEW_KEY, "impostor", None).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // The garbage collector of the deposed holder must not act: a dependent of a deleted owner
    // stays.
    let client = Client::new(&cluster.client_urls()).unwrap();
    let cms = Kind::named("configmaps").unwrap();
    let owner = client
        .create(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}),
            "default",
        )
        .await
        .unwrap()
        .object;
    let dependent = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner["metadata"]["uid"]
        }]}
    });
    client.create(&dependent, "default").await.unwrap();
    client.delete(&cms, "default", "owner").await.unwrap();
    // An observation window, not synchronisation: the collector reacts within 200 ms of a change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        client.get(&cms, "default", "dependent").await.is_ok(),
        "a replica that lost the election still collected garbage"
    );
    assert_eq!(holder(&mut etcd).await.as_deref(), Some("impostor"));

    // The impostor goes silent: a real replica takes over and collects.
    renewing.abort();
    let _ = renewing.await;
    wait::until(
        "a real replica to lead again",
        Duration::from_secs(20),
        || {
            let mut etcd = etcd.clone();
            async move { holder(&mut etcd).await.filter(|h| h != "impostor") }
        },
    )
    .await;
    wait::until(
        "the dependent to be collected",
        Duration::from_secs(20),
        || {
            let client = &client;
            let cms = &cms;
            async move {
                match client.get(cms, "default", "dependent").await {
                    Err(e) if e.reason == Reason::NotFound => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
}
