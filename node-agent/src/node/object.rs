//! The Node and Lease objects this agent writes, made from measured facts: labels, the
//! local-path directory annotation, addresses, capacity and allocatable (capacity less
//! `--system-reserved` and the memory the eviction threshold keeps free), node info, and
//! conditions with their transition times. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use skiff_api::quantity::Quantity as Parsed;

use super::conditions::{Condition, MEMORY_AVAILABLE_MIN};
use super::facts::Facts;

/// Pods a node runs at most (the kubelet's default `--max-pods`).
pub const MAX_PODS: u64 = 110;
/// What the agent reports as its runtime.
pub const RUNTIME_VERSION: &str = concat!("skiff://", env!("CARGO_PKG_VERSION"));

/// Resources kept back from pods (`--system-reserved cpu=100m,memory=256Mi`), in millicores
/// and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
}

impl std::str::FromStr for Reserved {
    type Err = String;

    /// `cpu=100m,memory=256Mi,ephemeral-storage=1Gi` (any subset; empty for none).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut r = Reserved::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected NAME=QUANTITY"))?;
            let q = Parsed::parse(value.trim()).map_err(|e| format!("{name}={value}: {e}"))?;
            if q.is_negative() {
                return Err(format!("{name}={value}: must not be negative"));
            }
            match name.trim() {
                "cpu" => r.cpu_milli = q.milli_value(),
                "memory" => r.memory_bytes = q.value(),
                "ephemeral-storage" => r.disk_bytes = q.value(),
                other => {
                    return Err(format!(
                        "{other}: unknown resource (cpu, memory, ephemeral-storage)"
                    ))
                }
            }
        }
        Ok(r)
    }
}

fn q(s: String) -> Quantity {
    Quantity(s)
}

/// The Node as registered (metadata only; the control plane owns the spec's pod CIDR), with
/// the directory local volumes go in on this node (`storage_dir`, for the local-path
/// provisioner).
pub fn node(name: &str, facts: &Facts, storage_dir: &std::path::Path) -> Node {
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", facts.architecture.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                super::storage::DIR_ANNOTATION.to_string(),
                storage_dir.to_string_lossy().into_owned(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The status to report now; transition times are kept from `previous` for conditions whose
/// state did not change. `port` is the agent's own (`--port`), where the API server reaches it
/// at the InternalIP.
pub fn status(
    name: &str,
    facts: &Facts,
    port: u16,
    reserved: &Reserved,
    conditions: &[Condition],
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let cpu_milli = facts.cpus as i64 * 1000;
    let memory = facts.memory_bytes as i64;
    let disk = facts.disk_bytes as i64;
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", facts.cpus.to_string()),
        ("memory", format!("{}Ki", memory / 1024)),
        ("ephemeral-storage", format!("{}Ki", disk / 1024)),
        ("pods", MAX_PODS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), q(v)))
    .collect();
    let allocatable: BTreeMap<String, Quantity> = [
        (
            "cpu",
            format!("{}m", (cpu_milli - reserved.cpu_milli).max(0)),
        ),
        (
            "memory",
            format!(
                "{}Ki",
                ((memory - reserved.memory_bytes - MEMORY_AVAILABLE_MIN as i64).max(0)) / 1024
            ),
        ),
        (
            "ephemeral-storage",
            format!(
                "{}Ki",
                ((disk - reserved.disk_bytes) * 9 / 10).max(0) / 1024
            ),
        ),
        ("pods", MAX_PODS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), q(v)))
    .collect();
    let before = |kind: &str| {
        previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
    };
    let conditions = conditions
        .iter()
        .map(|c| {
            let status = if c.holds { "True" } else { "False" };
            let since = before(c.kind)
                .filter(|b| b.status == status)
                .and_then(|b| b.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: c.kind.into(),
                status: status.into(),
                reason: Some(c.reason.into()),
                message: Some(c.message.clone()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(since),
            }
        })
        .collect();
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: facts.address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.architecture.clone(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kernel_version: facts.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: concat!("skiff-agent/", env!("CARGO_PKG_VERSION")).into(),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether two statuses differ in anything but heartbeat times (a report is due then).
pub fn changed(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) != strip(b)
}

/// The node's Lease in `kube-node-lease`, renewed now.
pub fn lease(name: &str, duration_seconds: i32, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::conditions::conditions;
    use crate::node::facts::Usage;

    fn facts() -> Facts {
        Facts {
            hostname: "h".into(),
            address: "10.1.2.3".parse().expect("address"),
            cpus: 2,
            memory_bytes: 4 << 30,
            disk_bytes: 100 << 30,
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            architecture: "amd64".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        }
    }

    #[test]
    fn the_node_publishes_where_local_volumes_go() {
        let n = node(
            "n1",
            &facts(),
            std::path::Path::new("/var/lib/skiff-agent/storage"),
        );
        let annotations = n.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations
                .get("skiff.io/local-path-dir")
                .map(String::as_str),
            Some("/var/lib/skiff-agent/storage")
        );
        assert_eq!(
            n.metadata.labels.unwrap_or_default()["kubernetes.io/hostname"],
            "n1"
        );
    }

    #[test]
    fn system_reserved_parses_and_names_what_is_wrong() {
        let r: Reserved = "cpu=100m, memory=256Mi".parse().expect("parses");
        assert_eq!(r.cpu_milli, 100);
        assert_eq!(r.memory_bytes, 256 << 20);
        assert_eq!("".parse::<Reserved>(), Ok(Reserved::default()));
        let bad = "cpu=abc".parse::<Reserved>().expect_err("refused");
        assert!(bad.contains("cpu=abc"), "{bad}");
        let unknown = "gpu=1".parse::<Reserved>().expect_err("refused");
        assert!(unknown.contains("gpu"), "{unknown}");
        assert!("memory".parse::<Reserved>().is_err());
    }

    #[test]
    fn allocatable_is_capacity_less_reserved_and_transitions_are_kept() {
        let u = Usage {
            memory_available_bytes: 2 << 30,
            memory_total_bytes: 4 << 30,
            disk_available_bytes: 50 << 30,
            disk_total_bytes: 100 << 30,
            pids: 10,
            pid_max: 1000,
        };
        let reserved = Reserved {
            cpu_milli: 500,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
        };
        let t0: Timestamp = "2026-12-04T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-12-04T00:00:10Z".parse().expect("time");
        let s0 = status(
            "n",
            &facts(),
            10250,
            &reserved,
            &conditions(&u, Ok(())),
            None,
            t0,
        );
        let port = s0
            .daemon_endpoints
            .as_ref()
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|k| k.port);
        assert_eq!(port, Some(10250));
        let alloc = s0.allocatable.as_ref().expect("allocatable");
        assert_eq!(alloc["cpu"].0, "1500m");
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", ((3i64 << 30) - (100i64 << 20)) / 1024)
        );
        assert_eq!(s0.capacity.as_ref().expect("capacity")["pods"].0, "110");
        let s1 = status(
            "n",
            &facts(),
            10250,
            &reserved,
            &conditions(&u, Ok(())),
            Some(&s0),
            t1,
        );
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
                .expect("Ready")
        };
        assert_eq!(ready(&s1).last_transition_time, Some(Time(t0)));
        assert_eq!(ready(&s1).last_heartbeat_time, Some(Time(t1)));
        assert!(!changed(&s0, &s1), "only heartbeats moved");
        let s2 = status(
            "n",
            &facts(),
            10250,
            &reserved,
            &conditions(&u, Err("no network".into())),
            Some(&s1),
            t1,
        );
        assert_eq!(ready(&s2).status, "False");
        assert_eq!(ready(&s2).last_transition_time, Some(Time(t1)));
        assert!(changed(&s1, &s2));
    }
}
