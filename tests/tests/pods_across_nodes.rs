//! Pods and Services across nodes: three agent "hosts" in network namespaces of their own,
//! one control plane. Every host routes the other nodes' pod CIDRs (host-gw); pods answer on
//! their IPs from any host and from pods on other nodes, which see the caller's own pod
//! address (no NAT between pods); 900 requests through the ClusterIP from a pod on each node
//! spread evenly over all three pods; the NodePort answers on every node from a client
//! outside the cluster; with externalTrafficPolicy Local each node's NodePort answers only with
//! its own pod, which sees the client's address; a LoadBalancer gets every node's address as
//! its ingress, answers on its port there, and its health-check port answers 200 only on the
//! node with a local endpoint (503 elsewhere); a UDP Service's endpoint moving from node-0's
//! DNS server to node-1's is followed by a client that keeps one socket (its conntrack flow,
//! dead once node-0 drops the traffic, is deleted by its node's proxy); when a node's agent is
//! SIGKILLed its pod is
//! replaced on another node and traffic follows; a deleted Node's route goes from every host.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use skiff_api::Kind;
use tests::multi_host::{node_name, Hosts};
use tests::netns;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(90);

/// Skiff's host-gw routes in namespace `ns`, as "CIDR via IP" lines.
fn routes_in(ns: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "route", "show", "proto", "83"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[1] == "via").then(|| format!("{} via {}", f[0], f[2]))
        })
        .collect()
}

/// Runs `script` in pod `pod`'s container through `skiff exec`; its stdout.
fn exec(hosts: &Hosts, pod: &str, script: &str) -> String {
    let endpoints = hosts.cluster.endpoints();
    let run = tests::cli::skiff(&endpoints, &["exec", pod, "--", "sh", "-c", script], None);
    assert!(
        run.ok,
        "exec in {pod} failed: {}\n{}",
        run.stderr,
        hosts.logs()
    );
    run.stdout
}

/// The running pods of app `web`: name → (node, IP).
async fn web_pods(client: &skiff_api::Client) -> BTreeMap<String, (String, String)> {
    let pods = Kind::of("v1", "Pod").expect("Pod");
    let list = client
        .list(&pods, Some("default"), "app=web", "")
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                (
                    p["spec"]["nodeName"].as_str()?.to_string(),
                    p["status"]["podIP"].as_str()?.to_string(),
                ),
            ))
        })
        .collect()
}

#[test]
fn pods_reach_pods_and_services_across_three_nodes() {
    netns::on_hosts(3, |inner| async move {
        let hosts = Hosts::start(
            inner,
            // Leases renewed every second, a node missing for 6 s is NotReady, its pods go.
            &[
                "--node-monitor-grace-period",
                "6",
                "--pod-eviction-timeout",
                "0",
            ],
            &[
                "--proxy-min-sync-period",
                "0s",
                "--node-lease-duration-seconds",
                "4",
            ],
        )
        .await;
        let client = hosts.client.clone();
        let net = hosts.net.clone();

        // Every host routes the other nodes' pod CIDRs via their addresses.
        let nodes = Kind::of("v1", "Node").expect("Node");
        let mut cidr_of = BTreeMap::new();
        for i in 0..3 {
            let n = client.get(&nodes, "", &node_name(i)).await.expect("node");
            let cidr = n["spec"]["podCIDR"].as_str().expect("pod CIDR").to_string();
            cidr_of.insert(i, cidr);
        }
        for i in 0..3 {
            let wanted: BTreeSet<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("{} via {}", cidr_of[&j], net.hosts[j].ip))
                .collect();
            let ns = net.hosts[i].ns.clone();
            wait::until(
                &format!("host {i}'s routes to be {wanted:?}"),
                LIMIT,
                || {
                    let got = routes_in(&ns);
                    let wanted = wanted.clone();
                    async move { (got == wanted).then_some(()) }
                },
            )
            .await;
        }

        // Three replicas, spread one to a node.
        client
            .create(
                &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "default"},
                        "spec": {"replicas": 3,
                                 "selector": {"matchLabels": {"app": "web"}},
                                 "template": {
                                     "metadata": {"labels": {"app": "web"}},
                                     "spec": {"terminationGracePeriodSeconds": 1,
                                              "containers": [{"name": "app", "image": "busybox",
                                                  "ports": [{"name": "http", "containerPort": 8080}]}]}}}}),
                "default",
            )
            .await
            .expect("deployment created");
        let c = client.clone();
        let pods = wait::try_until(LIMIT, || {
            let c = c.clone();
            async move {
                let pods = web_pods(&c).await;
                (pods.len() == 3).then_some(pods)
            }
        })
        .await
        .unwrap_or_else(|| panic!("3 web pods never ran\n{}", hosts.logs()));
        let used: BTreeSet<&String> = pods.values().map(|(node, _)| node).collect();
        assert_eq!(used.len(), 3, "one pod per node: {pods:?}");

        // Each pod answers on its IP from host 0, whichever node it is on.
        for (name, (node, ip)) in &pods {
            let at = format!("{ip}:8080");
            let answer = wait::try_until(LIMIT, || tests::http::get(&at)).await;
            assert_eq!(
                answer.as_deref().map(str::trim),
                Some(name.as_str()),
                "{name} on {node} at {at}"
            );
        }

        // Pod to pod across nodes, and the callee sees the caller's own address: a CGI
        // script behind busybox httpd on one pod prints REMOTE_ADDR.
        let by_node: BTreeMap<String, (String, String)> = pods
            .iter()
            .map(|(name, (node, ip))| (node.clone(), (name.clone(), ip.clone())))
            .collect();
        let (callee, callee_ip) = by_node[&node_name(2)].clone();
        exec(
            &hosts,
            &callee,
            "mkdir -p /peer/cgi-bin && printf '#!/bin/sh\\necho\\necho $REMOTE_ADDR\\n' > /peer/cgi-bin/peer && chmod +x /peer/cgi-bin/peer && httpd -p 9090 -h /peer",
        );
        for caller_node in [node_name(0), node_name(1)] {
            let (caller, caller_ip) = by_node[&caller_node].clone();
            let seen = exec(
                &hosts,
                &caller,
                &format!("wget -qO- http://{callee_ip}:9090/cgi-bin/peer"),
            );
            // httpd listens on IPv6 too and writes a v4 peer as `[::ffff:a.b.c.d]`.
            let seen = seen
                .trim()
                .trim_matches(['[', ']'])
                .trim_start_matches("::ffff:");
            assert_eq!(
                seen, caller_ip,
                "{callee} on node-2 sees {caller} on {caller_node} by its own pod address"
            );
        }

        // A ClusterIP service: requests from a pod on each node reach all three pods, evenly
        // (each within 15% of a third of all). 600 from each node: with 1,800 picks the 15% is
        // 4.5 standard deviations of a fair pick (900 would make it 3.2, failing a fair
        // proxy about once in 250 runs).
        let services = Kind::of("v1", "Service").expect("Service");
        client
            .create(
                &json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "web", "namespace": "default"},
                        "spec": {"type": "NodePort", "selector": {"app": "web"},
                                 "ports": [{"port": 80, "targetPort": "http"}]}}),
                "default",
            )
            .await
            .expect("service created");
        let web = client.get(&services, "default", "web").await.expect("web");
        let cluster_ip = web["spec"]["clusterIP"]
            .as_str()
            .expect("cluster IP")
            .to_string();
        let node_port = web["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .expect("node port");
        // Wait until every node's proxy serves it (the first answer from each pod's node).
        for (node, (caller, _)) in &by_node {
            let probe = format!("timeout 5 wget -qO- http://{cluster_ip}/ 2>&1 || true");
            let last = std::sync::Mutex::new(String::new());
            let answered = wait::try_until(LIMIT, || {
                let out = exec(&hosts, caller, &probe);
                let ok = pods.contains_key(out.trim());
                *last.lock().expect("lock") = out;
                async move { ok.then_some(()) }
            })
            .await;
            if answered.is_none() {
                let i: usize = node.trim_start_matches("node-").parse().expect("index");
                let rules = std::process::Command::new("ip")
                    .args(["netns", "exec", &net.hosts[i].ns, "iptables-save"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!(
                    "{cluster_ip} never answered in {caller} on {node}: {}\n{rules}\n{}",
                    last.lock().expect("lock"),
                    hosts.logs()
                );
            }
        }
        let mut total: BTreeMap<String, usize> = BTreeMap::new();
        for (caller, _) in by_node.values() {
            let out = exec(
                &hosts,
                caller,
                &format!(
                    "for i in $(seq 600); do timeout 5 wget -qO- http://{cluster_ip}/ 2>&1 || echo \"request $i failed at $(date +%T.%N)\"; done"
                ),
            );
            let answers: Vec<&str> = out.lines().map(str::trim).collect();
            let failed: Vec<&&str> = answers.iter().filter(|a| !pods.contains_key(**a)).collect();
            assert!(
                failed.is_empty(),
                "requests from {caller} failed: {failed:?}"
            );
            assert_eq!(answers.len(), 600, "every request from {caller} answered");
            let from_here: BTreeSet<&str> = answers.iter().copied().collect();
            assert_eq!(
                from_here.len(),
                3,
                "{caller} reached all three: {from_here:?}"
            );
            for a in answers {
                *total.entry(a.to_string()).or_default() += 1;
            }
        }
        assert_eq!(
            total.keys().collect::<BTreeSet<_>>(),
            pods.keys().collect::<BTreeSet<_>>()
        );
        for (pod, n) in &total {
            assert!((510..=690).contains(n), "{pod} got {n} of 1800: {total:?}");
        }

        // The NodePort answers on every node's address from a client outside the cluster.
        let addresses: Vec<String> = net
            .hosts
            .iter()
            .map(|h| format!("{}:{node_port}", h.ip))
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let client_net = net.clone();
        std::thread::spawn(move || {
            client_net.run_as_client(move || async move {
                let mut answers = vec![];
                for at in addresses {
                    let a = wait::try_until(LIMIT, || tests::http::get(&at)).await;
                    answers.push((at, a.map(|a| a.trim().to_string())));
                }
                let _ = tx.send(answers);
            })
        });
        let answers = tokio::task::spawn_blocking(move || rx.recv().expect("client thread"))
            .await
            .expect("client thread");
        for (at, answer) in answers {
            assert!(
                answer.as_ref().is_some_and(|a| pods.contains_key(a)),
                "NodePort {at} answered {answer:?}"
            );
        }

        // externalTrafficPolicy Local: each node's NodePort answers only with its own pod, and
        // the pod sees the outside client's own address.
        for (name, target) in [("web-local", 8080), ("peer-local", 9090)] {
            client
                .create(
                    &json!({"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"type": "NodePort", "selector": {"app": "web"},
                                     "externalTrafficPolicy": "Local",
                                     "ports": [{"port": 80, "targetPort": target}]}}),
                    "default",
                )
                .await
                .expect("service created");
        }
        let node_port_of = |name: &'static str| {
            let client = client.clone();
            async move {
                let svc = client
                    .get(&services, "default", name)
                    .await
                    .expect("service");
                svc["spec"]["ports"][0]["nodePort"]
                    .as_u64()
                    .expect("node port")
            }
        };
        let (local_port, peer_port) = (
            node_port_of("web-local").await,
            node_port_of("peer-local").await,
        );
        let hosts_ips: Vec<String> = net.hosts.iter().map(|h| h.ip.clone()).collect();
        let client_ip = net.client.ip.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let client_net = net.clone();
        std::thread::spawn(move || {
            client_net.run_as_client(move || async move {
                let mut seen = vec![];
                for ip in &hosts_ips {
                    let at = format!("{ip}:{local_port}");
                    let first = wait::try_until(LIMIT, || tests::http::get(&at)).await;
                    let mut answers = BTreeSet::new();
                    answers.extend(first.map(|a| a.trim().to_string()));
                    for _ in 0..10 {
                        answers.extend(tests::http::get(&at).await.map(|a| a.trim().to_string()));
                    }
                    seen.push(answers);
                }
                let peer_at = format!("{}:{peer_port}", hosts_ips[2]);
                let peer =
                    wait::try_until(LIMIT, || tests::http::get_path(&peer_at, "/cgi-bin/peer"))
                        .await;
                let _ = tx.send((seen, peer));
            })
        });
        let (seen, peer) = tokio::task::spawn_blocking(move || rx.recv().expect("client thread"))
            .await
            .expect("client thread");
        for (i, answers) in seen.iter().enumerate() {
            let (own, _) = &by_node[&node_name(i)];
            assert_eq!(
                answers.iter().collect::<Vec<_>>(),
                [own],
                "node-{i}'s Local NodePort answers only with its own pod"
            );
        }
        let peer = peer.expect("the Local NodePort on node-2 answers");
        let peer = peer
            .trim()
            .trim_matches(['[', ']'])
            .trim_start_matches("::ffff:");
        assert_eq!(peer, client_ip, "the pod sees the outside client's address");

        // A LoadBalancer with externalTrafficPolicy Local in front of one pod on node 0: its
        // ingress is every node's address, the service port answers there from outside (on
        // node 0, where the pod is), and the health-check port says which nodes have it.
        client
            .create(
                &json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "lb-pod", "namespace": "default",
                                     "labels": {"app": "lb"}},
                        "spec": {"nodeName": node_name(0), "terminationGracePeriodSeconds": 1,
                                 "containers": [{"name": "app", "image": "busybox"}]}}),
                "default",
            )
            .await
            .expect("pod created");
        client
            .create(
                &json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "lb", "namespace": "default"},
                        "spec": {"type": "LoadBalancer", "selector": {"app": "lb"},
                                 "externalTrafficPolicy": "Local",
                                 "ports": [{"port": 8000, "targetPort": 8080}]}}),
                "default",
            )
            .await
            .expect("service created");
        let mut node_ips: Vec<String> = net.hosts.iter().map(|h| h.ip.clone()).collect();
        node_ips.sort();
        let c = client.clone();
        let lb = wait::try_until(LIMIT, || {
            let c = c.clone();
            let node_ips = node_ips.clone();
            async move {
                let svc = c.get(&services, "default", "lb").await.ok()?;
                let ingress: Vec<String> = svc["status"]["loadBalancer"]["ingress"]
                    .as_array()?
                    .iter()
                    .filter_map(|i| i["ip"].as_str().map(str::to_string))
                    .collect();
                (ingress == node_ips).then_some(svc)
            }
        })
        .await
        .unwrap_or_else(|| panic!("the load balancer's ingress never became {node_ips:?}"));
        let health_port = lb["spec"]["healthCheckNodePort"]
            .as_u64()
            .expect("a health check port");
        let hosts_ips: Vec<String> = net.hosts.iter().map(|h| h.ip.clone()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let client_net = net.clone();
        std::thread::spawn(move || {
            client_net.run_as_client(move || async move {
                let at = format!("{}:8000", hosts_ips[0]);
                let answer = wait::try_until(LIMIT, || tests::http::get(&at)).await;
                let mut health = vec![];
                for (i, ip) in hosts_ips.iter().enumerate() {
                    let at = format!("{ip}:{health_port}");
                    let want = if i == 0 { 200 } else { 503 };
                    health.push(
                        wait::try_until(LIMIT, || async {
                            tests::http::response(&at, "/")
                                .await
                                .filter(|(status, _)| *status == want)
                        })
                        .await,
                    );
                }
                let _ = tx.send((answer, health));
            })
        });
        let (answer, health) =
            tokio::task::spawn_blocking(move || rx.recv().expect("client thread"))
                .await
                .expect("client thread");
        assert_eq!(
            answer.as_deref().map(str::trim),
            Some("lb-pod"),
            "the load balancer's port on node-0"
        );
        for (i, h) in health.iter().enumerate() {
            let (_, body) = h
                .as_ref()
                .unwrap_or_else(|| panic!("node-{i}'s health check never answered as it should"));
            let local = if i == 0 { 1 } else { 0 };
            assert!(
                body.contains(&format!("\"localEndpoints\":{local}"))
                    && body.contains("\"name\":\"lb\""),
                "node-{i}'s health check: {body}"
            );
        }

        // A UDP Service whose endpoint moves: node-0's DNS server, then node-1's. A client on
        // host 2 keeps one socket; once node-0 stops answering it (its host drops the
        // traffic), the flow conntrack pinned to it is dead until host 2's proxy deletes it
        // after the move, and then the same socket is answered by node-1.
        // The pod bridge's address, where each node's DNS server listens: the CIDR's first.
        let bridge_ip = |i: usize| {
            let base: std::net::Ipv4Addr = cidr_of[&i]
                .split_once('/')
                .and_then(|(ip, _)| ip.parse().ok())
                .expect("pod CIDR");
            std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
        };
        let endpoints_kind = Kind::of("v1", "Endpoints").expect("Endpoints");
        let dns_endpoints = |ip: String| {
            json!({"apiVersion": "v1", "kind": "Endpoints",
                   "metadata": {"name": "udp-dns", "namespace": "default"},
                   "subsets": [{"addresses": [{"ip": ip}],
                                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]})
        };
        client
            .create(
                &json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "udp-dns", "namespace": "default"},
                        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
                "default",
            )
            .await
            .expect("service created");
        client
            .create(&dns_endpoints(bridge_ip(0)), "default")
            .await
            .expect("endpoints created");
        let udp_ip = client
            .get(&services, "default", "udp-dns")
            .await
            .expect("udp-dns")["spec"]["clusterIP"]
            .as_str()
            .expect("cluster IP")
            .to_string();
        // The client starts once host 2 has the rule (a flow made before it would be stale
        // for another reason: its first packet went to no endpoint).
        let host2 = net.hosts[2].ns.clone();
        let dnat_to_0 = format!("--to-destination {}:53", bridge_ip(0));
        wait::until("host 2's rule for udp-dns", LIMIT, || {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &host2, "iptables-save", "-t", "nat"])
                .output();
            let has = out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&dnat_to_0));
            async move { has.then_some(()) }
        })
        .await;
        let (to_client, client_rx) = std::sync::mpsc::channel::<()>();
        let (client_tx, from_client) = std::sync::mpsc::channel::<(&'static str, bool)>();
        let client_net = net.clone();
        std::thread::spawn(move || {
            client_net.run_in_host(2, move || async move {
                let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
                    .await
                    .expect("client socket");
                socket
                    .connect(format!("{udp_ip}:53"))
                    .await
                    .expect("connect");
                let mut id = 0u16;
                // One question; whether it was answered within a second.
                let mut ask = || {
                    id = id.wrapping_add(1);
                    let (socket, id) = (&socket, id);
                    async move {
                        let q =
                            tests::dns_wire::query(id, "kube-dns.kube-system.svc.cluster.local");
                        socket.send(&q).await.ok()?;
                        let mut buf = [0u8; 1500];
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                        loop {
                            let len = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
                                .await
                                .ok()?
                                .ok()?;
                            if tests::dns_wire::answered(
                                &buf[..len],
                                id,
                                tests::dns_wire::Expect::Address,
                            ) {
                                return Some(());
                            }
                        }
                    }
                };
                let mut answered = false;
                let started = std::time::Instant::now();
                while !answered && started.elapsed() < LIMIT {
                    answered = ask().await.is_some();
                }
                let _ = client_tx.send(("node-0 answers", answered));
                // Host 0 now drops the traffic: the pinned flow gets no answer.
                let _ = client_rx.recv();
                let _ = client_tx.send(("no answer once node-0 drops", ask().await.is_none()));
                // The endpoint moved to node-1: the same socket is answered again.
                let _ = client_rx.recv();
                let started = std::time::Instant::now();
                let mut answered = false;
                while !answered && started.elapsed() < Duration::from_secs(15) {
                    answered = ask().await.is_some();
                }
                let _ = client_tx.send(("node-1 answers the same socket", answered));
            })
        });
        let next = || {
            let (what, ok) = from_client.recv().expect("client thread");
            assert!(ok, "UDP service: {what}\n{}", hosts.logs());
        };
        next();
        let dropped = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.hosts[0].ns,
                "iptables",
                "-I",
                "INPUT",
                "-p",
                "udp",
            ])
            .args(["--dport", "53", "-s", &net.hosts[2].ip, "-j", "DROP"])
            .status()
            .expect("iptables runs");
        assert!(dropped.success());
        let _ = to_client.send(());
        next();
        let mut moved = client
            .get(&endpoints_kind, "default", "udp-dns")
            .await
            .expect("endpoints");
        moved["subsets"] = dns_endpoints(bridge_ip(1))["subsets"].clone();
        client
            .update(&moved, "default")
            .await
            .expect("endpoints moved");
        let _ = to_client.send(());
        next();

        // Node 2's agent dies: its pod is replaced on another node and the service follows.
        let mut hosts = hosts;
        hosts.agents[2].kill();
        let c = client.clone();
        let moved = wait::try_until(LIMIT, || {
            let c = c.clone();
            async move {
                let now = web_pods(&c).await;
                let all_elsewhere = now.len() == 3 && now.values().all(|(n, _)| *n != node_name(2));
                all_elsewhere.then_some(now)
            }
        })
        .await
        .unwrap_or_else(|| panic!("node-2's pod was never replaced\n{}", hosts.logs()));
        let live: BTreeSet<String> = moved.keys().cloned().collect();
        let target = format!("{cluster_ip}:80");
        let live_ref = &live;
        wait::until("only live pods to answer, 20 times in a row", LIMIT, || {
            let target = target.clone();
            async move {
                for _ in 0..20 {
                    let a = tests::http::get(&target).await?;
                    if !live_ref.contains(a.trim()) {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;

        // The Node deleted: every remaining host drops its route.
        client
            .delete(&nodes, "", &node_name(2))
            .await
            .expect("node deleted");
        for i in 0..2 {
            let ns = net.hosts[i].ns.clone();
            let gone = format!("{} via {}", cidr_of[&2], net.hosts[2].ip);
            wait::until(&format!("host {i} to drop {gone}"), LIMIT, || {
                let still = routes_in(&ns).contains(&gone);
                async move { (!still).then_some(()) }
            })
            .await;
        }
    });
}
