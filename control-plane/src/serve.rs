//! Runs one replica until SIGTERM/SIGINT (or its removal from the cluster): the store, and the
//! client port serving its routes.

use anyhow::Context;
use tokio::net::TcpListener;

use std::sync::Arc;

use skiff_api::pb::api_server::ApiServer;

use crate::apiserver::registry::{Registry, MAX_OBJECT_BYTES};
use crate::apiserver::{namespaces, ApiService};
use crate::config::{bind_addr, Args};
use crate::controllers::cache::Cache;

/// Largest Skiff API message: an object at its size limit, plus room for the request around it.
const MAX_API_MESSAGE: usize = MAX_OBJECT_BYTES + 512 * 1024;
use raft_store::server::{accept_nodelay, StoreServer};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.store_config().await?;
    let advertised = cfg.advertise_client_urls.clone();
    let mut listeners = Vec::new();
    for url in args.client_listen_urls() {
        let addr = bind_addr("--listen-client-urls", &url).await?;
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on client address {addr}"))?;
        listeners.push(l);
    }
    let store = StoreServer::start(cfg).await?;
    let registry = Arc::new(Registry::new(store.replica.clone()));
    let (leading, leadership) = tokio::sync::watch::channel(None);
    let api_service = Arc::new(ApiService::new(
        registry.clone(),
        leadership.clone(),
        args.event_ttl,
    ));
    let built_in = {
        let registry = registry.clone();
        let api = api_service.clone();
        tokio::spawn(async move {
            // The default StorageClass first: the built-in namespaces stay the last keys a
            // starting cluster writes.
            crate::controllers::persistentvolume::local_path::ensure_default_class(&registry).await;
            namespaces::ensure_built_in(&registry, || async {
                crate::apiserver::built_in_services::ensure_kube_dns(&api).await
            })
            .await;
        })
    };
    let election = args.controllers.then(|| {
        tokio::spawn(crate::controllers::election::run(
            store.replica.clone(),
            store.replica.identity.name.clone(),
            leading,
        ))
    });
    let ctx = crate::controllers::Context {
        api: api_service.clone(),
        cache: Cache::start(store.replica.clone()),
        leadership: leadership.clone(),
        node_lifecycle: crate::controllers::nodelifecycle::Settings {
            grace: std::time::Duration::from_secs(args.node_monitor_grace_period),
            eviction: std::time::Duration::from_secs(args.pod_eviction_timeout),
        },
        pod_network: args.cluster_cidr,
    };
    let loops = [
        tokio::spawn(crate::controllers::gc::run(ctx.clone())),
        tokio::spawn(crate::controllers::ipam::run(ctx.clone())),
        tokio::spawn(crate::scheduler::run(ctx.clone())),
        tokio::spawn(crate::controllers::replicaset::run(ctx.clone())),
        tokio::spawn(crate::controllers::deployment::run(ctx.clone())),
        tokio::spawn(crate::controllers::nodelifecycle::run(ctx.clone())),
        tokio::spawn(crate::controllers::endpoints::run(ctx.clone())),
        tokio::spawn(crate::controllers::servicelb::run(ctx.clone())),
        tokio::spawn(crate::controllers::job::run(ctx.clone())),
        tokio::spawn(crate::controllers::cronjob::run(ctx.clone())),
        tokio::spawn(crate::controllers::daemonset::run(ctx.clone())),
        tokio::spawn(crate::controllers::statefulset::run(ctx.clone())),
        tokio::spawn(crate::controllers::persistentvolume::run(ctx.clone())),
    ];
    let mut servers = Vec::new();
    for listener in listeners {
        let api = ApiServer::from_arc(api_service.clone())
            .max_decoding_message_size(MAX_API_MESSAGE)
            .max_encoding_message_size(MAX_API_MESSAGE);
        let routes = store.etcd_routes().add_service(api);
        let stopping = store.stopping();
        servers.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(accept_nodelay(listener), stopping)
                .await
        }));
    }
    let agent = match crate::node_agent::EmbeddedAgent::start(
        args.disable_agent,
        &advertised,
        &args.cluster_cidr.network(),
        &args.agent_args,
    ) {
        Ok(agent) => Some(agent),
        Err(why) => {
            tracing::info!("{why}");
            None
        }
    };
    tokio::select! {
        signal = wait_for_signal() => signal?,
        // The store stops by itself when this member was removed from the cluster.
        _ = store.stopping() => {}
    }
    tracing::info!("shutting down");
    if let Some(agent) = agent {
        agent.stop().await;
    }
    built_in.abort();
    for l in loops {
        l.abort();
    }
    if let Some(election) = election {
        election.abort();
        crate::controllers::election::resign(&store.replica, &leadership).await;
    }
    store.shutdown().await;
    // Watch streams never end by themselves: the servers get a moment to finish what is in
    // flight, then the connections left are dropped (their clients reconnect elsewhere, as
    // etcd's do when a member stops).
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    for s in servers {
        let abort = s.abort_handle();
        match tokio::time::timeout_at(deadline, s).await {
            Ok(Ok(Err(e))) => tracing::warn!(%e, "client server"),
            Ok(_) => {}
            Err(_) => {
                tracing::info!("closing the client connections still open");
                abort.abort();
            }
        }
    }
    Ok(())
}

/// How long a stopping replica waits for its clients' requests to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
