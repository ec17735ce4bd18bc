//! Keeps this node's host-gw routes in step with the Node objects: after every Node change
//! (added, moved to another address, given a pod CIDR, deleted) and every `resync` in any
//! case, so a route someone deleted comes back. The routes are computed from the watch-backed
//! store alone (`host_gw`), compared with what the kernel holds (`route_table`), and only the
//! difference is changed. Nothing is changed before the store holds a first list.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use skiff_api::Client;
use tokio::sync::watch;

use super::follow::follow;
use super::host_gw::{self, PodRoute};
use super::route_table::RouteTable;

/// Runs until the agent stops. Without a netlink socket it says so and stops.
pub async fn run(client: Client, this_node: String, this_address: Ipv4Addr, resync: Duration) {
    let table = match RouteTable::open() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("pod routes to other nodes disabled: {e}");
            return;
        }
    };
    let (changed, mut change) = watch::channel(());
    let nodes = follow::<Node>(client, changed, "pod routes");
    nodes.wait_until_ready().await;
    let mut blocked_before: Vec<PodRoute> = vec![];
    loop {
        let state = nodes.state();
        let wanted: BTreeSet<PodRoute> =
            host_gw::wanted(state.iter().map(|n| &**n), &this_node, Some(this_address));
        match table.routes().await {
            Ok(now) => {
                let plan = host_gw::plan(&wanted, &now.ours, &now.others);
                if plan.blocked != blocked_before {
                    for r in &plan.blocked {
                        tracing::warn!(route = %r, "not routing a node's pods: another route to that CIDR exists");
                    }
                    blocked_before = plan.blocked.clone();
                }
                if !plan.is_empty() {
                    let errors = table.apply(&plan).await;
                    tracing::info!(
                        added = ?plan.add.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        removed = ?plan.remove.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        failed = errors.len(),
                        "pod routes to other nodes updated"
                    );
                    for e in errors {
                        tracing::error!("pod route not set: {e}");
                    }
                }
            }
            Err(e) => tracing::error!("pod routes not read: {e}"),
        }
        let _ = tokio::time::timeout(resync, change.changed()).await;
    }
}
