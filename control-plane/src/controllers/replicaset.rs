//! ReplicaSets: keep `spec.replicas` pods of the template running. A pod belongs to a
//! ReplicaSet through its controller ownerReference. `plan` (pure) counts the active pods (not
//! being deleted, not finished), decides how many to create or which to delete (unscheduled
//! first, then not ready, then the newest), and computes the status; the pass writes it all with
//! the election fence.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::pb::{DeleteRequest, WriteRequest};
use skiff_api::{object, Kind};

use super::election::Leadership;
use crate::apiserver::registry::Also;
use crate::apiserver::ApiService;

/// Pods created or deleted per ReplicaSet per pass (a burst limit).
const BURST: usize = 500;

/// What one ReplicaSet needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    pub status: Value,
}

fn controller_uid(pod: &Value) -> Option<&str> {
    object::field(pod, "metadata.ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

fn is_ready(pod: &Value) -> bool {
    object::field(pod, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn is_active(pod: &Value) -> bool {
    object::meta_str(pod, "deletionTimestamp").is_empty()
        && !matches!(
            object::field_string(pod, "status.phase").as_str(),
            "Succeeded" | "Failed"
        )
}

/// The pods `rs` controls (any state).
pub fn owned<'a>(rs: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let uid = object::meta_str(rs, "uid");
    pods.iter()
        .filter(|p| object::namespace(p) == object::namespace(rs) && controller_uid(p) == Some(uid))
        .collect()
}

pub fn plan(rs: &Value, pods: &[Value]) -> Plan {
    let want = object::field(rs, "spec.replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let mine = owned(rs, pods);
    let mut active: Vec<&Value> = mine.iter().copied().filter(|p| is_active(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let mut create = 0;
    let mut delete = Vec::new();
    if active.len() < want {
        create = (want - active.len()).min(BURST);
    } else if active.len() > want {
        // Least valuable first: unscheduled, then not ready, then the newest.
        active.sort_by_key(|p| {
            (
                !object::field_string(p, "spec.nodeName").is_empty(),
                is_ready(p),
                std::cmp::Reverse(object::meta_str(p, "creationTimestamp").to_string()),
            )
        });
        delete = active
            .iter()
            .take((active.len() - want).min(BURST))
            .map(|p| object::name(p).to_string())
            .collect();
    }
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": active.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": object::field(rs, "metadata.generation").cloned().unwrap_or(json!(1)),
    });
    Plan {
        create,
        delete,
        status,
    }
}

/// A new pod from `rs`'s template, owned by it.
pub fn pod_from_template(rs: &Value) -> Value {
    let template = object::field(rs, "spec.template")
        .cloned()
        .unwrap_or(json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["generateName"] = json!(format!("{}-", object::name(rs)));
    metadata["namespace"] = json!(object::namespace(rs));
    metadata["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": object::name(rs), "uid": object::meta_str(rs, "uid"),
        "controller": true, "blockOwnerDeletion": true
    }]);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

async fn reconcile(api: &ApiService, rs: &Value, pods: &[Value], fence: &Also) {
    let p = plan(rs, pods);
    let ns = object::namespace(rs).to_string();
    for _ in 0..p.create {
        let Ok(bytes) = serde_json::to_vec(&pod_from_template(rs)) else {
            return;
        };
        let req = WriteRequest {
            object: bytes,
            default_namespace: ns.clone(),
        };
        if let Err(e) = api.create_fenced(req, fence).await {
            tracing::debug!(rs = object::name(rs), %e, "pod not created");
            break;
        }
    }
    for name in &p.delete {
        let req = DeleteRequest {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: ns.clone(),
            name: name.clone(),
            resource_version: String::new(),
            grace_period_seconds: -1,
            propagation_policy: String::new(),
        };
        if let Err(e) = api.delete_fenced(req, fence).await {
            tracing::debug!(pod = %name, %e, "pod not deleted");
        }
    }
    if rs.get("status") != Some(&p.status) {
        let mut next = rs.clone();
        next["status"] = p.status;
        if let Ok(bytes) = serde_json::to_vec(&next) {
            let req = WriteRequest {
                object: bytes,
                default_namespace: ns,
            };
            if let Err(e) = api.update_status_fenced(req, fence).await {
                tracing::debug!(rs = object::name(rs), %e, "status not written");
            }
        }
    }
}

/// Reconciles every ReplicaSet whenever this replica leads the controllers.
pub async fn run(api: Arc<ApiService>, leadership: Leadership) {
    let sets = Kind::named("replicasets").expect("ReplicaSet is served");
    let pods = Kind::named("pods").expect("Pod is served");
    super::runner::run(
        api,
        leadership,
        &[sets.prefix(None), pods.prefix(None)],
        Duration::from_secs(5),
        |api, fence| async move {
            let Ok(all) = api
                .registry()
                .list_many(&[sets.prefix(None), pods.prefix(None)])
                .await
            else {
                return;
            };
            let (rs_items, pod_items): (Vec<_>, Vec<_>) = all
                .into_iter()
                .map(|s| s.object)
                .partition(|o| object::kind(o) == "ReplicaSet");
            for rs in rs_items
                .iter()
                .filter(|r| object::meta_str(r, "deletionTimestamp").is_empty())
            {
                reconcile(&api, rs, &pod_items, &fence).await;
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i64) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-1", "generation": 2},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        })
    }

    fn pod(name: &str, node: &str, ready: bool, created: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "ownerReferences": [{"uid": "rs-1", "controller": true}]},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        })
    }

    #[test]
    fn too_few_are_created_and_too_many_deleted_least_valuable_first() {
        let pods = vec![
            pod("a", "n1", true, "2026-01-01T00:00:01Z"),
            pod("b", "n1", true, "2026-01-01T00:00:03Z"),
            pod("c", "", false, "2026-01-01T00:00:02Z"),
            pod("d", "n2", false, "2026-01-01T00:00:00Z"),
        ];
        let p = plan(&rs(6), &pods);
        assert_eq!(p.create, 2);
        assert_eq!(p.status["replicas"], 4);
        assert_eq!(p.status["readyReplicas"], 2);
        assert_eq!(p.status["observedGeneration"], 2);
        let p = plan(&rs(1), &pods);
        assert_eq!(p.delete, ["c", "d", "b"]);
    }

    #[test]
    fn pods_being_deleted_or_finished_do_not_count_and_others_are_not_mine() {
        let mut gone = pod("g", "n1", true, "2026-01-01T00:00:00Z");
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut done = pod("f", "n1", false, "2026-01-01T00:00:00Z");
        done["status"]["phase"] = json!("Succeeded");
        let mut foreign = pod("x", "n1", true, "2026-01-01T00:00:00Z");
        foreign["metadata"]["ownerReferences"][0]["uid"] = json!("other");
        assert_eq!(plan(&rs(2), &[gone, done, foreign]).create, 2);
        let t = pod_from_template(&rs(1));
        assert_eq!(t["metadata"]["generateName"], "web-");
        assert_eq!(t["metadata"]["labels"]["app"], "web");
        assert_eq!(t["metadata"]["ownerReferences"][0]["controller"], true);
    }
}
