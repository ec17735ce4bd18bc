//! Cluster DNS from inside pods, on a test host of its own with a stand-in for the site's DNS
//! server upstream (the agent's `--resolv-conf`): a Service by its full and its short name, a
//! headless Service's endpoints and a pod's stable name under it (hostname + subdomain, as a
//! StatefulSet's), SRV for a named port, an ExternalName through the upstream, an outside name
//! forwarded upstream, NXDOMAIN for a missing Service, the same answers through the built-in
//! kube-dns Service's address (10.96.0.10); the pod's resolv.conf points at the
//! node with Kubernetes' search path, and its environment holds the Service variables; A and
//! AAAA asked at once from one socket in the pod's network namespace are all answered, at the
//! node's server and through 10.96.0.10 (the conntrack race that costs Kubernetes users 5 s).

use std::net::Ipv4Addr;

use serde_json::json;
use skiff_api::Kind;
use tests::agent::TestNode;
use tests::netns;
use tests::upstream_dns::UpstreamDns;

fn running(p: &serde_json::Value) -> bool {
    p["status"]["phase"] == "Running"
}

/// `skiff exec POD -- sh -c SCRIPT`: (succeeded, stdout + stderr).
fn exec(node: &TestNode, pod: &str, script: &str) -> (bool, String) {
    let run = tests::cli::skiff(
        &node.cluster.endpoints(),
        &["exec", pod, "--", "sh", "-c", script],
        None,
    );
    (run.ok, format!("{}{}", run.stdout, run.stderr))
}

/// The addresses busybox nslookup printed for the name (after its `Name:` line).
fn addresses(out: &str) -> Vec<String> {
    out.split("Name:")
        .skip(1)
        .flat_map(|block| {
            block
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn pods_resolve_services_pods_and_outside_names() {
    netns::on_one_host(|host_ip| async move {
        let host: Ipv4Addr = host_ip.parse().expect("host ip");
        let upstream = UpstreamDns::start(
            host,
            "example.test",
            &[("outside.example.test", Ipv4Addr::new(192, 0, 2, 44))],
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, format!("nameserver {host}\nsearch corp.test\n")).expect("write");
        let resolv_text = resolv.to_string_lossy().to_string();
        let node = TestNode::start_with(&host_ip, &["--resolv-conf", &resolv_text]).await;

        let create = |v: serde_json::Value| {
            let client = node.client.clone();
            async move { client.create(&v, "default").await.expect("created") }
        };
        create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
        .await;
        create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"},
                     "ports": [{"name": "pg", "port": 8080}]}}))
        .await;
        create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "outside.example.test"}}))
        .await;
        node.create_pod(
            "web-a",
            json!({"app": "web"}),
            json!({"terminationGracePeriodSeconds": 1,
                   "containers": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        node.create_pod(
            "db-0",
            json!({"app": "db"}),
            json!({"terminationGracePeriodSeconds": 1, "hostname": "db-0", "subdomain": "db",
                   "containers": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        node.until_pod("web-a", "running", running).await;
        let db = node.until_pod("db-0", "running", running).await;
        let db_ip = db["status"]["podIP"].as_str().expect("pod IP").to_string();
        let services = Kind::of("v1", "Service").expect("Service");
        let svc = node
            .client
            .get(&services, "default", "web")
            .await
            .expect("web");
        let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("ip").to_string();

        // The pod is told about the node's DNS and Kubernetes' search path.
        let (_, conf) = exec(&node, "web-a", "cat /etc/resolv.conf");
        assert!(conf.contains("nameserver 10.244."), "{conf}");
        assert!(
            conf.contains(
                "search default.svc.cluster.local svc.cluster.local cluster.local corp.test"
            ),
            "{conf}"
        );
        assert!(conf.contains("options ndots:5"), "{conf}");

        // Each lookup is retried until the node's stores and server have caught up.
        let lookup = |script: String| {
            let node = &node;
            async move {
                tests::wait::try_until(std::time::Duration::from_secs(30), || {
                    let (ok, out) = exec(node, "web-a", &script);
                    async move { ok.then_some(out) }
                })
                .await
                .unwrap_or_else(|| {
                    let (_, out) = exec(node, "web-a", &script);
                    panic!(
                        "{script} never succeeded: {out}\nagent log:\n{}",
                        node.agent.log()
                    )
                })
            }
        };
        let full = lookup("nslookup web.default.svc.cluster.local".into()).await;
        assert_eq!(addresses(&full), [cluster_ip.as_str()], "{full}");
        // busybox nslookup asks every search domain and fails if any says NXDOMAIN; a libc
        // resolver stops at the first answer. The first search domain must give it.
        let short = tests::wait::try_until(std::time::Duration::from_secs(30), || {
            let (_, out) = exec(&node, "web-a", "nslookup web");
            let found = out.contains("Name:\tweb.default.svc.cluster.local")
                && addresses(&out).contains(&cluster_ip);
            async move { found.then_some(out) }
        })
        .await;
        assert!(
            short.is_some(),
            "the short name resolves through the search path"
        );
        let headless = lookup("nslookup db.default.svc.cluster.local".into()).await;
        assert_eq!(addresses(&headless), [db_ip.as_str()], "{headless}");
        let stable = lookup("nslookup db-0.db.default.svc.cluster.local".into()).await;
        assert_eq!(addresses(&stable), [db_ip.as_str()], "{stable}");
        let srv =
            lookup("nslookup -type=srv _http._tcp.web.default.svc.cluster.local".into()).await;
        assert!(
            srv.contains("web.default.svc.cluster.local") && srv.contains(" 80 "),
            "{srv}"
        );
        // The ExternalName first: its target comes from upstream, not from a cache.
        let before = upstream.questions();
        let ext = lookup("nslookup ext.default.svc.cluster.local".into()).await;
        assert!(addresses(&ext).contains(&"192.0.2.44".to_string()), "{ext}");
        assert!(
            upstream.questions() > before,
            "the target was asked upstream"
        );
        let outside = lookup("nslookup outside.example.test".into()).await;
        assert_eq!(addresses(&outside), ["192.0.2.44"], "{outside}");

        // The built-in kube-dns Service's address answers too (the node's proxy sends it to
        // the node's own server), and names itself.
        let via_service = lookup("nslookup web.default.svc.cluster.local 10.96.0.10".into()).await;
        assert_eq!(
            addresses(&via_service),
            [cluster_ip.as_str()],
            "{via_service}"
        );
        let itself = lookup("nslookup kube-dns.kube-system.svc.cluster.local".into()).await;
        assert_eq!(addresses(&itself), ["10.96.0.10"], "{itself}");

        // The Services that existed when the container started are in its environment.
        let (_, environ) = exec(&node, "web-a", "tr '\\0' '\\n' < /proc/1/environ");
        for wanted in [
            format!("WEB_SERVICE_HOST={cluster_ip}"),
            "WEB_SERVICE_PORT_HTTP=80".to_string(),
            format!("WEB_PORT_80_TCP=tcp://{cluster_ip}:80"),
        ] {
            assert!(
                environ.lines().any(|l| l == wanted),
                "{wanted} in\n{environ}"
            );
        }
        assert!(
            !environ.contains("DB_SERVICE_HOST"),
            "a headless Service has no variables"
        );

        // A Service that does not exist: NXDOMAIN, not a timeout.
        let (ok, missing) = exec(&node, "web-a", "nslookup nope.default.svc.cluster.local");
        assert!(!ok, "{missing}");
        assert!(missing.contains("NXDOMAIN"), "{missing}");

        // From inside the pod's network namespace, A and AAAA asked at once from one socket
        // (as glibc's resolver does), 200 times, at the node's server and through the kube-dns
        // Service's address: every question answered within a second.
        let nameserver: Ipv4Addr = conf
            .lines()
            .find_map(|l| l.strip_prefix("nameserver "))
            .and_then(|ip| ip.trim().parse().ok())
            .expect("a nameserver in resolv.conf");
        let pods = Kind::of("v1", "Pod").expect("Pod");
        let web_a = node
            .client
            .get(&pods, "default", "web-a")
            .await
            .expect("web-a");
        let netns_file = node
            .agent
            .dir()
            .join("netns")
            .join(web_a["metadata"]["uid"].as_str().expect("uid"));
        let (tx, rx) = std::sync::mpsc::channel();
        netns::run_in_file(netns_file, move || async move {
            let mut lost = vec![];
            for server in [nameserver, Ipv4Addr::new(10, 96, 0, 10)] {
                lost.push((server, parallel_a_and_aaaa(server, 200).await));
            }
            let _ = tx.send(lost);
        });
        let lost = rx.recv().expect("client thread");
        for (server, lost) in lost {
            assert_eq!(lost, 0, "questions to {server} lost of 400");
        }
    });
}

/// Asks A and AAAA for a Service name at once from one socket `pairs` times; how many
/// questions went unanswered within a second.
async fn parallel_a_and_aaaa(server: Ipv4Addr, pairs: u16) -> usize {
    use tests::dns_wire::{answered, query, query_aaaa, Expect};
    let name = "web.default.svc.cluster.local";
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .expect("socket");
    socket.connect((server, 53)).await.expect("connect");
    let mut lost = 0;
    let mut buf = [0u8; 1500];
    for pair in 0..pairs {
        let (a, aaaa) = (pair * 2, pair * 2 + 1);
        let sent_a = socket.send(&query(a, name)).await.is_ok();
        let sent_aaaa = socket.send(&query_aaaa(aaaa, name)).await.is_ok();
        let mut waiting = [
            (a, Expect::Address, sent_a),
            (aaaa, Expect::NoError, sent_aaaa),
        ]
        .into_iter()
        .filter(|(_, _, sent)| *sent)
        .collect::<Vec<_>>();
        lost += 2 - waiting.len();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while !waiting.is_empty() {
            let Ok(Ok(len)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await else {
                break;
            };
            waiting.retain(|(id, expect, _)| !answered(&buf[..len], *id, *expect));
        }
        lost += waiting.len();
    }
    lost
}
