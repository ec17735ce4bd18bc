//! Node pod CIDRs: every Node gets a /24 of 10.244.0.0/16 in `spec.podCIDR` (and `podCIDRs`),
//! the lowest one no other Node holds. `plan` is pure; the pass writes each assignment as a
//! fenced update carrying the Node's resourceVersion, so two assignments cannot race.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::Context;

/// The cluster's pod network; each node gets the /24 `10.244.<n>.0`.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

fn cidr(n: u8) -> String {
    format!("10.244.{n}.0/24")
}

fn index_of(cidr: &str) -> Option<u8> {
    let rest = cidr.strip_prefix("10.244.")?;
    let (n, tail) = rest.split_once('.')?;
    (tail == "0/24").then_some(())?;
    n.parse().ok()
}

/// (node name, CIDR) for every Node that has none, lowest free first. Nodes beyond the 256th
/// get none (and stay without until one is freed).
pub fn plan(nodes: &[Value]) -> Vec<(String, String)> {
    let mut taken: BTreeSet<u8> = nodes
        .iter()
        .filter_map(|n| object::field(n, "spec.podCIDR").and_then(Value::as_str))
        .filter_map(index_of)
        .collect();
    let mut out = Vec::new();
    let mut missing: Vec<&Value> = nodes
        .iter()
        .filter(|n| object::field_string(n, "spec.podCIDR").is_empty())
        .collect();
    missing.sort_by_key(|n| object::name(n).to_string());
    for node in missing {
        let Some(free) = (0..=255u8).find(|i| !taken.contains(i)) else {
            break;
        };
        taken.insert(free);
        out.push((object::name(node).to_string(), cidr(free)));
    }
    out
}

/// Assigns CIDRs whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let nodes = Kind::named("nodes").expect("Node is served");
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
            for (name, cidr) in plan(&objects) {
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
    fn nodes_get_the_lowest_free_ranges() {
        let nodes = vec![
            json!({"metadata": {"name": "b"}, "spec": {}}),
            json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.0.0/24"}}),
            json!({"metadata": {"name": "c"}, "spec": {"podCIDR": "10.244.2.0/24"}}),
            json!({"metadata": {"name": "d"}}),
        ];
        assert_eq!(
            plan(&nodes),
            [
                ("b".to_string(), "10.244.1.0/24".to_string()),
                ("d".to_string(), "10.244.3.0/24".to_string())
            ]
        );
    }
}
