//! A pod's /etc/resolv.conf as the kubelet makes it from `dnsPolicy` and `dnsConfig`. Pure.
//!
//! - `ClusterFirst` (the default): the cluster's DNS servers, the search path
//!   `<ns>.svc.<domain> svc.<domain> <domain>` then the node's own search domains, and
//!   `options ndots:5`. A hostNetwork pod, or a node without cluster DNS, gets `Default`.
//! - `ClusterFirstWithHostNet`: `ClusterFirst`, hostNetwork or not.
//! - `Default`: the node's resolv.conf (its loopback servers dropped for a pod with a network of
//!   its own: they would point into the pod).
//! - `None`: only what `dnsConfig` gives.
//!
//! `dnsConfig` then adds name servers and search domains (duplicates dropped) and options
//! (one per name, the pod's value winning). At most 3 name servers and 32 search domains are
//! kept, as the resolver uses no more.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Most name servers a resolver uses.
const MAX_NAMESERVERS: usize = 3;
/// Most search domains the kubelet passes on.
const MAX_SEARCHES: usize = 32;

/// The cluster's DNS as the node's pods are told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    pub servers: Vec<IpAddr>,
    /// `cluster.local`.
    pub domain: String,
}

/// What a resolv.conf says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Conf {
    nameservers: Vec<String>,
    searches: Vec<String>,
    /// (name, value) pairs: `ndots:5` is ("ndots", Some("5")).
    options: Vec<(String, Option<String>)>,
}

fn parse(text: &str) -> Conf {
    let mut conf = Conf::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => conf.nameservers.extend(f.next().map(str::to_string)),
            // The last search (or domain) line wins, as in the resolver.
            Some("search") | Some("domain") => {
                conf.searches = f.map(str::to_string).collect();
            }
            Some("options") => conf.options.extend(f.map(option)),
            _ => {}
        }
    }
    conf
}

fn option(text: &str) -> (String, Option<String>) {
    match text.split_once(':') {
        Some((name, value)) => (name.to_string(), Some(value.to_string())),
        None => (text.to_string(), None),
    }
}

fn is_loopback(server: &str) -> bool {
    server
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The pod's resolv.conf, from the node's (`node_resolv`) and the cluster's DNS when the node
/// has one.
pub fn resolv_conf(pod: &Pod, node_resolv: &str, cluster: Option<&ClusterDns>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let node = parse(node_resolv);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut conf = match (policy, cluster) {
        ("None", _) => Conf::default(),
        ("ClusterFirst", Some(dns)) if !host_network => cluster_first(dns, namespace, &node),
        ("ClusterFirstWithHostNet", Some(dns)) => cluster_first(dns, namespace, &node),
        _ => Conf {
            nameservers: node
                .nameservers
                .iter()
                .filter(|s| host_network || !is_loopback(s))
                .cloned()
                .collect(),
            searches: node.searches.clone(),
            options: node.options.clone(),
        },
    };
    if let Some(extra) = spec.dns_config {
        for s in extra.nameservers.into_iter().flatten() {
            push_unique(&mut conf.nameservers, s);
        }
        for s in extra.searches.into_iter().flatten() {
            push_unique(&mut conf.searches, s);
        }
        for o in extra.options.into_iter().flatten() {
            let Some(name) = o.name else { continue };
            conf.options.retain(|(n, _)| *n != name);
            conf.options.push((name, o.value));
        }
    }
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCHES);
    render(&conf)
}

fn cluster_first(dns: &ClusterDns, namespace: &str, node: &Conf) -> Conf {
    let domain = &dns.domain;
    let mut searches = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.clone(),
    ];
    for s in &node.searches {
        push_unique(&mut searches, s.clone());
    }
    Conf {
        nameservers: dns.servers.iter().map(ToString::to_string).collect(),
        searches,
        options: vec![("ndots".into(), Some("5".into()))],
    }
}

fn render(conf: &Conf) -> String {
    let mut out = String::new();
    for s in &conf.nameservers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !conf.searches.is_empty() {
        out.push_str(&format!("search {}\n", conf.searches.join(" ")));
    }
    if !conf.options.is_empty() {
        let options: Vec<String> = conf
            .options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NODE: &str =
        "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch lan corp\noptions edns0\n";

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .expect("pod")
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.244.0.1".parse().expect("ip")],
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_the_kubernetes_search_path() {
        let text = resolv_conf(&pod(json!({})), NODE, Some(&cluster()));
        assert_eq!(
            text,
            "nameserver 10.244.0.1\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local lan corp\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn default_is_the_nodes_without_loopback_and_cluster_first_falls_back_to_it() {
        let wanted = "nameserver 10.0.0.2\nsearch lan corp\noptions edns0\n";
        let default = pod(json!({"dnsPolicy": "Default"}));
        assert_eq!(resolv_conf(&default, NODE, Some(&cluster())), wanted);
        assert_eq!(resolv_conf(&pod(json!({})), NODE, None), wanted);
        let host = pod(json!({"hostNetwork": true}));
        assert!(resolv_conf(&host, NODE, Some(&cluster())).starts_with("nameserver 127.0.0.53\n"));
        let with_host_net =
            pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert!(resolv_conf(&with_host_net, NODE, Some(&cluster()))
            .starts_with("nameserver 10.244.0.1\n"));
    }

    #[test]
    fn dns_config_adds_to_the_policy_and_none_takes_only_it() {
        let p = pod(json!({
            "dnsConfig": {"nameservers": ["1.1.1.1", "10.244.0.1"], "searches": ["extra"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "single-request-reopen"}]}
        }));
        assert_eq!(
            resolv_conf(&p, NODE, Some(&cluster())),
            "nameserver 10.244.0.1\nnameserver 1.1.1.1\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local lan corp extra\n\
             options ndots:2 single-request-reopen\n"
        );
        let none = pod(json!({"dnsPolicy": "None",
                              "dnsConfig": {"nameservers": ["9.9.9.9", "8.8.8.8", "7.7.7.7", "6.6.6.6"]}}));
        assert_eq!(
            resolv_conf(&none, NODE, Some(&cluster())),
            "nameserver 9.9.9.9\nnameserver 8.8.8.8\nnameserver 7.7.7.7\n"
        );
    }
}
