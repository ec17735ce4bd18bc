//! etcd's Election API (v3election) on a 3-replica Skiff cluster through the etcd-client crate:
//! candidates on different replicas, a campaign that blocks until the leader resigns, Leader,
//! Proclaim and Observe, leadership passing on when the leader's lease is revoked, a cancelled
//! campaign withdrawing its candidacy, and etcd's errors.

use std::time::Duration;

use etcd_client::{Client, LeaderKey, ObserveStream, ProclaimOptions, ResignOptions};
use tests::cluster::Cluster;
use tests::wait;

const ELECTION: &str = "skiff-election";
/// How long a blocked campaign is watched to make sure it does not return.
const STILL_PENDING: Duration = Duration::from_millis(500);
/// Deadline for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);

/// The gRPC status inside a client error.
fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// etcd's election server answers its errors with code Unknown and the error's message.
fn assert_etcd_error(e: etcd_client::Error, message: &str) {
    let s = status(e);
    assert_eq!(s.code(), tonic::Code::Unknown, "{s:?}");
    assert_eq!(s.message(), message);
}

async fn grant(client: &Client, ttl: i64) -> i64 {
    client
        .lease_client()
        .grant(ttl, None)
        .await
        .expect("lease grant")
        .id()
}

/// Campaigns to the end, within the prompt deadline.
async fn campaign_now(client: &Client, value: &str, lease: i64) -> LeaderKey {
    let resp = tokio::time::timeout(
        PROMPT,
        client.election_client().campaign(ELECTION, value, lease),
    )
    .await
    .expect("campaign should win at once")
    .expect("campaign");
    resp.leader().expect("leader key").clone()
}

/// Starts a campaign in the background; it must still be waiting after a while.
async fn campaign_blocked(
    client: &Client,
    value: &'static str,
    lease: i64,
) -> tokio::task::JoinHandle<Result<etcd_client::CampaignResponse, etcd_client::Error>> {
    let mut election = client.election_client();
    let mut pending = tokio::spawn(async move { election.campaign(ELECTION, value, lease).await });
    assert!(
        tokio::time::timeout(STILL_PENDING, &mut pending)
            .await
            .is_err(),
        "campaign for {value:?} returned while another candidate leads"
    );
    pending
}

/// Awaits a campaign that should now win.
async fn campaign_won(
    pending: tokio::task::JoinHandle<Result<etcd_client::CampaignResponse, etcd_client::Error>>,
) -> LeaderKey {
    let resp = tokio::time::timeout(PROMPT, pending)
        .await
        .expect("campaign should win once the leader is gone")
        .expect("campaign task")
        .expect("campaign");
    resp.leader().expect("leader key").clone()
}

/// The current leader's key and value, read through `client`.
async fn leader(client: &Client) -> (String, String) {
    let resp = client
        .election_client()
        .leader(ELECTION)
        .await
        .expect("leader");
    let kv = resp.kv().expect("leader kv");
    (
        kv.key_str().expect("utf-8 key").to_string(),
        kv.value_str().expect("utf-8 value").to_string(),
    )
}

/// The next observed leader proclamation as (key, value).
async fn observed(stream: &mut ObserveStream) -> (String, String) {
    let resp = tokio::time::timeout(PROMPT, stream.message())
        .await
        .expect("an observed proclamation in time")
        .expect("observe stream")
        .expect("observe stream ended");
    let kv = resp.kv().expect("observed kv");
    (
        kv.key_str().expect("utf-8 key").to_string(),
        kv.value_str().expect("utf-8 value").to_string(),
    )
}

async fn proclaim(
    client: &Client,
    leader: &LeaderKey,
    value: &str,
) -> Result<(), etcd_client::Error> {
    client
        .election_client()
        .proclaim(
            value,
            Some(ProclaimOptions::new().with_leader(leader.clone())),
        )
        .await
        .map(|_| ())
}

async fn resign(client: &Client, leader: &LeaderKey) {
    client
        .election_client()
        .resign(Some(ResignOptions::new().with_leader(leader.clone())))
        .await
        .expect("resign");
}

fn candidate_key(lease: i64) -> String {
    format!("{ELECTION}/{lease:x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_through_different_replicas() {
    let cluster = Cluster::start(3).await;
    let c0 = cluster.client_for(&[0]).await;
    let c1 = cluster.client_for(&[1]).await;
    let c2 = cluster.client_for(&[2]).await;

    // An empty election has no leader.
    let err = c2.election_client().leader(ELECTION).await.unwrap_err();
    assert_etcd_error(err, "election: no leader");

    // A campaign on a lease that does not exist fails with etcd's lease error.
    let err = c0
        .election_client()
        .campaign(ELECTION, "nobody", 0x5eed)
        .await
        .unwrap_err();
    assert_etcd_error(err, "etcdserver: requested lease not found");

    // Observe from replica 2 before anyone campaigns.
    let mut observe = c2
        .election_client()
        .observe(ELECTION)
        .await
        .expect("observe");

    // The first candidate (through replica 0) wins at once.
    let lease1 = grant(&c0, 30).await;
    let k1 = campaign_now(&c0, "v1", lease1).await;
    assert_eq!(k1.name_str().unwrap(), ELECTION);
    assert_eq!(k1.key_str().unwrap(), candidate_key(lease1));
    assert_eq!(k1.lease(), lease1);
    assert!(k1.rev() > 0);
    assert_eq!(
        observed(&mut observe).await,
        (candidate_key(lease1), "v1".into())
    );

    // The second candidate (through replica 1) waits while the first leads.
    let lease2 = grant(&c1, 30).await;
    let pending2 = campaign_blocked(&c1, "v2", lease2).await;
    for c in [&c0, &c1, &c2] {
        assert_eq!(leader(c).await, (candidate_key(lease1), "v1".into()));
    }

    // The leader proclaims a new value: Leader and Observe see it.
    proclaim(&c2, &k1, "v1-bis")
        .await
        .expect("proclaim by the leader");
    assert_eq!(leader(&c1).await, (candidate_key(lease1), "v1-bis".into()));
    assert_eq!(
        observed(&mut observe).await,
        (candidate_key(lease1), "v1-bis".into())
    );

    // A leader key whose revision does not match is not the leader.
    let forged = k1.clone().with_rev(k1.rev() + 1000);
    assert_etcd_error(
        proclaim(&c0, &forged, "usurped").await.unwrap_err(),
        "election: not leader",
    );

    // The first resigns: the second's campaign returns, and everyone sees the new leader.
    resign(&c0, &k1).await;
    let k2 = campaign_won(pending2).await;
    assert_eq!(k2.key_str().unwrap(), candidate_key(lease2));
    assert!(k2.rev() > k1.rev());
    assert_eq!(leader(&c0).await, (candidate_key(lease2), "v2".into()));
    assert_eq!(
        observed(&mut observe).await,
        (candidate_key(lease2), "v2".into())
    );

    // The former leader can no longer proclaim; resigning again is not an error.
    assert_etcd_error(
        proclaim(&c1, &k1, "stale").await.unwrap_err(),
        "election: not leader",
    );
    resign(&c2, &k1).await;
    assert_eq!(leader(&c2).await, (candidate_key(lease2), "v2".into()));

    // Revoking the leader's lease hands leadership to the next candidate.
    let lease3 = grant(&c2, 30).await;
    let pending3 = campaign_blocked(&c2, "v3", lease3).await;
    c0.lease_client().revoke(lease2).await.expect("revoke");
    let k3 = campaign_won(pending3).await;
    assert_eq!(k3.key_str().unwrap(), candidate_key(lease3));
    assert_eq!(leader(&c1).await, (candidate_key(lease3), "v3".into()));
    assert_eq!(
        observed(&mut observe).await,
        (candidate_key(lease3), "v3".into())
    );
    assert_etcd_error(
        proclaim(&c0, &k2, "gone").await.unwrap_err(),
        "election: not leader",
    );

    // Campaigning again with the same lease keeps the candidacy and takes the new value.
    let again = campaign_now(&c0, "v3-again", lease3).await;
    assert_eq!(
        (again.key_str().unwrap(), again.rev()),
        (k3.key_str().unwrap(), k3.rev())
    );
    assert_eq!(
        leader(&c2).await,
        (candidate_key(lease3), "v3-again".into())
    );
    assert_eq!(
        observed(&mut observe).await,
        (candidate_key(lease3), "v3-again".into())
    );

    // A campaign the client gives up withdraws its candidacy, as etcd's server does.
    let lease4 = grant(&c1, 30).await;
    let cancelled = campaign_blocked(&c1, "v4", lease4).await;
    let key4 = candidate_key(lease4);
    let mut kv = c0.kv_client();
    assert_eq!(
        kv.get(key4.as_str(), None).await.expect("get").kvs().len(),
        1
    );
    cancelled.abort();
    wait::until("the cancelled candidate's key to go", PROMPT, || {
        let mut kv = kv.clone();
        let key4 = key4.clone();
        async move {
            let resp = kv.get(key4.as_str(), None).await.ok()?;
            resp.kvs().is_empty().then_some(())
        }
    })
    .await;

    // Once the last candidate resigns the election is empty again.
    resign(&c1, &k3).await;
    let err = c0.election_client().leader(ELECTION).await.unwrap_err();
    assert_etcd_error(err, "election: no leader");
}
