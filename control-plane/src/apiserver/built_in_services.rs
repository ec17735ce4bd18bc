//! The Services a cluster has from its start: `kube-system/kube-dns` on the tenth address of
//! the service range (10.96.0.10), DNS on port 53 over UDP and TCP, as clients that expect
//! Kubernetes' DNS address find it. It has no selector: every node's proxy sends it to the DNS
//! server on that node. Created through the API as a client would create it (admission,
//! validation, the address claimed), only when missing; a user's own change to it is kept.

use std::time::Duration;

use serde_json::json;
use skiff_api::pb::WriteRequest;
use skiff_api::Reason;

use super::registry::Also;
use super::ApiService;

/// The DNS Service's address: the tenth of the service range.
pub const KUBE_DNS_IP: &str = "10.96.0.10";

/// Creates `kube-system/kube-dns` unless it exists, retrying until the store has a leader.
pub async fn ensure_kube_dns(api: &ApiService) {
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "Skiff-DNS"}},
        "spec": {"clusterIP": KUBE_DNS_IP,
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}
    });
    let bytes = service.to_string().into_bytes();
    loop {
        let request = WriteRequest {
            object: bytes.clone(),
            default_namespace: "kube-system".into(),
        };
        match api.create_fenced(request, &Also::default()).await {
            Ok(_) => return,
            Err(e) if e.reason == Reason::AlreadyExists => return,
            Err(e) => {
                tracing::debug!(%e, "kube-dns Service not created yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
