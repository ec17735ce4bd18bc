//! DaemonSets: one pod on every eligible node, following nodes as they come and go, as
//! Kubernetes does.
//!
//! A node is eligible when the template's nodeSelector and required node affinity match it
//! and it has no NoSchedule/NoExecute taint the pod does not tolerate: the scheduler's own
//! predicates (`crate::scheduler::predicates`), so a daemon pod goes exactly where the
//! scheduler's filters would let it. Daemon pods tolerate
//! what Kubernetes gives them (not-ready, unreachable, unschedulable and the pressure taints),
//! so they stay through cordons and outages. Each pod is pinned to its node by node affinity on
//! `metadata.name` and placed by the scheduler. Pods on nodes that are no longer eligible, extra
//! pods on one node, and failed pods are deleted (and, where needed, created again).
//! RollingUpdate replaces pods of an older template at most `maxUnavailable` at a time;
//! OnDelete leaves them until they are deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::deployment::{int_or_percent, template_hash};
use super::pods::{self, spec_int};
use super::runner::{sooner, values, Again, Pass};
use super::Context;
use crate::scheduler::predicates::node_affinity::RequiredAffinity;
use crate::scheduler::predicates::taints::{self, Toleration};
use crate::scheduler::predicates::NodeInfo;

pub const HASH_LABEL: &str = "controller-revision-hash";
const BURST: usize = 500;

/// Tolerations every daemon pod gets (Kubernetes adds the same ones).
fn daemon_tolerations() -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    for key in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        t.push(json!({"key": key, "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

/// The template as daemon pods get it: with the daemon tolerations added.
fn pod_template(ds: &Value) -> Value {
    let mut template = object::field(ds, "spec.template")
        .cloned()
        .unwrap_or(json!({}));
    if !template.get("spec").is_some_and(Value::is_object) {
        template["spec"] = json!({});
    }
    let mut tolerations: Vec<Value> = template["spec"]
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in daemon_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    template["spec"]["tolerations"] = Value::Array(tolerations);
    template
}

/// What a daemon pod from a template requires of a node: the scheduler's own node affinity
/// (nodeSelector, required affinity) and taint predicates, the two Kubernetes' DaemonSet
/// controller checks too. Resources and host ports are left to the scheduler placing the pod.
pub struct Eligibility {
    affinity: RequiredAffinity,
    tolerations: Vec<Toleration>,
}

impl Eligibility {
    /// Read once from `template` (as daemon pods get it: `pod_template`).
    pub fn of(template: &Value) -> Eligibility {
        let spec = template.get("spec").unwrap_or(&Value::Null);
        Eligibility {
            affinity: RequiredAffinity::of(spec),
            tolerations: Toleration::of_spec(spec),
        }
    }

    /// Whether a daemon pod belongs on `node`.
    pub fn admits(&self, node: &Value) -> bool {
        let node = NodeInfo::of(node);
        self.affinity.matches(&node)
            && taints::untolerated(&node.taints, &self.tolerations).is_none()
    }
}

/// The node a daemon pod is for: its node, or the one its affinity pins it to.
fn target_node(pod: &Value) -> String {
    let bound = object::field_string(pod, "spec.nodeName");
    if !bound.is_empty() {
        return bound;
    }
    pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A daemon pod for `node`.
pub fn pod_for(ds: &Value, node: &str, hash: &str) -> Value {
    let template = pod_template(ds);
    let mut pod = pods::from_template(ds, &template, "");
    let mut labels = object::labels(&pod);
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        "pod-template-generation".into(),
        object::field(ds, "metadata.generation")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .to_string(),
    );
    object::set_meta(&mut pod, "labels", json!(labels));
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
    });
    pod
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod for.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    pub status: Value,
    pub again: Again,
}

pub fn plan(ds: &Value, nodes: &[&Value], owned: &[&Value], now: jiff::Timestamp) -> Plan {
    let eligibility = Eligibility::of(&pod_template(ds));
    let hash = template_hash(&ds["spec"]["template"], 0);
    let min_ready = spec_int(ds, "minReadySeconds", 0);
    let mut by_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut delete = Vec::new();
    for p in owned.iter().copied().filter(|p| !pods::is_terminating(p)) {
        if matches!(pods::phase(p).as_str(), "Failed" | "Succeeded") {
            delete.push(object::name(p).to_string());
            continue;
        }
        by_node.entry(target_node(p)).or_default().push(p);
    }
    let mut create = Vec::new();
    let mut desired = 0;
    let mut scheduled = 0;
    let mut misscheduled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut updated = 0;
    // Nodes whose pod is of an older template: (node, pod, available).
    let mut outdated: Vec<(&Value, bool)> = Vec::new();
    let mut waiting = false;
    for node in nodes {
        let name = object::name(node).to_string();
        let mut here = by_node.remove(&name).unwrap_or_default();
        if !eligibility.admits(node) {
            misscheduled += usize::from(!here.is_empty());
            delete.extend(here.iter().map(|p| object::name(p).to_string()));
            continue;
        }
        desired += 1;
        if here.is_empty() {
            create.push(name);
            continue;
        }
        scheduled += 1;
        // One pod per node: the oldest stays.
        here.sort_by_key(|p| object::meta_str(p, "creationTimestamp").to_string());
        delete.extend(here[1..].iter().map(|p| object::name(p).to_string()));
        let pod = here[0];
        let is_available = pods::is_available(pod, min_ready, now);
        ready += usize::from(pods::is_ready(pod));
        available += usize::from(is_available);
        waiting |= pods::is_ready(pod) && !is_available;
        if object::labels(pod).get(HASH_LABEL).map(String::as_str) == Some(hash.as_str()) {
            updated += 1;
        } else {
            outdated.push((pod, is_available));
        }
    }
    // Pods for nodes that are gone.
    for (_, left) in by_node {
        misscheduled += 1;
        delete.extend(left.iter().map(|p| object::name(p).to_string()));
    }
    // Rolling update: unavailable ones first, then as many as maxUnavailable allows.
    let rolling = object::field_string(ds, "spec.updateStrategy.type") != "OnDelete";
    if rolling {
        let max_unavailable = int_or_percent(
            object::field(ds, "spec.updateStrategy.rollingUpdate.maxUnavailable")
                .or(Some(&json!(1))),
            desired as i64,
            false,
        )
        .max(1) as usize;
        let unavailable = desired - available;
        let mut budget = max_unavailable.saturating_sub(unavailable);
        outdated.sort_by_key(|(_, avail)| *avail);
        for (pod, avail) in outdated {
            if !avail {
                delete.push(object::name(pod).to_string());
            } else if budget > 0 {
                budget -= 1;
                delete.push(object::name(pod).to_string());
            }
        }
    }
    create.truncate(BURST);
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": available,
        "numberUnavailable": desired - available.min(desired),
        "updatedNumberScheduled": updated,
        "observedGeneration": object::field(ds, "metadata.generation").cloned().unwrap_or(json!(1)),
    });
    Plan {
        create,
        delete,
        status,
        again: waiting.then(|| Duration::from_secs(1)),
    }
}

async fn reconcile(pass: &Pass, ds: &Value, nodes: &[&Value], owned: &[&Value]) -> Again {
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let p = plan(ds, nodes, owned, jiff::Timestamp::now());
    let hash = template_hash(&ds["spec"]["template"], 0);
    let component = "daemonset-controller";
    for node in &p.create {
        match pass.create(&pod_for(ds, node, &hash)).await {
            Ok(s) => {
                let msg = format!("Created pod: {}", object::name(&s.object));
                pass.event(ds, false, "SuccessfulCreate", &msg, component)
                    .await;
            }
            Err(e) => {
                pass.event(
                    ds,
                    true,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                    component,
                )
                .await;
                break;
            }
        }
    }
    for name in &p.delete {
        match pass.delete(&pod_kind, object::namespace(ds), name).await {
            Ok(()) => {
                pass.event(
                    ds,
                    false,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                    component,
                )
                .await
            }
            Err(e) => tracing::debug!(pod = %name, %e, "daemon pod not deleted"),
        }
    }
    if ds.get("status") != Some(&p.status) {
        let mut next = ds.clone();
        next["status"] = p.status;
        if let Err(e) = pass.update_status(&next).await {
            tracing::debug!(daemonset = object::name(ds), %e, "status not written");
        }
    }
    p.again
}

/// Reconciles every DaemonSet whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let sets = Kind::named("daemonsets").expect("DaemonSet is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let node_kind = Kind::named("nodes").expect("Node is served");
    super::runner::run(
        ctx,
        &[
            sets.prefix(None),
            pod_kind.prefix(None),
            node_kind.prefix(None),
        ],
        Duration::from_secs(10),
        |pass| async move {
            let node_items = pass.cache.list(&node_kind, None);
            let nodes = values(&node_items);
            let pod_items = pass.cache.list(&pod_kind, None);
            let pod_refs = values(&pod_items);
            let index = pods::Dependents::index(&pod_refs);
            let mut again: Again = None;
            for d in pass.live(&sets) {
                let ds = &d.object;
                let owned = index.of(ds);
                again = sooner(again, reconcile(&pass, ds, &nodes, &owned).await);
            }
            again
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(selector: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "ds-1", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": selector, "containers": [{"name": "c", "image": "a"}]}}}
        })
    }

    fn node(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {}})
    }

    fn pod(name: &str, node: &str, hash: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "kube-system", "labels": {HASH_LABEL: hash},
                            "creationTimestamp": format!("2026-01-01T00:00:0{}Z", name.len()),
                            "ownerReferences": [{"uid": "ds-1", "controller": true}]},
               "spec": {"nodeName": node},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds(json!({"disk": "ssd"}));
        let hash = template_hash(&d["spec"]["template"], 0);
        let a = node("a", json!({"disk": "ssd"}));
        let b = node("b", json!({"disk": "ssd"}));
        let c = node("c", json!({"disk": "hdd"}));
        let on_a = pod("p", "a", &hash);
        let extra = pod("pp", "a", &hash);
        let wrong = pod("ppp", "c", &hash);
        let gone = pod("pppp", "z", &hash);
        let p = plan(&d, &[&a, &b, &c], &[&on_a, &extra, &wrong, &gone], now());
        assert_eq!(p.create, ["b"]);
        assert_eq!(p.delete, ["pp", "ppp", "pppp"]);
        assert_eq!(p.status["desiredNumberScheduled"], 2);
        assert_eq!(p.status["numberMisscheduled"], 2);
        let made = pod_for(&d, "b", &hash);
        assert_eq!(
            made["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                ["matchFields"][0]["values"][0],
            "b"
        );
        assert!(made["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unschedulable"));
    }

    #[test]
    fn taints_need_tolerations_but_cordons_do_not_matter() {
        let d = ds(json!({}));
        let mut tainted = node("t", json!({}));
        tainted["spec"]["taints"] =
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        let mut cordoned = node("u", json!({}));
        cordoned["spec"]["unschedulable"] = json!(true);
        cordoned["spec"]["taints"] =
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
        let eligibility = Eligibility::of(&pod_template(&d));
        assert!(!eligibility.admits(&tainted));
        assert!(eligibility.admits(&cordoned));
    }

    #[test]
    fn rolling_update_replaces_at_most_max_unavailable() {
        let d = ds(json!({}));
        let nodes: Vec<Value> = ["a", "b", "c"].iter().map(|n| node(n, json!({}))).collect();
        let refs: Vec<&Value> = nodes.iter().collect();
        let old: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|n| pod(&format!("p{n}"), n, "old"))
            .collect();
        let old_refs: Vec<&Value> = old.iter().collect();
        let p = plan(&d, &refs, &old_refs, now());
        assert_eq!(p.delete.len(), 1);
        let mut onditor = d.clone();
        onditor["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert!(plan(&onditor, &refs, &old_refs, now()).delete.is_empty());
    }

    #[test]
    fn daemon_pods_go_exactly_where_the_scheduler_would_place_them() {
        use crate::scheduler::plan::{plan as schedule, Decision};
        let mut d = ds(json!({}));
        d["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["2"]}]}
        ]}}});
        d["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "dedicated", "operator": "Exists"}]);
        let ready = |name: &str, labels: Value, taints: Value| {
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
                   "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                              "conditions": [{"type": "Ready", "status": "True"}]}})
        };
        let nodes = [
            ready("gen1", json!({"gen": "1"}), json!([])),
            ready("gen2", json!({"gen": "2"}), json!([])),
            ready("gen3", json!({"gen": "3"}), json!([])),
            ready("gen10", json!({"gen": "10"}), json!([])),
            ready("unlabelled", json!({}), json!([])),
            ready("not-a-number", json!({"gen": "new"}), json!([])),
            ready(
                "gen5-dedicated",
                json!({"gen": "5"}),
                json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
            ),
            ready(
                "gen5-gpu",
                json!({"gen": "5"}),
                json!([{"key": "gpu", "effect": "NoSchedule"}]),
            ),
        ];
        // The scheduler's filters, asked about an unpinned pod of the template on each node.
        let probe = json!({"metadata": {"name": "probe", "namespace": "kube-system"},
                           "spec": pod_template(&d)["spec"]});
        let accepted: Vec<String> = nodes
            .iter()
            .filter(|n| {
                matches!(
                    schedule(std::slice::from_ref(n), std::slice::from_ref(&probe))[..],
                    [Decision::Bind { .. }]
                )
            })
            .map(|n| object::name(n).to_string())
            .collect();
        assert_eq!(accepted, ["gen3", "gen10", "gen5-dedicated"]);
        let refs: Vec<&Value> = nodes.iter().collect();
        let p = plan(&d, &refs, &[], now());
        assert_eq!(p.create, accepted);
        assert_eq!(p.status["desiredNumberScheduled"], 3);
        // Each daemon pod, pinned to its node, is placed there.
        for node in &p.create {
            let mut pod = pod_for(&d, node, "h");
            object::set_meta(&mut pod, "name", json!(format!("agent-{node}")));
            match &schedule(&nodes, std::slice::from_ref(&pod))[..] {
                [Decision::Bind { node: placed, .. }] => assert_eq!(placed, node),
                other => panic!("{node}: {other:?}"),
            }
        }
    }
}
