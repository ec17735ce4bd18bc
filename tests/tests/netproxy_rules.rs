//! The proxy's rendered rules against the real iptables, in a network namespace of the test's
//! own: the text is accepted by `iptables-restore --noflush`, lands as rendered (the service
//! port's chains, the DNATs, the REJECT of a port without endpoints), applying it again
//! changes nothing (no duplicates), the built-in chains and another program's chains are left
//! alone, and a later render that names the chains now in the kernel removes the stale ones.
//! A partial sync writes only what changed and leaves the tables as a full sync would; a full
//! sync's read-back names a chain someone flushed, and repairs it.
//! A UDP flow stays pinned to a moved endpoint until its stale conntrack entry is deleted, and
//! then reaches the new one.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use netproxy::chains::{endpoint_chain, ours_in_save, service_chain};
use netproxy::{render, Endpoint, NodeContext, Protocol, ServicePort};
use tests::netns;

fn port(name: &str, ip: [u8; 4], endpoints: &[(&str, u16)]) -> ServicePort {
    ServicePort {
        namespace: "default".into(),
        name: name.into(),
        port_name: String::new(),
        protocol: Protocol::Tcp,
        cluster_ip: Ipv4Addr::from(ip),
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        load_balancer_ips: vec![],
        affinity_seconds: Some(60),
        external_local: false,
        internal_local: false,
        endpoints: endpoints
            .iter()
            .map(|(ip, port)| Endpoint {
                ip: ip.parse().expect("ip"),
                port: *port,
                node_name: None,
            })
            .collect(),
    }
}

fn restore(text: &str) {
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iptables-restore runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("rules written");
    let out = child.wait_with_output().expect("iptables-restore ends");
    assert!(
        out.status.success(),
        "iptables-restore refused the rules: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn save(table: &str) -> String {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .expect("iptables-save runs");
    assert!(out.status.success());
    // Without the comment lines that carry a date.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn iptables(args: &[&str]) {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .expect("iptables runs");
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rendered_rules_restore_idempotently_and_stale_chains_go() {
    netns::on_one_host(|_| async move {
        let web = port(
            "web",
            [10, 96, 0, 20],
            &[("10.244.0.5", 8080), ("10.244.1.3", 8080)],
        );
        let empty = port("empty", [10, 96, 0, 21], &[]);
        let node = NodeContext {
            cluster_cidr: Some("10.244.0.0/16".into()),
            pod_network: true,
            node_name: None,
            localhost_node_ports: false,
        };
        // Someone else's chain and a jump in a built-in chain, which must survive.
        iptables(&["-t", "nat", "-N", "OTHER-CHAIN"]);
        iptables(&["-t", "nat", "-A", "PREROUTING", "-j", "OTHER-CHAIN"]);

        let first = render(
            &[web.clone(), empty.clone()],
            &node,
            &ours_in_save(&save("nat")),
        );
        restore(&first.text);
        let nat = save("nat");
        let svc = service_chain(&web);
        assert!(nat.contains(&format!(":{svc} - [0:0]")), "{nat}");
        for ep in &web.endpoints {
            let sep = endpoint_chain(&web, ep);
            assert!(
                nat.contains(&format!(
                    "-A {sep} -p tcp -m comment --comment \"default/web\" -m tcp -m recent --set \
                     --name {sep} --mask 255.255.255.255 --rsource -j DNAT --to-destination {}:{}",
                    ep.ip, ep.port
                )),
                "{nat}"
            );
        }
        assert!(!nat.contains(&service_chain(&empty)), "{nat}");
        let filter = save("filter");
        assert!(
            filter.contains(
                "-A SKIFF-SERVICES -d 10.96.0.21/32 -p tcp -m comment --comment \
                 \"default/empty has no endpoints\" -m tcp --dport 80 -j REJECT"
            ),
            "{filter}"
        );
        let rules = |t: &str| t.lines().filter(|l| l.starts_with("-A")).count();
        let rules_after_first = rules(&nat) + rules(&filter);
        assert!(rules_after_first >= first.rules, "{nat}{filter}");

        // Again: the same tables, nothing added twice.
        restore(&render(&[web.clone(), empty.clone()], &node, &ours_in_save(&nat)).text);
        assert_eq!(save("nat"), nat);
        assert_eq!(save("filter"), filter);

        // The web Service goes: its chains are named in the kernel's list, so they go too;
        // rendering without that list would have left them (the declarations alone only
        // flush what they name).
        let without_list = render(std::slice::from_ref(&empty), &node, &BTreeSet::new());
        assert!(!without_list.text.contains(&svc));
        let later = render(
            std::slice::from_ref(&empty),
            &node,
            &ours_in_save(&save("nat")),
        );
        assert!(later.text.contains(&format!("-X {svc}")));
        restore(&later.text);
        let nat = save("nat");
        assert!(
            !nat.contains("SKIFF-SVC-") && !nat.contains("SKIFF-SEP-"),
            "{nat}"
        );
        assert!(
            nat.contains(":OTHER-CHAIN - [0:0]") && nat.contains("-A PREROUTING -j OTHER-CHAIN")
        );
    });
}

#[test]
fn a_partial_sync_leaves_the_tables_as_a_full_one_would() {
    netns::on_one_host(|_| async move {
        let ipt = netproxy::Iptables::detect().expect("an iptables");
        let node = NodeContext {
            cluster_cidr: Some("10.244.0.0/16".into()),
            pod_network: true,
            node_name: None,
            localhost_node_ports: false,
        };
        let web = port(
            "web",
            [10, 96, 0, 20],
            &[("10.244.0.5", 8080), ("10.244.1.3", 8080)],
        );
        let mut api = port("api", [10, 96, 0, 22], &[("10.244.0.7", 9000)]);
        api.node_port = None;
        let gone = port("gone", [10, 96, 0, 23], &[("10.244.0.8", 9000)]);
        let (_, written) = ipt
            .sync_full(&[web.clone(), api.clone(), gone.clone()], &node, None)
            .expect("full sync");

        // One endpoint of web moves; api stays; gone goes.
        let mut moved = web.clone();
        moved.endpoints[1].ip = "10.244.2.4".parse().expect("ip");
        let now = [moved.clone(), api.clone()];
        let (report, written) = ipt
            .sync_partial(&now, &node, &written)
            .expect("partial sync");
        assert!(report.partial);
        // Written: web's pick chain, its new endpoint chain, and the two shared chains that
        // named gone (SKIFF-SERVICES, SKIFF-NODEPORTS); deleted: web's old endpoint chain and
        // gone's three (SVC, EXT, SEP). Nothing of api's.
        assert_eq!(report.chains_written, 4 + 4);
        let nat = save("nat");
        assert!(nat.contains(&endpoint_chain(&moved, &moved.endpoints[1])));
        assert!(!nat.contains(&endpoint_chain(&web, &web.endpoints[1])));
        assert!(!nat.contains(&service_chain(&gone)), "{nat}");
        assert!(nat.contains(&service_chain(&api)), "{nat}");

        // A full sync now finds exactly what was written, and changes nothing.
        let (before_nat, before_filter) = (save("nat"), save("filter"));
        let (report, _) = ipt
            .sync_full(&now, &node, Some(&written))
            .expect("full sync");
        assert_eq!(report.drift, Vec::<String>::new());
        assert_eq!(save("nat"), before_nat);
        assert_eq!(save("filter"), before_filter);

        // Nothing changed: a partial sync writes nothing. Someone deletes a rule: the next
        // full sync says so and puts it back.
        let (report, written) = ipt
            .sync_partial(&now, &node, &written)
            .expect("partial sync");
        assert_eq!(report.chains_written, 0);
        iptables(&["-t", "nat", "-F", &service_chain(&api)]);
        let (report, _) = ipt
            .sync_full(&now, &node, Some(&written))
            .expect("full sync");
        assert_eq!(report.drift.len(), 1, "{:?}", report.drift);
        assert!(report.drift[0].contains(&service_chain(&api)));
        assert_eq!(save("nat"), before_nat);
    });
}

#[test]
fn syncs_add_each_jump_once_and_clean_up_removes_every_skiff_rule() {
    netns::on_one_host(|_| async move {
        let ipt = netproxy::Iptables::detect().expect("an iptables");
        let web = port("web", [10, 96, 0, 20], &[("10.244.0.5", 8080)]);
        let node = NodeContext::default();
        let jumps = |table: &str| {
            save(table)
                .lines()
                .filter(|l| {
                    l.starts_with("-A PREROUTING")
                        || l.starts_with("-A OUTPUT")
                        || l.starts_with("-A POSTROUTING")
                        || l.starts_with("-A INPUT")
                        || l.starts_with("-A FORWARD")
                })
                .filter(|l| l.contains("SKIFF-"))
                .count()
        };
        for _ in 0..3 {
            let report = ipt.sync(std::slice::from_ref(&web), &node).expect("sync");
            assert!(report.rules > 0);
        }
        // Three in nat (PREROUTING, OUTPUT, POSTROUTING), six in filter, however many syncs.
        assert_eq!(jumps("nat"), 3, "{}", save("nat"));
        assert_eq!(jumps("filter"), 6, "{}", save("filter"));
        assert!(save("nat").contains(&service_chain(&web)));

        ipt.clean_up().expect("clean-up");
        let (nat, filter) = (save("nat"), save("filter"));
        assert!(
            !nat.contains("SKIFF-") && !filter.contains("SKIFF-"),
            "{nat}{filter}"
        );
    });
}

#[test]
fn a_moved_udp_endpoint_gets_the_flow_once_stale_conntrack_entries_are_cleared() {
    netns::on_one_host(|_| async move {
        use tokio::net::UdpSocket;
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().expect("ip runs");
            assert!(ok.success(), "ip {args:?}");
        };
        // Two endpoints on this host's own addresses, each answering with its name.
        ip(&["addr", "add", "10.244.0.5/32", "dev", "lo"]);
        ip(&["addr", "add", "10.244.1.3/32", "dev", "lo"]);
        ip(&["route", "add", "default", "dev", "eth0"]);
        for (addr, name) in [("10.244.0.5:5353", "a"), ("10.244.1.3:5353", "b")] {
            let socket = UdpSocket::bind(addr).await.expect("endpoint binds");
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                    let _ = socket.send_to(name.as_bytes(), from).await;
                }
            });
        }
        let udp_port = |endpoint: &str| {
            let mut p = port("dns", [10, 96, 0, 53], &[(endpoint, 5353)]);
            p.protocol = Protocol::Udp;
            p.port = 53;
            p.node_port = None;
            p.affinity_seconds = None;
            p
        };
        let (to_a, to_b) = (udp_port("10.244.0.5"), udp_port("10.244.1.3"));
        let ipt = netproxy::Iptables::detect().expect("an iptables");
        let node = NodeContext::default();
        // One client socket throughout: one conntrack flow.
        let client = UdpSocket::bind("10.213.0.1:40053")
            .await
            .expect("client binds");
        let ask = || async {
            client.send_to(b"?", "10.96.0.53:53").await.expect("sent");
            let mut buf = [0u8; 64];
            let got = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                client.recv_from(&mut buf),
            )
            .await;
            got.ok()
                .and_then(Result::ok)
                .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
        };

        ipt.sync(std::slice::from_ref(&to_a), &node).expect("sync");
        assert_eq!(ask().await.as_deref(), Some("a"));
        // The endpoint moves; the rules follow, but the flow still goes to the old one.
        ipt.sync(std::slice::from_ref(&to_b), &node).expect("sync");
        assert_eq!(
            ask().await.as_deref(),
            Some("a"),
            "the flow is pinned to the old endpoint"
        );
        // Deleting the stale flows sends the next datagram to the new endpoint.
        let stale =
            netproxy::conntrack::stale(std::slice::from_ref(&to_a), std::slice::from_ref(&to_b));
        assert_eq!(stale.len(), 1, "{stale:?}");
        let errors = netproxy::conntrack::clear(&stale);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ask().await.as_deref(), Some("b"));
        // Nothing left to delete is not an error.
        assert!(netproxy::conntrack::clear(&stale).is_empty());
    });
}
