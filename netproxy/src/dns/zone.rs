//! The cluster's DNS zone as the Kubernetes DNS specification lays it out, built from the
//! Services and Endpoints a node follows, and the answer to one question in it. Pure: the
//! server (`dns::server`) turns answers into DNS messages.
//!
//! - `<svc>.<ns>.svc.<zone>`: A = the cluster IP; for a headless Service one A per endpoint
//!   (none: NXDOMAIN); an ExternalName Service is a CNAME to its external name.
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: A of the headless endpoint with that hostname (pods
//!   with `hostname` and `subdomain`, StatefulSets) or whose address dashed is that label.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for a named port: the Service's name and
//!   port, or for a headless Service one per endpoint.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: A = a.b.c.d.
//! - PTR for cluster IPs and endpoint addresses under `in-addr.arpa`.
//! - A name in the zone that does not exist is NXDOMAIN; one that exists without records of
//!   the asked type (AAAA of a Service, the zone's own levels) has no data (NOERROR, empty).
//!   Names outside the zone are someone else's (the server forwards them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Endpoints, Service};

/// The question types the zone answers; the others get no data for names it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Srv,
    Ptr,
    Cname,
    /// Any other type (AAAA, TXT, MX, …).
    Other,
}

/// One answer record (every one with the zone's TTL).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rec {
    A(Ipv4Addr),
    /// priority, weight, port, target (a name in the zone, without the trailing dot).
    Srv {
        weight: u16,
        port: u16,
        target: String,
    },
    Ptr(String),
    Cname(String),
}

/// What the zone says about a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Records(Vec<Rec>),
    /// The name exists, with no record of the asked type.
    NoData,
    NxDomain,
    /// Not a name in the zone (nor a reverse name the zone knows).
    NotOurs,
}

/// A named port of a Service or of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NamedPort {
    name: String,
    /// `tcp`, `udp`, `sctp`.
    protocol: String,
    port: u16,
}

#[derive(Clone, Debug)]
struct EndpointEntry {
    ip: Ipv4Addr,
    hostname: Option<String>,
    ports: Vec<NamedPort>,
}

#[derive(Clone, Debug)]
enum Kind {
    Cluster(Ipv4Addr),
    Headless,
    External(String),
}

#[derive(Clone, Debug)]
struct ServiceEntry {
    kind: Kind,
    ports: Vec<NamedPort>,
    endpoints: Vec<EndpointEntry>,
}

/// The zone at one moment.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    domain: String,
    services: HashMap<(String, String), ServiceEntry>,
    namespaces: BTreeSet<String>,
    reverse: HashMap<Ipv4Addr, BTreeSet<String>>,
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn undashed(label: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = label.split('-').collect();
    if parts.len() != 4 {
        return None;
    }
    parts.join(".").parse().ok()
}

/// The IPv4 address a reverse name (`4.3.2.1.in-addr.arpa`) stands for.
fn reverse_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<&str> = rest.split('.').collect();
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    octets.join(".").parse().ok()
}

fn lower(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    /// The zone `domain` (`cluster.local`) for these objects.
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        endpoints: impl IntoIterator<Item = &'a Endpoints>,
    ) -> Zone {
        let domain = lower(domain);
        let mut by_key: BTreeMap<(String, String), Vec<EndpointEntry>> = BTreeMap::new();
        for ep in endpoints {
            let key = (
                lower(ep.metadata.namespace.as_deref().unwrap_or("default")),
                lower(ep.metadata.name.as_deref().unwrap_or_default()),
            );
            let list = by_key.entry(key).or_default();
            for subset in ep.subsets.iter().flatten() {
                let ports: Vec<NamedPort> = subset
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some(NamedPort {
                            name: lower(p.name.as_deref()?),
                            protocol: lower(p.protocol.as_deref().unwrap_or("TCP")),
                            port: u16::try_from(p.port).ok()?,
                        })
                    })
                    .collect();
                for a in subset.addresses.iter().flatten() {
                    let Ok(ip) = a.ip.parse() else { continue };
                    list.push(EndpointEntry {
                        ip,
                        hostname: a.hostname.as_deref().filter(|h| !h.is_empty()).map(lower),
                        ports: ports.clone(),
                    });
                }
            }
        }
        let mut zone = Zone {
            domain,
            ..Zone::default()
        };
        for svc in services {
            let ns = lower(svc.metadata.namespace.as_deref().unwrap_or("default"));
            let name = lower(svc.metadata.name.as_deref().unwrap_or_default());
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                match spec.external_name.as_deref() {
                    Some(n) if !n.is_empty() => Kind::External(lower(n)),
                    _ => continue,
                }
            } else {
                match spec.cluster_ip.as_deref() {
                    None | Some("") | Some("None") => Kind::Headless,
                    Some(ip) => match ip.parse() {
                        Ok(ip) => Kind::Cluster(ip),
                        // An IPv6 cluster IP: nothing to say in A records yet.
                        Err(_) => continue,
                    },
                }
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(NamedPort {
                        name: lower(p.name.as_deref().filter(|n| !n.is_empty())?),
                        protocol: lower(p.protocol.as_deref().unwrap_or("TCP")),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            let endpoints = match kind {
                Kind::Headless => by_key
                    .get(&(ns.clone(), name.clone()))
                    .cloned()
                    .unwrap_or_default(),
                _ => vec![],
            };
            let fqdn = format!("{name}.{ns}.svc.{}", zone.domain);
            if let Kind::Cluster(ip) = kind {
                zone.reverse.entry(ip).or_default().insert(fqdn.clone());
            }
            for ep in &endpoints {
                let host = ep.hostname.clone().unwrap_or_else(|| dashed(ep.ip));
                zone.reverse
                    .entry(ep.ip)
                    .or_default()
                    .insert(format!("{host}.{fqdn}"));
            }
            zone.namespaces.insert(ns.clone());
            zone.services.insert(
                (ns, name),
                ServiceEntry {
                    kind,
                    ports,
                    endpoints,
                },
            );
        }
        zone
    }

    /// The zone's domain, lowercase, without a trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The answer to (`name`, `qtype`); `name` in any case, with or without the trailing dot.
    pub fn answer(&self, name: &str, qtype: QType) -> Answer {
        let name = lower(name);
        if let Some(ip) = reverse_ip(&name) {
            return match self.reverse.get(&ip) {
                Some(names) if qtype == QType::Ptr => {
                    Answer::Records(names.iter().map(|n| Rec::Ptr(n.clone())).collect())
                }
                Some(_) => Answer::NoData,
                None => Answer::NotOurs,
            };
        }
        let labels: Vec<&str> = if name == self.domain {
            vec![]
        } else {
            match name.strip_suffix(&format!(".{}", self.domain)) {
                Some(rest) => rest.split('.').collect(),
                None => return Answer::NotOurs,
            }
        };
        match labels.as_slice() {
            [] | ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains(*ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(ip) if qtype == QType::A => Answer::Records(vec![Rec::A(ip)]),
                Some(_) => Answer::NoData,
                None => Answer::NxDomain,
            },
            [svc, ns, "svc"] => self.service(ns, svc, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(ns, svc, &port[1..], &proto[1..], qtype)
            }
            [host, svc, ns, "svc"] => self.endpoint(ns, svc, host, qtype),
            _ => Answer::NxDomain,
        }
    }

    fn entry(&self, ns: &str, svc: &str) -> Option<&ServiceEntry> {
        self.services.get(&(ns.to_string(), svc.to_string()))
    }

    fn service(&self, ns: &str, svc: &str, qtype: QType) -> Answer {
        let Some(entry) = self.entry(ns, svc) else {
            return Answer::NxDomain;
        };
        match (&entry.kind, qtype) {
            (Kind::External(target), _) => Answer::Records(vec![Rec::Cname(target.clone())]),
            (Kind::Cluster(ip), QType::A) => Answer::Records(vec![Rec::A(*ip)]),
            (Kind::Cluster(_), _) => Answer::NoData,
            (Kind::Headless, _) if entry.endpoints.is_empty() => Answer::NxDomain,
            (Kind::Headless, QType::A) => {
                let ips: BTreeSet<Ipv4Addr> = entry.endpoints.iter().map(|e| e.ip).collect();
                Answer::Records(ips.into_iter().map(Rec::A).collect())
            }
            (Kind::Headless, _) => Answer::NoData,
        }
    }

    fn endpoint(&self, ns: &str, svc: &str, host: &str, qtype: QType) -> Answer {
        let Some(entry) = self.entry(ns, svc) else {
            return Answer::NxDomain;
        };
        let ips: BTreeSet<Ipv4Addr> = entry
            .endpoints
            .iter()
            .filter(|e| match &e.hostname {
                Some(h) => h == host,
                None => dashed(e.ip) == host,
            })
            .map(|e| e.ip)
            .collect();
        match (ips.is_empty(), qtype) {
            (true, _) => Answer::NxDomain,
            (false, QType::A) => Answer::Records(ips.into_iter().map(Rec::A).collect()),
            (false, _) => Answer::NoData,
        }
    }

    fn srv(&self, ns: &str, svc: &str, port: &str, proto: &str, qtype: QType) -> Answer {
        let Some(entry) = self.entry(ns, svc) else {
            return Answer::NxDomain;
        };
        let fqdn = format!("{svc}.{ns}.svc.{}", self.domain);
        let matches = |p: &NamedPort| p.name == port && p.protocol == proto;
        let records: Vec<Rec> = match &entry.kind {
            Kind::Cluster(_) => entry
                .ports
                .iter()
                .filter(|p| matches(p))
                .map(|p| Rec::Srv {
                    weight: 100,
                    port: p.port,
                    target: fqdn.clone(),
                })
                .collect(),
            Kind::Headless => {
                let n = entry.endpoints.len().max(1);
                let weight = u16::try_from(100 / n).unwrap_or(1).max(1);
                entry
                    .endpoints
                    .iter()
                    .flat_map(|e| {
                        let host = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
                        let target = format!("{host}.{fqdn}");
                        e.ports
                            .iter()
                            .filter(|p| matches(p))
                            .map(move |p| Rec::Srv {
                                weight,
                                port: p.port,
                                target: target.clone(),
                            })
                    })
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            }
            Kind::External(_) => vec![],
        };
        match (records.is_empty(), qtype) {
            (true, _) => Answer::NxDomain,
            (false, QType::Srv) => Answer::Records(records),
            (false, _) => Answer::NoData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let services: Vec<Service> = [
            json!({"metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"clusterIP": "10.96.0.20",
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            json!({"metadata": {"name": "db", "namespace": "shop"},
                   "spec": {"clusterIP": "None",
                            "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "empty", "namespace": "shop"},
                   "spec": {"clusterIP": "None"}}),
            json!({"metadata": {"name": "search", "namespace": "shop"},
                   "spec": {"type": "ExternalName", "externalName": "search.example.org."}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("service"))
        .collect();
        let endpoints: Vec<Endpoints> = [json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "subsets": [{"addresses": [{"ip": "10.244.1.5", "hostname": "db-0"},
                                       {"ip": "10.244.2.7"}],
                         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]
        })]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("endpoints"))
        .collect();
        Zone::build("Cluster.Local.", &services, &endpoints)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn services_have_their_cluster_ip_or_their_endpoints() {
        let z = zone();
        assert_eq!(
            z.answer("web.shop.svc.cluster.local.", QType::A),
            Answer::Records(vec![Rec::A(ip("10.96.0.20"))])
        );
        assert_eq!(
            z.answer("WEB.Shop.SVC.cluster.local", QType::A),
            Answer::Records(vec![Rec::A(ip("10.96.0.20"))]),
            "names are case-insensitive"
        );
        assert_eq!(
            z.answer("db.shop.svc.cluster.local", QType::A),
            Answer::Records(vec![Rec::A(ip("10.244.1.5")), Rec::A(ip("10.244.2.7"))])
        );
        assert_eq!(
            z.answer("db-0.db.shop.svc.cluster.local", QType::A),
            Answer::Records(vec![Rec::A(ip("10.244.1.5"))])
        );
        assert_eq!(
            z.answer("10-244-2-7.db.shop.svc.cluster.local", QType::A),
            Answer::Records(vec![Rec::A(ip("10.244.2.7"))])
        );
        assert_eq!(
            z.answer("search.shop.svc.cluster.local", QType::A),
            Answer::Records(vec![Rec::Cname("search.example.org".into())])
        );
    }

    #[test]
    fn missing_names_are_nxdomain_and_missing_types_no_data() {
        let z = zone();
        assert_eq!(
            z.answer("web.shop.svc.cluster.local", QType::Other),
            Answer::NoData,
            "AAAA of an IPv4 service: the name exists"
        );
        for name in [
            "nope.shop.svc.cluster.local",
            "web.elsewhere.svc.cluster.local",
            "empty.shop.svc.cluster.local",
            "db-9.db.shop.svc.cluster.local",
            "a.b.c.d.e.f.cluster.local",
            "elsewhere.svc.cluster.local",
        ] {
            assert_eq!(z.answer(name, QType::A), Answer::NxDomain, "{name}");
        }
        for name in [
            "cluster.local",
            "svc.cluster.local",
            "shop.svc.cluster.local",
        ] {
            assert_eq!(z.answer(name, QType::A), Answer::NoData, "{name}");
        }
        assert_eq!(z.answer("example.org", QType::A), Answer::NotOurs);
        assert_eq!(z.answer("notcluster.local", QType::A), Answer::NotOurs);
    }

    #[test]
    fn srv_for_named_ports_pods_by_address_and_reverse_names() {
        let z = zone();
        assert_eq!(
            z.answer("_http._tcp.web.shop.svc.cluster.local", QType::Srv),
            Answer::Records(vec![Rec::Srv {
                weight: 100,
                port: 80,
                target: "web.shop.svc.cluster.local".into()
            }])
        );
        assert_eq!(
            z.answer("_pg._tcp.db.shop.svc.cluster.local", QType::Srv),
            Answer::Records(vec![
                Rec::Srv {
                    weight: 50,
                    port: 5432,
                    target: "10-244-2-7.db.shop.svc.cluster.local".into()
                },
                Rec::Srv {
                    weight: 50,
                    port: 5432,
                    target: "db-0.db.shop.svc.cluster.local".into()
                },
            ])
        );
        assert_eq!(
            z.answer("_http._udp.web.shop.svc.cluster.local", QType::Srv),
            Answer::NxDomain
        );
        assert_eq!(
            z.answer("10-1-2-3.shop.pod.cluster.local", QType::A),
            Answer::Records(vec![Rec::A(ip("10.1.2.3"))])
        );
        assert_eq!(
            z.answer("20.0.96.10.in-addr.arpa.", QType::Ptr),
            Answer::Records(vec![Rec::Ptr("web.shop.svc.cluster.local".into())])
        );
        assert_eq!(
            z.answer("5.1.244.10.in-addr.arpa", QType::Ptr),
            Answer::Records(vec![Rec::Ptr("db-0.db.shop.svc.cluster.local".into())])
        );
        assert_eq!(
            z.answer("9.9.9.9.in-addr.arpa", QType::Ptr),
            Answer::NotOurs
        );
    }
}
