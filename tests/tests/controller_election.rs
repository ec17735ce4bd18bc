//! The replica that runs the controllers is elected through the store: one holder at a time,
//! kept with a store lease (no writes while nothing changes), a new one soon after the holder
//! dies, and a deposed holder's writes are fenced (here: the garbage collector, which stops
//! collecting while an impostor holds the election and resumes once a real replica holds it
//! again).

use std::time::{Duration, Instant};

use serde_json::json;
use skiff_api::{Client, Kind, Reason};
use tests::cluster::Cluster;
use tests::wait;

const TERM_KEY: &str = "/skiff/controllers/term";

async fn holder(client: &mut etcd_client::Client) -> Option<String> {
    let r = client.get(TERM_KEY, None).await.ok()?;
    r.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_string())
}

/// Waits for some replica to hold the controllers; its name.
async fn first_holder(etcd: &etcd_client::Client) -> String {
    wait::until("a controller leader", Duration::from_secs(20), || {
        let mut etcd = etcd.clone();
        async move { holder(&mut etcd).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_replaced_and_one_replica_holds_at_a_time() {
    let mut cluster = Cluster::start(3).await;
    let mut etcd = cluster.client_for(&[0, 1, 2]).await;
    let first = first_holder(&etcd).await;
    let index = cluster
        .members
        .iter()
        .position(|m| m.name == first)
        .expect("the holder is a member");
    // Exactly one holder: the term key changes hands only on takeover, so it stays put while
    // the holder lives, held by a lease the holder keeps alive past its TTL.
    let term = etcd.get(TERM_KEY, None).await.unwrap().kvs()[0].clone();
    assert_ne!(term.lease(), 0, "the term key is held by a lease");
    let granted = etcd
        .lease_time_to_live(term.lease(), None)
        .await
        .unwrap()
        .granted_ttl();
    let alive_until = Instant::now() + Duration::from_secs(granted as u64 * 3);
    wait::until(
        "three lease TTLs to pass",
        Duration::from_secs(30),
        || async { (Instant::now() >= alive_until).then_some(()) },
    )
    .await;
    let ttl = etcd.lease_time_to_live(term.lease(), None).await.unwrap();
    assert!(ttl.ttl() >= 0, "the holder's lease expired: {ttl:?}");
    assert_eq!(
        etcd.get(TERM_KEY, None).await.unwrap().kvs()[0].mod_revision(),
        term.mod_revision()
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
    first_holder(&etcd).await;
    // An impostor takes the election over with a lease of its own and keeps it alive.
    let lease = etcd.lease_grant(2, None).await.unwrap().id();
    etcd.put(
        TERM_KEY,
        "impostor",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let renewing = {
        let mut etcd = etcd.clone();
        tokio::spawn(async move {
            let Ok((mut keeper, mut answers)) = etcd.lease_keep_alive(lease).await else {
                return;
            };
            loop {
                if keeper.keep_alive().await.is_err() || answers.message().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
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

    // The impostor goes silent: its lease expires, a real replica takes over and collects.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_writes_nothing() {
    let cluster = Cluster::start(3).await;
    let mut etcd = cluster.client_for(&[0, 1, 2]).await;
    first_holder(&etcd).await;
    let revision = |etcd: &mut etcd_client::Client| {
        let mut etcd = etcd.clone();
        async move {
            etcd.get("any", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision()
        }
    };
    // The store's revision over an observation window of three seconds: nothing writes while
    // nothing changes (the controller election is kept by lease keep-alives, which write
    // nothing). The same window with one write in it counts exactly that write.
    let window = Duration::from_secs(3);
    let before = revision(&mut etcd).await;
    tokio::time::sleep(window).await;
    let idle = revision(&mut etcd).await - before;
    etcd.put("/test/one-write", "x", None).await.unwrap();
    let before = revision(&mut etcd).await;
    etcd.put("/test/one-write", "y", None).await.unwrap();
    tokio::time::sleep(window).await;
    let one = revision(&mut etcd).await - before;
    assert_eq!(
        (idle, one),
        (0, 1),
        "revisions written in {window:?}: idle, with one put"
    );
}

/// Which replicas say they run the controllers right now (by their own reckoning).
async fn claimants(clients: &[Client]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        if let Ok(st) = tokio::time::timeout(Duration::from_millis(500), c.cluster_status()).await {
            if st.is_ok_and(|s| s.leads_controllers) {
                out.push(i);
            }
        }
    }
    out
}

#[test]
fn a_partitioned_holder_steps_down_before_another_takes_over() {
    if !tests::netns::available() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let net = std::sync::Arc::new(tests::netns::TestNet::create(3));
    let net_for_body = net.clone();
    net.run_as_client(move || async move {
        let net = net_for_body;
        let cluster = Cluster::start_on(&net, &[]).await;
        let clients: Vec<Client> = (0..3)
            .map(|i| {
                Client::new(&[cluster.members[i].client_url()])
                    .unwrap()
                    .with_deadline(Duration::ZERO)
            })
            .collect();
        let holder = wait::until("one controller leader", Duration::from_secs(20), || {
            let clients = &clients;
            async move {
                let c = claimants(clients).await;
                (c.len() == 1).then(|| c[0])
            }
        })
        .await;
        // Cut the holder off from the other replicas (clients still reach all three) and watch
        // every replica's own claim until another one leads: never two at once.
        net.isolate(holder);
        let started = Instant::now();
        let new_holder = loop {
            let now = claimants(&clients).await;
            assert!(
                now.len() <= 1,
                "two replicas ran the controllers at once: {now:?}"
            );
            if let [one] = now.as_slice() {
                if *one != holder {
                    break *one;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nobody took over"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_ne!(new_holder, holder);
        net.heal(holder);
        // After healing there is still exactly one, and it is not the cut-off replica.
        let new_name = cluster.members[new_holder].name.clone();
        wait::until(
            "the healed replica to see the new holder",
            Duration::from_secs(20),
            || {
                let clients = &clients;
                let new_name = new_name.clone();
                async move {
                    let st = clients[holder].cluster_status().await.ok()?;
                    (st.controller_leader == new_name).then_some(())
                }
            },
        )
        .await;
        assert_eq!(claimants(&clients).await, [new_holder]);
    });
}
