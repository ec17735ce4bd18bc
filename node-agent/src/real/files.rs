//! The files the agent writes for each pod and bind mounts into its containers, as the kubelet
//! does: /etc/hosts (localhost, the pod's own name and address, hostAliases) and /etc/hostname
//! (/etc/resolv.conf is `resolv`'s). Pure renderers.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

/// The pod's hostname: `spec.hostname` or its name (truncated to 63 characters as Kubernetes
/// does).
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The pod's /etc/hosts; a pod with a subdomain is named in the cluster's domain too.
pub fn hosts(pod: &Pod, ip: Option<Ipv4Addr>, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let spec = pod.spec.as_ref();
    if let Some(ip) = ip {
        let host = hostname(pod);
        let fqdn = spec
            .and_then(|s| s.subdomain.as_ref())
            .map(|sub| {
                format!(
                    "{host}.{sub}.{}.svc.{cluster_domain}\t",
                    pod.metadata.namespace.as_deref().unwrap_or("default")
                )
            })
            .unwrap_or_default();
        out.push_str(&format!("{ip}\t{fqdn}{host}\n"));
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodSpec};

    #[test]
    fn hosts_name_the_pod_and_its_aliases() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-0".into());
        pod.metadata.namespace = Some("shop".into());
        pod.spec = Some(PodSpec {
            subdomain: Some("web".into()),
            host_aliases: Some(vec![HostAlias {
                ip: "10.1.1.1".into(),
                hostnames: Some(vec!["db".into(), "db.local".into()]),
            }]),
            ..Default::default()
        });
        let text = hosts(
            &pod,
            Some("10.244.0.9".parse().expect("ip")),
            "cluster.local",
        );
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(
            text.contains("10.244.0.9\tweb-0.web.shop.svc.cluster.local\tweb-0\n"),
            "{text}"
        );
        assert!(text.contains("10.1.1.1\tdb\tdb.local\n"));
        assert_eq!(hostname(&pod), "web-0");
    }
}
