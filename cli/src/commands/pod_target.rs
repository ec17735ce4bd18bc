//! The pod a command acts on, as kubectl finds it: a pod named (`web`, `pod/web`), or one pod
//! of a workload (`deployment/web`, also replicaset, statefulset, daemonset and job), picked
//! the way kubectl picks it (on a node, running, ready, oldest first). Used by `logs`,
//! `exec` and `port-forward`.

use serde_json::Value;
use skiff_api::object;
use skiff_api::selector::LabelSelector;

use super::{kind_named, report, Ctx};
use crate::Reported;

/// How kubectl orders pods to pick one to show: on a node, running, ready, oldest first.
fn preference(pod: &Value) -> (bool, u8, bool, String) {
    let phase_rank = match object::field_string(pod, "status.phase").as_str() {
        "Running" => 0,
        "Pending" => 1,
        "Unknown" => 2,
        _ => 3,
    };
    let ready = object::field(pod, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    (
        object::field_string(pod, "spec.nodeName").is_empty(),
        phase_rank,
        !ready,
        object::meta_str(pod, "creationTimestamp").to_string(),
    )
}

/// Pods of a workload: those its selector matches, or (without one) those it owns.
fn pods_of(workload: &Value, pods: Vec<Value>) -> Result<Vec<Value>, String> {
    let uid = object::meta_str(workload, "uid");
    let owned = |p: &Value| {
        object::field(p, "metadata.ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
    };
    match object::field(workload, "spec.selector") {
        Some(spec) => {
            let selector = LabelSelector::from_spec(spec)?;
            Ok(pods
                .into_iter()
                .filter(|p| selector.matches_object(p))
                .collect())
        }
        None => Ok(pods.into_iter().filter(owned).collect()),
    }
}

/// The pod `target` names; `what` is the verb for kubectl's refusal (`cannot get the logs
/// from services`).
pub async fn pod(ctx: &Ctx, target: &str, what: &str) -> anyhow::Result<String> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(target.to_string());
    };
    let kind = kind_named(kind)?;
    if kind.kind == "Pod" {
        return Ok(name.to_string());
    }
    if ![
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
    ]
    .contains(&kind.kind)
    {
        anyhow::bail!("cannot {what} {}", kind.resource());
    }
    let failed = |e: skiff_api::ApiError| -> anyhow::Error {
        report(&e);
        Reported.into()
    };
    let workload = ctx
        .client
        .get(&kind, &ctx.namespace, name)
        .await
        .map_err(failed)?;
    let pods = kind_named("pods")?;
    let all = ctx
        .client
        .list(&pods, Some(&ctx.namespace), "", "")
        .await
        .map_err(failed)?;
    let mut found = pods_of(&workload, all.items).map_err(anyhow::Error::msg)?;
    found.sort_by_key(preference);
    let Some(first) = found.first() else {
        anyhow::bail!("no pods found for {}/{name}", kind.resource());
    };
    if found.len() > 1 {
        eprintln!(
            "Found {} pods, using pod/{}",
            found.len(),
            object::name(first)
        );
    }
    Ok(object::name(first).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_workloads_pod_is_picked_as_kubectl_picks_it() {
        let pod = |name: &str, node: &str, phase: &str, created: &str, labels: Value| {
            json!({"metadata": {"name": name, "creationTimestamp": created, "labels": labels,
                                "ownerReferences": [{"uid": "job-uid"}]},
                   "spec": {"nodeName": node}, "status": {"phase": phase}})
        };
        let pods = vec![
            pod(
                "pending",
                "",
                "Pending",
                "2026-01-01T00:00:00Z",
                json!({"app": "web"}),
            ),
            pod(
                "newer",
                "n",
                "Running",
                "2026-01-03T00:00:00Z",
                json!({"app": "web"}),
            ),
            pod(
                "older",
                "n",
                "Running",
                "2026-01-02T00:00:00Z",
                json!({"app": "web"}),
            ),
            pod(
                "other",
                "n",
                "Running",
                "2026-01-01T00:00:00Z",
                json!({"app": "db"}),
            ),
        ];
        let deployment = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}});
        let mut mine = pods_of(&deployment, pods.clone()).expect("selector");
        mine.sort_by_key(preference);
        let names: Vec<&str> = mine.iter().map(object::name).collect();
        assert_eq!(names, ["older", "newer", "pending"]);
        let job = json!({"metadata": {"uid": "job-uid"}, "spec": {}});
        assert_eq!(pods_of(&job, pods).expect("owned").len(), 4);
    }
}
