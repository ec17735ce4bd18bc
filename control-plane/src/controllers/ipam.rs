//! Node pod CIDRs: every Node gets a /24 of the cluster CIDR (`--cluster-cidr`, default
//! 10.244.0.0/16, so 256 nodes; a /14 holds 1,024) in `spec.podCIDR` (and `podCIDRs`), the
//! lowest one no other Node holds. `plan` is pure; the pass writes each assignment as a fenced
//! update carrying the Node's resourceVersion, so two assignments cannot race.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::Context;

/// The default pod network.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// The pod network, cut into one /24 per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    base: u32,
    /// How many /24 blocks it holds.
    blocks: u32,
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork::parse(CLUSTER_CIDR).expect("the default cluster CIDR parses")
    }
}

impl PodNetwork {
    /// An IPv4 CIDR of prefix length 8 to 24 with no host bits set.
    pub fn parse(text: &str) -> Result<PodNetwork, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (address/length)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| (8..=24).contains(l))
            .ok_or_else(|| {
                format!("{text:?}: the prefix length must be 8 to 24 (one /24 per node)")
            })?;
        let base = u32::from(addr);
        let mask = u32::MAX << (32 - len);
        if base & !mask != 0 {
            return Err(format!(
                "{text:?} has host bits set; the network is {}/{len}",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(PodNetwork {
            base,
            blocks: 1 << (24 - len),
        })
    }

    /// The whole network as written (`10.244.0.0/16`).
    pub fn network(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.base),
            24 - self.blocks.trailing_zeros()
        )
    }

    fn cidr(&self, n: u32) -> String {
        format!("{}/24", Ipv4Addr::from(self.base + (n << 8)))
    }

    fn index_of(&self, cidr: &str) -> Option<u32> {
        let addr: Ipv4Addr = cidr.strip_suffix("/24")?.parse().ok()?;
        let offset = u32::from(addr).checked_sub(self.base)?;
        (offset & 0xff == 0 && offset >> 8 < self.blocks).then_some(offset >> 8)
    }
}

/// (node name, CIDR) for every Node that has none, lowest free first. Nodes beyond the
/// network's size get none (and stay without until one is freed).
pub fn plan(network: PodNetwork, nodes: &[Value]) -> Vec<(String, String)> {
    let mut taken: BTreeSet<u32> = nodes
        .iter()
        .filter_map(|n| object::field(n, "spec.podCIDR").and_then(Value::as_str))
        .filter_map(|c| network.index_of(c))
        .collect();
    let mut out = Vec::new();
    let mut missing: Vec<&Value> = nodes
        .iter()
        .filter(|n| object::field_string(n, "spec.podCIDR").is_empty())
        .collect();
    missing.sort_by_key(|n| object::name(n).to_string());
    let mut next = 0;
    for node in missing {
        while taken.contains(&next) {
            next += 1;
        }
        if next >= network.blocks {
            break;
        }
        taken.insert(next);
        out.push((object::name(node).to_string(), network.cidr(next)));
    }
    out
}

/// Assigns CIDRs whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let nodes = Kind::named("nodes").expect("Node is served");
    let network = ctx.pod_network;
    super::runner::run(
        ctx,
        &[nodes.prefix(None)],
        Duration::from_secs(10),
        |pass| async move {
            let objects: Vec<Value> = pass
                .cache
                .list(&nodes, None)
                .iter()
                .map(|s| s.object.clone())
                .collect();
            for (name, cidr) in plan(network, &objects) {
                let Some(mut node) = objects.iter().find(|n| object::name(n) == name).cloned()
                else {
                    continue;
                };
                node["spec"]["podCIDR"] = json!(cidr);
                node["spec"]["podCIDRs"] = json!([cidr]);
                match pass.update(&node).await {
                    Ok(_) => tracing::info!(node = %name, %cidr, "assigned pod CIDR"),
                    Err(e) => tracing::debug!(node = %name, %e, "pod CIDR not assigned yet"),
                }
            }
            None
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_reads_back_as_written() {
        for text in [
            "10.244.0.0/16",
            "10.0.0.0/8",
            "192.168.5.0/24",
            "10.40.0.0/14",
        ] {
            assert_eq!(PodNetwork::parse(text).expect("parses").network(), text);
        }
    }

    #[test]
    fn nodes_get_the_lowest_free_ranges() {
        let nodes = vec![
            json!({"metadata": {"name": "b"}, "spec": {}}),
            json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.0.0/24"}}),
            json!({"metadata": {"name": "c"}, "spec": {"podCIDR": "10.244.2.0/24"}}),
            json!({"metadata": {"name": "d"}}),
        ];
        assert_eq!(
            plan(PodNetwork::default(), &nodes),
            [
                ("b".to_string(), "10.244.1.0/24".to_string()),
                ("d".to_string(), "10.244.3.0/24".to_string())
            ]
        );
    }

    #[test]
    fn larger_networks_hold_more_nodes_and_bad_ones_are_named() {
        let net = PodNetwork::parse("10.240.0.0/14").unwrap();
        let nodes: Vec<Value> = (0..1000)
            .map(|i| json!({"metadata": {"name": format!("n{i:04}")}}))
            .collect();
        let got = plan(net, &nodes);
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999].1, "10.243.231.0/24");
        assert_eq!(plan(PodNetwork::default(), &nodes).len(), 256);
        assert!(PodNetwork::parse("10.244.1.0/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(PodNetwork::parse("10.244.0.0/25")
            .unwrap_err()
            .contains("8 to 24"));
        assert!(PodNetwork::parse("banana").is_err());
    }
}
