//! A Pod's status as kubectl users read it, made from what the runtime observed: phase (by the
//! kubelet's rules), the conditions PodScheduled, Initialized, ContainersReady and Ready with
//! transition times kept while they hold, container statuses (waiting, running or terminated
//! with reasons, last state, restart counts, ready), pod and host IPs, start time and QoS class.
//! Pure.

use std::net::Ipv4Addr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pod_runtime::{ContainerObservation, PodObservation, RunState, Terminated};
use crate::runtime::cgroups as qos;

/// A time as the API keeps it: whole seconds. A status made with finer times would never equal
/// the one read back, and would be written again on every sync.
fn time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: (!t.container_id.is_empty()).then(|| t.container_id.clone()),
        exit_code: t.exit_code,
        signal: t.signal,
        reason: (!t.reason.is_empty()).then(|| t.reason.clone()),
        message: (!t.message.is_empty()).then(|| t.message.clone()),
        started_at: t.started_at.map(time),
        finished_at: t.finished_at.map(time),
    }
}

fn container_status(c: &ContainerObservation) -> ContainerStatus {
    let state = match &c.state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        },
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: (!c.container_id.is_empty()).then(|| c.container_id.clone()),
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: c.last_terminated.as_ref().map(terminated),
            ..Default::default()
        }),
        ready: c.ready && matches!(c.state, RunState::Running { .. }),
        restart_count: c.restart_count,
        started: Some(c.started && matches!(c.state, RunState::Running { .. })),
        ..Default::default()
    }
}

/// The kubelet's phase rules.
pub fn phase(pod: &Pod, obs: &PodObservation) -> &'static str {
    let policy = restart_policy(pod);
    let init_done = obs
        .init_containers
        .iter()
        .all(|c| matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0));
    if !init_done {
        let init_failed = obs.init_containers.iter().any(|c| {
            matches!(&c.state, RunState::Terminated(t) if t.exit_code != 0)
                || (matches!(c.state, RunState::Waiting { .. })
                    && c.last_terminated.as_ref().is_some_and(|t| t.exit_code != 0))
        });
        if init_failed && policy == "Never" {
            return "Failed";
        }
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &obs.containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } => {
                if c.last_terminated.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if obs.containers.is_empty() || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// The QoS class the kubelet computes from requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    pod.spec
        .as_ref()
        .map(|s| qos::qos_class(s).as_str())
        .unwrap_or("BestEffort")
}

fn condition(
    previous: Option<&PodStatus>,
    kind: &str,
    holds: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if holds { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(time(now));
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..Default::default()
    }
}

fn names_not(cs: &[ContainerObservation], pred: impl Fn(&ContainerObservation) -> bool) -> String {
    cs.iter()
        .filter(|c| !pred(c))
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The status to report for `pod` now.
pub fn pod_status(pod: &Pod, obs: &PodObservation, host_ip: Ipv4Addr, now: Timestamp) -> PodStatus {
    let previous = pod.status.as_ref();
    let phase = phase(pod, obs);
    let init_ok =
        |c: &ContainerObservation| matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0);
    let initialized = obs.init_containers.iter().all(init_ok);
    let ready_c = |c: &ContainerObservation| c.ready && matches!(c.state, RunState::Running { .. });
    // A pod whose containers all completed is not ready (the kubelet's PodCompleted).
    let finished = phase == "Succeeded" || phase == "Failed";
    let containers_ready = !finished && obs.containers.iter().all(ready_c);
    let not_ready_msg = || {
        let names = names_not(&obs.containers, ready_c);
        format!("containers with unready status: [{names}]")
    };
    let (ready_reason, ready_msg) = if finished {
        (Some("PodCompleted"), None)
    } else if containers_ready {
        (None, None)
    } else {
        (Some("ContainersNotReady"), Some(not_ready_msg()))
    };
    let mut conditions = vec![
        condition(previous, "PodScheduled", true, None, None, now),
        condition(
            previous,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            (!initialized).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    names_not(&obs.init_containers, init_ok)
                )
            }),
            now,
        ),
        condition(
            previous,
            "ContainersReady",
            containers_ready,
            ready_reason,
            ready_msg.clone(),
            now,
        ),
        condition(
            previous,
            "Ready",
            containers_ready,
            ready_reason,
            ready_msg,
            now,
        ),
    ];
    // Keep the scheduler's PodScheduled time.
    if let Some(s) = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions[0] = s.clone();
    }
    let ip = obs.ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: previous
            .and_then(|p| p.start_time.clone())
            .or(obs.started_at.map(time)),
        qos_class: Some(qos_class(pod).into()),
        init_container_statuses: (!obs.init_containers.is_empty())
            .then(|| obs.init_containers.iter().map(container_status).collect()),
        container_statuses: Some(obs.containers.iter().map(container_status).collect()),
        message: obs.sandbox_error.clone(),
        reason: None,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn pod(policy: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn obs(state: RunState, last: Option<i32>) -> ContainerObservation {
        ContainerObservation {
            name: "c".into(),
            image: "busybox".into(),
            image_id: String::new(),
            container_id: "skiff://1".into(),
            ready: true,
            started: true,
            restart_count: last.map_or(0, |_| 1),
            last_terminated: last.map(ended),
            state,
        }
    }

    fn ended(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: None,
            finished_at: None,
            container_id: "skiff://1".into(),
        }
    }

    fn running() -> RunState {
        RunState::Running {
            started_at: t("2026-12-04T00:00:00Z"),
        }
    }

    fn waiting(reason: &str) -> RunState {
        RunState::Waiting {
            reason: reason.into(),
            message: String::new(),
        }
    }

    #[test]
    fn phase_follows_the_kubelet_rules() {
        let one = |c| PodObservation {
            containers: vec![c],
            ..Default::default()
        };
        let cases = [
            ("Always", obs(waiting("ContainerCreating"), None), "Pending"),
            ("Always", obs(running(), None), "Running"),
            (
                "Always",
                obs(RunState::Terminated(ended(0)), None),
                "Running",
            ),
            (
                "Always",
                obs(waiting("CrashLoopBackOff"), Some(1)),
                "Running",
            ),
            (
                "OnFailure",
                obs(RunState::Terminated(ended(0)), None),
                "Succeeded",
            ),
            (
                "OnFailure",
                obs(RunState::Terminated(ended(1)), None),
                "Running",
            ),
            ("Never", obs(RunState::Terminated(ended(1)), None), "Failed"),
            (
                "Never",
                obs(RunState::Terminated(ended(0)), None),
                "Succeeded",
            ),
        ];
        for (policy, c, want) in cases {
            let state = format!("{:?}", c.state);
            assert_eq!(phase(&pod(policy), &one(c)), want, "{policy} {state}");
        }
        let mut init = one(obs(waiting("PodInitializing"), None));
        init.init_containers = vec![obs(running(), None)];
        assert_eq!(phase(&pod("Always"), &init), "Pending");
        init.init_containers = vec![obs(RunState::Terminated(ended(2)), None)];
        assert_eq!(phase(&pod("Never"), &init), "Failed");
    }

    #[test]
    fn a_status_read_back_from_the_api_is_the_status_made_again() {
        let mut p = pod("Always");
        let o = PodObservation {
            ip: Some("10.244.0.7".parse().expect("ip")),
            started_at: Some(t("2026-12-04T00:00:00.123456789Z")),
            containers: vec![obs(
                RunState::Running {
                    started_at: t("2026-12-04T00:00:01.987654321Z"),
                },
                None,
            )],
            ..Default::default()
        };
        let host = "192.168.1.2".parse().expect("ip");
        let s = pod_status(&p, &o, host, t("2026-12-04T00:00:02.5Z"));
        // Through the API's JSON, which keeps whole seconds.
        let back: PodStatus =
            serde_json::from_value(serde_json::to_value(&s).expect("json")).expect("status");
        p.status = Some(back.clone());
        assert_eq!(pod_status(&p, &o, host, t("2026-12-04T00:00:03.7Z")), back);
    }

    #[test]
    fn conditions_and_statuses_read_as_kubectl_shows_them() {
        let p = pod("Always");
        let o = PodObservation {
            ip: Some("10.244.0.7".parse().expect("ip")),
            started_at: Some(t("2026-12-04T00:00:00Z")),
            containers: vec![obs(running(), Some(137))],
            ..Default::default()
        };
        let s = pod_status(
            &p,
            &o,
            "192.168.1.2".parse().expect("ip"),
            t("2026-12-04T00:00:05Z"),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.2"));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        let cs = &s.container_statuses.as_ref().expect("statuses")[0];
        assert!(cs.ready);
        assert_eq!(cs.restart_count, 1);
        let last = cs
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .expect("last");
        assert_eq!(last.exit_code, 137);
        let ready = |s: &PodStatus| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
                .expect("Ready")
        };
        assert_eq!(ready(&s).status, "True");

        // Not ready: the message names the container; the transition time moves once.
        let mut p2 = p.clone();
        p2.status = Some(s.clone());
        let mut o2 = o.clone();
        o2.containers[0].ready = false;
        let s2 = pod_status(
            &p2,
            &o2,
            "192.168.1.2".parse().expect("ip"),
            t("2026-12-04T00:00:09Z"),
        );
        assert_eq!(ready(&s2).status, "False");
        assert_eq!(
            ready(&s2).message.as_deref(),
            Some("containers with unready status: [c]")
        );
        assert_eq!(
            ready(&s2).last_transition_time,
            Some(Time(t("2026-12-04T00:00:09Z")))
        );
        assert_eq!(s2.start_time, s.start_time, "start time is kept");
    }
}
