//! A minority partition, made with iptables DROP between test hosts (network namespaces this test
//! creates), cutting the Raft leader off from the other two replicas while clients keep using
//! all three. The majority elects a new leader and keeps serving; the isolated replica
//! acknowledges nothing; after healing, every acknowledged write is on every replica and the
//! recorded history of every register is linearizable.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tests::cluster::Cluster;
use tests::netns::{self, TestNet};
use tests::wait;
use tests::workload::Workload;

/// The leader ID as seen by member `i`, if it answers.
async fn leader_seen_by(cluster: &Cluster, i: usize) -> Option<u64> {
    let mut c = Client::connect([cluster.members[i].client_url()], None)
        .await
        .ok()?;
    let st = tokio::time::timeout(Duration::from_secs(1), c.status())
        .await
        .ok()?
        .ok()?;
    (st.leader() != 0).then_some(st.leader())
}

#[test]
fn minority_partition_of_the_leader() {
    if !netns::available() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let net = Arc::new(TestNet::create(3));
    let net_for_body = net.clone();
    net.run_as_client(move || async move {
        let net = net_for_body;
        let cluster = Cluster::start_on(&net, &[]).await;
        // Two workers per replica, each bound to its replica alone.
        let load = Workload::start(
            (0..6)
                .map(|i| vec![cluster.members[i % 3].client_url()])
                .collect(),
        );
        wait::until(
            "some load before the partition",
            Duration::from_secs(30),
            || {
                let n = load.operations();
                async move { (n >= 100).then_some(()) }
            },
        )
        .await;

        let old_leader = cluster.leader_index().await;
        let old_leader_id = leader_seen_by(&cluster, old_leader)
            .await
            .expect("leader answers");
        net.isolate(old_leader);
        let majority: Vec<usize> = (0..3).filter(|&i| i != old_leader).collect();
        wait::until(
            "the majority to elect a new leader",
            Duration::from_secs(20),
            || {
                let majority = majority.clone();
                let cluster = &cluster;
                async move {
                    let a = leader_seen_by(cluster, majority[0]).await?;
                    let b = leader_seen_by(cluster, majority[1]).await?;
                    (a == b && a != old_leader_id).then_some(())
                }
            },
        )
        .await;

        // The majority keeps taking writes; the isolated replica acknowledges none.
        let before = load.acknowledged();
        wait::until(
            "writes acknowledged by the majority",
            Duration::from_secs(20),
            || {
                let n = load.acknowledged();
                async move { (n >= before + 30).then_some(()) }
            },
        )
        .await;
        let mut isolated = Client::connect(
            [cluster.members[old_leader].client_url()],
            Some(ConnectOptions::new().with_timeout(Duration::from_secs(3))),
        )
        .await
        .unwrap();
        assert!(
            isolated.put("/through-minority", "x", None).await.is_err(),
            "the isolated replica acknowledged a write"
        );
        assert!(
            isolated.get("/reg/x", None).await.is_err(),
            "the isolated replica served a linearizable read"
        );

        net.heal(old_leader);
        cluster.wait_for_leader().await;
        wait::until("more load after healing", Duration::from_secs(30), || {
            let n = load.acknowledged();
            async move { (n >= before + 60).then_some(()) }
        })
        .await;
        let outcome = load.stop().await;
        outcome.assert_present_everywhere(&cluster).await;
        let mut c = cluster.client_for(&[0, 1, 2]).await;
        assert_eq!(c.get("/through-minority", None).await.unwrap().count(), 0);
        outcome.assert_linearizable();
    });
}
