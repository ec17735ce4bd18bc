//! Runs one replica until SIGTERM/SIGINT (or its removal from the cluster): the store, and the
//! client port serving its routes.

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{bind_addr, Args};
use raft_store::server::{accept_nodelay, StoreServer};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.store_config().await?;
    let mut listeners = Vec::new();
    for url in args.client_listen_urls() {
        let addr = bind_addr("--listen-client-urls", &url).await?;
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on client address {addr}"))?;
        listeners.push(l);
    }
    let store = StoreServer::start(cfg).await?;
    let mut servers = Vec::new();
    for listener in listeners {
        let routes = store.etcd_routes();
        let stopping = store.stopping();
        servers.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(accept_nodelay(listener), stopping)
                .await
        }));
    }
    tokio::select! {
        signal = wait_for_signal() => signal?,
        // The store stops by itself when this member was removed from the cluster.
        _ = store.stopping() => {}
    }
    tracing::info!("shutting down");
    store.shutdown().await;
    for s in servers {
        if let Ok(Err(e)) = s.await {
            tracing::warn!(%e, "client server");
        }
    }
    Ok(())
}

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
