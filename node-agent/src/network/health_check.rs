//! The load balancers' health checks on this node (kube-proxy's health-check server): one
//! HTTP listener per `spec.healthCheckNodePort` of the LoadBalancer Services with
//! externalTrafficPolicy Local, opened and closed as those Services come and go, each
//! answering 200 while this node has a ready endpoint of its Service and 503 while it has none
//! (`netproxy::health` decides; this module only serves). Fed by the same watch-backed stores
//! as the proxy.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use netproxy::HealthCheck;
use skiff_api::runtime::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every port answers now, shared with its listener.
type Answers = Arc<RwLock<BTreeMap<u16, HealthCheck>>>;

/// Serves the health checks until the agent stops.
pub async fn run(
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    mut changed: watch::Receiver<()>,
    node_name: String,
) {
    services.wait_until_ready().await;
    endpoints.wait_until_ready().await;
    let answers: Answers = Arc::default();
    let mut listeners: BTreeMap<u16, JoinHandle<()>> = BTreeMap::new();
    loop {
        let (svcs, eps) = (services.state(), endpoints.state());
        let wanted = netproxy::health_checks(
            svcs.iter().map(|s| &**s),
            eps.iter().map(|e| &**e),
            &node_name,
        );
        listeners.retain(|port, task| {
            let keep = wanted.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for port in wanted.keys() {
            if !listeners.contains_key(port) {
                listeners.insert(*port, tokio::spawn(listen(*port, answers.clone())));
            }
        }
        if let Ok(mut now) = answers.write() {
            *now = wanted;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// One health-check port, on every address of the node.
async fn listen(port: u16, answers: Answers) {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("health check port {port} not served: binding {addr}: {e}");
            return;
        }
    };
    tracing::info!("serving the load balancers' health check on port {port}");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: the error repeats until some close, so wait a little
                // instead of spinning on it.
                tracing::warn!(port, error = %e, "health check: accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let answers = answers.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let answer = answers
                        .read()
                        .ok()
                        .and_then(|a| a.get(&port).map(HealthCheck::response));
                    async move { Ok::<_, Infallible>(reply(answer)) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The HTTP response for an answer (none: the Service just went; 503 as for no endpoints).
fn reply(answer: Option<(u16, String)>) -> Response<Full<Bytes>> {
    let (status, body) = answer.unwrap_or((503, "{}".into()));
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "X-Content-Type-Options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    response
}
