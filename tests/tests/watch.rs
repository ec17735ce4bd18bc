//! Watch streams through an etcd client: several watches on one stream with their own ranges,
//! start revisions, prev_kv and filters; cancel; progress requests; and a watch resumed on
//! another replica after the one serving it died, without gaps or repeats.

use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use tests::cluster::{Cluster, STORE_ONLY};
use tests::wait;

async fn next(ws: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), ws.message())
        .await
        .expect("a watch response in time")
        .expect("watch stream")
        .expect("stream still open")
}

/// Events of watch `id` as (type, key, value, prev value) until `n` have arrived; other watches'
/// responses are returned separately.
async fn events_of(
    ws: &mut WatchStream,
    id: i64,
    n: usize,
) -> Vec<(EventType, String, String, Option<String>)> {
    let mut got = Vec::new();
    while got.len() < n {
        let resp = next(ws).await;
        assert_eq!(resp.watch_id(), id, "unexpected response {resp:?}");
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            got.push((
                ev.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                ev.prev_kv().map(|p| p.value_str().unwrap().to_string()),
            ));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_many_watches_cancel_and_progress() {
    let cluster = Cluster::start_with(3, STORE_ONLY).await;
    let mut c = cluster.client_for(&[2]).await;
    let first = c
        .put("/w/a", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("/w/b", "1", None).await.unwrap();
    c.delete("/w/b", None).await.unwrap();

    // Watch 0: only /w/a, from now on.
    let mut ws = c.watch("/w/a", None).await.unwrap();
    let created = next(&mut ws).await;
    assert!(created.created());
    assert_eq!(created.watch_id(), 0);
    // Watch 1 on the same stream: the prefix, from the first write, with prev_kv, no deletes.
    ws.watch(
        "/w/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(first)
                .with_prev_key()
                .with_filters([WatchFilterType::NoDelete]),
        ),
    )
    .await
    .unwrap();
    let created = next(&mut ws).await;
    assert!(created.created());
    assert_eq!(created.watch_id(), 1);
    let replay = events_of(&mut ws, 1, 2).await;
    assert_eq!(
        replay,
        [
            (EventType::Put, "/w/a".into(), "1".into(), None),
            (EventType::Put, "/w/b".into(), "1".into(), None),
        ]
    );

    // A progress request is answered for the whole stream at the current revision.
    let now = c
        .put("/other", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    ws.request_progress().await.unwrap();
    let progress = next(&mut ws).await;
    assert_eq!(progress.watch_id(), -1);
    assert!(progress.events().is_empty());
    assert_eq!(progress.header().unwrap().revision(), now);

    // A change to /w/a reaches both watches, with prev_kv only where asked.
    c.put("/w/a", "2", None).await.unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let resp = next(&mut ws).await;
        let ev = &resp.events()[0];
        seen.insert(
            resp.watch_id(),
            ev.prev_kv().map(|p| p.value_str().unwrap().to_string()),
        );
    }
    assert_eq!(seen[&0], None);
    assert_eq!(seen[&1].as_deref(), Some("1"));

    // Cancel watch 0; deletes are filtered from watch 1; watch 1 still sees puts.
    ws.cancel(0).await.unwrap();
    let cancelled = next(&mut ws).await;
    assert!(cancelled.canceled());
    assert_eq!(cancelled.watch_id(), 0);
    c.delete("/w/a", None).await.unwrap();
    c.put("/w/c", "3", None).await.unwrap();
    assert_eq!(
        events_of(&mut ws, 1, 1).await,
        [(EventType::Put, "/w/c".into(), "3".into(), None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_replica_without_gaps_or_repeats() {
    let mut cluster = Cluster::start_with(3, STORE_ONLY).await;
    let mut writer = cluster.client_for(&[0, 1]).await;
    let mut on_victim = cluster.client_for(&[2]).await;
    let start = writer
        .put("/seq/000", "0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut ws = on_victim
        .watch(
            "/seq/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    let mut received: Vec<(String, i64)> = Vec::new();
    for i in 1..50 {
        writer
            .put(format!("/seq/{i:03}"), i.to_string(), None)
            .await
            .unwrap();
    }
    while received.len() < 20 {
        for ev in next(&mut ws).await.events() {
            let kv = ev.kv().unwrap();
            received.push((kv.key_str().unwrap().into(), kv.mod_revision()));
        }
    }
    cluster.kill(2);
    for i in 50..100 {
        // Replica 2 may have been the Raft leader: a put caught in its death fails with its
        // outcome unknown to the client, and is tried again only if the key is still absent (so
        // that it is written exactly once).
        let key = format!("/seq/{i:03}");
        wait::until("a put to be acknowledged", Duration::from_secs(20), || {
            let mut writer = writer.clone();
            let key = key.clone();
            async move {
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::create_revision(
                        key.clone(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([etcd_client::TxnOp::put(key, i.to_string(), None)]);
                writer.txn(txn).await.ok()
            }
        })
        .await;
    }
    // Resume from the revision after the last event received, on a surviving replica.
    let resume = received.last().unwrap().1 + 1;
    let mut again = cluster.client_for(&[0]).await;
    let mut ws = again
        .watch(
            "/seq/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(resume),
            ),
        )
        .await
        .unwrap();
    while received.len() < 100 {
        for ev in next(&mut ws).await.events() {
            let kv = ev.kv().unwrap();
            received.push((kv.key_str().unwrap().into(), kv.mod_revision()));
        }
    }
    let keys: Vec<String> = received.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("/seq/{i:03}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_ask_get_periodic_progress_notifications() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--watch-progress-notify-interval",
            "1",
            "--controllers=false",
        ],
    )
    .await;
    let mut c = cluster.client_for(&[1]).await;
    let mut ws = c
        .watch(
            "/quiet/",
            Some(WatchOptions::new().with_prefix().with_progress_notify()),
        )
        .await
        .unwrap();
    assert!(next(&mut ws).await.created());
    let mut plain = c
        .watch("/quiet/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(next(&mut plain).await.created());
    // Writes elsewhere advance the revision; the notification reports it without events.
    let now = c
        .put("/elsewhere", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut notified = false;
    for _ in 0..3 {
        let resp = next(&mut ws).await;
        assert!(resp.events().is_empty(), "{resp:?}");
        assert_eq!(resp.watch_id(), 0);
        if resp.header().unwrap().revision() == now {
            notified = true;
            break;
        }
    }
    assert!(notified, "a progress notification at revision {now}");
    // A watcher that did not ask gets nothing in the meantime.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), plain.message())
            .await
            .is_err(),
        "no progress notification without progress_notify"
    );
}
