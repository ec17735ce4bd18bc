//! Where pods and containers sit in the cgroup tree, and what their resources become: the pod's
//! QoS class as the kubelet computes it (Guaranteed, Burstable, BestEffort), the paths under
//! `--cgroup-root` (`/<root>/pod<uid>`, `/<root>/burstable/pod<uid>`,
//! `/<root>/besteffort/pod<uid>`, containers inside), CPU requests and limits as shares and CFS
//! quota, and the OOM kill count of a cgroup on v1 (`memory.oom_control`) or v2
//! (`memory.events`). The computations are pure; reading counts and removing cgroups go through
//! the host's cgroup mounts, found by libcgroups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use skiff_api::quantity::Quantity;

/// The default `--cgroup-root`.
pub const DEFAULT_CGROUP_ROOT: &str = "skiff";

/// The kubelet's CFS period, µs.
pub const CFS_PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// A container's positive CPU and memory requests and limits, in thousandths. A limit without
/// a request also counts as the request, as the API server's defaulting makes it.
fn container_amounts(
    c: &Container,
) -> (BTreeMap<&'static str, i128>, BTreeMap<&'static str, i128>) {
    let read =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            let mut out = BTreeMap::new();
            for name in QOS_RESOURCES {
                let v = m
                    .and_then(|m| m.get(name))
                    .and_then(|q| Quantity::parse(&q.0).ok())
                    .map(|q| i128::from(q.milli_value()))
                    .unwrap_or(0);
                if v > 0 {
                    out.insert(name, v);
                }
            }
            out
        };
    let resources = c.resources.as_ref();
    let mut requests = read(resources.and_then(|r| r.requests.as_ref()));
    let limits = read(resources.and_then(|r| r.limits.as_ref()));
    for (name, v) in &limits {
        requests.entry(name).or_insert(*v);
    }
    (requests, limits)
}

/// The pod's QoS class, by the kubelet's rules over its init and app containers: no CPU or
/// memory requests or limits anywhere is BestEffort; every container limiting both, with
/// requests equal to limits in sum, is Guaranteed; anything else Burstable.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let init = spec.init_containers.iter().flatten();
    for c in init.chain(spec.containers.iter()) {
        let (req, lim) = container_amounts(c);
        for (k, v) in req {
            *requests.entry(k).or_default() += v;
        }
        if !QOS_RESOURCES.iter().all(|r| lim.contains_key(r)) {
            guaranteed = false;
        }
        for (k, v) in lim {
            *limits.entry(k).or_default() += v;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed && requests == limits {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// The pod's cgroup: `/<root>/pod<uid>` for Guaranteed pods, else under the class's own level.
pub fn pod_cgroup_path(cgroup_root: &str, qos: QosClass, pod_uid: &str) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.push(cgroup_root.trim_matches('/'));
    match qos {
        QosClass::Guaranteed => {}
        QosClass::Burstable => p.push("burstable"),
        QosClass::BestEffort => p.push("besteffort"),
    }
    p.push(format!("pod{pod_uid}"));
    p
}

/// A container's cgroup inside its pod's.
pub fn container_cgroup_path(pod_cgroup: &Path, container_id: &str) -> PathBuf {
    pod_cgroup.join(container_id)
}

/// cgroup v1 `cpu.shares` for a CPU request in millicores (the kubelet's MilliCPUToShares):
/// 1024 per CPU, at least 2.
pub fn cpu_shares(request_millis: i64) -> u64 {
    let shares = request_millis.max(0) as u64 * 1024 / 1000;
    shares.max(2)
}

/// CFS quota (µs per `period`) for a CPU limit in millicores (the kubelet's MilliCPUToQuota):
/// at least 1 ms.
pub fn cpu_quota(limit_millis: i64, period: u64) -> i64 {
    let quota = limit_millis.max(0) as i128 * period as i128 / 1000;
    (quota as i64).max(1000)
}

pub use skiff_shim_monitor::cgroup::{oom_kill_count, parse_oom_kill, remove_cgroup};

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |v: &[(&str, &str)]| {
            if v.is_empty() {
                None
            } else {
                Some(
                    v.iter()
                        .map(|(k, q)| (k.to_string(), K8sQuantity(q.to_string())))
                        .collect(),
                )
            }
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes() {
        let full = [("cpu", "500m"), ("memory", "128Mi")];
        let cases: Vec<(&str, Vec<Container>, Vec<Container>, QosClass)> = vec![
            (
                "nothing",
                vec![container(&[], &[])],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "only other resources",
                vec![container(&[("ephemeral-storage", "1Gi")], &[])],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "limits only",
                vec![container(&[], &full)],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "requests equal limits",
                vec![container(&full, &full)],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "same amounts written differently",
                vec![container(&[("cpu", "0.5"), ("memory", "134217728")], &full)],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "requests below limits",
                vec![container(&[("cpu", "100m"), ("memory", "128Mi")], &full)],
                vec![],
                QosClass::Burstable,
            ),
            (
                "requests only",
                vec![container(&full, &[])],
                vec![],
                QosClass::Burstable,
            ),
            (
                "memory limit only",
                vec![container(&[], &[("memory", "128Mi")])],
                vec![],
                QosClass::Burstable,
            ),
            (
                "one container without limits",
                vec![container(&[], &full), container(&[], &[])],
                vec![],
                QosClass::Burstable,
            ),
            (
                "init container without limits",
                vec![container(&[], &full)],
                vec![container(&[], &[])],
                QosClass::Burstable,
            ),
            (
                "zero amounts count as none",
                vec![container(&[("cpu", "0")], &[("memory", "0")])],
                vec![],
                QosClass::BestEffort,
            ),
        ];
        for (name, containers, init, want) in cases {
            let spec = PodSpec {
                containers,
                init_containers: if init.is_empty() { None } else { Some(init) },
                ..Default::default()
            };
            assert_eq!(qos_class(&spec), want, "{name}");
        }
    }

    #[test]
    fn paths() {
        for (root, qos, want) in [
            ("skiff", QosClass::Guaranteed, "/skiff/podu1"),
            ("/skiff/", QosClass::Burstable, "/skiff/burstable/podu1"),
            ("agent-2", QosClass::BestEffort, "/agent-2/besteffort/podu1"),
        ] {
            assert_eq!(pod_cgroup_path(root, qos, "u1"), PathBuf::from(want));
        }
        assert_eq!(
            container_cgroup_path(Path::new("/skiff/podu1"), "abc"),
            PathBuf::from("/skiff/podu1/abc")
        );
    }

    #[test]
    fn cpu_conversions() {
        for (millis, shares) in [
            (0, 2),
            (1, 2),
            (100, 102),
            (500, 512),
            (1000, 1024),
            (2500, 2560),
        ] {
            assert_eq!(cpu_shares(millis), shares, "{millis}m");
        }
        for (millis, quota) in [(1, 1000), (10, 1000), (250, 25_000), (1500, 150_000)] {
            assert_eq!(cpu_quota(millis, CFS_PERIOD_US), quota, "{millis}m");
        }
    }
}
