//! Service health checks for load balancers, as kube-proxy serves them: every LoadBalancer
//! Service with externalTrafficPolicy Local has a `spec.healthCheckNodePort`, and each node
//! answers HTTP on that port with 200 when it has a ready endpoint of the Service (so a load
//! balancer in front of the nodes sends traffic only to nodes that keep it local) and 503 when
//! it has none. This module decides what each port answers; the agent serves it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use crate::model::ServicePort;

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
/// (the most any of its ports has) from `ports` (see [`crate::service_ports`]).
pub fn health_checks<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    ports: &[ServicePort],
    node_name: &str,
) -> BTreeMap<u16, HealthCheck> {
    let mut out = BTreeMap::new();
    for svc in services {
        let Some((namespace, name, spec)) = crate::model::named(svc) else {
            continue;
        };
        let local_policy = spec.type_.as_deref() == Some("LoadBalancer")
            && spec.external_traffic_policy.as_deref() == Some("Local");
        let Some(port) = spec
            .health_check_node_port
            .filter(|_| local_policy)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let local_endpoints = ports
            .iter()
            .filter(|sp| sp.namespace == namespace && sp.name == name)
            .map(|sp| {
                sp.endpoints
                    .iter()
                    .filter(|ep| ep.node_name.as_deref() == Some(node_name))
                    .count()
            })
            .max()
            .unwrap_or(0);
        out.insert(
            port,
            HealthCheck {
                namespace: namespace.to_string(),
                name: name.to_string(),
                local_endpoints,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::service_ports;
    use k8s_openapi::api::core::v1::Endpoints;

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
        let ports = service_ports([&svc], [&eps]);
        let on = |node: &str| health_checks([&svc], &ports, node);

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
            assert!(health_checks([&svc], &ports, "n1").is_empty(), "{svc:?}");
        }
    }
}
