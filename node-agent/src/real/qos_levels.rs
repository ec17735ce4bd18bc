//! Keeps the QoS class levels' values in step with the pods this agent has: each sync records
//! what the pod needs of them, each removal forgets it, and the levels are then computed from
//! all recorded pods together (never adjusted by one pod's share) and written when their
//! values change.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

use super::container_config::pod_cpu_request_milli;
use crate::runtime::cgroups::{qos_class, QosClass};
use crate::runtime::qos_cgroups::{class_levels, write, Level, PodDemand};

/// The pods' demands by UID, and the levels as last written.
#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodDemand>,
    written: Option<[Level; 2]>,
}

pub struct QosLevels {
    cgroup_root: String,
    state: Mutex<State>,
}

/// What a pod needs of the QoS levels.
pub fn demand(pod: &Pod) -> PodDemand {
    match pod.spec.as_ref() {
        Some(spec) => PodDemand {
            qos: qos_class(spec),
            cpu_request_milli: pod_cpu_request_milli(spec),
        },
        None => PodDemand {
            qos: QosClass::BestEffort,
            cpu_request_milli: 0,
        },
    }
}

impl QosLevels {
    pub fn new(cgroup_root: &str) -> Self {
        QosLevels {
            cgroup_root: cgroup_root.to_string(),
            state: Mutex::default(),
        }
    }

    /// Records (`Some`) or forgets (`None`) the pod `uid`, then writes the class levels if
    /// their values differ from what was last written.
    pub fn set(&self, uid: &str, demand: Option<PodDemand>) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match demand {
            Some(d) => state.pods.insert(uid.to_string(), d),
            None => state.pods.remove(uid),
        };
        let levels = class_levels(&self.cgroup_root, state.pods.values());
        if state.written.as_ref() == Some(&levels) {
            return Ok(());
        }
        // Held while writing: two pods' updates never interleave their writes.
        let r = write(&levels);
        state.written = r.is_ok().then_some(levels);
        r
    }
}
