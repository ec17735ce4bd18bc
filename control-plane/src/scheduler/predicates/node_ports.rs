//! Host ports (Kubernetes' NodePorts filter): the (protocol, hostPort) pairs a pod's containers
//! ask for, and whether a node still has them free.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{list, text};

/// Why a node fails this predicate, as the scheduler reports it.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// A protocol (TCP when unset) and a host port.
pub type HostPort = (String, i64);

/// The host ports a pod spec's containers ask for.
pub fn wanted(pod_spec: &Value) -> Vec<HostPort> {
    list(pod_spec, "containers")
        .iter()
        .flat_map(|c| list(c, "ports"))
        .filter_map(|p| {
            let port = p.get("hostPort").and_then(Value::as_i64)?;
            let protocol = match text(p, "protocol") {
                "" => "TCP",
                other => other,
            };
            Some((protocol.to_string(), port))
        })
        .collect()
}

/// Whether none of `wanted` is among the ports `used` on a node.
pub fn free(wanted: &[HostPort], used: &BTreeSet<HostPort>) -> bool {
    !wanted.iter().any(|p| used.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_ports_collide_by_protocol_and_number() {
        let spec = json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]},
            {"name": "b", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]}
        ]});
        let want = wanted(&spec);
        assert_eq!(want, [("TCP".into(), 8080), ("UDP".into(), 53)]);
        let used = |ports: &[(&str, i64)]| -> BTreeSet<HostPort> {
            ports.iter().map(|(p, n)| (p.to_string(), *n)).collect()
        };
        // (used on the node, free)
        let cases = [
            (used(&[]), true),
            (used(&[("TCP", 8080)]), false),
            (used(&[("UDP", 8080), ("TCP", 53)]), true),
            (used(&[("UDP", 53)]), false),
        ];
        for (used, want_free) in cases {
            assert_eq!(free(&want, &used), want_free, "{used:?}");
        }
        assert!(wanted(&json!({})).is_empty());
    }
}
