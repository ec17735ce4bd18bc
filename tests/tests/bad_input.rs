//! Bad input gets etcd's error (code and message), changes nothing, and never takes a replica
//! down: oversized values, empty keys, inverted ranges, unknown leases, malformed transactions,
//! future or compacted revisions, and garbage on the peer port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tests::cluster::{Cluster, STORE_ONLY};

fn status(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn revision(c: &mut Client) -> i64 {
    c.get("any", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_etcds_errors_and_change_nothing() {
    let cluster = Cluster::start_with(3, STORE_ONLY).await;
    let mut c = cluster.client_for(&[1]).await;
    c.put("/keep", "v", None).await.unwrap();
    let rev = revision(&mut c).await;

    let cases: Vec<(&str, etcd_client::Error, tonic::Code, &str)> = vec![
        (
            "1.6 MiB value",
            c.put("/big", vec![b'x'; 1_600_000], None)
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (
            "empty key",
            c.put("", "v", None).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            "unknown lease",
            c.put("/k", "v", Some(PutOptions::new().with_lease(4242)))
                .await
                .unwrap_err(),
            tonic::Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            "ignore_value on a missing key",
            c.put("/missing", "", Some(PutOptions::new().with_ignore_value()))
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            "duplicate key in txn",
            c.txn(Txn::new().and_then([TxnOp::put("/d", "1", None), TxnOp::put("/d", "2", None)]))
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            "129 operations in a txn",
            c.txn(
                Txn::new().and_then(
                    (0..129)
                        .map(|i| TxnOp::put(format!("/t{i}"), "v", None))
                        .collect::<Vec<_>>(),
                ),
            )
            .await
            .unwrap_err(),
            tonic::Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            "future revision",
            c.get("/keep", Some(GetOptions::new().with_revision(rev + 1000)))
                .await
                .unwrap_err(),
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "compact a future revision",
            c.compact(rev + 1000, None).await.unwrap_err(),
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "revoke an unknown lease",
            c.lease_revoke(777).await.unwrap_err(),
            tonic::Code::NotFound,
            "etcdserver: requested lease not found",
        ),
    ];
    for (what, err, code, msg) in cases {
        assert_eq!(status(err), (code, msg.to_string()), "{what}");
    }
    // Above gRPC's 2 MiB limit the transport refuses before the server sees it (tonic says
    // OutOfRange where grpc-go says ResourceExhausted).
    let (code, msg) = status(
        c.put("/huge", vec![b'x'; 3 * 1024 * 1024], None)
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(
            code,
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ) && msg.contains("too large"),
        "{code:?}: {msg}"
    );

    // An inverted range reads and deletes nothing, as etcd does.
    let inverted = c
        .get("/z", Some(GetOptions::new().with_range("/a")))
        .await
        .unwrap();
    assert_eq!(inverted.count(), 0);
    let del = c
        .delete(
            "/z",
            Some(etcd_client::DeleteOptions::new().with_range("/a")),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 0);
    // A txn whose compare fails on a missing key takes the failure branch without writing.
    let t = c
        .txn(
            Txn::new()
                .when([Compare::value("/missing", CompareOp::Equal, "x")])
                .and_then([TxnOp::put("/never", "1", None)]),
        )
        .await
        .unwrap();
    assert!(!t.succeeded());

    assert_eq!(
        revision(&mut c).await,
        rev,
        "bad requests changed the store"
    );
    for i in 0..3 {
        let mut ci = cluster.client_for(&[i]).await;
        let all = ci
            .get("/", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        // Beside the API server's built-in namespaces, default StorageClass and kube-dns
        // Service (with its address's claim), only the one good write.
        let keys: Vec<&str> = all
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap())
            .filter(|k| {
                !k.starts_with("/registry/namespaces/")
                    && !k.starts_with("/registry/storageclasses/")
                    && !k.starts_with("/registry/services/kube-system/")
                    && !k.starts_with("/registry/ranges/")
            })
            .collect();
        assert_eq!(keys, ["/keep"], "replica {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_peer_port_changes_nothing() {
    let cluster = Cluster::start_with(3, STORE_ONLY).await;
    let mut c = cluster.client_for(&[0, 1, 2]).await;
    c.put("/before", "1", None).await.unwrap();
    let rev = revision(&mut c).await;
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02garbage\xff\xfe",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x01garbage-frames",
        &[0xAB; 70_000],
    ];
    for m in &cluster.members {
        for bytes in garbage {
            let mut s = TcpStream::connect(("127.0.0.1", m.peer_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(bytes);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
    // Every replica is still up, agrees on a leader, and nothing changed.
    cluster.wait_for_leader().await;
    assert_eq!(revision(&mut c).await, rev);
    c.put("/after", "1", None).await.unwrap();
    assert_eq!(revision(&mut c).await, rev + 1);
}
