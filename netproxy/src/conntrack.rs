//! Stale UDP flows. A UDP "connection" lives in conntrack until it has been idle for its
//! timeout, and every packet of it follows the NAT decided for its first: a client that keeps
//! sending to a Service from one socket stays DNATed to an endpoint that is gone, or — when the
//! Service had no endpoint at first — never DNATed at all. As kube-proxy does, after each sync
//! the flows to an endpoint that left a UDP service port are deleted (by cluster, external,
//! load-balancer address and by NodePort), and so are the flows to a UDP service port that had
//! no endpoints and now has some. `stale` is pure; `clear` runs Debian's `conntrack`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use crate::model::{Protocol, ServicePort};

/// Flows to delete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stale {
    /// Flows to `ip:port` DNATed to `endpoint`.
    ToEndpoint {
        ip: Ipv4Addr,
        port: u16,
        endpoint: Ipv4Addr,
    },
    /// Flows to NodePort `port` DNATed to `endpoint`.
    NodePortToEndpoint { port: u16, endpoint: Ipv4Addr },
    /// Every flow to `ip:port` (it had no endpoint to go to).
    To { ip: Ipv4Addr, port: u16 },
    /// Every flow to NodePort `port`.
    NodePort { port: u16 },
}

impl Stale {
    /// `conntrack -D` arguments for these flows.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(String::from).into();
        match self {
            Stale::ToEndpoint { ip, port, endpoint } => a.extend([
                "--orig-dst".into(),
                ip.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            Stale::NodePortToEndpoint { port, endpoint } => a.extend([
                "--orig-port-dst".into(),
                port.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            Stale::To { ip, port } => a.extend([
                "--orig-dst".into(),
                ip.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
            ]),
            Stale::NodePort { port } => a.extend(["--orig-port-dst".into(), port.to_string()]),
        }
        a
    }
}

fn addresses(sp: &ServicePort) -> Vec<Ipv4Addr> {
    std::iter::once(sp.cluster_ip)
        .chain(sp.external_ips.iter().copied())
        .chain(sp.load_balancer_ips.iter().copied())
        .collect()
}

/// The flows that `before` (the ports of the last sync) leaves stale in `after` (this sync's).
pub fn stale(before: &[ServicePort], after: &[ServicePort]) -> Vec<Stale> {
    let key = |sp: &ServicePort| (sp.id(), sp.protocol, sp.port);
    let mut out = BTreeSet::new();
    for now in after.iter().filter(|sp| sp.protocol == Protocol::Udp) {
        let Some(then) = before.iter().find(|b| key(b) == key(now)) else {
            continue;
        };
        let then_eps: BTreeSet<Ipv4Addr> = then.endpoints.iter().map(|e| e.ip).collect();
        let now_eps: BTreeSet<Ipv4Addr> = now.endpoints.iter().map(|e| e.ip).collect();
        if then_eps.is_empty() && !now_eps.is_empty() {
            for ip in addresses(now) {
                out.insert(Stale::To { ip, port: now.port });
            }
            if let Some(port) = now.node_port {
                out.insert(Stale::NodePort { port });
            }
        }
        for endpoint in then_eps.difference(&now_eps) {
            for ip in addresses(then) {
                out.insert(Stale::ToEndpoint {
                    ip,
                    port: then.port,
                    endpoint: *endpoint,
                });
            }
            if let Some(port) = then.node_port {
                out.insert(Stale::NodePortToEndpoint {
                    port,
                    endpoint: *endpoint,
                });
            }
        }
    }
    // A UDP port that went away entirely: its flows to its endpoints go too.
    for then in before.iter().filter(|sp| sp.protocol == Protocol::Udp) {
        if after.iter().any(|a| key(a) == key(then)) {
            continue;
        }
        for e in &then.endpoints {
            for ip in addresses(then) {
                out.insert(Stale::ToEndpoint {
                    ip,
                    port: then.port,
                    endpoint: e.ip,
                });
            }
        }
    }
    out.into_iter().collect()
}

#[derive(Debug, thiserror::Error)]
#[error("conntrack {args}: {message}")]
pub struct ConntrackError {
    pub args: String,
    pub message: String,
}

/// Deletes `flows` with `conntrack -D`; "no such flow" is not an error. The errors of the
/// deletions that failed are returned (a missing `conntrack` program among them).
pub fn clear(flows: &[Stale]) -> Vec<ConntrackError> {
    let mut errors = vec![];
    for f in flows {
        let args = f.args();
        let failed = |message: String| ConntrackError {
            args: args.join(" "),
            message,
        };
        match Command::new("conntrack").args(&args).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr);
                // conntrack exits 1 when nothing matched.
                if !text.contains("0 flow entries have been deleted") {
                    errors.push(failed(text.trim().to_string()));
                }
            }
            Err(e) => errors.push(failed(format!("{e} (install Debian's conntrack package)"))),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;

    fn dns(endpoints: &[&str], node_port: Option<u16>) -> ServicePort {
        ServicePort {
            namespace: "kube-system".into(),
            name: "dns".into(),
            port_name: "dns".into(),
            protocol: Protocol::Udp,
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 53,
            node_port,
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_seconds: None,
            endpoints: endpoints
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().expect("ip"),
                    port: 53,
                    node_name: None,
                })
                .collect(),
            external_local: false,
            internal_local: false,
        }
    }

    #[test]
    fn a_removed_endpoint_and_a_first_endpoint_leave_stale_flows() {
        let svc = Ipv4Addr::new(10, 96, 0, 10);
        let moved = stale(
            &[dns(&["10.244.0.5", "10.244.1.6"], Some(30053))],
            &[dns(&["10.244.1.6", "10.244.2.7"], Some(30053))],
        );
        let gone: Ipv4Addr = "10.244.0.5".parse().expect("ip");
        assert_eq!(
            moved,
            [
                Stale::ToEndpoint {
                    ip: svc,
                    port: 53,
                    endpoint: gone
                },
                Stale::NodePortToEndpoint {
                    port: 30053,
                    endpoint: gone
                },
            ]
        );
        assert_eq!(
            stale(&[dns(&[], None)], &[dns(&["10.244.2.7"], None)]),
            [Stale::To { ip: svc, port: 53 }]
        );
        assert!(stale(&[dns(&["10.244.2.7"], None)], &[dns(&["10.244.2.7"], None)]).is_empty());
        assert!(
            stale(&[], &[dns(&["10.244.2.7"], None)]).is_empty(),
            "nothing known before"
        );
        let mut tcp = dns(&["10.244.0.5"], None);
        tcp.protocol = Protocol::Tcp;
        let mut tcp_after = tcp.clone();
        tcp_after.endpoints.clear();
        assert!(
            stale(&[tcp], &[tcp_after]).is_empty(),
            "TCP flows end by themselves"
        );
        assert_eq!(
            Stale::ToEndpoint {
                ip: svc,
                port: 53,
                endpoint: gone
            }
            .args()
            .join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.0.5"
        );
    }
}
