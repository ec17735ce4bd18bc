//! The node's cluster DNS: the zone rebuilt from the Service and Endpoints stores the proxy
//! also reads, after every change, and `netproxy`'s server answering from it on the pod
//! bridge's address. The server starts only once both stores hold a first list, so it never
//! denies a Service that exists.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use netproxy::dns::server::{self, ClusterDns, ZoneHandle};
use netproxy::dns::zone::Zone;
use skiff_api::runtime::Store;
use tokio::sync::watch;

/// Runs until the agent stops.
pub async fn run(
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    mut changed: watch::Receiver<()>,
    domain: String,
    addr: SocketAddr,
    resolv_conf: std::path::PathBuf,
) {
    let zone = ZoneHandle::default();
    let handler = match ClusterDns::new(&domain, zone.clone(), &resolv_conf) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cluster DNS disabled: {e}");
            return;
        }
    };
    services.wait_until_ready().await;
    endpoints.wait_until_ready().await;
    let build = || {
        let (svcs, eps) = (services.state(), endpoints.state());
        Zone::build(&domain, svcs.iter().map(|s| &**s), eps.iter().map(|e| &**e))
    };
    zone.set(build());
    tokio::spawn(async move {
        if let Err(e) = server::serve(addr, handler).await {
            tracing::error!("cluster DNS stopped: {e}");
        }
    });
    while changed.changed().await.is_ok() {
        zone.set(build());
    }
}
