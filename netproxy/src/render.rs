//! The one pure function that turns every service port of the cluster into iptables-restore
//! text for the filter and nat tables, in the shape of kube-proxy's iptables proxier:
//!
//! - nat `SKIFF-SERVICES` matches each cluster IP (and external and load-balancer IPs) and
//!   port and jumps to the port's `SKIFF-SVC-*` chain (external traffic through its
//!   `SKIFF-EXT-*` chain, which marks it for masquerading first); its last rule sends traffic
//!   to local addresses on to `SKIFF-NODEPORTS`.
//! - `SKIFF-SVC-*` marks traffic from outside the cluster CIDR for masquerading, keeps a
//!   client on its endpoint under sessionAffinity ClientIP (`recent`), then picks an endpoint
//!   with equal probability: rule i of n matches with probability 1/(n−i), the last always.
//! - `SKIFF-SEP-*` masquerades hairpin traffic (an endpoint reaching itself through the
//!   service) and DNATs to the endpoint.
//! - A port without ready endpoints gets no nat rules but a filter REJECT, so clients see
//!   "connection refused" at once instead of waiting for a timeout.
//! - `SKIFF-POSTROUTING` masquerades what was marked; filter `SKIFF-FORWARD` lets marked and
//!   established service traffic through a host whose FORWARD policy drops.
//!
//! The rules are rendered per table and chain ([`Ruleset`]); its full text declares (and so
//! flushes) every chain, and flushes and deletes chains of Skiff's that exist in the kernel
//! but are no longer rendered, so one `iptables-restore --noflush` brings the tables to
//! exactly this state without touching anyone else's rules (a partial text: see
//! [`crate::ruleset`]). The jumps from the built-in chains are not here: the applier adds
//! them once.

use std::collections::BTreeSet;

use crate::chains::{
    endpoint_chain, external_chain, local_chain, service_chain, EXTERNAL_SERVICES, FORWARD,
    MARK_MASQ, MASQ_MARK, NODEPORTS, POSTROUTING, SERVICES,
};
use crate::model::{Endpoint, ServicePort};
use crate::ruleset::{Ruleset, Table, FIXED_FILTER, FIXED_NAT};

/// What the rules depend on besides the services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// The cluster's pod network (`10.244.0.0/16`): traffic to a cluster IP from outside it
    /// is masqueraded, so that replies come back through this node. None: not known, no such
    /// rule.
    pub cluster_cidr: Option<String>,
    /// Whether this node's pod network is Skiff's own (the default bridge): then pods' traffic
    /// leaving the cluster network is masqueraded here (pod-to-pod traffic, across nodes too,
    /// keeps its source address) and the cluster network is forwarded even where the FORWARD
    /// policy drops. Needs `cluster_cidr`.
    pub pod_network: bool,
    /// This node's name: endpoints on it are local (externalTrafficPolicy and
    /// internalTrafficPolicy Local). None: no endpoint is local.
    pub node_name: Option<String>,
    /// NodePorts answer on 127.0.0.1 too (the agent turned on `route_localnet`, as kube-proxy
    /// does): then packets to 127.0.0.0/8 from elsewhere that were not DNATed are dropped, so
    /// that setting exposes nothing bound to localhost (CVE-2020-8558).
    pub localhost_node_ports: bool,
}

/// The rendered tables as one full restore text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// iptables-restore input: `*filter … COMMIT` then `*nat … COMMIT`.
    pub text: String,
    /// How many rules (`-A` lines) it holds.
    pub rules: usize,
}

/// `-m comment --comment TEXT`, quoted when it has spaces.
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("-m comment --comment \"{text}\"")
    } else {
        format!("-m comment --comment {text}")
    }
}

/// `-m tcp -p tcp` and the like.
fn proto(sp: &ServicePort) -> String {
    let p = sp.protocol.as_str();
    format!("-m {p} -p {p}")
}

/// The probability of rule `i` of `n` picking its endpoint, as kube-proxy writes it.
fn probability(i: usize, n: usize) -> String {
    format!("{:.10}", 1.0 / (n - i) as f64)
}

/// Renders the rules for `ports` on a node described by `node` as one full restore text;
/// `existing_nat` names the SKIFF- chains the nat table holds now (from `iptables-save`), so
/// stale ones go.
pub fn render(
    ports: &[ServicePort],
    node: &NodeContext,
    existing_nat: &BTreeSet<String>,
) -> Rendered {
    let rules = render_rules(ports, node);
    Rendered {
        text: rules.full_text(existing_nat),
        rules: rules.rules(),
    }
}

/// Renders the rules for `ports` on a node described by `node`, per table and chain.
pub fn render_rules(ports: &[ServicePort], node: &NodeContext) -> Ruleset {
    let mut filter = Table::default();
    let mut nat = Table::default();
    for c in FIXED_FILTER {
        filter.chain(c);
    }
    for c in FIXED_NAT {
        nat.chain(c);
    }

    if node.localhost_node_ports {
        filter.rule(
            SERVICES,
            &format!(
                "{} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate \
                 RELATED,ESTABLISHED,DNAT -j DROP",
                comment("block incoming localnet connections")
            ),
        );
    }
    filter.rule(FORWARD, "-m conntrack --ctstate INVALID -j DROP");
    filter.rule(
        FORWARD,
        &format!(
            "{} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
            comment("skiff forwarding rules")
        ),
    );
    filter.rule(
        FORWARD,
        &format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("skiff forwarding conntrack rule")
        ),
    );
    if let (true, Some(cidr)) = (node.pod_network, &node.cluster_cidr) {
        for (flow, what) in [("-s", "from"), ("-d", "to")] {
            filter.rule(
                FORWARD,
                &format!(
                    "{} {flow} {cidr} -j ACCEPT",
                    comment(&format!("skiff pod network traffic {what} pods"))
                ),
            );
        }
        nat.rule(
            POSTROUTING,
            &format!(
                "{} -s {cidr} ! -d {cidr} -j MASQUERADE --random-fully",
                comment("skiff pod traffic leaving the cluster network")
            ),
        );
    }
    nat.rule(
        POSTROUTING,
        &format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
    );
    nat.rule(POSTROUTING, &format!("-j MARK --xor-mark {MASQ_MARK}"));
    nat.rule(
        POSTROUTING,
        &format!(
            "{} -j MASQUERADE --random-fully",
            comment("skiff service traffic requiring SNAT")
        ),
    );
    nat.rule(MARK_MASQ, &format!("-j MARK --or-mark {MASQ_MARK}"));

    for sp in ports {
        render_port(sp, node, &mut filter, &mut nat);
    }
    nat.rule(
        SERVICES,
        &format!(
            "{} -m addrtype --dst-type LOCAL -j {NODEPORTS}",
            comment("skiff service nodeports; NOTE: this must be the last rule in this chain")
        ),
    );
    Ruleset { filter, nat }
}

/// The rules that pick one of `eps` (with their endpoint chains) in `chain`: affinity checks
/// first, then endpoint i of n with probability 1/(n−i).
fn pick_rules(nat: &mut Table, chain: &str, sp: &ServicePort, eps: &[(&Endpoint, String)]) {
    let id = sp.id();
    if let Some(seconds) = sp.affinity_seconds {
        for (ep, sep) in eps {
            nat.rule(
                chain,
                &format!(
                    "{} -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck \
                     --seconds {seconds} --reap -j {sep}",
                    comment(&format!("{id} -> {}:{}", ep.ip, ep.port))
                ),
            );
        }
    }
    let n = eps.len();
    for (i, (ep, sep)) in eps.iter().enumerate() {
        let pick = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {}",
                probability(i, n)
            )
        } else {
            String::new()
        };
        nat.rule(
            chain,
            &format!(
                "{}{pick} -j {sep}",
                comment(&format!("{id} -> {}:{}", ep.ip, ep.port))
            ),
        );
    }
}

/// REJECT (no endpoints at all) or DROP (no local ones under a Local policy) in filter, for
/// the cluster IP when `internal`, and for the external addresses and the NodePort when
/// `external` is given.
fn refuse(
    filter: &mut Table,
    sp: &ServicePort,
    internal: bool,
    external: Option<&[(String, std::net::Ipv4Addr)]>,
    why: &str,
    verdict: &str,
) {
    let id = sp.id();
    let proto = proto(sp);
    let port = sp.port;
    let note = comment(&format!("{id} {why}"));
    if internal {
        filter.rule(
            SERVICES,
            &format!(
                "{note} {proto} -d {}/32 --dport {port} -j {verdict}",
                sp.cluster_ip
            ),
        );
    }
    let Some(external) = external else {
        return;
    };
    for (_, ip) in external {
        filter.rule(
            EXTERNAL_SERVICES,
            &format!("{note} {proto} -d {ip}/32 --dport {port} -j {verdict}"),
        );
    }
    if let Some(np) = sp.node_port {
        filter.rule(
            EXTERNAL_SERVICES,
            &format!("{note} -m addrtype --dst-type LOCAL {proto} --dport {np} -j {verdict}"),
        );
    }
}

fn render_port(sp: &ServicePort, node: &NodeContext, filter: &mut Table, nat: &mut Table) {
    let id = sp.id();
    let proto = proto(sp);
    let port = sp.port;
    let cluster_ip = sp.cluster_ip;
    let external_dests: Vec<(String, std::net::Ipv4Addr)> = sp
        .external_ips
        .iter()
        .map(|ip| (format!("{id} external IP"), *ip))
        .chain(
            sp.load_balancer_ips
                .iter()
                .map(|ip| (format!("{id} loadbalancer IP"), *ip)),
        )
        .collect();
    let has_external = !external_dests.is_empty() || sp.node_port.is_some();

    if sp.endpoints.is_empty() {
        refuse(
            filter,
            sp,
            true,
            Some(&external_dests),
            "has no endpoints",
            "REJECT",
        );
        return;
    }

    let all: Vec<(&Endpoint, String)> = sp
        .endpoints
        .iter()
        .map(|ep| (ep, endpoint_chain(sp, ep)))
        .collect();
    let local: Vec<(&Endpoint, String)> = all
        .iter()
        .filter(|(ep, _)| node.node_name.is_some() && ep.node_name == node.node_name)
        .cloned()
        .collect();

    // The cluster-wide pick, and the local one when a Local policy needs it. The chain that
    // takes cluster IP traffic first marks what comes from outside the pod network.
    let svc = service_chain(sp);
    let svl = local_chain(sp);
    let internal_target = if sp.internal_local { &svl } else { &svc };
    let cluster_ip_masq = |nat: &mut Table, chain: &str| {
        if let Some(cidr) = &node.cluster_cidr {
            nat.rule(
                chain,
                &format!(
                    "{} {proto} -d {cluster_ip}/32 --dport {port} ! -s {cidr} -j {MARK_MASQ}",
                    comment(&format!("{id} cluster IP"))
                ),
            );
        }
    };
    nat.chain(&svc);
    if !sp.internal_local {
        cluster_ip_masq(nat, &svc);
    }
    pick_rules(nat, &svc, sp, &all);
    let needs_local = sp.internal_local || (sp.external_local && has_external);
    if needs_local && !local.is_empty() {
        nat.chain(&svl);
        if sp.internal_local {
            cluster_ip_masq(nat, &svl);
        }
        pick_rules(nat, &svl, sp, &local);
    }

    // Traffic to the cluster IP, from inside the cluster.
    if sp.internal_local && local.is_empty() {
        refuse(filter, sp, true, None, "has no local endpoints", "DROP");
    } else {
        nat.rule(
            SERVICES,
            &format!(
                "{} {proto} -d {cluster_ip}/32 --dport {port} -j {internal_target}",
                comment(&format!("{id} cluster IP"))
            ),
        );
    }

    // Traffic from outside: NodePorts, external and load-balancer IPs.
    if has_external {
        let ext = external_chain(sp);
        nat.chain(&ext);
        for (what, ip) in &external_dests {
            nat.rule(
                SERVICES,
                &format!(
                    "{} {proto} -d {ip}/32 --dport {port} -j {ext}",
                    comment(what)
                ),
            );
        }
        if let Some(np) = sp.node_port {
            nat.rule(
                NODEPORTS,
                &format!("{} {proto} --dport {np} -j {ext}", comment(&id)),
            );
        }
        if sp.external_local {
            // Pods and the node itself still reach every endpoint (kube-proxy's
            // short-circuit); clients from outside reach only this node's endpoints, with
            // their own source address kept, or nothing.
            if let Some(cidr) = &node.cluster_cidr {
                nat.rule(
                    &ext,
                    &format!(
                        "{} -s {cidr} -j {svc}",
                        comment(&format!("pod traffic for {id} external destinations"))
                    ),
                );
            }
            nat.rule(
                &ext,
                &format!(
                    "{} -m addrtype --src-type LOCAL -j {MARK_MASQ}",
                    comment(&format!(
                        "masquerade LOCAL traffic for {id} external destinations"
                    ))
                ),
            );
            nat.rule(
                &ext,
                &format!(
                    "{} -m addrtype --src-type LOCAL -j {svc}",
                    comment(&format!(
                        "route LOCAL traffic for {id} external destinations"
                    ))
                ),
            );
            if local.is_empty() {
                refuse(
                    filter,
                    sp,
                    false,
                    Some(&external_dests),
                    "has no local endpoints",
                    "DROP",
                );
            } else {
                nat.rule(&ext, &format!("-j {svl}"));
            }
        } else {
            nat.rule(
                &ext,
                &format!(
                    "{} -j {MARK_MASQ}",
                    comment(&format!(
                        "masquerade traffic for {id} external destinations"
                    ))
                ),
            );
            nat.rule(&ext, &format!("-j {svc}"));
        }
    }

    for (ep, sep) in &all {
        nat.chain(sep);
        nat.rule(
            sep,
            &format!("{} -s {}/32 -j {MARK_MASQ}", comment(&id), ep.ip),
        );
        let affinity = if sp.affinity_seconds.is_some() {
            format!(" -m recent --name {sep} --mask 255.255.255.255 --rsource --set")
        } else {
            String::new()
        };
        nat.rule(
            sep,
            &format!(
                "{} {proto}{affinity} -j DNAT --to-destination {}:{}",
                comment(&id),
                ep.ip,
                ep.port
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Protocol};
    use std::net::Ipv4Addr;

    fn web(endpoints: &[(&str, u16)]) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Ipv4Addr::new(10, 96, 0, 20),
            port: 80,
            node_port: Some(30080),
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_seconds: None,
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

    fn node() -> NodeContext {
        NodeContext {
            cluster_cidr: Some("10.244.0.0/16".into()),
            pod_network: false,
            node_name: Some("n1".into()),
            localhost_node_ports: false,
        }
    }

    /// The rules after the fixed ones, with chain hashes shown as SVC, EXT, SEP1, SEP2…
    fn service_rules(r: &Rendered, sp: &ServicePort) -> String {
        let mut text = r.text.clone();
        text = text.replace(&service_chain(sp), "SVC");
        text = text.replace(&external_chain(sp), "EXT");
        for (i, ep) in sp.endpoints.iter().enumerate() {
            text = text.replace(&endpoint_chain(sp, ep), &format!("SEP{}", i + 1));
        }
        text
    }

    #[test]
    fn three_endpoints_behind_a_cluster_ip_and_node_port() {
        let sp = web(&[
            ("10.244.0.5", 8080),
            ("10.244.1.3", 8080),
            ("10.244.2.9", 8080),
        ]);
        let r = render(std::slice::from_ref(&sp), &node(), &BTreeSet::new());
        let expected = r#"*filter
:SKIFF-SERVICES - [0:0]
:SKIFF-EXTERNAL-SERVICES - [0:0]
:SKIFF-FORWARD - [0:0]
-A SKIFF-FORWARD -m conntrack --ctstate INVALID -j DROP
-A SKIFF-FORWARD -m comment --comment "skiff forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A SKIFF-FORWARD -m comment --comment "skiff forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:SKIFF-SERVICES - [0:0]
:SKIFF-NODEPORTS - [0:0]
:SKIFF-POSTROUTING - [0:0]
:SKIFF-MARK-MASQ - [0:0]
:SVC - [0:0]
:EXT - [0:0]
:SEP1 - [0:0]
:SEP2 - [0:0]
:SEP3 - [0:0]
-A SKIFF-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A SKIFF-POSTROUTING -j MARK --xor-mark 0x4000
-A SKIFF-POSTROUTING -m comment --comment "skiff service traffic requiring SNAT" -j MASQUERADE --random-fully
-A SKIFF-MARK-MASQ -j MARK --or-mark 0x4000
-A SVC -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 ! -s 10.244.0.0/16 -j SKIFF-MARK-MASQ
-A SVC -m comment --comment "default/web:http -> 10.244.0.5:8080" -m statistic --mode random --probability 0.3333333333 -j SEP1
-A SVC -m comment --comment "default/web:http -> 10.244.1.3:8080" -m statistic --mode random --probability 0.5000000000 -j SEP2
-A SVC -m comment --comment "default/web:http -> 10.244.2.9:8080" -j SEP3
-A SKIFF-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 -j SVC
-A SKIFF-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30080 -j EXT
-A EXT -m comment --comment "masquerade traffic for default/web:http external destinations" -j SKIFF-MARK-MASQ
-A EXT -j SVC
-A SEP1 -m comment --comment default/web:http -s 10.244.0.5/32 -j SKIFF-MARK-MASQ
-A SEP1 -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.0.5:8080
-A SEP2 -m comment --comment default/web:http -s 10.244.1.3/32 -j SKIFF-MARK-MASQ
-A SEP2 -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.3:8080
-A SEP3 -m comment --comment default/web:http -s 10.244.2.9/32 -j SKIFF-MARK-MASQ
-A SEP3 -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.9:8080
-A SKIFF-SERVICES -m comment --comment "skiff service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS
COMMIT
"#;
        assert_eq!(service_rules(&r, &sp), expected);
        assert_eq!(r.rules, 22);
    }

    #[test]
    fn no_endpoints_reject_at_once_and_stale_chains_go() {
        let mut sp = web(&[]);
        sp.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
        let existing: BTreeSet<String> = [
            "SKIFF-SERVICES".to_string(),
            "SKIFF-SVC-0123456789ABCDEF".to_string(),
            "KUBE-SVC-ABC".to_string(),
        ]
        .into();
        let r = render(&[sp], &node(), &existing);
        let filter: Vec<&str> = r.text.lines().filter(|l| l.contains("REJECT")).collect();
        assert_eq!(
            filter,
            [
                "-A SKIFF-SERVICES -m comment --comment \"default/web:http has no endpoints\" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 -j REJECT",
                "-A SKIFF-EXTERNAL-SERVICES -m comment --comment \"default/web:http has no endpoints\" -m tcp -p tcp -d 192.0.2.7/32 --dport 80 -j REJECT",
                "-A SKIFF-EXTERNAL-SERVICES -m comment --comment \"default/web:http has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT",
            ]
        );
        assert!(!r.text.contains("SKIFF-SVC-") || r.text.contains(":SKIFF-SVC-0123456789ABCDEF"));
        assert!(r.text.contains(":SKIFF-SVC-0123456789ABCDEF - [0:0]\n"));
        assert!(r.text.contains("-X SKIFF-SVC-0123456789ABCDEF\nCOMMIT\n"));
        assert!(!r.text.contains("KUBE-"), "other chains are not ours");
    }

    #[test]
    fn session_affinity_and_external_addresses() {
        let mut sp = web(&[("10.244.0.5", 8080), ("10.244.1.3", 8080)]);
        sp.affinity_seconds = Some(600);
        sp.node_port = None;
        sp.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
        let r = render(
            std::slice::from_ref(&sp),
            &NodeContext::default(),
            &BTreeSet::new(),
        );
        let text = service_rules(&r, &sp);
        let wanted = [
            "-A SKIFF-SERVICES -m comment --comment \"default/web:http loadbalancer IP\" -m tcp -p tcp -d 192.0.2.10/32 --dport 80 -j EXT",
            "-A SVC -m comment --comment \"default/web:http -> 10.244.0.5:8080\" -m recent --name SEP1 --mask 255.255.255.255 --rsource --rcheck --seconds 600 --reap -j SEP1",
            "-A SVC -m comment --comment \"default/web:http -> 10.244.1.3:8080\" -m recent --name SEP2 --mask 255.255.255.255 --rsource --rcheck --seconds 600 --reap -j SEP2",
            "-A SEP1 -m comment --comment default/web:http -m tcp -p tcp -m recent --name SEP1 --mask 255.255.255.255 --rsource --set -j DNAT --to-destination 10.244.0.5:8080",
        ];
        for w in wanted {
            assert!(text.contains(&format!("{w}\n")), "missing {w} in\n{text}");
        }
        // Affinity is checked before the random pick.
        let recent = text.find("--rcheck").expect("rcheck");
        let random = text.find("--probability").expect("probability");
        assert!(recent < random);
        // No cluster CIDR known: no masquerade rule for outside traffic to the cluster IP.
        assert!(!text.contains("! -s"));
        assert!(!text.contains("SKIFF-NODEPORTS -m comment --comment default/web:http"));
    }

    #[test]
    fn a_node_on_skiffs_own_pod_network_masquerades_only_traffic_leaving_it() {
        let mut node = node();
        node.pod_network = true;
        let r = render(&[], &node, &BTreeSet::new());
        let lines = |table: &str| -> Vec<String> {
            r.text
                .split("COMMIT\n")
                .find(|t| t.starts_with(&format!("*{table}")))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.starts_with("-A SKIFF-FORWARD") || l.starts_with("-A SKIFF-POSTROUTING")
                })
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            lines("filter"),
            [
                "-A SKIFF-FORWARD -m conntrack --ctstate INVALID -j DROP",
                "-A SKIFF-FORWARD -m comment --comment \"skiff forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
                "-A SKIFF-FORWARD -m comment --comment \"skiff forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A SKIFF-FORWARD -m comment --comment \"skiff pod network traffic from pods\" -s 10.244.0.0/16 -j ACCEPT",
                "-A SKIFF-FORWARD -m comment --comment \"skiff pod network traffic to pods\" -d 10.244.0.0/16 -j ACCEPT",
            ]
        );
        // Pod egress first: a marked packet leaving the cluster network is masqueraded once.
        assert_eq!(
            lines("nat"),
            [
                "-A SKIFF-POSTROUTING -m comment --comment \"skiff pod traffic leaving the cluster network\" -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE --random-fully",
                "-A SKIFF-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
                "-A SKIFF-POSTROUTING -j MARK --xor-mark 0x4000",
                "-A SKIFF-POSTROUTING -m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            ]
        );
        // Without it (another pod network), none of these rules.
        let other = render(&[], &super::tests::node(), &BTreeSet::new());
        assert!(!other.text.contains("pod network"));
        assert!(!other.text.contains("leaving the cluster network"));
    }

    #[test]
    fn local_traffic_policies_pick_only_this_nodes_endpoints() {
        let mut sp = web(&[("10.244.0.5", 8080), ("10.244.1.3", 8080)]);
        sp.endpoints[0].node_name = Some("n1".into());
        sp.endpoints[1].node_name = Some("n2".into());
        sp.external_local = true;
        let r = render(std::slice::from_ref(&sp), &node(), &BTreeSet::new());
        let svl = local_chain(&sp);
        let text = service_rules(&r, &sp).replace(&svl, "SVL");
        for w in [
            // Outside clients: only the local endpoint, no masquerade.
            "-A SVL -m comment --comment \"default/web:http -> 10.244.0.5:8080\" -j SEP1",
            "-A EXT -m comment --comment \"pod traffic for default/web:http external destinations\" -s 10.244.0.0/16 -j SVC",
            "-A EXT -m comment --comment \"masquerade LOCAL traffic for default/web:http external destinations\" -m addrtype --src-type LOCAL -j SKIFF-MARK-MASQ",
            "-A EXT -m comment --comment \"route LOCAL traffic for default/web:http external destinations\" -m addrtype --src-type LOCAL -j SVC",
            "-A EXT -j SVL",
            // The cluster IP still spreads over both.
            "-A SKIFF-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 -j SVC",
        ] {
            assert!(text.contains(&format!("{w}\n")), "missing {w} in\n{text}");
        }
        assert!(!text.contains("masquerade traffic for default/web:http external"));

        // A node without a local endpoint drops outside traffic instead of sending it on.
        let mut elsewhere = node();
        elsewhere.node_name = Some("n3".into());
        let r = render(std::slice::from_ref(&sp), &elsewhere, &BTreeSet::new());
        assert!(
            !r.text.contains(&svl),
            "no local chain without local endpoints"
        );
        assert!(r.text.contains("-A SKIFF-EXTERNAL-SERVICES -m comment --comment \"default/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP\n"));

        // internalTrafficPolicy Local: the cluster IP goes to the local pick, or is dropped.
        let mut internal = sp.clone();
        internal.external_local = false;
        internal.internal_local = true;
        let r = render(std::slice::from_ref(&internal), &node(), &BTreeSet::new());
        let text = service_rules(&r, &internal).replace(&svl, "SVL");
        assert!(text.contains("-A SKIFF-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 -j SVL\n"), "{text}");
        assert!(text.contains("-A SVL -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 ! -s 10.244.0.0/16 -j SKIFF-MARK-MASQ\n"), "{text}");
        let r = render(
            std::slice::from_ref(&internal),
            &elsewhere,
            &BTreeSet::new(),
        );
        assert!(r.text.contains("-A SKIFF-SERVICES -m comment --comment \"default/web:http has no local endpoints\" -m tcp -p tcp -d 10.96.0.20/32 --dport 80 -j DROP\n"));
    }

    #[test]
    fn localhost_node_ports_come_with_a_guard_for_localnet() {
        let mut node = node();
        let guard = "-A SKIFF-SERVICES -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n";
        assert!(!render(&[], &node, &BTreeSet::new()).text.contains(guard));
        node.localhost_node_ports = true;
        let text = render(&[], &node, &BTreeSet::new()).text;
        let filter = text.split("COMMIT\n").next().unwrap_or_default();
        assert!(filter.contains(guard), "{filter}");
    }
}
