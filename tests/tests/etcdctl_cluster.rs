//! Debian's etcdctl 3.4 against a 3-replica Skiff cluster, through each replica in turn: keys and
//! prefixes, txn, watch from an old revision, leases, endpoint status, member list, and
//! membership changes; then backup and restore.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::cluster::Cluster;
use tests::etcdctl::{lines, ok, ok_with_input, run};
use tests::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_through_each_replica() {
    let cluster = Cluster::start(3).await;
    let all = cluster.endpoints();
    for (i, m) in cluster.members.iter().enumerate() {
        let ep = m.endpoint();
        let p = format!("/r{i}/");
        // Keys and prefixes, written through this replica, read back from every replica.
        for k in ["a", "b", "c"] {
            assert_eq!(
                ok(&ep, &["put", &format!("{p}{k}"), &format!("v{k}")]).trim(),
                "OK"
            );
        }
        for other in &cluster.members {
            let got = ok(&other.endpoint(), &["get", "--prefix", &p]);
            assert_eq!(
                lines(&got),
                [
                    format!("{p}a"),
                    "va".into(),
                    format!("{p}b"),
                    "vb".into(),
                    format!("{p}c"),
                    "vc".into()
                ],
                "read through {}",
                other.name
            );
        }
        assert_eq!(ok(&ep, &["del", &format!("{p}a")]).trim(), "1");
        assert_eq!(
            ok(&ep, &["get", "--prefix", &p, "--keys-only", "--limit", "1"]).trim(),
            format!("{p}b")
        );
        assert_eq!(ok(&ep, &["del", "--prefix", &p]).trim(), "2");
        assert_eq!(ok(&all, &["get", "--prefix", &p]), "");

        // Txn: the compare decides the branch.
        ok(&ep, &["put", &format!("{p}t"), "1"]);
        let txn = format!("value(\"{p}t\") = \"1\"\n\nput {p}t 2\nput {p}u x\n\nput {p}t fail\n\n");
        assert_eq!(
            lines(&ok_with_input(&ep, &["txn"], Some(&txn))),
            ["SUCCESS", "", "OK", "", "OK"]
        );
        let again = ok_with_input(&ep, &["txn"], Some(&txn));
        assert_eq!(lines(&again)[0], "FAILURE");
        assert_eq!(
            ok(&ep, &["get", &format!("{p}t"), "--print-value-only"]).trim(),
            "fail"
        );
    }

    // Watch from an old revision replays history, through every replica.
    let first_rev = {
        let out = ok(&all, &["get", "/r0/t", "-w", "json"]);
        let at = out
            .find("\"create_revision\":")
            .expect("create_revision in json")
            + 18;
        out[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    for m in &cluster.members {
        let out = Command::new("timeout")
            .args([
                "3",
                "etcdctl",
                &format!("--endpoints={}", m.endpoint()),
                "watch",
                "--prefix",
                "/r0/t",
            ])
            .arg(format!("--rev={first_rev}"))
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::piped())
            .output()
            .expect("etcdctl watch");
        let got = lines(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            got,
            ["PUT", "/r0/t", "1", "PUT", "/r0/t", "2", "PUT", "/r0/t", "fail"],
            "watch via {}",
            m.name
        );
    }

    // Leases: grant, attach, time-to-live, keep-alive, revoke (keys go with the lease).
    let granted = ok(&cluster.members[1].endpoint(), &["lease", "grant", "30"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ok(
        &cluster.members[2].endpoint(),
        &["put", "/leased", "x", &format!("--lease={id}")],
    );
    let ttl = ok(
        &cluster.members[0].endpoint(),
        &["lease", "timetolive", &id, "--keys"],
    );
    assert!(
        ttl.contains("granted with TTL(30s)") && ttl.contains("attached keys([/leased])"),
        "{ttl}"
    );
    let kept = ok(
        &cluster.members[2].endpoint(),
        &["lease", "keep-alive", "--once", &id],
    );
    assert!(kept.contains("keepalived with TTL(30)"), "{kept}");
    assert!(ok(&all, &["lease", "list"]).contains(&id));
    assert!(ok(&cluster.members[0].endpoint(), &["lease", "revoke", &id]).contains("revoked"));
    for m in &cluster.members {
        assert_eq!(ok(&m.endpoint(), &["get", "/leased"]), "");
    }
    let gone = ok(&all, &["lease", "timetolive", &id]);
    assert!(gone.contains("already expired"), "{gone}");
    let bad = run(&all, &["put", "/k", "v", "--lease=1234"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("etcdserver: requested lease not found"));

    // Endpoint status: one leader, same term everywhere; member list names every member.
    let status = ok(&all, &["endpoint", "status"]);
    assert_eq!(
        status
            .lines()
            .filter(|l| l.contains(", true, false,"))
            .count(),
        1,
        "{status}"
    );
    let members = ok(&all, &["member", "list"]);
    for m in &cluster.members {
        assert!(
            members.contains(&format!(
                "started, {}, {}, {}",
                m.name,
                m.peer_url(),
                m.client_url()
            )),
            "{members}"
        );
    }
    let health = run(&all, &["endpoint", "health"]);
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_and_survive_a_leader_change() {
    let mut cluster = Cluster::start(3).await;
    let all = cluster.endpoints();
    let short = ok(&all, &["lease", "grant", "2"]);
    let short_id = short.split_whitespace().nth(1).unwrap().to_string();
    ok(
        &all,
        &["put", "/short", "x", &format!("--lease={short_id}")],
    );
    let long = ok(&all, &["lease", "grant", "20"]);
    let long_id = long.split_whitespace().nth(1).unwrap().to_string();
    ok(&all, &["put", "/long", "y", &format!("--lease={long_id}")]);

    // Nobody keeps the short lease alive: the leader expires it and its key disappears.
    wait::until("the 2 s lease to expire", Duration::from_secs(15), || {
        let all = all.clone();
        async move { ok(&all, &["get", "/short"]).is_empty().then_some(()) }
    })
    .await;

    // A new leader restarts deadlines from the full TTL instead of expiring every lease.
    let leader = cluster.leader_index().await;
    cluster.kill(leader);
    cluster.wait_for_leader().await;
    let survivors: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.is_running())
        .map(|m| m.endpoint())
        .collect();
    let eps = survivors.join(",");
    let ttl = ok(&eps, &["lease", "timetolive", &long_id]);
    assert!(ttl.contains("granted with TTL(20s)"), "{ttl}");
    assert_eq!(lines(&ok(&eps, &["get", "/long"])), ["/long", "y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_removed_and_a_wiped_replica_rejoins_as_a_learner() {
    let mut cluster = Cluster::start(3).await;
    let all = cluster.endpoints();
    for i in 0..50 {
        ok(&all, &["put", &format!("/data/{i:03}"), &format!("{i}")]);
    }
    // Remove member 2 and wipe it.
    let list = ok(&all, &["member", "list"]);
    let victim = &cluster.members[2];
    let victim_id = list
        .lines()
        .find(|l| l.contains(&format!(", {}, ", victim.name)))
        .and_then(|l| l.split(',').next())
        .expect("victim in member list")
        .to_string();
    let survivors = format!(
        "{},{}",
        cluster.members[0].endpoint(),
        cluster.members[1].endpoint()
    );
    assert!(ok(&survivors, &["member", "remove", &victim_id]).contains("removed"));
    // The removed member learns it from the leader and shuts down by itself, as etcd's does.
    assert_eq!(cluster.wait_for_exit(2, Duration::from_secs(15)), Some(0));
    assert!(
        cluster.log(2).contains("removed from the cluster"),
        "{}",
        cluster.log(2)
    );
    cluster.replace_with_new_member(2);
    assert!(!ok(&survivors, &["member", "list"]).contains(&victim_id));

    // Add it back as a learner with a fresh data dir; it catches up, then is promoted.
    let name = cluster.members[2].name.clone();
    let peer = cluster.members[2].peer_url();
    let added = ok(
        &survivors,
        &[
            "member",
            "add",
            &name,
            &format!("--peer-urls={peer}"),
            "--learner",
        ],
    );
    assert!(added.contains("added to cluster"), "{added}");
    cluster.start_joining(2);
    let new_ep = cluster.members[2].endpoint();
    wait::until(
        "the new learner to catch up",
        Duration::from_secs(30),
        || {
            let new_ep = new_ep.clone();
            async move {
                let out = run(
                    &new_ep,
                    &["get", "/data/049", "--consistency=s", "--print-value-only"],
                );
                (String::from_utf8_lossy(&out.stdout).trim() == "49").then_some(())
            }
        },
    )
    .await;
    let list = ok(&survivors, &["member", "list"]);
    let new_id = list
        .lines()
        .find(|l| l.contains(&peer))
        .and_then(|l| l.split(',').next())
        .expect("new member listed")
        .to_string();
    assert!(
        list.lines()
            .any(|l| l.contains(&peer) && l.ends_with("true")),
        "learner flag: {list}"
    );
    wait::until(
        "promotion of the caught-up learner",
        Duration::from_secs(20),
        || {
            let survivors = survivors.clone();
            let new_id = new_id.clone();
            async move {
                run(&survivors, &["member", "promote", &new_id])
                    .status
                    .success()
                    .then_some(())
            }
        },
    )
    .await;
    let list = ok(&cluster.endpoints(), &["member", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains(&peer) && l.ends_with("false")),
        "{list}"
    );
    // The promoted member takes writes and serves linearizable reads.
    ok(&new_ep, &["put", "/after-rejoin", "ok"]);
    assert_eq!(
        ok(
            &cluster.endpoints(),
            &["get", "/after-rejoin", "--print-value-only"]
        )
        .trim(),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_into_a_new_cluster() {
    let cluster = Cluster::start(3).await;
    let all = cluster.endpoints();
    for i in 0..20 {
        ok(&all, &["put", &format!("/backup/{i:02}"), &format!("v{i}")]);
    }
    ok(&all, &["del", "/backup/00"]);
    let file = cluster.root().join("backup.db");
    let saved = ok(
        &cluster.members[1].endpoint(),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    assert!(saved.contains("Snapshot saved"), "{saved}");
    let expected = ok(&all, &["get", "--prefix", "/backup/", "-w", "json"]);
    let expected_kvs = &expected[expected.find("\"kvs\"").unwrap()..];

    let restored = Cluster::start_with(1, &["--restore-from", file.to_str().unwrap()]).await;
    let got = ok(
        &restored.endpoints(),
        &["get", "--prefix", "/backup/", "-w", "json"],
    );
    assert_eq!(&got[got.find("\"kvs\"").unwrap()..], expected_kvs);
    ok(&restored.endpoints(), &["put", "/after-restore", "1"]);
    // The restored cluster is a new one: its own members and its own cluster ID.
    let members = ok(&restored.endpoints(), &["member", "list"]);
    assert_eq!(members.lines().count(), 1, "{members}");
    let old_header = ok(&all, &["get", "/backup/01", "-w", "json"]);
    let new_header = ok(&restored.endpoints(), &["get", "/backup/01", "-w", "json"]);
    let cluster_id = |json: &str| {
        json.split("\"cluster_id\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .map(str::to_string)
    };
    assert_ne!(cluster_id(&old_header), cluster_id(&new_header));

    // A damaged backup is refused with a clear message and a non-zero exit.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 0xff;
    let damaged = cluster.root().join("damaged.db");
    std::fs::write(&damaged, bytes).unwrap();
    let out = Command::new(tests::bins::bin("skiff-server"))
        .args(["--data-dir", cluster.root().join("fresh").to_str().unwrap()])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", tests::cluster::free_port()),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", tests::cluster::free_port()),
        ])
        .args(["--restore-from", damaged.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
}

/// Every etcdctl command the README shows, with each endpoint form etcdctl accepts (plain
/// `host:port`, `http://` URLs, `localhost`, a list of all members) and with `--cluster`, which
/// makes etcdctl dial every member by the client URL it published: etcd's Go client then sends
/// the whole URL as the HTTP/2 `:authority`, which the server must accept as etcd does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_with_every_endpoint_form() {
    let cluster = Cluster::start(3).await;
    let m = &cluster.members[1];
    let urls = cluster.client_urls().join(",");
    let forms = [
        m.endpoint(),
        m.client_url(),
        format!("localhost:{}", m.client_port),
        format!("http://localhost:{}", m.client_port),
        urls.clone(),
        cluster.endpoints(),
    ];
    for (i, ep) in forms.iter().enumerate() {
        let key = format!("greeting{i}");
        assert_eq!(ok(ep, &["put", &key, "hello"]).trim(), "OK", "{ep}");
        let json = ok(ep, &["get", &key, "-w", "json"]);
        assert!(json.contains("\"mod_revision\""), "{ep}: {json}");
        assert_eq!(
            lines(&ok(ep, &["get", &key, "--consistency=s"])),
            [key.clone(), "hello".into()],
            "{ep}"
        );
        // A watch from the put's revision replays it, then is stopped.
        let rev = json
            .split("\"mod_revision\":")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .expect("mod_revision")
            .to_string();
        let watched = Command::new("timeout")
            .args(["3", "etcdctl", &format!("--endpoints={ep}")])
            .args(["watch", "--prefix", &key, &format!("--rev={rev}")])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            lines(&String::from_utf8_lossy(&watched.stdout)),
            ["PUT", &key, "hello"],
            "watch through {ep}: {}",
            String::from_utf8_lossy(&watched.stderr)
        );
        let members = ok(ep, &["member", "list", "-w", "table"]);
        assert_eq!(members.matches("started").count(), 3, "{ep}: {members}");
        let status = ok(ep, &["endpoint", "status", "-w", "table"]);
        assert!(status.contains("3.5.0"), "{ep}: {status}");
        // --cluster: every member, by the URL it published.
        let status = ok(ep, &["endpoint", "status", "--cluster", "-w", "table"]);
        for member in &cluster.members {
            assert!(status.contains(&member.client_url()), "{ep}: {status}");
        }
        // etcdctl 3.4 prints health to stderr.
        let out = run(ep, &["endpoint", "health", "--cluster"]);
        let health = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{ep}: {health}");
        assert_eq!(health.matches("is healthy").count(), 3, "{ep}: {health}");
    }
    // The three replicas hold the same data: one hash, at one revision.
    let revision = ok(&urls, &["get", "greeting0", "-w", "json"]);
    let rev = revision
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .expect("revision")
        .to_string();
    let hashes = ok(
        &m.client_url(),
        &["endpoint", "hashkv", "--cluster", &format!("--rev={rev}")],
    );
    let distinct: std::collections::BTreeSet<&str> = hashes
        .lines()
        .filter_map(|l| l.split(", ").nth(1))
        .collect();
    assert_eq!(hashes.lines().count(), 3, "{hashes}");
    assert_eq!(distinct.len(), 1, "{hashes}");

    // Membership, backups and defrag through an http:// endpoint too.
    let added = ok(
        &m.client_url(),
        &[
            "member",
            "add",
            "s4",
            "--learner",
            &format!(
                "--peer-urls=http://127.0.0.1:{}",
                tests::cluster::free_port()
            ),
        ],
    );
    let id = added
        .split("Member ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the new member's ID")
        .to_string();
    ok(&m.client_url(), &["member", "remove", &id]);
    let file = cluster.root().join("http-backup.db");
    let saved = ok(
        &m.client_url(),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    assert!(saved.contains("Snapshot saved"), "{saved}");
    let defrag = ok(&urls, &["defrag", "--cluster"]);
    assert_eq!(
        defrag.matches("Finished defragmenting").count(),
        3,
        "{defrag}"
    );
}
