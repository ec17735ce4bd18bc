//! ReplicaSets: keep `spec.replicas` pods of the template running. A pod belongs to a
//! ReplicaSet through its controller ownerReference; pods that match its selector and have no
//! controller are adopted. `plan` (pure) counts the active pods (not being deleted, not
//! finished), decides how many to create or which to delete (unscheduled first, then not
//! ready, then the newest), and computes the status; the pass writes it all with the election
//! fence and records Events for what it did.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::selector::LabelSelector;
use skiff_api::{object, Kind};

use super::pods::{self, is_active, is_ready};
use super::runner::{sooner, values, Again, Pass};
use super::Context;

/// Pods created or deleted per ReplicaSet per pass (a burst limit).
const BURST: usize = 500;

/// What one ReplicaSet needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// Names of orphan pods to adopt.
    pub adopt: Vec<String>,
    pub status: Value,
    /// Some pod is ready but not yet available (minReadySeconds): look again then.
    pub again: Again,
}

/// The orphans (no controller, not terminating) in `rs`'s namespace its selector matches.
fn orphans<'a>(rs: &Value, pods: &[&'a Value]) -> Vec<&'a Value> {
    let Some(Ok(selector)) = object::field(rs, "spec.selector").map(LabelSelector::from_spec)
    else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new();
    }
    pods.iter()
        .copied()
        .filter(|p| {
            object::namespace(p) == object::namespace(rs)
                && pods::controller_uid(p).is_none()
                && !pods::is_terminating(p)
                && selector.matches_object(p)
        })
        .collect()
}

pub fn plan(rs: &Value, pods: &[&Value], now: jiff::Timestamp) -> Plan {
    let want = pods::spec_int(rs, "replicas", 1).max(0) as usize;
    let min_ready = pods::spec_int(rs, "minReadySeconds", 0);
    let adopted = orphans(rs, pods);
    let mut active: Vec<&Value> = pods::owned_by(rs, pods.iter().copied())
        .into_iter()
        .chain(adopted.iter().copied())
        .filter(|p| is_active(p))
        .collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();
    let labeled = match object::field(&rs["spec"]["template"], "metadata.labels") {
        Some(l) => {
            let want = object::string_map(Some(l));
            active
                .iter()
                .filter(|p| {
                    let have = object::labels(p);
                    want.iter().all(|(k, v)| have.get(k) == Some(v))
                })
                .count()
        }
        None => active.len(),
    };
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
        "fullyLabeledReplicas": labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": object::field(rs, "metadata.generation").cloned().unwrap_or(json!(1)),
    });
    Plan {
        create,
        delete,
        adopt: adopted
            .iter()
            .map(|p| object::name(p).to_string())
            .collect(),
        status,
        again: (available < ready).then(|| Duration::from_secs(1)),
    }
}

/// A new pod from `rs`'s template, owned by it.
pub fn pod_from_template(rs: &Value) -> Value {
    pods::from_template(rs, &rs["spec"]["template"], "")
}

async fn reconcile(pass: &Pass, rs: &Value, pods: &[&Value]) -> Again {
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let p = plan(rs, pods, jiff::Timestamp::now());
    let ns = object::namespace(rs);
    for name in &p.adopt {
        let Some(pod) = pods
            .iter()
            .find(|q| object::namespace(q) == ns && object::name(q) == name)
        else {
            continue;
        };
        let mut next = (*pod).clone();
        let mut refs = object::field(&next, "metadata.ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        refs.push(pods::owner_ref(rs));
        object::set_meta(&mut next, "ownerReferences", Value::Array(refs));
        if let Err(e) = pass.update(&next).await {
            tracing::debug!(pod = %name, %e, "pod not adopted");
        }
    }
    let wanted: Vec<Value> = (0..p.create).map(|_| pod_from_template(rs)).collect();
    let (made, failed) = pass.create_many(&wanted).await;
    let created = made.len();
    if let Some(e) = failed {
        tracing::debug!(rs = object::name(rs), %e, "pod not created");
        pass.event(
            rs,
            true,
            "FailedCreate",
            &format!("Error creating: {e}"),
            "replicaset-controller",
        )
        .await;
    }
    if created > 0 {
        let msg = format!("Created {created} pod(s)");
        pass.event(rs, false, "SuccessfulCreate", &msg, "replicaset-controller")
            .await;
    }
    let mut deleted = 0;
    for name in &p.delete {
        match pass.delete(&pod_kind, ns, name).await {
            Ok(()) => deleted += 1,
            Err(e) => tracing::debug!(pod = %name, %e, "pod not deleted"),
        }
    }
    if deleted > 0 {
        let msg = format!("Deleted {deleted} pod(s)");
        pass.event(rs, false, "SuccessfulDelete", &msg, "replicaset-controller")
            .await;
    }
    if rs.get("status") != Some(&p.status) {
        let mut next = rs.clone();
        next["status"] = p.status;
        if let Err(e) = pass.update_status(&next).await {
            tracing::debug!(rs = object::name(rs), %e, "status not written");
        }
    }
    p.again
}

/// Reconciles every ReplicaSet whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let sets = Kind::named("replicasets").expect("ReplicaSet is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    super::runner::run(
        ctx,
        &[sets.prefix(None), pod_kind.prefix(None)],
        Duration::from_secs(5),
        |pass| async move {
            let all_pods = pass.cache.list(&pod_kind, None);
            let pods = values(&all_pods);
            let index = pods::Dependents::index(&pods);
            let mut again: Again = None;
            for rs in pass.live(&sets) {
                // Its own pods and the orphans it may adopt.
                let mut candidates = index.of(&rs.object);
                candidates.extend(index.orphans.iter().copied());
                let a = reconcile(&pass, &rs.object, &candidates).await;
                again = sooner(again, a);
            }
            again
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        })
    }

    fn pod(name: &str, node: &str, ready: bool, created: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "labels": {"app": "web"},
                         "ownerReferences": [{"uid": "rs-1", "controller": true}]},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        })
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:10Z".parse().unwrap()
    }

    #[test]
    fn too_few_are_created_and_too_many_deleted_least_valuable_first() {
        let pods = [
            pod("a", "n1", true, "2026-01-01T00:00:01Z"),
            pod("b", "n1", true, "2026-01-01T00:00:03Z"),
            pod("c", "", false, "2026-01-01T00:00:02Z"),
            pod("d", "n2", false, "2026-01-01T00:00:00Z"),
        ];
        let refs: Vec<&Value> = pods.iter().collect();
        let p = plan(&rs(6), &refs, now());
        assert_eq!(p.create, 2);
        assert_eq!(p.status["replicas"], 4);
        assert_eq!(p.status["readyReplicas"], 2);
        assert_eq!(p.status["observedGeneration"], 2);
        let p = plan(&rs(1), &refs, now());
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
        assert_eq!(plan(&rs(2), &[&gone, &done, &foreign], now()).create, 2);
        let t = pod_from_template(&rs(1));
        assert_eq!(t["metadata"]["generateName"], "web-");
        assert_eq!(t["metadata"]["labels"]["app"], "web");
        assert_eq!(t["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(t["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }

    #[test]
    fn matching_orphans_are_adopted_and_counted() {
        let mut orphan = pod("o", "n1", true, "2026-01-01T00:00:00Z");
        orphan["metadata"]["ownerReferences"] = json!([]);
        let mut other = orphan.clone();
        other["metadata"]["name"] = json!("p");
        other["metadata"]["labels"]["app"] = json!("db");
        let p = plan(&rs(2), &[&orphan, &other], now());
        assert_eq!(p.adopt, ["o"]);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let mut set = rs(1);
        set["spec"]["minReadySeconds"] = json!(30);
        let a = pod("a", "n1", true, "2026-01-01T00:00:00Z");
        let p = plan(&set, &[&a], now());
        assert_eq!(p.status["readyReplicas"], 1);
        assert_eq!(p.status["availableReplicas"], 0);
        assert!(p.again.is_some());
        let later = "2026-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(plan(&set, &[&a], later).status["availableReplicas"], 1);
    }
}
