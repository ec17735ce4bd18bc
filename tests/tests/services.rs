//! Services through the node's proxy, end to end on a test host of its own: two pods of the
//! example image behind a NodePort Service answer through the cluster IP from the node (both
//! of them, picked at random), through the NodePort from a client outside the cluster and on
//! the node's 127.0.0.1; a Service without endpoints refuses connections at once;
//! sessionAffinity ClientIP keeps a client on one pod; deleting a pod takes it out of the rules
//! within a second, and deleting the Service removes its chains. A flushed nat table is
//! repaired by the next periodic sync; a hundred agent restarts neither interrupt the service
//! nor duplicate a rule.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_api::Kind;
use tests::agent::TestNode;
use tests::netns;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(60);

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
}

#[test]
fn cluster_ips_and_node_ports_reach_the_pods_and_empty_services_refuse() {
    netns::on_hosts(1, |net| async move {
        let host_ip = net.hosts[0].ip.clone();
        let node = TestNode::start_with(&host_ip, &["--proxy-min-sync-period", "0s"]).await;
        for name in ["web-a", "web-b"] {
            node.create_pod(
                name,
                json!({"app": "web"}),
                json!({"terminationGracePeriodSeconds": 1,
                       "containers": [{"name": "app", "image": "busybox",
                                       "ports": [{"name": "http", "containerPort": 8080}]}]}),
            )
            .await;
        }
        for name in ["web-a", "web-b"] {
            node.until_pod(name, "running", running).await;
        }
        let services = Kind::of("v1", "Service").expect("Service");
        for (name, selector, kind) in [("web", "web", "NodePort"), ("nobody", "none", "ClusterIP")]
        {
            node.client
                .create(
                    &json!({"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"type": kind, "selector": {"app": selector},
                                     "ports": [{"port": 80, "targetPort": "http"}]}}),
                    "default",
                )
                .await
                .expect("service created");
        }
        let web = node
            .client
            .get(&services, "default", "web")
            .await
            .expect("web");
        let cluster_ip = web["spec"]["clusterIP"]
            .as_str()
            .expect("cluster IP")
            .to_string();
        let node_port = web["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .expect("node port");
        let nobody = node
            .client
            .get(&services, "default", "nobody")
            .await
            .expect("nobody");
        let nobody_ip = nobody["spec"]["clusterIP"]
            .as_str()
            .expect("ip")
            .to_string();

        // Through the cluster IP from the node: both pods answer, in some order.
        let target = format!("{cluster_ip}:80");
        let first = wait::try_until(LIMIT, || tests::http::get(&target)).await;
        assert!(
            first.is_some(),
            "nothing answers on {target}; agent log:\n{}",
            node.agent.log()
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            if let Some(body) = tests::http::get(&target).await {
                seen.insert(body.trim().to_string());
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["web-a", "web-b"],
            "both pods answer through the cluster IP"
        );

        // A Service without endpoints refuses at once rather than timing out.
        let refused_at = format!("{nobody_ip}:80");
        let refused = wait::try_until(LIMIT, || async {
            let started = Instant::now();
            match tokio::net::TcpStream::connect(&refused_at).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Some(started.elapsed())
                }
                _ => None,
            }
        })
        .await
        .expect("connections to a Service without endpoints are refused");
        assert!(refused < Duration::from_secs(1), "{refused:?}");

        // Through the NodePort from a client outside the cluster.
        let from_outside = format!("{host_ip}:{node_port}");
        let (tx, rx) = std::sync::mpsc::channel();
        let client_net = net.clone();
        std::thread::spawn(move || {
            client_net.run_as_client(move || async move {
                let answer = wait::try_until(LIMIT, || tests::http::get(&from_outside)).await;
                let _ = tx.send(answer);
            })
        });
        let answer = tokio::task::spawn_blocking(move || rx.recv().ok().flatten())
            .await
            .expect("client thread");
        let answer = answer.map(|a| a.trim().to_string());
        assert!(
            matches!(answer.as_deref(), Some("web-a") | Some("web-b")),
            "NodePort answer: {answer:?}"
        );
        // And on the node's own 127.0.0.1, as kube-proxy's iptables mode serves NodePorts.
        let on_localhost = format!("127.0.0.1:{node_port}");
        let answer = wait::try_until(LIMIT, || tests::http::get(&on_localhost)).await;
        let answer = answer.map(|a| a.trim().to_string());
        assert!(
            matches!(answer.as_deref(), Some("web-a") | Some("web-b")),
            "NodePort on 127.0.0.1 answered {answer:?}"
        );

        // sessionAffinity ClientIP: this client stays with one pod (without it, both answered
        // above).
        node.client
            .create(
                &json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "sticky", "namespace": "default"},
                        "spec": {"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                                 "ports": [{"port": 80, "targetPort": "http"}]}}),
                "default",
            )
            .await
            .expect("service created");
        let sticky = node
            .client
            .get(&services, "default", "sticky")
            .await
            .expect("sticky");
        let sticky_at = format!("{}:80", sticky["spec"]["clusterIP"].as_str().expect("ip"));
        let first = wait::try_until(LIMIT, || tests::http::get(&sticky_at))
            .await
            .map(|a| a.trim().to_string())
            .expect("the sticky Service answers");
        for _ in 0..20 {
            let again = tests::http::get(&sticky_at).await;
            assert_eq!(
                again.as_deref().map(str::trim),
                Some(first.as_str()),
                "sessionAffinity keeps the client on {first}"
            );
        }

        // A deleted pod leaves the rules within a second; every later request reaches the
        // other one.
        let pods = Kind::of("v1", "Pod").expect("Pod");
        let web_b = node
            .client
            .get(&pods, "default", "web-b")
            .await
            .expect("web-b");
        let dnat_to_b = format!(
            "--to-destination {}:",
            web_b["status"]["podIP"].as_str().expect("pod IP")
        );
        assert!(nat_rules().contains(&dnat_to_b), "{}", nat_rules());
        let deleted_at = Instant::now();
        node.client
            .delete(&pods, "default", "web-b")
            .await
            .expect("deleted");
        let gone_after = wait::try_until(LIMIT, || async {
            (!nat_rules().contains(&dnat_to_b)).then(|| deleted_at.elapsed())
        })
        .await
        .expect("web-b's endpoint leaves the rules");
        assert!(
            gone_after < Duration::from_secs(1),
            "web-b's endpoint left the rules after {gone_after:?}"
        );
        wait::until(
            "only web-a to answer, ten times in a row",
            LIMIT,
            || async {
                for _ in 0..10 {
                    if tests::http::get(&target).await.as_deref().map(str::trim) != Some("web-a") {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;

        // The Service goes, and so do its chains.
        node.client
            .delete(&services, "default", "web")
            .await
            .expect("deleted");
        wait::until("the Service's chains to go", LIMIT, || async {
            let out = std::process::Command::new("iptables-save")
                .args(["-t", "nat"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (!text.contains("default/web") && text.contains("SKIFF-SERVICES")).then_some(())
        })
        .await;
    });
}

/// `iptables-save -t nat` of the calling thread's namespace.
fn nat_rules() -> String {
    let out = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn flushed_rules_come_back_and_agent_restarts_neither_interrupt_nor_duplicate_them() {
    netns::on_hosts(1, |net| async move {
        let host_ip = net.hosts[0].ip.clone();
        let mut node = TestNode::start_with(
            &host_ip,
            &["--proxy-min-sync-period", "0s", "--proxy-sync-period", "2s"],
        )
        .await;
        node.create_pod(
            "web-a",
            json!({"app": "web"}),
            json!({"terminationGracePeriodSeconds": 1,
                   "containers": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        node.until_pod("web-a", "running", running).await;
        node.client
            .create(
                &json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "web", "namespace": "default"},
                        "spec": {"selector": {"app": "web"},
                                 "ports": [{"port": 80, "targetPort": 8080}]}}),
                "default",
            )
            .await
            .expect("service created");
        let services = Kind::of("v1", "Service").expect("Service");
        let web = node
            .client
            .get(&services, "default", "web")
            .await
            .expect("web");
        let target = format!("{}:80", web["spec"]["clusterIP"].as_str().expect("ip"));
        let answers = || async {
            tests::http::get(&target)
                .await
                .map(|a| a.trim().to_string())
        };
        wait::until("the cluster IP to answer", LIMIT, || async {
            (answers().await.as_deref() == Some("web-a")).then_some(())
        })
        .await;

        // Someone flushes the nat table: the service stops answering, then the next periodic
        // sync (2 s) brings every rule and jump back.
        let flushed = std::process::Command::new("iptables")
            .args(["-t", "nat", "-F"])
            .status()
            .expect("iptables runs");
        assert!(flushed.success());
        assert!(
            !nat_rules().contains("-j SKIFF-SERVICES"),
            "the jumps are gone"
        );
        assert_eq!(answers().await, None, "nothing answers without the rules");
        let repaired = wait::try_until(Duration::from_secs(10), || async {
            (answers().await.as_deref() == Some("web-a")).then_some(Instant::now())
        })
        .await;
        assert!(repaired.is_some(), "the rules came back within 10 s");
        assert!(
            node.agent.log().contains("changed by someone else"),
            "the full sync's read-back saw the flush:\n{}",
            node.agent.log()
        );

        // Agent restarts, each new agent syncing (fully: it starts knowing nothing) before
        // the next: the kernel keeps the rules meanwhile, and no rule is added twice.
        let syncs = |log: String| log.matches("service rules synced").count();
        for _ in 0..100 {
            let before = syncs(node.agent.log());
            node.agent.restart();
            assert_eq!(
                answers().await.as_deref(),
                Some("web-a"),
                "the service answers while the agent restarts"
            );
            let agent = &node.agent;
            wait::until("the restarted agent's first sync", LIMIT, || async {
                (syncs(agent.log()) > before).then_some(())
            })
            .await;
        }
        tests::agent::until_ready(&node.client, "node-a", LIMIT).await;
        // Let the last agent sync twice more (a periodic sync included), then count.
        let synced = || syncs(node.agent.log());
        let before = synced();
        wait::until("two more syncs", LIMIT, || async {
            (synced() >= before + 2).then_some(())
        })
        .await;
        let rules = nat_rules();
        for jump in ["-A PREROUTING", "-A OUTPUT", "-A POSTROUTING"] {
            let n = rules
                .lines()
                .filter(|l| l.starts_with(jump) && l.contains("-j SKIFF-"))
                .count();
            assert_eq!(n, 1, "{jump} jumps to Skiff once:\n{rules}");
        }
        let dnat = rules
            .lines()
            .filter(|l| l.contains("DNAT") && l.contains("default/web"))
            .count();
        assert_eq!(dnat, 1, "one endpoint, one DNAT rule:\n{rules}");
    });
}
