//! Pods across nodes the host-gw way (as flannel's host-gw backend and kindnet do): every
//! other node's pod CIDR is routed via that node's address, so a pod reaches a pod on another
//! node by its IP, without a tunnel and without NAT. This module is the pure part: which routes
//! the Node objects ask for, and what to change to get from the routes the kernel holds to
//! those. `route_table` talks to the kernel; `pod_routes` keeps the two in step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

/// One route to a node's pods: `cidr via node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRoute {
    pub cidr: Ipv4Net,
    pub via: Ipv4Addr,
}

impl std::fmt::Display for PodRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.cidr, self.via)
    }
}

/// The address other nodes reach `node` on: its first InternalIP (IPv4), as flannel picks it.
pub fn node_address(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The IPv4 pod CIDR the control plane assigned to `node`, if any (a malformed one counts as
/// none: the node cannot be routed to).
pub fn node_pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let primary = spec.pod_cidr.iter();
    let all = spec.pod_cidrs.iter().flatten();
    primary
        .chain(all)
        .find_map(|c| c.parse::<Ipv4Net>().ok())
        .map(|c| c.trunc())
}

/// The routes this node (`this_node`, whose own address is `this_address`) wants: one per
/// other node that has both a pod CIDR and an address. A node that shares this node's address
/// or pod CIDR gets none (its pods are here, or the objects disagree); when two nodes claim
/// one CIDR, the first by name wins, so every node picks the same.
pub fn wanted<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    this_node: &str,
    this_address: Option<Ipv4Addr>,
) -> BTreeSet<PodRoute> {
    let mut named: Vec<(&str, &Node)> = nodes
        .into_iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n))
        .collect();
    named.sort_by_key(|(name, _)| *name);
    let own_cidr = named
        .iter()
        .find(|(name, _)| *name == this_node)
        .and_then(|(_, n)| node_pod_cidr(n));
    let mut by_cidr: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
    for (name, node) in named {
        if name == this_node {
            continue;
        }
        let (Some(cidr), Some(via)) = (node_pod_cidr(node), node_address(node)) else {
            continue;
        };
        if Some(via) == this_address || Some(cidr) == own_cidr {
            continue;
        }
        by_cidr.entry(cidr).or_insert(via);
    }
    by_cidr
        .into_iter()
        .map(|(cidr, via)| PodRoute { cidr, via })
        .collect()
}

/// What to change in the kernel.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to add (or to replace one of ours for the same CIDR).
    pub add: Vec<PodRoute>,
    /// Routes of ours to remove.
    pub remove: Vec<PodRoute>,
    /// Wanted routes left out because a route that is not ours already covers that exact
    /// CIDR (someone else routes it; Skiff does not fight over it).
    pub blocked: Vec<PodRoute>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The changes from `ours` (routes in the kernel that Skiff made) and `others` (destinations
/// of routes in the same table that someone else made) to `wanted`.
pub fn plan(
    wanted: &BTreeSet<PodRoute>,
    ours: &BTreeSet<PodRoute>,
    others: &BTreeSet<Ipv4Net>,
) -> Plan {
    let mut p = Plan::default();
    for r in wanted {
        if others.contains(&r.cidr) {
            p.blocked.push(*r);
        } else if !ours.contains(r) {
            p.add.push(*r);
        }
    }
    let replaced: BTreeSet<Ipv4Net> = p.add.iter().map(|r| r.cidr).collect();
    for r in ours {
        // A route of ours whose CIDR is re-added with another gateway is replaced in place
        // (no moment without a route); any other route of ours that is not wanted goes.
        if !wanted.contains(r) && !replaced.contains(&r.cidr) {
            p.remove.push(*r);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: Option<&str>, cidr: Option<&str>) -> Node {
        let mut v = json!({"metadata": {"name": name}, "spec": {}, "status": {}});
        if let Some(c) = cidr {
            v["spec"]["podCIDR"] = json!(c);
            v["spec"]["podCIDRs"] = json!([c]);
        }
        if let Some(ip) = ip {
            v["status"]["addresses"] = json!([{"type": "Hostname", "address": name},
                                              {"type": "InternalIP", "address": ip}]);
        }
        serde_json::from_value(v).expect("node")
    }

    fn route(cidr: &str, via: &str) -> PodRoute {
        PodRoute {
            cidr: cidr.parse().expect("cidr"),
            via: via.parse().expect("ip"),
        }
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_address_gets_a_route() {
        let nodes = [
            node("a", Some("10.0.0.1"), Some("10.244.0.0/24")),
            node("b", Some("10.0.0.2"), Some("10.244.1.0/24")),
            node("c", Some("10.0.0.3"), Some("10.244.2.0/24")),
            node("no-cidr", Some("10.0.0.4"), None),
            node("no-address", None, Some("10.244.4.0/24")),
        ];
        let got = wanted(&nodes, "a", Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [
                route("10.244.1.0/24", "10.0.0.2"),
                route("10.244.2.0/24", "10.0.0.3")
            ]
        );
    }

    #[test]
    fn nodes_sharing_this_address_or_cidr_and_bad_cidrs_get_none() {
        let nodes = [
            node("a", Some("10.0.0.1"), Some("10.244.0.0/24")),
            node("same-ip", Some("10.0.0.1"), Some("10.244.5.0/24")),
            node("same-cidr", Some("10.0.0.6"), Some("10.244.0.0/24")),
            node("bad", Some("10.0.0.7"), Some("10.244.300.0/24")),
            node("v6", Some("fd00::7"), Some("10.244.7.0/24")),
        ];
        assert!(wanted(&nodes, "a", Some("10.0.0.1".parse().expect("ip"))).is_empty());
    }

    #[test]
    fn two_nodes_claiming_one_cidr_resolve_to_the_first_by_name() {
        let nodes = [
            node("z", Some("10.0.0.9"), Some("10.244.3.0/24")),
            node("m", Some("10.0.0.8"), Some("10.244.3.0/24")),
        ];
        let got = wanted(&nodes, "a", None);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [route("10.244.3.0/24", "10.0.0.8")]
        );
    }

    #[test]
    fn the_plan_adds_what_is_missing_replaces_moved_nodes_and_removes_the_rest() {
        let wanted: BTreeSet<_> = [
            route("10.244.1.0/24", "10.0.0.2"),
            route("10.244.2.0/24", "10.0.0.9"),
            route("10.244.3.0/24", "10.0.0.4"),
            route("10.244.4.0/24", "10.0.0.5"),
        ]
        .into();
        let ours: BTreeSet<_> = [
            route("10.244.1.0/24", "10.0.0.2"),
            route("10.244.2.0/24", "10.0.0.3"),
            route("10.244.8.0/24", "10.0.0.8"),
        ]
        .into();
        let others: BTreeSet<Ipv4Net> = ["10.244.4.0/24".parse().expect("cidr")].into();
        let p = plan(&wanted, &ours, &others);
        assert_eq!(
            p.add,
            [
                route("10.244.2.0/24", "10.0.0.9"),
                route("10.244.3.0/24", "10.0.0.4")
            ]
        );
        assert_eq!(p.remove, [route("10.244.8.0/24", "10.0.0.8")]);
        assert_eq!(p.blocked, [route("10.244.4.0/24", "10.0.0.5")]);
        assert!(plan(&wanted, &wanted, &BTreeSet::new()).is_empty());
    }
}
