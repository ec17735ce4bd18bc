//! The node's service proxy: follows every Service and Endpoints object (watch-backed stores,
//! no truth of its own) and keeps the host's iptables in step through `netproxy`: a partial
//! sync (only the chains that changed) after a change, at most one per
//! `--proxy-min-sync-period`, and a full one every `--proxy-sync-period` in any case and after
//! a failed restore (which reads the rules back, says what someone else changed, and repairs
//! it).
//! No sync happens before both stores hold a first list, so a starting agent never replaces
//! good rules with an empty view. After each sync, the UDP flows it left stale (endpoints
//! gone, or a first endpoint) are deleted from conntrack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use netproxy::{Iptables, NodeContext, Written};
use skiff_api::runtime::Store;
use tokio::sync::watch;

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub cluster_cidr: Option<String>,
    /// The node's pod network is Skiff's default bridge (see `netproxy::NodeContext`).
    pub pod_network: bool,
    /// This node's name (its endpoints are local under a Local traffic policy).
    pub node_name: String,
    /// This node's DNS server, once it runs: the built-in kube-dns Service goes there.
    pub node_dns: Arc<std::sync::OnceLock<std::net::Ipv4Addr>>,
    pub min_sync: Duration,
    pub sync_period: Duration,
}

/// Runs the proxy until the agent stops, from the stores of every Service and Endpoints and a
/// receiver told of their changes. Without a usable iptables it says so and stops.
pub async fn run(
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    mut changed: watch::Receiver<()>,
    settings: ProxySettings,
) {
    let ipt = match tokio::task::spawn_blocking(Iptables::detect).await {
        Ok(Ok(ipt)) => Arc::new(ipt),
        Ok(Err(e)) => {
            tracing::error!("service proxy disabled: {e}");
            return;
        }
        Err(e) => {
            tracing::error!("service proxy disabled: {e}");
            return;
        }
    };
    tracing::info!("service proxy uses {}", ipt.backend.iptables);
    services.wait_until_ready().await;
    endpoints.wait_until_ready().await;
    // NodePorts on 127.0.0.1 as well, as kube-proxy's iptables mode offers them.
    let localhost_node_ports = match crate::network::sysctl::route_localnet() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("NodePorts will not answer on 127.0.0.1: {e}");
            false
        }
    };
    let node = NodeContext {
        localhost_node_ports,
        cluster_cidr: settings.cluster_cidr.clone(),
        pod_network: settings.pod_network,
        node_name: Some(settings.node_name.clone()),
    };
    // The ports of the last good sync: what the next one may leave stale in conntrack.
    let mut synced: Vec<netproxy::ServicePort> = vec![];
    // What the last good sync wrote (none after a failure: the next sync is full) and when
    // the last full one ran.
    let mut last: Option<Written> = None;
    let mut last_full = Instant::now();
    loop {
        let (svcs, eps) = (services.state(), endpoints.state());
        let mut ports =
            netproxy::service_ports(svcs.iter().map(|s| &**s), eps.iter().map(|e| &**e));
        if let Some(dns) = settings.node_dns.get() {
            netproxy::with_node_dns(&mut ports, *dns, Some(&settings.node_name));
        }
        let ipt = ipt.clone();
        let node = node.clone();
        let started = Instant::now();
        let full = last.is_none() || last_full.elapsed() >= settings.sync_period;
        let before = std::mem::take(&mut synced);
        let prev = last.take();
        let outcome = tokio::task::spawn_blocking(move || {
            let result = match &prev {
                Some(prev) if !full => ipt.sync_partial(&ports, &node, prev),
                prev => ipt.sync_full(&ports, &node, prev.as_ref()),
            };
            if result.is_ok() {
                // After the rules: a flow deleted earlier could be re-made by the old rules.
                let stale = netproxy::conntrack::stale(&before, &ports);
                let errors = netproxy::conntrack::clear(&stale);
                (result, ports, stale.len(), errors)
            } else {
                (result, before, 0, vec![])
            }
        })
        .await;
        match outcome {
            Ok((Ok((report, written)), ports, stale, errors)) => {
                tracing::debug!(
                    total_us = started.elapsed().as_micros() as u64,
                    partial = report.partial,
                    rules = report.rules,
                    chains_written = report.chains_written,
                    render_us = report.render.as_micros() as u64,
                    restore_us = report.restore.as_micros() as u64,
                    stale_udp_flows = stale,
                    "service rules synced"
                );
                if !report.drift.is_empty() {
                    tracing::warn!(
                        "service rules had been changed by someone else and are repaired: {}",
                        report.drift.join("; ")
                    );
                }
                for e in errors {
                    tracing::warn!("stale UDP flows not deleted: {e}");
                }
                if full {
                    last_full = started;
                }
                last = Some(written);
                synced = ports;
            }
            Ok((Err(e), ports, _, _)) => {
                tracing::error!("service rules not synced: {e}");
                synced = ports;
            }
            Err(e) => tracing::error!("service rules not synced: {e}"),
        }
        tokio::time::sleep(settings.min_sync).await;
        let _ = tokio::time::timeout(settings.sync_period, changed.changed()).await;
    }
}
