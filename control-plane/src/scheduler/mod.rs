//! The scheduler: places pods that name no node, on the replica elected to run the controllers.
//! Each pass lists Nodes and Pods, asks the pure `plan` where every pending pod goes, then binds
//! through the controllers' own write path (`Pass::update_many`: every binding admitted like
//! any update of the pod, then written in batches, one transaction per batch comparing each
//! pod's resourceVersion and the election fence, so a pod is never bound twice nor by a deposed
//! scheduler) and marks pods that fit nowhere: a PodScheduled=False condition with the reason
//! (a status update), and a FailedScheduling Event when the reason changes. A binding that
//! admission refuses gets a FailedScheduling Event and is not tried again until the pod
//! changes. A pod with unbound WaitForFirstConsumer claims has them marked first with the node
//! chosen (`volume.kubernetes.io/selected-node`, fenced updates of the claims); only a pod whose
//! claims were all marked is bound, so the provisioner never makes a volume on a node the pod
//! did not go to.

pub mod plan;
pub mod predicates;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind, Reason};

use crate::apiserver::admission::now;
use crate::apiserver::registry::Stored;
use crate::apiserver::update::Part;
use crate::controllers::persistentvolume::ANN_SELECTED_NODE;
use crate::controllers::runner::{Again, Pass};
use crate::controllers::Context;
use plan::Decision;
use predicates::volume_binding::Storage;

fn set_condition(pod: &mut Value, status: &str, reason: Option<&str>, message: Option<&str>) {
    let mut cond = json!({"type": "PodScheduled", "status": status, "lastTransitionTime": now()});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = pod["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conditions {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        list.push(cond);
    }
}

fn scheduled_message(pod: &Value) -> String {
    object::field(pod, "status.conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
        })
        .and_then(|c| c.get("message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Bindings that admission refused (the pod as stored is not valid now), by pod, with the
/// revision refused: such a pod is left alone, and told once, until it changes.
type Refused = Arc<Mutex<BTreeMap<(String, String), i64>>>;

fn pod_key(pod: &Value) -> (String, String) {
    (
        object::namespace(pod).to_string(),
        object::name(pod).to_string(),
    )
}

/// Marks the claims of each binding with its node (those not marked so already); returns the
/// bindings whose claims are all marked.
async fn select_nodes<'a>(
    p: &Pass,
    binds: Vec<(&'a Stored, String, Vec<String>)>,
) -> Vec<(&'a Stored, String)> {
    let claim_kind = Kind::named("persistentvolumeclaims").expect("PVC is served");
    // (bind index, claim to write)
    let mut marks: Vec<(usize, Value)> = Vec::new();
    let mut missing = BTreeSet::new();
    for (i, (stored, node, claims)) in binds.iter().enumerate() {
        let ns = object::namespace(&stored.object);
        for name in claims {
            let Some(claim) = p.cache.get(&claim_kind, ns, name) else {
                missing.insert(i);
                continue;
            };
            if object::annotations(&claim.object).get(ANN_SELECTED_NODE) == Some(node) {
                continue;
            }
            let mut next = claim.object.clone();
            let mut annotations = object::annotations(&next);
            annotations.insert(ANN_SELECTED_NODE.into(), node.clone());
            object::set_meta(&mut next, "annotations", json!(annotations));
            marks.push((i, next));
        }
    }
    let objects: Vec<Value> = marks.iter().map(|(_, c)| c.clone()).collect();
    let results = p.update_many(&objects, Part::Main).await;
    let mut failed = missing;
    for ((i, claim), result) in marks.iter().zip(results) {
        if let Err(e) = result {
            tracing::debug!(claim = object::name(claim), %e, "selected node not written");
            failed.insert(*i);
        }
    }
    binds
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, (stored, node, _))| (stored, node))
        .collect()
}

/// Binds each pod to its node: an update of the whole pod (its node and its PodScheduled
/// condition) through the controllers' write path, so that it is admitted, fenced and
/// compared with the pod's resourceVersion like any update, in batches.
async fn bind(p: &Pass, binds: &[(&Stored, String)], refused: &Refused) {
    let pods: Vec<Value> = binds
        .iter()
        .map(|(stored, node)| {
            let mut pod = stored.object.clone();
            pod["spec"]["nodeName"] = json!(node);
            set_condition(&mut pod, "True", None, None);
            pod
        })
        .collect();
    let results = p.update_many(&pods, Part::All).await;
    let mut bound = 0;
    for ((stored, _), result) in binds.iter().zip(results) {
        match result {
            Ok(_) => bound += 1,
            // The pod changed meanwhile, or the fence moved, or the store is away: the next
            // pass decides again.
            Err(e)
                if matches!(
                    e.reason,
                    Reason::Conflict
                        | Reason::NotFound
                        | Reason::Unavailable
                        | Reason::Timeout
                        | Reason::Internal
                ) =>
            {
                tracing::debug!(%e, "binding not written")
            }
            Err(e) => {
                let message = format!("Binding rejected: {}", e.message);
                tracing::warn!(%message, "binding refused");
                if let Ok(mut r) = refused.lock() {
                    r.insert(pod_key(&stored.object), stored.revision);
                }
                p.event(
                    &stored.object,
                    true,
                    "FailedScheduling",
                    &message,
                    "default-scheduler",
                )
                .await;
            }
        }
    }
    tracing::debug!(bound, of = binds.len(), "bound pods");
}

async fn mark_unschedulable(p: &Pass, stored: &Stored, message: &str) {
    if scheduled_message(&stored.object) == message {
        return;
    }
    let mut pod = stored.object.clone();
    set_condition(&mut pod, "False", Some("Unschedulable"), Some(message));
    if let Err(e) = p.update_status(&pod).await {
        tracing::debug!(%e, "unschedulable condition not written");
        return;
    }
    p.event(&pod, true, "FailedScheduling", message, "default-scheduler")
        .await;
}

/// One pass: read, plan, write.
async fn pass(p: Pass, refused: Refused) -> Again {
    let nodes = Kind::named("nodes").expect("Node is served");
    let pods = Kind::named("pods").expect("Pod is served");
    let node_items = p.cache.list(&nodes, None);
    let mut pod_items = p.cache.list(&pods, None);
    if let Ok(mut r) = refused.lock() {
        // Forget pods that changed or went; leave out those still as they were refused.
        let now: BTreeMap<(String, String), i64> = pod_items
            .iter()
            .map(|s| (pod_key(&s.object), s.revision))
            .collect();
        r.retain(|k, rev| now.get(k) == Some(rev));
        pod_items.retain(|s| !r.contains_key(&pod_key(&s.object)));
    }
    let node_objects: Vec<Value> = node_items.iter().map(|s| s.object.clone()).collect();
    let pod_objects: Vec<Value> = pod_items.iter().map(|s| s.object.clone()).collect();
    let objects = |kind: &str| -> Vec<Value> {
        let kind = Kind::named(kind).expect("a served kind");
        p.cache
            .list(&kind, None)
            .iter()
            .map(|s| s.object.clone())
            .collect()
    };
    let (claims, volumes, classes) = (
        objects("persistentvolumeclaims"),
        objects("persistentvolumes"),
        objects("storageclasses"),
    );
    let by_name: BTreeMap<(String, String), &Stored> = pod_items
        .iter()
        .map(|s| {
            (
                (
                    object::namespace(&s.object).to_string(),
                    object::name(&s.object).to_string(),
                ),
                s.as_ref(),
            )
        })
        .collect();
    let mut binds = Vec::new();
    // Planning thousands of pods is CPU work: off the runtime's threads, so that the election's
    // renewals and the store keep their pace meanwhile.
    let Ok(decisions) = tokio::task::spawn_blocking(move || {
        let storage = Storage::new(&claims, &volumes, &classes);
        plan::plan_with(&node_objects, &pod_objects, &storage)
    })
    .await
    else {
        return None;
    };
    for decision in decisions {
        match decision {
            Decision::Bind {
                namespace,
                name,
                node,
                claims,
            } => {
                if let Some(stored) = by_name.get(&(namespace, name)) {
                    binds.push((*stored, node, claims));
                }
            }
            Decision::Unschedulable {
                namespace,
                name,
                message,
            } => {
                if let Some(stored) = by_name.get(&(namespace, name)) {
                    mark_unschedulable(&p, stored, &message).await;
                }
            }
        }
    }
    let binds = select_nodes(&p, binds).await;
    bind(&p, &binds, &refused).await;
    None
}

/// Schedules whenever this replica leads the controllers: after pod changes, and every second
/// (for node changes).
pub async fn run(ctx: Context) {
    // Pods, and the claims and volumes that make pods schedulable.
    let watched = ["pods", "persistentvolumeclaims", "persistentvolumes"]
        .map(|k| Kind::named(k).expect("a served kind").prefix(None));
    let refused = Refused::default();
    crate::controllers::runner::run(ctx, &watched, Duration::from_secs(1), |p| {
        pass(p, refused.clone())
    })
    .await
}
