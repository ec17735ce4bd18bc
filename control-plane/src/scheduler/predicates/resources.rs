//! Resources (Kubernetes' NodeResourcesFit filter): what a pod requests, what a node can give,
//! and the first resource that does not fit in what is left. A pod requests, per resource, the
//! larger of its containers' sum and any one init container's request (init containers run one
//! at a time, before the others), and one pod slot. Quantities are read by `crate::quantity`
//! (admission has refused any that do not parse; a node's that do not count as zero).

use serde_json::Value;
use skiff_api::object;

use super::list;
use crate::quantity;

/// Amounts of the resources the scheduler counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    pub pods: i64,
}

/// Pods a node takes when its allocatable does not say (Kubernetes' default).
const DEFAULT_PODS: i64 = 110;

impl Resources {
    /// What a pod spec requests.
    pub fn requested(pod_spec: &Value) -> Resources {
        let of = |c: &Value| {
            let r = object::field(c, "resources.requests");
            let q = |k: &str| r.and_then(|r| r.get(k)).and_then(quantity::of_value);
            (
                q("cpu").map_or(0, |q| q.milli_value()),
                q("memory").map_or(0, |q| q.value()),
            )
        };
        let (mut cpu, mut memory) = list(pod_spec, "containers")
            .iter()
            .map(of)
            .fold((0i64, 0i64), |(c, m), (dc, dm)| {
                (c.saturating_add(dc), m.saturating_add(dm))
            });
        for (c, m) in list(pod_spec, "initContainers").iter().map(of) {
            cpu = cpu.max(c);
            memory = memory.max(m);
        }
        Resources {
            cpu,
            memory,
            pods: 1,
        }
    }

    /// What a Node can give (`status.allocatable`).
    pub fn allocatable(node: &Value) -> Resources {
        let alloc = object::field(node, "status.allocatable");
        let q = |k: &str| alloc.and_then(|a| a.get(k)).and_then(quantity::of_value);
        Resources {
            cpu: q("cpu").map_or(0, |q| q.milli_value()),
            memory: q("memory").map_or(0, |q| q.value()),
            pods: q("pods").map_or(DEFAULT_PODS, |q| q.value()),
        }
    }

    /// These less `used`.
    pub fn minus(self, used: Resources) -> Resources {
        Resources {
            cpu: self.cpu - used.cpu,
            memory: self.memory - used.memory,
            pods: self.pods - used.pods,
        }
    }
}

/// Kubernetes' reason for the first resource in `free` (what a node has left) that `want` does
/// not fit in, or None if it fits.
pub fn insufficient(want: &Resources, free: &Resources) -> Option<&'static str> {
    if want.pods > free.pods {
        Some("Too many pods")
    } else if want.cpu > free.cpu {
        Some("Insufficient cpu")
    } else if want.memory > free.memory {
        Some("Insufficient memory")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(cpu: &str, memory: &str) -> Value {
        json!({"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}})
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        // (case, spec, cpu millis, memory bytes)
        let cases = [
            ("nothing", json!({}), 0, 0),
            ("no requests", json!({"containers": [{"name": "c"}]}), 0, 0),
            (
                "containers add up",
                json!({"containers": [container("250m", "64Mi"), container("1", "1Gi")]}),
                1250,
                (64 << 20) + (1 << 30),
            ),
            (
                "a larger init container wins per resource",
                json!({"containers": [container("250m", "64Mi"), container("250m", "64Mi")],
                       "initContainers": [container("2", "1Mi"), container("100m", "100Mi")]}),
                2000,
                128 << 20,
            ),
        ];
        for (case, spec, cpu, memory) in cases {
            let r = Resources::requested(&spec);
            assert_eq!((r.cpu, r.memory, r.pods), (cpu, memory, 1), "{case}");
        }
    }

    #[test]
    fn the_first_resource_short_is_the_reason() {
        let node = json!({"status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "2"}}});
        let alloc = Resources::allocatable(&node);
        assert_eq!(
            alloc,
            Resources {
                cpu: 2000,
                memory: 1 << 30,
                pods: 2
            }
        );
        assert_eq!(Resources::allocatable(&json!({})).pods, 110);
        let want = |cpu, memory| Resources {
            cpu,
            memory,
            pods: 1,
        };
        let cases = [
            (want(2000, 1 << 30), alloc, None),
            (want(2001, 0), alloc, Some("Insufficient cpu")),
            (want(0, (1 << 30) + 1), alloc, Some("Insufficient memory")),
            (
                want(1, 1),
                alloc.minus(want(0, 0)).minus(want(0, 0)),
                Some("Too many pods"),
            ),
            (want(3000, 2 << 30), alloc, Some("Insufficient cpu")),
        ];
        for (want, free, reason) in cases {
            assert_eq!(insufficient(&want, &free), reason, "{want:?} in {free:?}");
        }
    }
}
