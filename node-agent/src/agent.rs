//! The real agent's start-up, in order: open the agent's port (served from then on), measure
//! the machine, check the kernel settings the pod network needs, register the Node (with the
//! port), follow Nodes for the pod routes and Services and Endpoints for the proxy, wait for the
//! pod CIDR the control plane assigns, write the CNI configuration for it, start the cluster DNS
//! on the bridge's address, then renew the Lease, collect unused images, and run the pods bound
//! to this node.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use skiff_api::{Client, Kind};
use tokio::sync::watch;

use crate::config::Args;
use crate::network::cni::Cni;
use crate::network::follow::follow;
use crate::node::facts;
use crate::node::heartbeat::Heartbeat;
use crate::pods::manager::PodManager;
use crate::real::RealRuntime;
use crate::runtime::qos_cgroups::{self, Allocatable};
use crate::server::AgentService;

/// How often the pod routes are checked against the kernel when no Node changed.
const POD_ROUTES_RESYNC: Duration = Duration::from_secs(10);

/// Waits until the control plane has given `name` a pod CIDR.
async fn pod_cidr(client: &Client, name: &str) -> anyhow::Result<String> {
    let nodes = Kind::of("v1", "Node").expect("Node is served");
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let mut waited = 0u32;
    loop {
        every.tick().await;
        match client.get(&nodes, "", name).await {
            Ok(v) => {
                let node: Node = serde_json::from_value(v)?;
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
                    return Ok(cidr);
                }
            }
            Err(e) => tracing::warn!(%e, "reading this node"),
        }
        waited += 1;
        if waited.is_multiple_of(20) {
            tracing::info!(
                node = name,
                "waiting for the control plane to assign a pod CIDR"
            );
        }
    }
}

pub async fn run(client: Client, args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;
    let listener = crate::server::bind(std::net::SocketAddr::new(args.address, args.port)).await?;
    let port = listener.local_addr()?.port();
    let images = Arc::new(args.image_service()?);
    let gc_policy = args.image_gc_policy()?;
    let service = AgentService::new(args.root_dir.clone(), images.clone(), args.shim_path()?);
    tokio::spawn(async move {
        if let Err(e) = crate::server::serve(listener, service).await {
            tracing::error!("the agent's port stopped: {e:#}");
        }
    });
    let facts = facts::measure(&args.root_dir, args.node_ip)?;
    let name = args
        .node_name
        .clone()
        .unwrap_or_else(|| facts.hostname.clone());
    let kernel = crate::network::sysctl::prepare();
    if let Err(why) = &kernel {
        tracing::error!("{why}");
    }
    if !crate::image::pull::system_has_ca_certificates() {
        tracing::warn!(
            "{}: images can only be imported (skiff image import)",
            crate::image::pull::NO_CA_CERTIFICATES
        );
    }
    let heartbeat = Heartbeat {
        client: client.clone(),
        name: name.clone(),
        root_dir: args.root_dir.clone(),
        facts: facts.clone(),
        port,
        reserved: args.system_reserved,
        lease_seconds: args.node_lease_duration_seconds,
    };
    let not_ready = Err(kernel
        .clone()
        .err()
        .unwrap_or_else(|| "network plugin is not ready: no pod CIDR assigned yet".into()));
    let first = heartbeat.register(not_ready.clone()).await?;
    let (ready_tx, ready_rx) = watch::channel(not_ready);
    tokio::spawn(heartbeat.run(first, ready_rx));
    tokio::spawn(crate::node::storage::run(
        client.clone(),
        name.clone(),
        args.root_dir.clone(),
    ));
    let cni = Cni {
        conf_dir: args
            .cni_conf_dir
            .clone()
            .unwrap_or_else(|| args.root_dir.join("cni/net.d")),
        bin_dir: args.cni_bin_dir.clone(),
        state_dir: args.root_dir.join("cni"),
    };
    // On Skiff's own pod network the agent routes other nodes' pods (host-gw) and, with its
    // proxy, masquerades what leaves the cluster network; with a network of the user's own,
    // that network's plugins do both.
    let own_network = cni.default_in_use();
    if own_network {
        tokio::spawn(crate::network::pod_routes::run(
            client.clone(),
            name.clone(),
            facts.address,
            POD_ROUTES_RESYNC,
        ));
    }
    // The Services and Endpoints, followed once for the proxy and the DNS server.
    let (changed, _) = watch::channel(());
    let node_dns = Arc::new(std::sync::OnceLock::new());
    let services = follow::<Service>(client.clone(), changed.clone(), "services");
    let endpoints = follow::<Endpoints>(client.clone(), changed.clone(), "services");
    if !args.disable_proxy {
        tokio::spawn(crate::network::service_proxy::run(
            services.clone(),
            endpoints.clone(),
            changed.subscribe(),
            crate::network::service_proxy::ProxySettings {
                cluster_cidr: Some(args.cluster_cidr.clone()),
                pod_network: own_network,
                node_name: name.clone(),
                node_dns: node_dns.clone(),
                min_sync: args.proxy_min_sync_period,
                sync_period: args.proxy_sync_period,
            },
        ));
        tokio::spawn(crate::network::health_check::run(
            services.clone(),
            endpoints.clone(),
            changed.subscribe(),
            name.clone(),
        ));
    }

    let cidr = pod_cidr(&client, &name).await?;
    cni.ensure_default(&cidr, args.disable_proxy)?;
    tracing::info!(node = %name, pod_cidr = %cidr, "pod network configured");
    // The node's DNS server listens on the pod bridge's address (the CIDR's first), which
    // every pod reaches directly: no DNAT on the way, so no conntrack race between the A and
    // AAAA questions a resolver sends at once.
    let bridge_ip = cidr
        .parse::<ipnet::Ipv4Net>()
        .ok()
        .and_then(|n| n.hosts().next());
    let own_dns = match bridge_ip {
        Some(ip) if own_network && !args.disable_dns => {
            tokio::spawn(crate::network::cluster_dns::run(
                services.clone(),
                endpoints,
                changed.subscribe(),
                args.cluster_domain.clone(),
                std::net::SocketAddr::new(ip.into(), 53),
                args.resolv_conf.clone(),
            ));
            // The built-in kube-dns Service answers here too, from the next sync on.
            let _ = node_dns.set(ip);
            changed.send_replace(());
            Some(ip)
        }
        _ => None,
    };
    let dns = match (args.cluster_dns.is_empty(), own_dns) {
        (false, _) => Some(args.cluster_dns.clone()),
        (true, Some(ip)) => Some(vec![ip.into()]),
        (true, None) => None,
    }
    .map(|servers| crate::real::resolv::ClusterDns {
        servers,
        domain: args.cluster_domain.clone(),
    });
    let _previous = ready_tx.send_replace(kernel);

    let events = crate::events::Recorder::new(client.clone(), name.clone());
    tokio::spawn(crate::real::image_gc::run(
        images.clone(),
        crate::real::record::Records::under(&args.root_dir),
        gc_policy,
        args.image_gc_period,
        events.clone(),
        name.clone(),
    ));
    // The level above every pod, and the classes' below it, before any pod runs.
    let allocatable = Allocatable::new(
        facts.cpus,
        facts.memory_bytes,
        args.system_reserved.cpu_milli,
        args.system_reserved.memory_bytes,
    );
    if let Err(e) = qos_cgroups::write(&qos_cgroups::levels(&args.cgroup_root, [], allocatable)) {
        tracing::error!(cgroup_root = %args.cgroup_root, %e, "the pods' cgroup levels not written");
    }
    let runtime = Arc::new(RealRuntime::open(
        client.clone(),
        &args,
        cni,
        &facts,
        events,
        images,
        crate::real::ClusterServices { dns, services },
    )?);
    PodManager {
        client,
        node_name: name,
        host_ip: facts.address,
        runtime,
    }
    .run()
    .await
}
