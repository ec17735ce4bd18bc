//! Liveness, readiness and startup probes, with Kubernetes' defaults (period 10 s, timeout 1 s,
//! failure threshold 3, success threshold 1, no initial delay) and semantics: readiness and
//! liveness wait until the startup probe has succeeded; a container is ready only after its
//! readiness probe passes; a liveness (or startup) probe failing `failureThreshold` times in a
//! row marks the container for a restart. Each probe of each running container is a task of
//! its own; syncs read the outcomes. The checks themselves are `probe_checks`'.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};

use super::probe_checks::{run_once, Target};
use crate::events::Recorder;
use crate::runtime::containers::Containers;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Readiness => "Readiness",
            Kind::Liveness => "Liveness",
        }
    }
}

/// A probe's timing, Kubernetes' defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// What the probes of one container have decided so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Startup probe passed (or there is none).
    pub started: bool,
    /// Readiness probe passing (or none, once started).
    pub ready: bool,
    /// Liveness or startup probe failed its threshold: restart the container.
    pub failed: bool,
}

type Key = (String, String);

struct Entry {
    container_id: String,
    outcome: Outcome,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The probes of every running container on the node.
#[derive(Clone)]
pub struct Prober {
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
    /// Where exec probes run their commands.
    containers: Containers,
}

impl Prober {
    pub fn new(containers: Containers) -> Prober {
        Prober {
            entries: Arc::default(),
            containers,
        }
    }

    /// The outcome for a running container, starting its probes the first time it is seen
    /// (and again when the container was replaced).
    pub fn observe(
        &self,
        events: &Recorder,
        pod: &k8s_openapi::api::core::v1::Pod,
        c: &Container,
        container_id: &str,
        ip: Ipv4Addr,
    ) -> Outcome {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid, c.name.clone());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(&key) {
            if e.container_id == container_id {
                return e.outcome;
            }
        }
        if let Some(old) = entries.remove(&key) {
            old.tasks.iter().for_each(|t| t.abort());
        }
        let outcome = Outcome {
            started: c.startup_probe.is_none(),
            ready: c.startup_probe.is_none() && c.readiness_probe.is_none(),
            failed: false,
        };
        let mut tasks = Vec::new();
        for (kind, probe) in [
            (Kind::Startup, &c.startup_probe),
            (Kind::Readiness, &c.readiness_probe),
            (Kind::Liveness, &c.liveness_probe),
        ] {
            let Some(probe) = probe.clone() else { continue };
            let this = self.clone();
            let (key, c, id, events, pod) = (
                key.clone(),
                c.clone(),
                container_id.to_string(),
                events.clone(),
                pod.clone(),
            );
            tasks.push(tokio::spawn(async move {
                this.run(kind, probe, key, c, id, ip, events, pod).await
            }));
        }
        entries.insert(
            key,
            Entry {
                container_id: container_id.to_string(),
                outcome,
                tasks,
            },
        );
        outcome
    }

    /// The outcome so far for a container, if its probes run (nothing is started).
    pub fn peek(&self, uid: &str, container: &str, container_id: &str) -> Option<Outcome> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&(uid.to_string(), container.to_string()))
            .filter(|e| e.container_id == container_id)
            .map(|e| e.outcome)
    }

    fn update(&self, key: &Key, id: &str, f: impl FnOnce(&mut Outcome)) -> Option<Outcome> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get_mut(key).filter(|e| e.container_id == id)?;
        f(&mut e.outcome);
        Some(e.outcome)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        self,
        kind: Kind,
        probe: Probe,
        key: Key,
        c: Container,
        id: String,
        ip: Ipv4Addr,
        events: Recorder,
        pod: k8s_openapi::api::core::v1::Pod,
    ) {
        let t = timing(&probe);
        tokio::time::sleep(t.initial_delay).await;
        let mut tick = tokio::time::interval(t.period);
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            tick.tick().await;
            let Some(now) = self.update(&key, &id, |_| {}) else {
                return;
            };
            if kind != Kind::Startup && !now.started {
                continue;
            }
            if kind == Kind::Startup && now.started {
                return;
            }
            let target = Target {
                ip,
                container: &c,
                containers: &self.containers,
                id: &id,
            };
            match run_once(&probe, &target, t.timeout).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                    if successes >= t.success_threshold {
                        self.update(&key, &id, |o| match kind {
                            Kind::Startup => {
                                o.started = true;
                                if c.readiness_probe.is_none() {
                                    o.ready = true;
                                }
                            }
                            Kind::Readiness => o.ready = true,
                            Kind::Liveness => {}
                        });
                    }
                }
                Err(why) => {
                    failures += 1;
                    successes = 0;
                    events.warning(
                        &pod,
                        "Unhealthy",
                        format!("{} probe failed: {why}", kind.name()),
                    );
                    if failures >= t.failure_threshold {
                        self.update(&key, &id, |o| match kind {
                            Kind::Readiness => o.ready = false,
                            Kind::Liveness | Kind::Startup => o.failed = true,
                        });
                        if kind != Kind::Readiness {
                            events.normal(
                                &pod,
                                "Killing",
                                format!(
                                    "Container {} failed {} probe, will be restarted",
                                    c.name,
                                    kind.name().to_lowercase()
                                ),
                            );
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Stops the probes of a pod's containers (all of them, or one container's).
    pub fn forget(&self, uid: &str, container: Option<&str>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(u, name), e| {
            let drop = u == uid && container.is_none_or(|c| c == name);
            if drop {
                e.tasks.iter().for_each(|t| t.abort());
            }
            !drop
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_defaults_fill_in_the_timing() {
        let t = timing(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }
}
