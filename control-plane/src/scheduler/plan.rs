//! The scheduler's pure core: given every Node and every Pod, where each pending pod goes, or
//! why it fits nowhere. Filters, in order: node Ready, then the shared predicates
//! (`super::predicates`): schedulable (not cordoned), nodeSelector and required node affinity,
//! taints tolerated, host ports free, requests within what is left of allocatable (pod count,
//! cpu, memory), the pod's PersistentVolumeClaims (volume binding). Scores: least requested,
//! plus spreading pods of the same owner across nodes. Placements within one pass see each
//! other's requests and the nodes chosen for each other's WaitForFirstConsumer claims.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use skiff_api::object;

use super::predicates::node_ports::{self, HostPort};
use super::predicates::resources::{self, Resources};
use super::predicates::taints::{self, Toleration};
use super::predicates::volume_binding::{Storage, VolumeNeeds};
use super::predicates::{node_affinity, node_unschedulable, NodeInfo};
use node_affinity::RequiredAffinity;

/// What is left on one node during a pass.
#[derive(Clone, Debug)]
struct NodeState {
    info: NodeInfo,
    ready: bool,
    allocatable: Resources,
    free: Resources,
    host_ports: BTreeSet<HostPort>,
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
        /// The pod's unbound WaitForFirstConsumer claims, to be marked with the node before
        /// the pod is bound.
        claims: Vec<String>,
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

/// What a pod asks of a node, read once per pass (the filters and scores run per node).
struct Needs {
    requests: Resources,
    host_ports: Vec<HostPort>,
    affinity: RequiredAffinity,
    tolerations: Vec<Toleration>,
    owner: Option<String>,
}

impl Needs {
    fn of(pod: &Value) -> Needs {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        Needs {
            requests: Resources::requested(spec),
            host_ports: node_ports::wanted(spec),
            affinity: RequiredAffinity::of(spec),
            tolerations: Toleration::of_spec(spec),
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
    let ready = array(node, "status.conditions")
        .iter()
        .any(|c| c.get("type") == Some(&"Ready".into()) && c.get("status") == Some(&"True".into()));
    let allocatable = Resources::allocatable(node);
    NodeState {
        info: NodeInfo::of(node),
        ready,
        allocatable,
        free: allocatable,
        host_ports: BTreeSet::new(),
        owners: BTreeMap::new(),
    }
}

fn place(state: &mut NodeState, needs: &Needs) {
    state.free = state.free.minus(needs.requests);
    state.host_ports.extend(needs.host_ports.iter().cloned());
    if let Some(uid) = &needs.owner {
        *state.owners.entry(uid.clone()).or_default() += 1;
    }
}

/// Why `node` cannot take the pod, in Kubernetes' words, or None if it can: the filters, in
/// order, each a shared predicate.
fn misfit(
    needs: &Needs,
    volumes: &VolumeNeeds,
    storage: &Storage,
    node: &NodeState,
) -> Option<String> {
    if !node.ready {
        return Some("node(s) were not ready".into());
    }
    if !node_unschedulable::fits(&node.info, &needs.tolerations) {
        return Some(node_unschedulable::REASON.into());
    }
    if !needs.affinity.matches(&node.info) {
        return Some(node_affinity::REASON.into());
    }
    if let Some(t) = taints::untolerated(&node.info.taints, &needs.tolerations) {
        return Some(taints::reason(t));
    }
    if !node_ports::free(&needs.host_ports, &node.host_ports) {
        return Some(node_ports::REASON.into());
    }
    if let Some(r) = resources::insufficient(&needs.requests, &node.free) {
        return Some(r.into());
    }
    volumes.misfit(&node.info, storage).map(String::from)
}

/// Higher is better: least requested (0..=100), plus up to 100 for holding fewer pods of the
/// same owner.
fn score(needs: &Needs, node: &NodeState, max_same_owner: usize) -> i64 {
    let (cpu, mem) = (needs.requests.cpu, needs.requests.memory);
    let share = |free: i64, alloc: i64, want: i64| {
        if alloc <= 0 {
            0
        } else {
            ((free - want).max(0) * 100) / alloc
        }
    };
    let least = (share(node.free.cpu, node.allocatable.cpu, cpu)
        + share(node.free.memory, node.allocatable.memory, mem))
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

/// Decisions for every pending pod, oldest first, in a cluster without any claims, volumes or
/// storage classes.
pub fn plan(nodes: &[Value], pods: &[Value]) -> Vec<Decision> {
    plan_with(nodes, pods, &Storage::default())
}

/// Decisions for every pending pod, oldest first, given the cluster's storage.
pub fn plan_with(nodes: &[Value], pods: &[Value], storage: &Storage) -> Vec<Decision> {
    let mut states: Vec<NodeState> = nodes.iter().map(node_state).collect();
    let index: BTreeMap<String, usize> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.info.name.clone(), i))
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
    // Nodes chosen in this pass for WaitForFirstConsumer claims, by (namespace, claim).
    let mut chosen: BTreeMap<(String, String), String> = BTreeMap::new();
    for pod in queue {
        let needs = Needs::of(pod);
        let namespace = object::namespace(pod).to_string();
        let name = object::name(pod).to_string();
        let mut volumes = match VolumeNeeds::of(pod, &namespace, storage, &chosen) {
            Ok(v) => v,
            Err(why) => {
                out.push(Decision::Unschedulable {
                    namespace,
                    name,
                    message: format!("0/{} nodes are available: {why}.", states.len()),
                });
                continue;
            }
        };
        volumes.forget_unknown_nodes(|n| index.contains_key(n));
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut fitting = Vec::new();
        let total = states.len();
        let mut looked = 0;
        while looked < total && fitting.len() < want {
            let i = (start + looked) % total;
            looked += 1;
            match misfit(&needs, &volumes, storage, &states[i]) {
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
        let node = states[best].info.name.clone();
        for claim in &volumes.to_select {
            chosen.insert((namespace.clone(), claim.clone()), node.clone());
        }
        out.push(Decision::Bind {
            namespace,
            name,
            node,
            claims: volumes.to_select,
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
    fn claims_steer_pods_and_are_marked_with_the_node_chosen() {
        let mut n1 = node("n1", "4", json!({"kubernetes.io/hostname": "n1"}));
        n1["status"]["allocatable"]["cpu"] = json!("4");
        let nodes = [n1, node("n2", "4", json!({"kubernetes.io/hostname": "n2"}))];
        let claim = |name: &str, volume: Option<&str>| {
            let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}});
            if let Some(v) = volume {
                c["spec"]["volumeName"] = json!(v);
            }
            c
        };
        let storage = Storage::new(
            &[claim("bound", Some("pv-n2")), claim("shared", None)],
            &[
                json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-n2"},
                "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/x"},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}),
            ],
            &[
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                     "metadata": {"name": "local-path"}, "provisioner": "skiff.io/local-path",
                     "volumeBindingMode": "WaitForFirstConsumer"}),
            ],
        );
        let with = |name: &str, claims: &[&str]| {
            let volumes: Vec<Value> = claims
                .iter()
                .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
                .collect();
            pod(name, "10m", json!({"volumes": volumes}))
        };
        let d = plan_with(
            &nodes,
            &[
                with("a", &["bound"]),
                with("bb", &["shared"]),
                with("ccc", &["shared"]),
                with("dddd", &["nope"]),
            ],
            &storage,
        );
        let Decision::Bind { node, claims, .. } = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!((node.as_str(), claims.len()), ("n2", 0));
        // The first pod of the shared claim chooses its node; the second follows it there.
        let Decision::Bind {
            node: first,
            claims,
            ..
        } = &d[1]
        else {
            panic!("{d:?}")
        };
        assert_eq!(claims, &["shared".to_string()]);
        let Decision::Bind { node: second, .. } = &d[2] else {
            panic!("{d:?}")
        };
        assert_eq!(first, second);
        assert_eq!(
            d[3],
            Decision::Unschedulable {
                namespace: "default".into(),
                name: "dddd".into(),
                message: "0/2 nodes are available: persistentvolumeclaim \"nope\" not found."
                    .into()
            }
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
