//! What the renderer needs to know, read from the API's objects: one [`ServicePort`] per port
//! of every Service that gets rules (not headless, not ExternalName), with the endpoints its
//! Endpoints object lists for that port (matched by the port's name, as kube-proxy matches
//! them; the endpoints controller has already resolved named target ports per pod). Pure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceSpec};

/// A transport protocol a Service port may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// As iptables spells it (`-p tcp -m tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub(crate) fn parse(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// The node the endpoint runs on, when the Endpoints object says.
    pub node_name: Option<String>,
}

/// One port of one Service, with what the rules for it need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name (may be empty for a single-port Service).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// For NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    /// status.loadBalancer.ingress addresses.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP: how long a client stays with its endpoint, in seconds.
    pub affinity_seconds: Option<i32>,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<Endpoint>,
    /// externalTrafficPolicy Local: traffic from outside goes only to this node's endpoints,
    /// its source address kept.
    pub external_local: bool,
    /// internalTrafficPolicy Local: traffic to the cluster IP goes only to this node's
    /// endpoints.
    pub internal_local: bool,
}

impl ServicePort {
    /// kube-proxy's name for a service port: `namespace/name:port` (`namespace/name` when the
    /// port has no name). It names the rules in comments and seeds the chain names.
    pub fn id(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (three hours).
pub const DEFAULT_AFFINITY_SECONDS: i32 = 10_800;

fn ipv4(text: &str) -> Option<Ipv4Addr> {
    text.parse().ok()
}

/// A Service's namespace, name and spec, when it has all three.
pub(crate) fn named(svc: &Service) -> Option<(&str, &str, &ServiceSpec)> {
    Some((
        svc.metadata.namespace.as_deref()?,
        svc.metadata.name.as_deref()?,
        svc.spec.as_ref()?,
    ))
}

/// Endpoints objects by (namespace, name): the Service each belongs to.
pub(crate) fn by_name<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoints>,
) -> BTreeMap<(&'a str, &'a str), &'a Endpoints> {
    endpoints
        .into_iter()
        .filter_map(|e| {
            Some((
                (
                    e.metadata.namespace.as_deref()?,
                    e.metadata.name.as_deref()?,
                ),
                e,
            ))
        })
        .collect()
}

/// The service ports of `services` that get rules, each with its endpoints from `endpoints`,
/// sorted by id and port. IPv6 addresses are left out (the rules are IPv4 for now).
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    endpoints: impl IntoIterator<Item = &'a Endpoints>,
) -> Vec<ServicePort> {
    let by_name = by_name(endpoints);
    let mut out = Vec::new();
    for svc in services {
        let Some((namespace, name, spec)) = named(svc) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(ipv4) else {
            // Headless ("None"), not yet allocated, or IPv6.
            continue;
        };
        let external_node_port = matches!(
            spec.type_.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
        let external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ipv4(ip))
            .collect();
        let load_balancer_ips: Vec<Ipv4Addr> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref().and_then(ipv4))
            .collect();
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let eps = by_name.get(&(namespace, name));
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            let node_port = p
                .node_port
                .filter(|_| external_node_port)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0);
            out.push(ServicePort {
                namespace: namespace.to_string(),
                name: name.to_string(),
                endpoints: eps
                    .map(|e| ready_endpoints(e, &port_name, protocol))
                    .unwrap_or_default(),
                port_name,
                protocol,
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                affinity_seconds,
                // Kubernetes allows Local only for NodePort and LoadBalancer Services (and
                // applies it to their external IPs too).
                external_local: external_node_port
                    && spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            });
        }
    }
    out.sort_by_key(|p| (p.id(), p.protocol, p.port));
    out
}

/// The built-in `kube-system/kube-dns` Service has no endpoints of its own: on a node that runs
/// cluster DNS at `dns` (port 53) its ports go there, so every node answers on the Service's
/// address itself. Endpoints someone gave it (a DNS deployment of their own) are kept.
pub fn with_node_dns(ports: &mut [ServicePort], dns: Ipv4Addr, node_name: Option<&str>) {
    for sp in ports
        .iter_mut()
        .filter(|sp| sp.namespace == "kube-system" && sp.name == "kube-dns")
        .filter(|sp| sp.endpoints.is_empty())
    {
        sp.endpoints = vec![Endpoint {
            ip: dns,
            port: 53,
            node_name: node_name.map(str::to_string),
        }];
    }
}

/// The ready addresses of `endpoints` for the service port named `port_name`, sorted.
pub(crate) fn ready_endpoints(
    endpoints: &Endpoints,
    port_name: &str,
    protocol: Protocol,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let Some(port) = subset.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Ok(port) = u16::try_from(port.port) else {
            continue;
        };
        for a in subset.addresses.iter().flatten() {
            if let Some(ip) = ipv4(&a.ip) {
                out.push(Endpoint {
                    ip,
                    port,
                    node_name: a.node_name.clone(),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("a Service")
    }

    fn endpoints(v: serde_json::Value) -> Endpoints {
        serde_json::from_value(v).expect("Endpoints")
    }

    #[test]
    fn ports_get_their_endpoints_by_name_and_headless_services_get_none() {
        let services = [
            service(json!({"metadata": {"namespace": "default", "name": "web"},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                         "externalIPs": ["192.0.2.7"], "sessionAffinity": "ClientIP",
                         "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                                   {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            service(json!({"metadata": {"namespace": "default", "name": "db"},
                "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})),
            service(json!({"metadata": {"namespace": "default", "name": "ext"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}})),
        ];
        let eps = [endpoints(
            json!({"metadata": {"namespace": "default", "name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.1.3", "nodeName": "b"},
                                       {"ip": "10.244.0.5", "nodeName": "a"}],
                         "notReadyAddresses": [{"ip": "10.244.0.9"}],
                         "ports": [{"name": "http", "port": 8080},
                                   {"name": "dns", "port": 5353, "protocol": "UDP"}]}]}),
        )];
        let ports = service_ports(&services, &eps);
        assert_eq!(ports.len(), 2);
        let dns = &ports[0];
        assert_eq!(dns.id(), "default/web:dns");
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.node_port, None);
        let http = &ports[1];
        assert_eq!(http.id(), "default/web:http");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.external_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert_eq!(http.affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
        let ips: Vec<String> = http
            .endpoints
            .iter()
            .map(|e| format!("{}:{}", e.ip, e.port))
            .collect();
        assert_eq!(ips, ["10.244.0.5:8080", "10.244.1.3:8080"]);
        assert_eq!(dns.endpoints.len(), 2);
        assert!(dns.endpoints.iter().all(|e| e.port == 5353));
    }

    #[test]
    fn traffic_policies_are_read_and_local_external_only_where_kubernetes_allows_it() {
        let svc = |kind: &str| {
            service(json!({"metadata": {"name": "s", "namespace": "ns"},
                           "spec": {"type": kind, "clusterIP": "10.96.0.9",
                                    "externalTrafficPolicy": "Local",
                                    "internalTrafficPolicy": "Local",
                                    "ports": [{"port": 80, "nodePort": 30001}]}}))
        };
        let node_port = service_ports(&[svc("NodePort")], []);
        assert!(node_port[0].external_local && node_port[0].internal_local);
        let cluster = service_ports(&[svc("ClusterIP")], []);
        assert!(!cluster[0].external_local && cluster[0].internal_local);
    }

    #[test]
    fn kube_dns_goes_to_the_nodes_own_server_unless_it_has_endpoints() {
        let svc = |ns: &str, name: &str| {
            service(json!({"metadata": {"name": name, "namespace": ns},
                           "spec": {"clusterIP": "10.96.0.10",
                                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}))
        };
        let dns: Ipv4Addr = "10.244.3.1".parse().expect("ip");
        let mut ports = service_ports(
            &[svc("kube-system", "kube-dns"), svc("shop", "kube-dns")],
            [],
        );
        with_node_dns(&mut ports, dns, Some("n1"));
        let ours = ports
            .iter()
            .find(|p| p.namespace == "kube-system")
            .expect("kube-dns");
        assert_eq!(ours.endpoints.len(), 1);
        assert_eq!((ours.endpoints[0].ip, ours.endpoints[0].port), (dns, 53));
        let theirs = ports.iter().find(|p| p.namespace == "shop").expect("shop");
        assert!(theirs.endpoints.is_empty(), "only the built-in one");

        let eps = endpoints(
            json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "subsets": [{"addresses": [{"ip": "10.244.9.9"}],
                         "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]}),
        );
        let mut ports = service_ports(&[svc("kube-system", "kube-dns")], [&eps]);
        with_node_dns(&mut ports, dns, Some("n1"));
        assert_eq!(ports[0].endpoints[0].ip.to_string(), "10.244.9.9");
    }
}
