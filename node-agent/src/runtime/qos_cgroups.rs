//! The values of the levels above the pods' cgroups, as the kubelet's QoS container manager
//! sets them: `/<root>` (the kubelet's kubepods) holds the node's allocatable CPU as shares
//! and its allocatable memory as a limit; `/<root>/burstable` the shares of its pods' CPU
//! requests together; `/<root>/besteffort` the least shares there are. [`levels`] and
//! [`class_levels`] compute them, from the pods' QoS classes and requests and the node's
//! allocatable, alone; [`write`] has them written, by the code that writes a pod's cgroup.

use std::path::PathBuf;

use super::cgroups::{cpu_shares, QosClass};
use super::pod_cgroup;
use super::spec::Resources;

/// The kubelet's MinShares: what the `besteffort` level gets, and the least any level does.
pub const MIN_SHARES: u64 = 2;

/// What the QoS levels need of one pod: its class and its CPU request in millicores (the
/// larger of its app containers' sum and any init container's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodDemand {
    pub qos: QosClass,
    pub cpu_request_milli: i64,
}

/// What the node gives pods: its capacity less `--system-reserved`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
}

impl Allocatable {
    /// `cpus` and `memory_bytes` of capacity, less what is reserved (never below zero).
    pub fn new(
        cpus: u64,
        memory_bytes: u64,
        reserved_cpu_milli: i64,
        reserved_memory: i64,
    ) -> Self {
        let cpu = i64::try_from(cpus)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        let memory = i64::try_from(memory_bytes).unwrap_or(i64::MAX);
        Allocatable {
            cpu_milli: cpu.saturating_sub(reserved_cpu_milli).max(0),
            memory_bytes: memory.saturating_sub(reserved_memory).max(0),
        }
    }
}

/// One cgroup level and the values it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub path: PathBuf,
    pub resources: Resources,
}

fn root_path(cgroup_root: &str) -> PathBuf {
    PathBuf::from("/").join(cgroup_root.trim_matches('/'))
}

fn shares_only(path: PathBuf, shares: u64) -> Level {
    Level {
        path,
        resources: Resources {
            cpu_shares: Some(shares),
            ..Default::default()
        },
    }
}

/// `/<root>`: the allocatable CPU as shares, the allocatable memory as its limit.
pub fn root_level(cgroup_root: &str, allocatable: Allocatable) -> Level {
    Level {
        path: root_path(cgroup_root),
        resources: Resources {
            cpu_shares: Some(cpu_shares(allocatable.cpu_milli)),
            memory_limit_bytes: Some(allocatable.memory_bytes),
            ..Default::default()
        },
    }
}

/// `/<root>/burstable` with the shares of the Burstable pods' CPU requests summed (at least
/// [`MIN_SHARES`]), then `/<root>/besteffort` with [`MIN_SHARES`].
pub fn class_levels<'a>(
    cgroup_root: &str,
    pods: impl IntoIterator<Item = &'a PodDemand>,
) -> [Level; 2] {
    let burstable_milli = pods
        .into_iter()
        .filter(|p| p.qos == QosClass::Burstable)
        .map(|p| p.cpu_request_milli.max(0))
        .fold(0i64, i64::saturating_add);
    let root = root_path(cgroup_root);
    [
        shares_only(
            root.join("burstable"),
            cpu_shares(burstable_milli).max(MIN_SHARES),
        ),
        shares_only(root.join("besteffort"), MIN_SHARES),
    ]
}

/// Every level, parents first: `/<root>`, then the classes'.
pub fn levels<'a>(
    cgroup_root: &str,
    pods: impl IntoIterator<Item = &'a PodDemand>,
    allocatable: Allocatable,
) -> Vec<Level> {
    let mut out = vec![root_level(cgroup_root, allocatable)];
    out.extend(class_levels(cgroup_root, pods));
    out
}

/// Creates each level in turn and writes its values, on whichever cgroup version the host
/// runs; stops at the first that fails.
pub fn write(levels: &[Level]) -> Result<(), String> {
    for level in levels {
        pod_cgroup::ensure(&level.path, &level.resources)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(qos: QosClass, cpu_request_milli: i64) -> PodDemand {
        PodDemand {
            qos,
            cpu_request_milli,
        }
    }

    fn shares(level: &Level) -> Option<u64> {
        level.resources.cpu_shares
    }

    #[test]
    fn allocatable_is_capacity_less_reserved() {
        let a = Allocatable::new(4, 8 << 30, 100, 256 << 20);
        assert_eq!(a.cpu_milli, 3900);
        assert_eq!(a.memory_bytes, (8 << 30) - (256 << 20));
        let none = Allocatable::new(1, 1 << 20, 2000, 2 << 20);
        assert_eq!((none.cpu_milli, none.memory_bytes), (0, 0));
    }

    #[test]
    fn root_holds_the_allocatable() {
        let a = Allocatable {
            cpu_milli: 3900,
            memory_bytes: 7 << 30,
        };
        let l = root_level("/skiff/", a);
        assert_eq!(l.path, PathBuf::from("/skiff"));
        assert_eq!(
            l.resources,
            Resources {
                cpu_shares: Some(3993),
                memory_limit_bytes: Some(7 << 30),
                ..Default::default()
            }
        );
        let empty = Allocatable {
            cpu_milli: 0,
            memory_bytes: 0,
        };
        assert_eq!(shares(&root_level("skiff", empty)), Some(MIN_SHARES));
    }

    #[test]
    fn burstable_sums_its_pods_requests_and_besteffort_gets_the_least() {
        use QosClass::*;
        let cases: Vec<(&str, Vec<PodDemand>, u64)> = vec![
            ("no pods", vec![], 2),
            (
                "only other classes",
                vec![pod(Guaranteed, 2000), pod(BestEffort, 0)],
                2,
            ),
            ("one pod", vec![pod(Burstable, 500)], 512),
            (
                "requests summed before converting",
                vec![
                    pod(Burstable, 100),
                    pod(Burstable, 150),
                    pod(Guaranteed, 1000),
                ],
                256,
            ),
            ("a pod without a CPU request", vec![pod(Burstable, 0)], 2),
            ("a tiny request", vec![pod(Burstable, 1)], 2),
        ];
        for (name, pods, want) in cases {
            let [burstable, besteffort] = class_levels("skiff", &pods);
            assert_eq!(burstable.path, PathBuf::from("/skiff/burstable"), "{name}");
            assert_eq!(shares(&burstable), Some(want), "{name}");
            assert_eq!(burstable.resources.memory_limit_bytes, None, "{name}");
            assert_eq!(
                besteffort.path,
                PathBuf::from("/skiff/besteffort"),
                "{name}"
            );
            assert_eq!(shares(&besteffort), Some(MIN_SHARES), "{name}");
        }
    }

    #[test]
    fn levels_come_parents_first() {
        let a = Allocatable {
            cpu_milli: 1000,
            memory_bytes: 1 << 30,
        };
        let pods = [pod(QosClass::Burstable, 250)];
        let paths: Vec<PathBuf> = levels("skiff", &pods, a)
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(
            paths,
            ["/skiff", "/skiff/burstable", "/skiff/besteffort"]
                .map(PathBuf::from)
                .to_vec()
        );
    }
}
