//! The pod a command acts on, as kubectl finds it: a pod named (`web`, `pod/web`), or one pod
//! of a workload or Service (`deployment/web`, also replicaset, statefulset, daemonset, job and
//! `svc/web`), picked the way kubectl picks it (on a node, running, ready, oldest first),
//! waiting up to `--pod-running-timeout` for one to exist. Used by `logs`, `exec` and
//! `port-forward`.

use std::time::{Duration, Instant};

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

/// How often the pods are listed again while waiting for one.
const RECHECK: Duration = Duration::from_millis(500);

/// `--pod-running-timeout`: a Go duration above zero, with kubectl's messages.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text.trim().parse().map_err(|_| {
        format!("invalid argument {text:?} for \"--pod-running-timeout\" flag: not a duration")
    })?;
    if d.is_negative() || d.is_zero() {
        return Err("--pod-running-timeout must be higher than zero".into());
    }
    Duration::try_from(d).map_err(|e| e.to_string())
}

/// The selector of a workload (`spec.selector`, a label selector) or a Service (a plain map);
/// None for a workload without one (its pods are those it owns).
fn selector_of(object: &Value, service: bool) -> Result<Option<LabelSelector>, String> {
    let spec = object::field(object, "spec.selector");
    if service {
        return match spec.and_then(Value::as_object) {
            Some(map) if !map.is_empty() => {
                LabelSelector::from_spec(&serde_json::json!({ "matchLabels": map })).map(Some)
            }
            _ => Err(format!(
                "invalid service '{}': Service is defined without a selector",
                object::name(object)
            )),
        };
    }
    spec.map(LabelSelector::from_spec).transpose()
}

/// Pods of a workload: those its selector matches, or (without one) those it owns.
fn pods_of(workload: &Value, selector: Option<&LabelSelector>, pods: Vec<Value>) -> Vec<Value> {
    let uid = object::meta_str(workload, "uid");
    let owned = |p: &Value| {
        object::field(p, "metadata.ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
    };
    match selector {
        Some(selector) => pods
            .into_iter()
            .filter(|p| selector.matches_object(p))
            .collect(),
        None => pods.into_iter().filter(owned).collect(),
    }
}

/// The pod a command acts on, and the Service it was found through (for port-forward's
/// translation of service ports).
pub struct Picked {
    pub pod: String,
    pub service: Option<Value>,
}

/// The pod `target` names; `what` is the verb for kubectl's refusal (`cannot get the logs
/// from configmaps`).
pub async fn pod(ctx: &Ctx, target: &str, what: &str, wait: Duration) -> anyhow::Result<String> {
    Ok(pick(ctx, target, what, wait).await?.pod)
}

/// [`pod`], with the Service when the target is one.
pub async fn pick(ctx: &Ctx, target: &str, what: &str, wait: Duration) -> anyhow::Result<Picked> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(Picked {
            pod: target.to_string(),
            service: None,
        });
    };
    let kind = kind_named(kind)?;
    if kind.kind == "Pod" {
        return Ok(Picked {
            pod: name.to_string(),
            service: None,
        });
    }
    if ![
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "Service",
    ]
    .contains(&kind.kind)
    {
        anyhow::bail!("cannot {what} {}", kind.resource());
    }
    let failed = |e: skiff_api::ApiError| -> anyhow::Error {
        report(&e);
        Reported.into()
    };
    let service = kind.kind == "Service";
    let workload = ctx
        .client
        .get(&kind, &ctx.namespace, name)
        .await
        .map_err(failed)?;
    let selector = selector_of(&workload, service).map_err(anyhow::Error::msg)?;
    let pods = kind_named("pods")?;
    let deadline = Instant::now() + wait;
    let found = loop {
        let all = ctx
            .client
            .list(&pods, Some(&ctx.namespace), "", "")
            .await
            .map_err(failed)?;
        let mut found = pods_of(&workload, selector.as_ref(), all.items);
        if !found.is_empty() {
            found.sort_by_key(preference);
            break found;
        }
        if Instant::now() + RECHECK > deadline {
            anyhow::bail!("timed out waiting for the condition");
        }
        tokio::time::sleep(RECHECK).await;
    };
    if found.len() > 1 {
        eprintln!(
            "Found {} pods, using pod/{}",
            found.len(),
            object::name(&found[0])
        );
    }
    Ok(Picked {
        pod: object::name(&found[0]).to_string(),
        service: service.then_some(workload),
    })
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
        let selector = selector_of(&deployment, false).expect("selector");
        let mut mine = pods_of(&deployment, selector.as_ref(), pods.clone());
        mine.sort_by_key(preference);
        let names: Vec<&str> = mine.iter().map(object::name).collect();
        assert_eq!(names, ["older", "newer", "pending"]);
        let job = json!({"metadata": {"uid": "job-uid"}, "spec": {}});
        assert!(selector_of(&job, false).expect("none").is_none());
        assert_eq!(pods_of(&job, None, pods.clone()).len(), 4);

        // A Service's selector is a plain map; one without is refused as kubectl does.
        let svc = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "db"}}});
        let selector = selector_of(&svc, true).expect("selector");
        let names: Vec<String> = pods_of(&svc, selector.as_ref(), pods)
            .iter()
            .map(|p| object::name(p).to_string())
            .collect();
        assert_eq!(names, ["other"]);
        let bare = json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName"}});
        assert_eq!(
            selector_of(&bare, true).err().as_deref(),
            Some("invalid service 'ext': Service is defined without a selector")
        );
    }

    #[test]
    fn the_running_timeout_is_a_go_duration_above_zero() {
        assert_eq!(parse_timeout("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_timeout("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_timeout("0s"),
            Err("--pod-running-timeout must be higher than zero".into())
        );
        assert!(parse_timeout("soon")
            .unwrap_err()
            .contains("not a duration"));
    }
}
