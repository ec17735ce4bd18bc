//! Node lifecycle: a node whose Lease (in `kube-node-lease`) has not changed for the grace
//! period turns NotReady, as in Kubernetes: its Ready condition becomes Unknown, it gets the
//! `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute, the latter stamped with
//! the time), and its pods are marked not ready. Pods that do not tolerate the NoExecute taint
//! are evicted (deleted, so their controllers replace them elsewhere) once the eviction timeout
//! has passed since the taint was added, or after their own `tolerationSeconds`. A node whose
//! Lease moves again gets Ready back and loses the taints.
//!
//! Silence is measured on this replica's clock from when it saw the Lease last change (as the
//! Kubernetes controller does), so clocks that differ between machines do not matter; a newly
//! elected replica gives every node a full grace period.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::pods;
use super::runner::{values, Again, Pass};
use super::Context;
use crate::scheduler::predicates::taints::{self, Taint, Toleration};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The two timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Lease silence after which a node is NotReady.
    pub grace: Duration,
    /// Time after NotReady before pods without their own toleration are evicted.
    pub eviction: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace: Duration::from_secs(20),
            eviction: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Mark the node NotReady (the new node object).
    NotReady(Value),
    /// Mark the node Ready again (the new node object).
    Ready(Value),
    /// Set the pod's Ready condition to False (the new pod object).
    PodNotReady(Value),
    /// Delete the pod (namespace, name, node).
    Evict(String, String, String),
    /// Delete at once a pod bound to a node that no longer exists (namespace, name, node).
    Collect(String, String, String),
}

/// How long a node must have been gone before the pods bound to it are deleted at once
/// (Kubernetes' pod garbage collector waits the same).
pub const ORPHAN_QUARANTINE: Duration = Duration::from_secs(40);

fn ready_condition(node: &Value) -> Option<&Value> {
    pods::condition(node, "Ready")
}

/// When the NoExecute unreachable taint was added, if the node has it.
fn tainted_at(node: &Value) -> Option<jiff::Timestamp> {
    object::field(node, "spec.taints")
        .and_then(Value::as_array)?
        .iter()
        .find(|t| {
            t.get("key").and_then(Value::as_str) == Some(UNREACHABLE)
                && t.get("effect").and_then(Value::as_str) == Some("NoExecute")
        })
        .map(|t| {
            t.get("timeAdded")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        })
}

fn set_ready(node: &Value, status: &str, reason: &str, message: &str, now: &str) -> Value {
    let mut next = node.clone();
    if !next.get("status").is_some_and(Value::is_object) {
        next["status"] = json!({});
    }
    let mut conditions: Vec<Value> = object::field(node, "status.conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Ready"));
    conditions.insert(
        0,
        json!({"type": "Ready", "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now}),
    );
    next["status"]["conditions"] = Value::Array(conditions);
    next
}

fn without_unreachable(taints: &[Value]) -> Vec<Value> {
    taints
        .iter()
        .filter(|t| t.get("key").and_then(Value::as_str) != Some(UNREACHABLE))
        .cloned()
        .collect()
}

fn with_taints(node: &Value, taints: Vec<Value>) -> Value {
    let mut next = node.clone();
    if !next.get("spec").is_some_and(Value::is_object) {
        next["spec"] = json!({});
    }
    if taints.is_empty() {
        if let Some(spec) = next["spec"].as_object_mut() {
            spec.remove("taints");
        }
    } else {
        next["spec"]["taints"] = Value::Array(taints);
    }
    next
}

/// How long after the taint `pod` may stay: its own tolerationSeconds, the default, or for
/// ever (None) when it tolerates the taint without a limit.
fn stay(pod: &Value, default: Duration) -> Option<Duration> {
    let tolerations = Toleration::of_spec(pod.get("spec").unwrap_or(&Value::Null));
    match taints::toleration(&tolerations, &Taint::new(UNREACHABLE, "", "NoExecute")) {
        None => Some(default),
        Some(t) => t.seconds.map(|s| Duration::from_secs(s.max(0) as u64)),
    }
}

/// What to do, given each node's Lease silence and how long missing nodes have been gone (as
/// observed here), and the time.
pub fn plan(
    nodes: &[&Value],
    pods_list: &[&Value],
    silent: &BTreeMap<String, Duration>,
    gone: &BTreeMap<String, Duration>,
    settings: Settings,
    now: jiff::Timestamp,
) -> (Vec<Action>, Again) {
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let mut actions = Vec::new();
    let mut again: Again = None;
    let mut soonest = |d: Duration| {
        again = Some(again.map_or(d, |a: Duration| a.min(d)));
    };
    let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for p in pods_list {
        let node = object::field(p, "spec.nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !node.is_empty() {
            by_node.entry(node).or_default().push(p);
        }
    }
    for (node, on_node) in &by_node {
        let Some(missing) = gone.get(*node) else {
            continue;
        };
        if *missing < ORPHAN_QUARANTINE {
            soonest(ORPHAN_QUARANTINE - *missing);
            continue;
        }
        for p in on_node {
            actions.push(Action::Collect(
                object::namespace(p).to_string(),
                object::name(p).to_string(),
                node.to_string(),
            ));
        }
    }
    for node in nodes {
        let name = object::name(node);
        let quiet = silent.get(name).copied().unwrap_or_default();
        let taints: Vec<Value> = object::field(node, "spec.taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready_status = ready_condition(node)
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("Unknown")
            .to_string();
        let tainted = tainted_at(node);
        let on_node = by_node.get(name).cloned().unwrap_or_default();
        if quiet >= settings.grace {
            if tainted.is_none() || ready_status != "Unknown" {
                let mut next = set_ready(
                    node,
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                    &now_text,
                );
                let mut t = without_unreachable(&taints);
                t.push(json!({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": now_text}));
                t.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now_text}));
                next = with_taints(&next, t);
                actions.push(Action::NotReady(next));
                // Pods are marked and evicted from the next pass on, against the stored taint.
                soonest(Duration::from_millis(200));
                continue;
            }
            let since = tainted.unwrap_or(now);
            for p in on_node {
                if pods::is_terminating(p) {
                    continue;
                }
                if pods::is_ready(p) {
                    let mut next = (*p).clone();
                    if let Some(cs) = next["status"]["conditions"].as_array_mut() {
                        for c in cs.iter_mut() {
                            if c.get("type").and_then(Value::as_str) == Some("Ready") {
                                c["status"] = json!("False");
                                c["lastTransitionTime"] = json!(now_text);
                            }
                        }
                    }
                    actions.push(Action::PodNotReady(next));
                }
                if matches!(pods::phase(p).as_str(), "Succeeded" | "Failed") {
                    continue;
                }
                let Some(limit) = stay(p, settings.eviction) else {
                    continue;
                };
                let elapsed =
                    Duration::from_secs((now.as_second() - since.as_second()).max(0) as u64);
                if elapsed >= limit {
                    actions.push(Action::Evict(
                        object::namespace(p).to_string(),
                        object::name(p).to_string(),
                        name.to_string(),
                    ));
                } else {
                    soonest(limit - elapsed);
                }
            }
        } else {
            // Heard from: Ready again if this controller had marked it.
            if tainted.is_some() {
                let next = set_ready(
                    node,
                    "True",
                    "KubeletReady",
                    "node is posting its lease again",
                    &now_text,
                );
                actions.push(Action::Ready(with_taints(
                    &next,
                    without_unreachable(&taints),
                )));
            }
            soonest(settings.grace - quiet);
        }
    }
    (actions, again)
}

/// When this replica last saw each node's Lease change, and since when bound pods have named
/// nodes that do not exist.
#[derive(Default)]
struct Heard {
    /// node -> (lease resourceVersion, when it was first seen at that version)
    seen: BTreeMap<String, (String, Instant)>,
    /// missing node -> when first seen missing
    missing: BTreeMap<String, Instant>,
}

impl Heard {
    /// Each node's silence, after noting the Lease versions seen now.
    fn silence(
        &mut self,
        nodes: &[&Value],
        leases: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Duration> {
        let now = Instant::now();
        let mut out = BTreeMap::new();
        let mut next = BTreeMap::new();
        for node in nodes {
            let name = object::name(node).to_string();
            let version = leases.get(&name).cloned().unwrap_or_default();
            let since = match self.seen.get(&name) {
                Some((v, t)) if *v == version => *t,
                _ => now,
            };
            out.insert(name.clone(), now.duration_since(since));
            next.insert(name, (version, since));
        }
        self.seen = next;
        out
    }

    /// How long each node that pods are bound to, but that does not exist, has been missing.
    fn gone(&mut self, nodes: &[&Value], pods_list: &[&Value]) -> BTreeMap<String, Duration> {
        let now = Instant::now();
        let present: std::collections::BTreeSet<&str> =
            nodes.iter().map(|n| object::name(n)).collect();
        let mut next = BTreeMap::new();
        for p in pods_list {
            let node = object::field_string(p, "spec.nodeName");
            if node.is_empty() || present.contains(node.as_str()) {
                continue;
            }
            let since = self.missing.get(&node).copied().unwrap_or(now);
            next.insert(node, since);
        }
        self.missing = next;
        self.missing
            .iter()
            .map(|(n, t)| (n.clone(), now.duration_since(*t)))
            .collect()
    }
}

/// Writes a node's new taints (spec) and Ready condition (status), and records `reason`.
async fn set_node(pass: &Pass, node: &Value, reason: &str) {
    let name = object::name(node).to_string();
    match pass.update(node).await {
        Ok(stored) => {
            // The status part (the Ready condition) goes through the status path.
            let mut next = stored.object;
            next["status"] = node["status"].clone();
            if let Err(e) = pass.update_status(&next).await {
                tracing::debug!(node = %name, %e, reason, "node status not written");
            }
            tracing::warn!(node = %name, reason, "node lifecycle");
            let msg = format!("Node {name} status is now: {reason}");
            pass.event(
                &next,
                reason == "NodeNotReady",
                reason,
                &msg,
                "node-controller",
            )
            .await;
        }
        Err(e) => tracing::debug!(node = %name, %e, reason, "node not written"),
    }
}

async fn carry_out(pass: &Pass, action: Action) {
    let pod_kind = Kind::named("pods").expect("Pod is served");
    match action {
        Action::NotReady(node) => set_node(pass, &node, "NodeNotReady").await,
        Action::Ready(node) => set_node(pass, &node, "NodeReady").await,
        Action::PodNotReady(pod) => {
            if let Err(e) = pass.update_status(&pod).await {
                tracing::debug!(pod = object::name(&pod), %e, "pod readiness not written");
            }
        }
        Action::Collect(namespace, name, node) => {
            match pass.delete_with(&pod_kind, &namespace, &name, 0, "").await {
                Ok(()) => {
                    tracing::info!(pod = %name, %node, "deleted a pod of a node that is gone")
                }
                Err(e) => tracing::debug!(pod = %name, %e, "orphan pod not deleted"),
            }
        }
        Action::Evict(namespace, name, node) => {
            match pass.delete(&pod_kind, &namespace, &name).await {
                Ok(()) => {
                    tracing::info!(pod = %name, %node, "evicted from a NotReady node");
                    if let Some(p) = pass.cache.get(&pod_kind, &namespace, &name) {
                        let msg = format!("Marking for deletion Pod {namespace}/{name}");
                        pass.event(
                            &p.object,
                            false,
                            "TaintManagerEviction",
                            &msg,
                            "taint-eviction-controller",
                        )
                        .await;
                    }
                }
                Err(e) => tracing::debug!(pod = %name, %e, "eviction not done"),
            }
        }
    }
}

/// Watches node heartbeats whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let nodes = Kind::named("nodes").expect("Node is served");
    let leases = Kind::named("leases").expect("Lease is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let settings = ctx.node_lifecycle;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let mut leadership = ctx.leadership.clone();
    // Observations made under an earlier leadership do not carry over.
    let reset = heard.clone();
    tokio::spawn(async move {
        while leadership.changed().await.is_ok() {
            let mut heard = reset.lock().unwrap_or_else(|p| p.into_inner());
            heard.seen.clear();
            heard.missing.clear();
        }
    });
    super::runner::run(
        ctx,
        &[nodes.prefix(None)],
        // Between changes, a look at the leases this often.
        (settings.grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(2)),
        |pass| {
            let heard = heard.clone();
            async move {
                let node_items = pass.cache.list(&nodes, None);
                let node_refs = values(&node_items);
                let lease_versions: BTreeMap<String, String> = pass
                    .cache
                    .list(&leases, Some("kube-node-lease"))
                    .iter()
                    .map(|s| (object::name(&s.object).to_string(), s.revision.to_string()))
                    .collect();
                let pod_items = pass.cache.list(&pod_kind, None);
                let pod_refs = values(&pod_items);
                let (silent, gone) = {
                    let mut heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                    (
                        heard.silence(&node_refs, &lease_versions),
                        heard.gone(&node_refs, &pod_refs),
                    )
                };
                let (actions, again) = plan(
                    &node_refs,
                    &pod_refs,
                    &silent,
                    &gone,
                    settings,
                    jiff::Timestamp::now(),
                );
                for a in actions {
                    carry_out(&pass, a).await;
                }
                again
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"nodeName": node},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    /// The plan with nothing missing, at time `t`.
    fn plan_at(
        nodes: &[&Value],
        pods: &[&Value],
        silent: &BTreeMap<String, Duration>,
        t: &str,
    ) -> (Vec<Action>, Again) {
        plan(nodes, pods, silent, &BTreeMap::new(), settings(), at(t))
    }

    fn settings() -> Settings {
        Settings {
            grace: Duration::from_secs(10),
            eviction: Duration::from_secs(30),
        }
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn pods_of_nodes_gone_past_the_quarantine_are_deleted_at_once() {
        let p = pod("orphan", "ghost");
        let fresh = BTreeMap::from([("ghost".to_string(), Duration::from_secs(5))]);
        let (actions, again) = plan(
            &[],
            &[&p],
            &BTreeMap::new(),
            &fresh,
            settings(),
            at("2026-01-01T00:00:00Z"),
        );
        assert!(actions.is_empty());
        assert_eq!(again, Some(Duration::from_secs(35)));
        let old = BTreeMap::from([("ghost".to_string(), ORPHAN_QUARANTINE)]);
        let (actions, _) = plan(
            &[],
            &[&p],
            &BTreeMap::new(),
            &old,
            settings(),
            at("2026-01-01T00:00:00Z"),
        );
        assert!(
            matches!(&actions[..], [Action::Collect(_, name, node)] if name == "orphan" && node == "ghost")
        );
    }

    #[test]
    fn a_silent_node_turns_not_ready_with_taints() {
        let n = node("n1");
        let silent = BTreeMap::from([("n1".to_string(), Duration::from_secs(11))]);
        let (actions, _) = plan_at(&[&n], &[], &silent, "2026-01-01T00:00:00Z");
        let [Action::NotReady(next)] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert_eq!(next["status"]["conditions"][0]["status"], "Unknown");
        assert_eq!(
            next["status"]["conditions"][0]["reason"],
            "NodeStatusUnknown"
        );
        assert_eq!(next["spec"]["taints"][1]["effect"], "NoExecute");
        assert_eq!(
            next["spec"]["taints"][1]["timeAdded"],
            "2026-01-01T00:00:00Z"
        );
        // Not silent long enough: nothing, and a look again when it would be.
        let quiet = BTreeMap::from([("n1".to_string(), Duration::from_secs(4))]);
        let (actions, again) = plan_at(&[&n], &[], &quiet, "2026-01-01T00:00:00Z");
        assert!(actions.is_empty());
        assert_eq!(again, Some(Duration::from_secs(6)));
    }

    #[test]
    fn pods_are_marked_not_ready_then_evicted_unless_they_tolerate() {
        let n = node("n1");
        let silent = BTreeMap::from([("n1".to_string(), Duration::from_secs(60))]);
        let (actions, _) = plan_at(&[&n], &[], &silent, "2026-01-01T00:00:00Z");
        let Action::NotReady(tainted) = &actions[0] else {
            panic!()
        };
        let plain = pod("plain", "n1");
        let mut forever = pod("forever", "n1");
        forever["spec"]["tolerations"] =
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]);
        let mut short = pod("short", "n1");
        short["spec"]["tolerations"] = json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]);
        let pods = [&plain, &forever, &short];
        let (actions, again) = plan_at(&[tainted], &pods, &silent, "2026-01-01T00:00:10Z");
        let evicted: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Evict(_, name, _) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(evicted, ["short"]);
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::PodNotReady(_)))
                .count(),
            3
        );
        assert_eq!(again, Some(Duration::from_secs(20)));
        let (actions, _) = plan_at(&[tainted], &pods, &silent, "2026-01-01T00:00:30Z");
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Evict(_, name, _) if name == "plain")));
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::Evict(_, name, _) if name == "forever")));

        // Heard from again: Ready, taints gone.
        let fresh = BTreeMap::from([("n1".to_string(), Duration::from_secs(0))]);
        let (actions, _) = plan_at(&[tainted], &[], &fresh, "2026-01-01T00:01:00Z");
        let [Action::Ready(back)] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert_eq!(back["status"]["conditions"][0]["status"], "True");
        assert!(back["spec"].get("taints").is_none());
    }
}
