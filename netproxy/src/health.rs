//! Service health checks for load balancers, as kube-proxy serves them: every LoadBalancer
//! Service with externalTrafficPolicy Local has a `spec.healthCheckNodePort`, and each node
//! answers HTTP on that port with 200 when it has a ready endpoint of the Service (so a load
//! balancer in front of the nodes sends traffic only to nodes that keep it local) and 503 when
//! it has none. This module decides what each port answers; the agent serves it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceSpec};

use crate::model::{by_name, ready_endpoints, Protocol};

/// What one health-check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

impl HealthCheck {
    /// The HTTP status and JSON body kube-proxy answers with.
    pub fn response(&self) -> (u16, String) {
        let status = if self.local_endpoints > 0 { 200 } else { 503 };
        let body = serde_json::json!({
            "service": {"namespace": self.namespace, "name": self.name},
            "localEndpoints": self.local_endpoints,
            "serviceProxyHealthy": true,
        });
        (status, body.to_string())
    }
}

/// The health-check ports this node serves, each with its Service's local endpoint count
/// (the most any of its ports has, read as the proxy reads them). Only the Services that have
/// a health-check port are looked at, and the Endpoints only when there is one.
pub fn health_checks<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    endpoints: impl IntoIterator<Item = &'a Endpoints>,
    node_name: &str,
) -> BTreeMap<u16, HealthCheck> {
    let wanted: Vec<(u16, &str, &str, &ServiceSpec)> = services
        .into_iter()
        .filter_map(|svc| {
            let (namespace, name, spec) = crate::model::named(svc)?;
            let local_policy = spec.type_.as_deref() == Some("LoadBalancer")
                && spec.external_traffic_policy.as_deref() == Some("Local");
            let port = spec
                .health_check_node_port
                .filter(|_| local_policy)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)?;
            Some((port, namespace, name, spec))
        })
        .collect();
    if wanted.is_empty() {
        return BTreeMap::new();
    }
    let by_name = by_name(endpoints);
    wanted
        .into_iter()
        .map(|(port, namespace, name, spec)| {
            let local_endpoints = by_name
                .get(&(namespace, name))
                .map(|eps| {
                    spec.ports
                        .iter()
                        .flatten()
                        .filter_map(|p| Some((p, Protocol::parse(p.protocol.as_deref())?)))
                        .map(|(p, protocol)| {
                            ready_endpoints(eps, p.name.as_deref().unwrap_or_default(), protocol)
                                .iter()
                                .filter(|ep| ep.node_name.as_deref() == Some(node_name))
                                .count()
                        })
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            (
                port,
                HealthCheck {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    local_endpoints,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ty: &str, policy: &str, hc: Option<i32>) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": ty, "clusterIP": "10.96.0.20", "externalTrafficPolicy": policy,
                     "healthCheckNodePort": hc,
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}
        }))
        .expect("service")
    }

    fn endpoints(nodes: &[&str]) -> Endpoints {
        let addresses: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"ip": format!("10.244.0.{}", i + 2), "nodeName": n}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": addresses, "ports": [{"port": 8080, "protocol": "TCP"}]}]
        }))
        .expect("endpoints")
    }

    #[test]
    fn a_node_is_healthy_for_a_service_only_with_a_local_endpoint() {
        let svc = service("LoadBalancer", "Local", Some(32000));
        let eps = endpoints(&["n1", "n1", "n2"]);
        let on = |node: &str| health_checks([&svc], [&eps], node);

        let n1 = on("n1");
        assert_eq!(n1.len(), 1);
        let (status, body) = n1[&32000].response();
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"{"localEndpoints":2,"service":{"name":"web","namespace":"default"},"serviceProxyHealthy":true}"#
        );
        assert_eq!(on("n2")[&32000].local_endpoints, 1);
        let (status, body) = on("n3")[&32000].response();
        assert_eq!(status, 503);
        assert!(body.contains(r#""localEndpoints":0"#), "{body}");

        // Only LoadBalancer Services with the Local policy have one.
        for svc in [
            service("LoadBalancer", "Cluster", Some(32000)),
            service("NodePort", "Local", Some(32000)),
            service("LoadBalancer", "Local", None),
        ] {
            assert!(health_checks([&svc], [&eps], "n1").is_empty(), "{svc:?}");
        }
    }
}
