//! The scheduler: places pods that name no node, on the replica elected to run the controllers.
//! Each pass lists Nodes and Pods, asks the pure `plan` where every pending pod goes, then binds
//! in batches (one transaction per batch: each pod's resourceVersion and the election fence are
//! compared, so a pod is never bound twice nor by a deposed scheduler) and marks pods that fit
//! nowhere: a PodScheduled=False condition with the reason, and a FailedScheduling Event when
//! the reason changes.

pub mod plan;
pub mod predicates;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use crate::apiserver::admission::now;
use crate::apiserver::registry::Stored;
use crate::controllers::runner::{Again, Pass};
use crate::controllers::Context;
use plan::Decision;

/// Pods bound per transaction: with one compare per pod and the fence, within the store's
/// limit of 128 operations per transaction (etcd's `--max-txn-ops`).
const BATCH: usize = 120;
/// Binding transactions in flight at once.
const BATCHES_IN_FLIGHT: usize = 8;

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

async fn bind(p: &Pass, pods: &Kind, binds: &[(&Stored, String)]) {
    let batches: Vec<Vec<(String, Value, i64)>> = binds
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(stored, node)| {
                    let mut pod = stored.object.clone();
                    pod["spec"]["nodeName"] = json!(node);
                    set_condition(&mut pod, "True", None, None);
                    let key = pods.key(object::namespace(&pod), object::name(&pod));
                    (key, pod, stored.revision)
                })
                .collect()
        })
        .collect();
    // A few transactions in flight at once: the store commits them together.
    for wave in batches.chunks(BATCHES_IN_FLIGHT) {
        let mut writes = tokio::task::JoinSet::new();
        for items in wave {
            let (registry, fence, items) =
                (p.api.registry().clone(), p.fence.clone(), items.clone());
            writes.spawn(async move {
                match registry.update_many(&items, &fence).await {
                    Ok(_) => tracing::debug!(count = items.len(), "bound pods"),
                    // Some pod changed meanwhile (or the fence failed): the next pass decides
                    // again.
                    Err(e) => tracing::warn!(?e, count = items.len(), "binding batch not written"),
                }
            });
        }
        while writes.join_next().await.is_some() {}
    }
}

async fn mark_unschedulable(p: &Pass, pods: &Kind, stored: &Stored, message: &str) {
    if scheduled_message(&stored.object) == message {
        return;
    }
    let mut pod = stored.object.clone();
    set_condition(&mut pod, "False", Some("Unschedulable"), Some(message));
    let key = pods.key(object::namespace(&pod), object::name(&pod));
    if p.api
        .registry()
        .update(&key, &pod, stored.revision, &p.fence)
        .await
        .is_err()
    {
        return;
    }
    p.event(&pod, true, "FailedScheduling", message, "default-scheduler")
        .await;
}

/// One pass: read, plan, write.
async fn pass(p: Pass) -> Again {
    let nodes = Kind::named("nodes").expect("Node is served");
    let pods = Kind::named("pods").expect("Pod is served");
    let node_items = p.cache.list(&nodes, None);
    let pod_items = p.cache.list(&pods, None);
    let node_objects: Vec<Value> = node_items.iter().map(|s| s.object.clone()).collect();
    let pod_objects: Vec<Value> = pod_items.iter().map(|s| s.object.clone()).collect();
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
    let Ok(decisions) =
        tokio::task::spawn_blocking(move || plan::plan(&node_objects, &pod_objects)).await
    else {
        return None;
    };
    for decision in decisions {
        match decision {
            Decision::Bind {
                namespace,
                name,
                node,
            } => {
                if let Some(stored) = by_name.get(&(namespace, name)) {
                    binds.push((*stored, node));
                }
            }
            Decision::Unschedulable {
                namespace,
                name,
                message,
            } => {
                if let Some(stored) = by_name.get(&(namespace, name)) {
                    mark_unschedulable(&p, &pods, stored, &message).await;
                }
            }
        }
    }
    bind(&p, &pods, &binds).await;
    None
}

/// Schedules whenever this replica leads the controllers: after pod changes, and every second
/// (for node changes).
pub async fn run(ctx: Context) {
    let pods = Kind::named("pods").expect("Pod is served");
    crate::controllers::runner::run(ctx, &[pods.prefix(None)], Duration::from_secs(1), pass).await
}
