//! The scheduler's pure core: given every Node and every Pod, where each pending pod goes, or
//! why it fits nowhere. Filters, in order: node Ready, schedulable (not cordoned), nodeSelector,
//! required node affinity, taints tolerated, host ports free, requests within what is left of
//! allocatable (cpu, memory, pod count). Scores: least requested, plus spreading pods of the same
//! owner across nodes. Placements within one pass see each other's requests.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use skiff_api::object;

use super::quantity::{cpu_millis, units};

/// What is left on one node during a pass.
#[derive(Clone, Debug)]
struct NodeState {
    name: String,
    labels: BTreeMap<String, String>,
    ready: bool,
    unschedulable: bool,
    taints: Vec<(String, String, String)>,
    free_cpu: i64,
    free_memory: i64,
    free_pods: i64,
    alloc_cpu: i64,
    alloc_memory: i64,
    host_ports: BTreeSet<(String, i64)>,
    /// Pods per owner uid on this node.
    owners: BTreeMap<String, usize>,
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Bind {
        namespace: String,
        name: String,
        node: String,
    },
    Unschedulable {
        namespace: String,
        name: String,
        message: String,
    },
}

fn array<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    object::field(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Sum of the pod's container requests: (cpu millis, memory bytes).
fn requests(pod: &Value) -> (i64, i64) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in array(pod, "spec.containers") {
        let r = object::field(c, "resources.requests");
        cpu += r
            .and_then(|r| r.get("cpu"))
            .and_then(Value::as_str)
            .and_then(cpu_millis)
            .unwrap_or(0);
        mem += r
            .and_then(|r| r.get("memory"))
            .and_then(Value::as_str)
            .and_then(units)
            .unwrap_or(0);
    }
    (cpu, mem)
}

/// What a pod asks of a node, read once per pass (the filters and scores run per node).
struct Needs<'a> {
    pod: &'a Value,
    cpu: i64,
    memory: i64,
    host_ports: Vec<(String, i64)>,
    node_selector: BTreeMap<String, String>,
    affinity: &'a [Value],
    owner: Option<String>,
}

impl<'a> Needs<'a> {
    fn of(pod: &'a Value) -> Needs<'a> {
        let (cpu, memory) = requests(pod);
        Needs {
            pod,
            cpu,
            memory,
            host_ports: host_ports(pod),
            node_selector: object::string_map(object::field(pod, "spec.nodeSelector")),
            affinity: array(
                pod,
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            ),
            owner: owner_uid(pod),
        }
    }
}

/// How many feasible nodes to look for before scoring, as Kubernetes' scheduler does
/// (`percentageOfNodesToScore` left adaptive): every node up to 100, then a share falling from
/// 50% by one point per 125 nodes, at least 5% and at least 100 nodes.
fn nodes_to_find(total: usize) -> usize {
    if total <= 100 {
        return total;
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(100)
}

fn host_ports(pod: &Value) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for c in array(pod, "spec.containers") {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(hp) = p.get("hostPort").and_then(Value::as_i64) {
                let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                out.push((proto.to_string(), hp));
            }
        }
    }
    out
}

fn owner_uid(pod: &Value) -> Option<String> {
    array(pod, "metadata.ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| array(pod, "metadata.ownerReferences").first())
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .map(String::from)
}

/// Whether a pod still holds its node's resources.
fn holds_resources(pod: &Value) -> bool {
    !matches!(
        object::field_string(pod, "status.phase").as_str(),
        "Succeeded" | "Failed"
    )
}

fn node_state(node: &Value) -> NodeState {
    let alloc = object::field(node, "status.allocatable");
    let q = |k: &str| alloc.and_then(|a| a.get(k)).and_then(Value::as_str);
    let ready = array(node, "status.conditions")
        .iter()
        .any(|c| c.get("type") == Some(&"Ready".into()) && c.get("status") == Some(&"True".into()));
    let taints = array(node, "spec.taints")
        .iter()
        .map(|t| {
            let s = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("key"), s("value"), s("effect"))
        })
        .collect();
    let alloc_cpu = q("cpu").and_then(cpu_millis).unwrap_or(0);
    let alloc_memory = q("memory").and_then(units).unwrap_or(0);
    NodeState {
        name: object::name(node).to_string(),
        labels: object::labels(node),
        ready,
        unschedulable: object::field(node, "spec.unschedulable").and_then(Value::as_bool)
            == Some(true),
        taints,
        free_cpu: alloc_cpu,
        free_memory: alloc_memory,
        free_pods: q("pods").and_then(units).unwrap_or(110),
        alloc_cpu,
        alloc_memory,
        host_ports: BTreeSet::new(),
        owners: BTreeMap::new(),
    }
}

fn place(state: &mut NodeState, needs: &Needs) {
    state.free_cpu -= needs.cpu;
    state.free_memory -= needs.memory;
    state.free_pods -= 1;
    state.host_ports.extend(needs.host_ports.iter().cloned());
    if let Some(uid) = &needs.owner {
        *state.owners.entry(uid.clone()).or_default() += 1;
    }
}

fn tolerates(pod: &Value, taint: &(String, String, String)) -> bool {
    let (key, value, effect) = taint;
    effect == "PreferNoSchedule"
        || crate::controllers::pods::toleration(pod, key, value, effect).is_some()
}

/// A nodeSelectorTerm's matchExpressions (and matchFields on metadata.name).
fn term_matches(term: &Value, node: &NodeState) -> bool {
    let exprs_ok = array(term, "matchExpressions").iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = array(e, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let label = node.labels.get(key);
        match e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => label.is_some_and(|l| values.contains(&l.as_str())),
            "NotIn" => label.is_none_or(|l| !values.contains(&l.as_str())),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            "Gt" | "Lt" => {
                let (Some(l), Some(v)) = (
                    label.and_then(|l| l.parse::<i64>().ok()),
                    values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if e.get("operator") == Some(&"Gt".into()) {
                    l > v
                } else {
                    l < v
                }
            }
            _ => false,
        }
    });
    let fields_ok = array(term, "matchFields").iter().all(|f| {
        let values: Vec<&str> = array(f, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        f.get("key").and_then(Value::as_str) == Some("metadata.name")
            && match f.get("operator").and_then(Value::as_str) {
                Some("In") => values.contains(&node.name.as_str()),
                Some("NotIn") => !values.contains(&node.name.as_str()),
                _ => false,
            }
    });
    exprs_ok && fields_ok
}

/// The taint a cordoned node stands for; pods that tolerate it (DaemonSets') may go there.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why `node` cannot take `pod`, in Kubernetes' words, or None if it can.
fn misfit(needs: &Needs, node: &NodeState) -> Option<String> {
    let pod = needs.pod;
    if !node.ready {
        return Some("node(s) were not ready".into());
    }
    if node.unschedulable
        && !tolerates(
            pod,
            &(UNSCHEDULABLE.into(), String::new(), "NoSchedule".into()),
        )
    {
        return Some("node(s) were unschedulable".into());
    }
    let selector_ok = needs
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok =
        needs.affinity.is_empty() || needs.affinity.iter().any(|t| term_matches(t, node));
    if !selector_ok || !affinity_ok {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(t) = node
        .taints
        .iter()
        .find(|t| (t.2 == "NoSchedule" || t.2 == "NoExecute") && !tolerates(pod, t))
    {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.0, t.1
        ));
    }
    if needs.host_ports.iter().any(|p| node.host_ports.contains(p)) {
        return Some("node(s) didn't have free ports for the requested pod ports".into());
    }
    if node.free_pods < 1 {
        return Some("Too many pods".into());
    }
    if needs.cpu > node.free_cpu {
        return Some("Insufficient cpu".into());
    }
    if needs.memory > node.free_memory {
        return Some("Insufficient memory".into());
    }
    None
}

/// Higher is better: least requested (0..=100), plus up to 100 for holding fewer pods of the
/// same owner.
fn score(needs: &Needs, node: &NodeState, max_same_owner: usize) -> i64 {
    let (cpu, mem) = (needs.cpu, needs.memory);
    let share = |free: i64, alloc: i64, want: i64| {
        if alloc <= 0 {
            0
        } else {
            ((free - want).max(0) * 100) / alloc
        }
    };
    let least = (share(node.free_cpu, node.alloc_cpu, cpu)
        + share(node.free_memory, node.alloc_memory, mem))
        / 2;
    let spread = match &needs.owner {
        Some(uid) if max_same_owner > 0 => {
            let here = node.owners.get(uid).copied().unwrap_or(0);
            ((max_same_owner - here.min(max_same_owner)) * 100 / max_same_owner) as i64
        }
        _ => 100,
    };
    least + spread
}

/// Whether a pod is this scheduler's to place.
fn pending(pod: &Value) -> bool {
    object::field_string(pod, "spec.nodeName").is_empty()
        && object::meta_str(pod, "deletionTimestamp").is_empty()
        && matches!(
            object::field_string(pod, "spec.schedulerName").as_str(),
            "" | "default-scheduler"
        )
}

/// Decisions for every pending pod, oldest first.
pub fn plan(nodes: &[Value], pods: &[Value]) -> Vec<Decision> {
    let mut states: Vec<NodeState> = nodes.iter().map(node_state).collect();
    let index: BTreeMap<String, usize> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    for pod in pods.iter().filter(|p| holds_resources(p)) {
        if let Some(&i) = index.get(&object::field_string(pod, "spec.nodeName")) {
            place(&mut states[i], &Needs::of(pod));
        }
    }
    let want = nodes_to_find(states.len());
    // Where the search for the next pod starts: rotating, so that sampling spreads over all
    // nodes (as Kubernetes does).
    let mut start = 0;
    let mut queue: Vec<&Value> = pods.iter().filter(|p| pending(p)).collect();
    queue.sort_by(|a, b| {
        (object::meta_str(a, "creationTimestamp"), object::name(a))
            .cmp(&(object::meta_str(b, "creationTimestamp"), object::name(b)))
    });
    let mut out = Vec::new();
    for pod in queue {
        let needs = Needs::of(pod);
        let namespace = object::namespace(pod).to_string();
        let name = object::name(pod).to_string();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut fitting = Vec::new();
        let total = states.len();
        let mut looked = 0;
        while looked < total && fitting.len() < want {
            let i = (start + looked) % total;
            looked += 1;
            match misfit(&needs, &states[i]) {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => fitting.push(i),
            }
        }
        if total > 0 {
            start = (start + looked) % total;
        }
        if fitting.is_empty() {
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let message = if states.is_empty() {
                "0/0 nodes are available: no nodes registered.".to_string()
            } else {
                format!(
                    "0/{} nodes are available: {}.",
                    states.len(),
                    detail.join(", ")
                )
            };
            out.push(Decision::Unschedulable {
                namespace,
                name,
                message,
            });
            continue;
        }
        let max_same_owner = needs
            .owner
            .as_ref()
            .map(|u| {
                fitting
                    .iter()
                    .map(|&i| states[i].owners.get(u).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0)
                    + 1
            })
            .unwrap_or(0);
        let best = fitting
            .iter()
            .copied()
            .max_by_key(|&i| {
                (
                    score(&needs, &states[i], max_same_owner),
                    std::cmp::Reverse(i),
                )
            })
            .expect("fitting is not empty");
        place(&mut states[best], &needs);
        out.push(Decision::Bind {
            namespace,
            name,
            node: states[best].name.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, labels: Value) -> Value {
        json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        })
    }

    fn pod(name: &str, cpu: &str, extra: Value) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": format!("2026-01-01T00:00:0{}Z", name.len() % 10)},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        });
        if let (Some(p), Some(e)) = (p["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        p
    }

    fn bound(d: &[Decision]) -> Vec<(String, String)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Bind { name, node, .. } => Some((name.clone(), node.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn requests_fill_nodes_and_the_rest_waits_with_the_reason() {
        let nodes = [
            node("a", "1", json!({})),
            node("b", "1", json!({})),
            node("c", "1", json!({})),
        ];
        let pods: Vec<Value> = (0..4)
            .map(|i| pod(&format!("p{i}"), "800m", json!({})))
            .collect();
        let d = plan(&nodes, &pods);
        let placed = bound(&d);
        assert_eq!(placed.len(), 3);
        let nodes_used: BTreeSet<&String> = placed.iter().map(|(_, n)| n).collect();
        assert_eq!(nodes_used.len(), 3, "spread by least requested");
        assert!(
            d.contains(&Decision::Unschedulable {
                namespace: "default".into(),
                name: "p3".into(),
                message: "0/3 nodes are available: 3 Insufficient cpu.".into()
            }),
            "{d:?}"
        );
    }

    #[test]
    fn selectors_taints_cordons_and_readiness_filter_nodes() {
        let mut tainted = node("t", "4", json!({"disk": "ssd"}));
        tainted["spec"]["taints"] =
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        let mut cordoned = node("u", "4", json!({"disk": "ssd"}));
        cordoned["spec"]["unschedulable"] = json!(true);
        let mut down = node("d", "4", json!({"disk": "ssd"}));
        down["status"]["conditions"][0]["status"] = json!("False");
        let plain = node("p", "4", json!({"disk": "hdd"}));
        let nodes = [tainted, cordoned, down, plain];
        let wants_ssd = pod("ssd", "100m", json!({"nodeSelector": {"disk": "ssd"}}));
        let d = plan(&nodes, std::slice::from_ref(&wants_ssd));
        let Decision::Unschedulable { message, .. } = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(
            message,
            "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were not ready, 1 node(s) were unschedulable."
        );
        let tolerant = pod(
            "tol",
            "100m",
            json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            bound(&plan(&nodes, &[tolerant])),
            [("tol".to_string(), "t".to_string())]
        );
        let affinity = pod(
            "aff",
            "100m",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}}),
        );
        assert_eq!(
            bound(&plan(&nodes, &[affinity])),
            [("aff".to_string(), "p".to_string())]
        );
    }

    #[test]
    fn pods_of_one_owner_spread_and_host_ports_do_not_collide() {
        let nodes = [node("a", "64", json!({})), node("b", "64", json!({}))];
        let owned = |n: &str| {
            let mut p = pod(n, "10m", json!({}));
            p["metadata"]["ownerReferences"] = json!([{"uid": "rs-1", "controller": true}]);
            p
        };
        let d = plan(
            &nodes,
            &[owned("x1"), owned("x2"), owned("x3"), owned("x4")],
        );
        let per_node: BTreeMap<String, usize> =
            bound(&d)
                .into_iter()
                .fold(BTreeMap::new(), |mut m, (_, n)| {
                    *m.entry(n).or_default() += 1;
                    m
                });
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2]);
        let hp = |n: &str| {
            pod(
                n,
                "10m",
                json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
            )
        };
        let d = plan(&nodes, &[hp("h1"), hp("h2"), hp("h3")]);
        assert_eq!(bound(&d).len(), 2);
        assert!(
            matches!(&d[2], Decision::Unschedulable { message, .. } if message.contains("free ports"))
        );
    }

    #[test]
    fn large_clusters_are_sampled_like_kubernetes_does() {
        assert_eq!(nodes_to_find(50), 50);
        assert_eq!(nodes_to_find(1000), 420);
        assert_eq!(nodes_to_find(5000), 500);
        // Sampling still fills every node over a pass (the start rotates).
        let nodes: Vec<Value> = (0..300)
            .map(|i| node(&format!("n{i:03}"), "1", json!({})))
            .collect();
        let pods: Vec<Value> = (0..300)
            .map(|i| json!({"metadata": {"name": format!("p{i:03}"), "namespace": "default"},
                            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}))
            .collect();
        let used: BTreeSet<String> = plan(&nodes, &pods)
            .into_iter()
            .map(|d| match d {
                Decision::Bind { node, .. } => node,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(used.len(), 300);
    }
}
