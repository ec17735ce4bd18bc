//! Faults with processes killed by SIGKILL: the leader under a concurrent write load, and many
//! cycles of killing and restarting random replicas while clients keep working. After each,
//! every acknowledged write is present on every replica, the replicas agree on the whole key
//! space, and the recorded client history of every register is linearizable.

use std::time::Duration;

use rand::Rng;
use tests::cluster::Cluster;
use tests::wait;
use tests::workload::Workload;

/// Waits until member `i` has logged installing a snapshot sent by the leader. (Its state
/// becomes readable just before the line is written, so a reader may see the data first.)
async fn wait_for_snapshot_install(cluster: &Cluster, i: usize) {
    wait::until(
        "the member to log that it installed the leader's snapshot",
        Duration::from_secs(10),
        || {
            let installed = cluster
                .log(i)
                .contains("installed snapshot from the leader");
            async move { installed.then_some(()) }
        },
    )
    .await;
}

/// Eight workers, each with all three endpoints (the client fails over between them).
fn load_on(cluster: &Cluster) -> Workload {
    Workload::start((0..8).map(|_| cluster.client_urls()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_concurrent_write_load() {
    let mut cluster = Cluster::start(3).await;
    let load = load_on(&cluster);
    wait::until("load before the kill", Duration::from_secs(60), || {
        let n = load.acknowledged();
        async move { (n >= 50).then_some(()) }
    })
    .await;
    let leader = cluster.leader_index().await;
    cluster.kill(leader);
    let before = load.acknowledged();
    wait::until(
        "writes acknowledged after the leader died",
        Duration::from_secs(60),
        || {
            let n = load.acknowledged();
            async move { (n >= before + 50).then_some(()) }
        },
    )
    .await;
    cluster.restart(leader);
    cluster.wait_for_leader().await;
    let outcome = load.stop().await;
    outcome.assert_present_everywhere(&cluster).await;
    outcome.assert_linearizable();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_cycles_of_killing_and_restarting_random_replicas() {
    // A small snapshot interval makes the cycles cross snapshots and log truncation too.
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "50"]).await;
    let load = load_on(&cluster);
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        let victim = rng.gen_range(0..3);
        cluster.kill(victim);
        let before = load.acknowledged();
        wait::until(
            "writes with one replica down",
            Duration::from_secs(30),
            || {
                let n = load.acknowledged();
                async move { (n >= before + 5).then_some(()) }
            },
        )
        .await;
        cluster.restart(victim);
        cluster.wait_for_leader().await;
    }
    let outcome = load.stop().await;
    assert!(outcome.acked.len() >= 100);
    outcome.assert_present_everywhere(&cluster).await;
    outcome.assert_linearizable();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_catches_up_by_install_snapshot_after_the_log_was_purged() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "20"]).await;
    let mut c = cluster.client_for(&[0, 1]).await;
    let list = c.member_list().await.unwrap();
    let old = list
        .members()
        .iter()
        .find(|m| m.peer_urls().contains(&cluster.members[2].peer_url()))
        .unwrap()
        .id();
    c.member_remove(old).await.unwrap();
    cluster.replace_with_new_member(2);
    // Clients write through the two remaining members the whole time, also while the new one
    // joins; many snapshots pass in between, so the log the new member would need is purged.
    let load = Workload::start(
        (0..4)
            .map(|_| {
                vec![
                    cluster.members[0].client_url(),
                    cluster.members[1].client_url(),
                ]
            })
            .collect(),
    );
    for i in 0..300 {
        c.put(format!("/snap/{i:03}"), i.to_string(), None)
            .await
            .unwrap();
    }
    let added = c
        .member_add(
            [cluster.members[2].peer_url()],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let new_id = added.member().unwrap().id();
    cluster.start_joining(2);
    let joined = cluster.client_for(&[2]).await;
    wait::until(
        "the new member to catch up",
        Duration::from_secs(30),
        || {
            let mut c = joined.clone();
            async move {
                let r = c
                    .get(
                        "/snap/299",
                        Some(etcd_client::GetOptions::new().with_serializable()),
                    )
                    .await
                    .ok()?;
                (!r.kvs().is_empty()).then_some(())
            }
        },
    )
    .await;
    // The log was purged before the member joined, so catching up needed a snapshot.
    wait_for_snapshot_install(&cluster, 2).await;
    wait::until("promotion", Duration::from_secs(20), || {
        let mut c = c.clone();
        async move { c.member_promote(new_id).await.ok() }
    })
    .await;
    let mut joined = joined;
    let all = joined
        .get(
            "/snap/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(all.count(), 300);
    let outcome = load.stop().await;
    outcome.assert_present_everywhere(&cluster).await;
    outcome.assert_linearizable();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_through_many_snapshots_catches_up_by_install_snapshot() {
    // Snapshots every 20 entries: the log keeps 10 entries behind the latest snapshot and is
    // purged in batches of 256, so a replica that misses 400 entries cannot be served from it.
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "20"]).await;
    let leader = cluster.leader_index().await;
    let victim = (leader + 1) % 3;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    cluster.kill(victim);
    // Clients write through the two survivors the whole time, also while the victim returns.
    let load = Workload::start(
        (0..4)
            .map(|_| {
                survivors
                    .iter()
                    .map(|&i| cluster.members[i].client_url())
                    .collect()
            })
            .collect(),
    );
    wait::until(
        "many snapshots while the replica is down",
        Duration::from_secs(60),
        || {
            let n = load.acknowledged();
            async move { (n >= 400).then_some(()) }
        },
    )
    .await;
    cluster.restart(victim);
    let before = load.acknowledged();
    wait::until(
        "writes after the replica returned",
        Duration::from_secs(30),
        || {
            let n = load.acknowledged();
            async move { (n >= before + 100).then_some(()) }
        },
    )
    .await;
    let outcome = load.stop().await;
    outcome.assert_present_everywhere(&cluster).await;
    // The replica was behind the purged log, so it must have caught up by a snapshot.
    wait_for_snapshot_install(&cluster, victim).await;
    outcome.assert_linearizable();
}
