//! Whether a pod needs a full sync before its next periodic one, answered cheaply (the role of
//! the kubelet's pod lifecycle event generator): after each sync the runtime notes which
//! containers run, what their probes said, and when time alone will change something (a
//! back-off running out, volumes to refresh); between full syncs a worker's tick asks only
//! whether a running container has ended (one stat per container), a probe outcome moved, or
//! that time has come.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::probes::{Outcome, Prober};
use crate::pod_runtime::{PodObservation, RunState};
use crate::runtime::containers::Containers;

/// A running pod is synced in full at least this often.
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(10);
/// Pods with configMap, secret, downward API or projected volumes: their refresh period.
pub const VOLUME_REFRESH: Duration = Duration::from_secs(3);

/// What one sync left: the running containers (name, id, probe outcome) and when the next
/// full sync is due.
#[derive(Clone, Debug, Default)]
pub struct Fingerprint {
    running: Vec<(String, String, Option<Outcome>)>,
    due: Option<Instant>,
}

#[derive(Default)]
pub struct Pleg {
    pods: std::sync::Mutex<HashMap<String, Fingerprint>>,
}

fn strip(id: &str) -> &str {
    id.trim_start_matches("skiff://")
}

impl Pleg {
    /// Notes what a sync of pod `uid` observed.
    pub fn synced(&self, uid: &str, obs: &PodObservation, prober: &Prober, refreshes: bool) {
        let now = Instant::now();
        let all = obs.init_containers.iter().chain(&obs.containers);
        let mut running = Vec::new();
        // A container waiting (back-off, creating, pulling) or a sandbox not up changes with
        // time: sync again at the next tick.
        let mut waiting = obs.sandbox_error.is_some();
        for c in all {
            match &c.state {
                RunState::Running { .. } => {
                    let id = strip(&c.container_id).to_string();
                    let outcome = prober.peek(uid, &c.name, &id);
                    running.push((c.name.clone(), id, outcome));
                }
                RunState::Waiting { .. } => waiting = true,
                RunState::Terminated(_) => {}
            }
        }
        let every = if refreshes {
            VOLUME_REFRESH
        } else {
            FULL_SYNC_EVERY
        };
        let due = if waiting { now } else { now + every };
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.insert(
            uid.to_string(),
            Fingerprint {
                running,
                due: Some(due),
            },
        );
    }

    /// Whether pod `uid` needs a full sync now.
    pub fn needs_sync(&self, uid: &str, containers: &Containers, prober: &Prober) -> bool {
        let fp = {
            let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            match pods.get(uid) {
                Some(fp) => fp.clone(),
                None => return true,
            }
        };
        if fp.due.is_none_or(|d| Instant::now() >= d) {
            return true;
        }
        fp.running.iter().any(|(name, id, outcome)| {
            containers.has_ended(id) || prober.peek(uid, name, id) != *outcome
        })
    }

    pub fn forget(&self, uid: &str) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}
