//! The Service environment variables the kubelet gives every container, for the Services that
//! exist when the container starts: for each Service with a cluster IP in the pod's namespace
//! (every namespace's `kubernetes` Service in `default` too, as the API's own), and only the
//! latter when the pod sets `enableServiceLinks: false`:
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (the first port), `<NAME>_SERVICE_PORT_<PORT>`
//! per named port, and Docker's link variables `<NAME>_PORT=tcp://ip:port` and, per port,
//! `<NAME>_PORT_<port>_<PROTO>` (+ `_PROTO`, `_PORT`, `_ADDR`). NAME is the Service's name in
//! upper case with `-` as `_`. Pure.

use k8s_openapi::api::core::v1::{Pod, Service};

fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// The variables for `services` (every Service the node knows) as `pod` sees them, in the
/// order the kubelet writes them (by Service name).
pub fn service_env<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: Vec<&Service> = services
        .into_iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (links && ns == namespace) || (ns == "default" && name == "kubernetes")
        })
        .filter(|s| {
            let ip = s.spec.as_ref().and_then(|sp| sp.cluster_ip.as_deref());
            !matches!(ip, None | Some("") | Some("None"))
        })
        .collect();
    chosen.sort_by_key(|s| s.metadata.name.clone());
    chosen.dedup_by_key(|s| s.metadata.name.clone());
    let mut env = vec![];
    for svc in chosen {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let name = env_name(svc.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.clone().unwrap_or_default();
        env.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in ports
            .iter()
            .filter(|p| p.name.as_deref().is_some_and(|n| !n.is_empty()))
        {
            let port_name = env_name(p.name.as_deref().unwrap_or_default());
            env.push((
                format!("{name}_SERVICE_PORT_{port_name}"),
                p.port.to_string(),
            ));
        }
        if let Some(first) = ports.first() {
            let proto = first
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            env.push((
                format!("{name}_PORT"),
                format!("{proto}://{ip}:{}", first.port),
            ));
        }
        for p in &ports {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            let lower = proto.to_ascii_lowercase();
            env.push((prefix.clone(), format!("{lower}://{ip}:{}", p.port)));
            env.push((format!("{prefix}_PROTO"), lower));
            env.push((format!("{prefix}_PORT"), p.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                                      "spec": {"clusterIP": ip, "ports": ports}}))
        .expect("service")
    }

    fn pod(links: Option<bool>) -> Pod {
        let mut spec = json!({"containers": []});
        if let Some(l) = links {
            spec["enableServiceLinks"] = json!(l);
        }
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .expect("pod")
    }

    #[test]
    fn services_of_the_pods_namespace_and_the_apis_own_give_kubelets_variables() {
        let services = [
            svc(
                "shop",
                "redis-primary",
                "10.96.0.11",
                json!([{"name": "redis", "port": 6379}]),
            ),
            svc(
                "shop",
                "dns",
                "10.96.0.12",
                json!([{"port": 53, "protocol": "UDP"}]),
            ),
            svc("shop", "headless", "None", json!([{"port": 80}])),
            svc("other", "elsewhere", "10.96.0.13", json!([{"port": 80}])),
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
        ];
        let env = service_env(&pod(None), &services);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REDIS_PRIMARY_SERVICE_HOST"), Some("10.96.0.11"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT_REDIS"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_PORT"), Some("tcp://10.96.0.11:6379"));
        assert_eq!(
            get("REDIS_PRIMARY_PORT_6379_TCP"),
            Some("tcp://10.96.0.11:6379")
        );
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_ADDR"), Some("10.96.0.11"));
        assert_eq!(get("DNS_PORT"), Some("udp://10.96.0.12:53"));
        assert_eq!(get("DNS_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(
            get("HEADLESS_SERVICE_HOST"),
            None,
            "no cluster IP, no variables"
        );
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None, "another namespace's");

        let without_links = service_env(&pod(Some(false)), &services);
        let names: Vec<&str> = without_links.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.iter().all(|n| n.starts_with("KUBERNETES_")),
            "{names:?}"
        );
        assert!(names.contains(&"KUBERNETES_SERVICE_HOST"));
    }
}
