//! Jobs: run pods until `completions` of them succeed (or, with parallelism alone, until one
//! succeeds and the rest have stopped), at most `parallelism` at a time, as Kubernetes does.
//!
//! - Failures: a Job fails when more than `backoffLimit` pods failed (with restartPolicy
//!   OnFailure, container restarts count too), or when it ran longer than
//!   `activeDeadlineSeconds`; its running pods are then deleted. A failed pod is replaced after
//!   a back-off of 10 s, doubling per failure, at most 6 minutes, from when it finished.
//! - Counting: every pod carries the `batch.kubernetes.io/job-tracking` finalizer. A finished
//!   pod is first recorded by uid in `status.uncountedTerminatedPods`, then loses its
//!   finalizer, then moves into `succeeded` or `failed`, so a pod is counted exactly once even
//!   if it is deleted at once, and across controller failovers.
//! - `suspend` deletes the running pods and starts none; `ttlSecondsAfterFinished` deletes the
//!   finished Job.
//! - Indexed Jobs (`completionMode: Indexed`): a pod per completion index 0..completions, each
//!   with its index (annotation, label, hostname, `JOB_COMPLETION_INDEX`); a failed index is
//!   retried under the same back-off; the Job completes when every index has succeeded once,
//!   recorded in `status.completedIndexes` ("0-2,4") in the write that records the pod.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::pods::{self, spec_int};
use super::runner::{sooner, Again, Pass};
use super::Context;

pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const BURST: i64 = 500;
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: Value,
    /// Pods whose tracking finalizer goes once `status` is written.
    pub release: Vec<String>,
    /// Pods to create, each with its completion index (Indexed Jobs) or none.
    pub create: Vec<Option<i64>>,
    /// Pods to delete (names).
    pub delete: Vec<String>,
    /// (warning, reason, message)
    pub events: Vec<(bool, String, String)>,
    /// Delete the Job itself (its TTL after finishing ran out).
    pub expire: bool,
    pub again: Again,
}

/// The annotation (and label) naming an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// An Indexed Job pod's completion index.
fn completion_index(pod: &Value) -> Option<i64> {
    object::annotations(pod)
        .get(COMPLETION_INDEX)
        .and_then(|i| i.parse().ok())
        .filter(|i| *i >= 0)
}

/// `status.completedIndexes` ("1,3-5,7") read into a set; what does not parse is left out.
pub fn parse_indexes(text: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i64>()),
        }
    }
    out
}

/// A set of indexes as Kubernetes writes `status.completedIndexes`: ascending, runs of
/// consecutive indexes as "first-last".
pub fn format_indexes(indexes: &BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = vec![];
    for &i in indexes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn has_tracking(pod: &Value) -> bool {
    object::field(pod, "metadata.finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(TRACKING)))
}

fn uid_set(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn condition_true(job: &Value, kind: &str) -> bool {
    pods::condition(job, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// When the pod's last container finished (for the back-off), if it says.
fn finished_at(pod: &Value) -> Option<jiff::Timestamp> {
    object::field(pod, "status.containerStatuses")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|c| {
            c.pointer("/state/terminated/finishedAt")
                .and_then(Value::as_str)?
                .parse()
                .ok()
        })
        .max()
}

fn restarts(pod: &Value) -> i64 {
    object::field(pod, "status.containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        })
        .unwrap_or(0)
}

fn back_off(failures: i64) -> Duration {
    let doublings = (failures - 1).clamp(0, 16) as u32;
    (BACKOFF_BASE * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

fn seconds(d: Duration) -> i64 {
    d.as_secs() as i64
}

/// What `job` needs, given its pods.
pub fn plan(job: &Value, owned: &[&Value], now: jiff::Timestamp) -> Plan {
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let previous = job.get("status").cloned().unwrap_or(json!({}));
    let mut succeeded = previous
        .get("succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut failed = previous.get("failed").and_then(Value::as_i64).unwrap_or(0);
    let unc = previous.get("uncountedTerminatedPods");
    let mut unc_ok = uid_set(unc.and_then(|u| u.get("succeeded")));
    let mut unc_failed = uid_set(unc.and_then(|u| u.get("failed")));
    let tracked: BTreeMap<&str, &Value> = owned
        .iter()
        .filter(|p| has_tracking(p))
        .map(|p| (object::meta_str(p, "uid"), *p))
        .collect();
    // Recorded and released: now they count.
    unc_ok.retain(|uid| {
        let still = tracked.contains_key(uid.as_str());
        if !still {
            succeeded += 1;
        }
        still
    });
    unc_failed.retain(|uid| {
        let still = tracked.contains_key(uid.as_str());
        if !still {
            failed += 1;
        }
        still
    });
    // Newly finished (or deleted before finishing, which counts as a failure): record.
    for (uid, p) in &tracked {
        let uid = uid.to_string();
        if unc_ok.contains(&uid) || unc_failed.contains(&uid) {
            continue;
        }
        match pods::phase(p).as_str() {
            "Succeeded" => {
                unc_ok.insert(uid);
            }
            "Failed" => {
                unc_failed.insert(uid);
            }
            _ if pods::is_terminating(p) => {
                unc_failed.insert(uid);
            }
            _ => {}
        }
    }
    let release: Vec<String> = tracked
        .iter()
        .filter(|(uid, _)| unc_ok.contains(**uid) || unc_failed.contains(**uid))
        .map(|(_, p)| object::name(p).to_string())
        .collect();
    let succeeded_all = succeeded + unc_ok.len() as i64;
    let failed_all = failed + unc_failed.len() as i64;
    // Indexed Jobs: the indexes done, from the status and every succeeded pod still tracked
    // (recorded here in the same write that records the pod, so none is lost when it goes).
    let indexed = object::field_string(job, "spec.completionMode") == "Indexed";
    let completions_spec = object::field(job, "spec.completions").and_then(Value::as_i64);
    let mut completed_indexes = parse_indexes(
        previous
            .get("completedIndexes")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    if indexed {
        let in_range = |i: &i64| completions_spec.is_some_and(|c| *i < c);
        completed_indexes.extend(
            tracked
                .values()
                .filter(|p| pods::phase(p) == "Succeeded")
                .filter_map(|p| completion_index(p))
                .filter(in_range),
        );
    }

    let mut active: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| pods::is_active(p))
        .collect();
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let terminating = owned
        .iter()
        .filter(|p| {
            pods::is_terminating(p) && !matches!(pods::phase(p).as_str(), "Succeeded" | "Failed")
        })
        .count();
    let mut conditions: Vec<Value> = previous
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut events = Vec::new();
    let mut create: Vec<Option<i64>> = vec![];
    let mut delete_all_active = false;
    let mut again: Again = None;
    let mut expire = false;
    let start = previous
        .get("startTime")
        .and_then(Value::as_str)
        .map(str::to_string);
    let suspended = object::field(job, "spec.suspend").and_then(Value::as_bool) == Some(true);
    let finished = condition_true(job, "Complete") || condition_true(job, "Failed");
    let mut completion_time = previous.get("completionTime").cloned();
    let mut start_time = start.clone();
    let mut delete_extra: Vec<String> = Vec::new();

    // Adds a True condition (kept as it is when already there).
    let add_condition = |conditions: &mut Vec<Value>, kind: &str, reason: &str, message: &str| {
        let there = conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(kind)
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
        if there {
            return;
        }
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
        conditions.push(
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
                               "lastProbeTime": now_text, "lastTransitionTime": now_text}),
        );
    };

    if finished {
        delete_all_active = true;
        if let Some(ttl) =
            object::field(job, "spec.ttlSecondsAfterFinished").and_then(Value::as_i64)
        {
            let done_at = conditions
                .iter()
                .filter(|c| {
                    matches!(
                        c.get("type").and_then(Value::as_str),
                        Some("Complete" | "Failed")
                    )
                })
                .filter_map(|c| {
                    c.get("lastTransitionTime")?
                        .as_str()?
                        .parse::<jiff::Timestamp>()
                        .ok()
                })
                .max()
                .unwrap_or(now);
            let left = done_at.as_second() + ttl - now.as_second();
            if left <= 0 {
                expire = true;
            } else {
                again = Some(Duration::from_secs(left as u64));
            }
        }
    } else if suspended {
        delete_all_active = true;
        if !condition_true(job, "Suspended") {
            add_condition(
                &mut conditions,
                "Suspended",
                "JobSuspended",
                "Job suspended",
            );
            events.push((false, "Suspended".to_string(), "Job suspended".to_string()));
        }
    } else {
        if condition_true(job, "Suspended") {
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Suspended"));
            events.push((false, "Resumed".to_string(), "Job resumed".to_string()));
        }
        let started = match &start {
            Some(s) => s.parse::<jiff::Timestamp>().unwrap_or(now),
            None => {
                start_time = Some(now_text.clone());
                now
            }
        };
        let backoff_limit = spec_int(job, "backoffLimit", 6);
        let on_failure =
            object::field_string(job, "spec.template.spec.restartPolicy") == "OnFailure";
        let restart_count: i64 = if on_failure {
            active.iter().map(|p| restarts(p)).sum()
        } else {
            0
        };
        let completions = object::field(job, "spec.completions").and_then(Value::as_i64);
        let parallelism = spec_int(job, "parallelism", 1).max(0);
        let deadline = object::field(job, "spec.activeDeadlineSeconds").and_then(Value::as_i64);
        let ran = now.as_second() - started.as_second();
        let complete = match completions {
            Some(c) if indexed => completed_indexes.len() as i64 >= c,
            Some(c) => succeeded_all >= c,
            None => succeeded_all > 0 && active.is_empty(),
        };
        // The outcome is decided first (SuccessCriteriaMet or FailureTarget); the Job is
        // Complete or Failed once every finished pod is counted.
        let settled = unc_ok.is_empty() && unc_failed.is_empty() && active.is_empty();
        let target = condition_true(job, "FailureTarget")
            .then(|| {
                pods::condition(job, "FailureTarget")
                    .and_then(|c| c.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("BackoffLimitExceeded")
                    .to_string()
            })
            .or_else(|| {
                (failed_all + restart_count > backoff_limit)
                    .then(|| "BackoffLimitExceeded".to_string())
            })
            .or_else(|| {
                deadline
                    .is_some_and(|d| ran >= d)
                    .then(|| "DeadlineExceeded".to_string())
            });
        if complete || condition_true(job, "SuccessCriteriaMet") {
            let msg = "Reached expected number of succeeded pods";
            add_condition(
                &mut conditions,
                "SuccessCriteriaMet",
                "CompletionsReached",
                msg,
            );
            if settled {
                add_condition(&mut conditions, "Complete", "CompletionsReached", msg);
                completion_time = Some(json!(now_text));
                events.push((false, "Completed".to_string(), "Job completed".to_string()));
            } else {
                again = Some(Duration::from_millis(200));
            }
            delete_all_active = true;
        } else if let Some(reason) = target {
            let msg = if reason == "DeadlineExceeded" {
                "Job was active longer than specified deadline"
            } else {
                "Job has reached the specified backoff limit"
            };
            add_condition(&mut conditions, "FailureTarget", &reason, msg);
            if settled {
                add_condition(&mut conditions, "Failed", &reason, msg);
                events.push((true, reason.clone(), msg.to_string()));
            } else {
                again = Some(Duration::from_millis(200));
            }
            delete_all_active = true;
        } else {
            if let Some(d) = deadline {
                again = Some(Duration::from_secs((d - ran).max(1) as u64));
            }
            // Indexed: a pod per index not yet done; a pod of an index done (or a second one
            // for the same index) goes.
            let mut missing: Vec<i64> = vec![];
            if let (true, Some(c)) = (indexed, completions) {
                let mut seen = BTreeSet::new();
                active.sort_by_key(|p| object::meta_str(p, "creationTimestamp").to_string());
                for p in &active {
                    let keep = completion_index(p)
                        .filter(|i| *i < c && !completed_indexes.contains(i))
                        .is_some_and(|i| seen.insert(i));
                    if !keep {
                        delete_extra.push(object::name(p).to_string());
                    }
                }
                let extra: BTreeSet<&str> = delete_extra.iter().map(String::as_str).collect();
                active.retain(|p| !extra.contains(object::name(p)));
                missing = (0..c)
                    .filter(|i| !completed_indexes.contains(i) && !seen.contains(i))
                    .collect();
            }
            let want = match completions {
                Some(c) if indexed => parallelism.min(c - completed_indexes.len() as i64).max(0),
                Some(c) => parallelism.min(c - succeeded_all).max(0),
                None if succeeded_all > 0 => 0,
                None => parallelism,
            };
            let have = active.len() as i64;
            if have < want {
                // Back off after failures, from the latest one.
                let last_failure = owned
                    .iter()
                    .filter(|p| pods::phase(p) == "Failed")
                    .filter_map(|p| finished_at(p))
                    .max();
                let wait = match last_failure {
                    Some(t) if failed_all > 0 => {
                        let ready_at = t.as_second() + seconds(back_off(failed_all));
                        ready_at - now.as_second()
                    }
                    _ => 0,
                };
                if wait > 0 {
                    let w = Duration::from_secs(wait as u64);
                    again = Some(again.map_or(w, |a| a.min(w)));
                } else {
                    let n = (want - have).min(BURST) as usize;
                    create = if indexed {
                        missing.iter().copied().take(n).map(Some).collect()
                    } else {
                        vec![None; n]
                    };
                }
            } else if have > want {
                active.sort_by_key(|p| {
                    std::cmp::Reverse(object::meta_str(p, "creationTimestamp").to_string())
                });
                delete_extra.extend(
                    active
                        .iter()
                        .take((have - want) as usize)
                        .map(|p| object::name(p).to_string()),
                );
            }
        }
    }
    let delete: Vec<String> = if delete_all_active {
        let mut all: Vec<String> = active.iter().map(|p| object::name(p).to_string()).collect();
        all.extend(delete_extra);
        all
    } else {
        delete_extra
    };

    let mut status = json!({
        "active": active.len() - if delete_all_active { active.len() } else { 0 },
        "ready": ready,
        "succeeded": succeeded,
        "failed": failed,
        "terminating": terminating,
    });
    let status_map = status.as_object_mut().expect("an object");
    // Zero counts are left out, as Kubernetes does.
    status_map.retain(|k, v| k == "ready" || v.as_i64() != Some(0));
    if !unc_ok.is_empty() || !unc_failed.is_empty() {
        status["uncountedTerminatedPods"] = json!({
            "succeeded": unc_ok.iter().collect::<Vec<_>>(),
            "failed": unc_failed.iter().collect::<Vec<_>>(),
        });
    }
    if indexed && !completed_indexes.is_empty() {
        status["completedIndexes"] = json!(format_indexes(&completed_indexes));
    }
    if let Some(t) = start_time {
        status["startTime"] = json!(t);
    }
    if let Some(t) = completion_time {
        status["completionTime"] = t;
    }
    if !conditions.is_empty() {
        status["conditions"] = Value::Array(conditions);
    }
    Plan {
        status,
        release,
        create,
        delete,
        events,
        expire,
        again,
    }
}

/// A new pod for `job`: its template, the job labels, the tracking finalizer; for an Indexed
/// Job, its completion `index` as Kubernetes gives it: annotation and label, the name
/// `<job>-<index>-<random>`, the hostname `<job>-<index>`, and `JOB_COMPLETION_INDEX` in every
/// container's environment (from the annotation, through the downward API).
pub fn pod_for(job: &Value, index: Option<i64>) -> Value {
    let mut pod = pods::from_template(job, &job["spec"]["template"], "");
    let mut labels = object::labels(&pod);
    let (name, uid) = (object::name(job), object::meta_str(job, "uid"));
    labels.insert(JOB_NAME.into(), name.into());
    labels.insert("job-name".into(), name.into());
    labels.insert(CONTROLLER_UID.into(), uid.into());
    labels.insert("controller-uid".into(), uid.into());
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        let mut annotations = object::annotations(&pod);
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        object::set_meta(&mut pod, "annotations", json!(annotations));
        object::set_meta(&mut pod, "generateName", json!(format!("{name}-{i}-")));
        if object::field_string(&pod, "spec.hostname").is_empty() {
            pod["spec"]["hostname"] = json!(format!("{name}-{i}"));
        }
        let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
        for list in ["containers", "initContainers"] {
            for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
                match c.get_mut("env").and_then(Value::as_array_mut) {
                    Some(vars) => vars.push(env.clone()),
                    None => c["env"] = json!([env.clone()]),
                }
            }
        }
    }
    object::set_meta(&mut pod, "labels", json!(labels));
    object::set_meta(&mut pod, "finalizers", json!([TRACKING]));
    pod
}

/// `pod` without the tracking finalizer.
fn released(pod: &Value) -> Value {
    let mut next = pod.clone();
    if let Some(f) = next
        .get_mut("metadata")
        .and_then(|m| m.get_mut("finalizers"))
        .and_then(Value::as_array_mut)
    {
        f.retain(|x| x.as_str() != Some(TRACKING));
    }
    next
}

async fn reconcile(pass: &Pass, job: &Value, owned: &[&Value]) -> Again {
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let job_kind = Kind::named("jobs").expect("Job is served");
    let ns = object::namespace(job);
    let p = plan(job, owned, jiff::Timestamp::now());
    if p.expire {
        if let Err(e) = pass
            .delete_with(&job_kind, ns, object::name(job), -1, "Background")
            .await
        {
            tracing::debug!(job = object::name(job), %e, "finished job not deleted");
        }
        return None;
    }
    if job.get("status") != Some(&p.status) {
        let mut next = job.clone();
        next["status"] = p.status.clone();
        if let Err(e) = pass.update_status(&next).await {
            tracing::debug!(job = object::name(job), %e, "job status not written");
            return Some(Duration::from_millis(200));
        }
    }
    // Recorded in the status: their finalizers may go.
    for name in &p.release {
        if let Some(pod) = owned.iter().find(|q| object::name(q) == name) {
            if let Err(e) = pass.update(&released(pod)).await {
                tracing::debug!(pod = %name, %e, "tracking finalizer not removed");
            }
        }
    }
    let wanted: Vec<Value> = p.create.iter().map(|i| pod_for(job, *i)).collect();
    let (made, failed) = pass.create_many(&wanted).await;
    if let Some(e) = failed {
        pass.event(
            job,
            true,
            "FailedCreate",
            &format!("Error creating: {e}"),
            "job-controller",
        )
        .await;
    }
    let created: Vec<String> = made
        .iter()
        .map(|s| object::name(&s.object).to_string())
        .collect();
    for name in &created {
        pass.event(
            job,
            false,
            "SuccessfulCreate",
            &format!("Created pod: {name}"),
            "job-controller",
        )
        .await;
    }
    for name in &p.delete {
        match pass.delete(&pod_kind, ns, name).await {
            Ok(()) => {
                pass.event(
                    job,
                    false,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                    "job-controller",
                )
                .await
            }
            Err(e) => tracing::debug!(pod = %name, %e, "job pod not deleted"),
        }
    }
    for (warning, reason, message) in &p.events {
        pass.event(job, *warning, reason, message, "job-controller")
            .await;
    }
    p.again
}

/// Reconciles every Job whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let jobs = Kind::named("jobs").expect("Job is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    super::runner::run(
        ctx,
        &[jobs.prefix(None), pod_kind.prefix(None)],
        Duration::from_secs(10),
        |pass| async move {
            let all_pods = pass.cache.list(&pod_kind, None);
            let tracked: Vec<&Value> = all_pods
                .iter()
                .map(|s| &s.object)
                .filter(|p| has_tracking(p))
                .collect();
            let index = pods::Dependents::index(&tracked);
            let job_items = pass.live(&jobs);
            let mut again: Again = None;
            let mut live = BTreeSet::new();
            for j in &job_items {
                let job = &j.object;
                let uid = object::meta_str(job, "uid");
                live.insert(uid.to_string());
                let owned = index.of(job);
                again = sooner(again, reconcile(&pass, job, &owned).await);
            }
            // Pods of Jobs that are gone (or going) keep no finalizer.
            for p in tracked {
                if pods::controller_uid(p).is_none_or(|u| !live.contains(u)) {
                    if let Err(e) = pass.update(&released(p)).await {
                        tracing::debug!(pod = object::name(p), %e, "tracking finalizer not removed");
                    }
                }
            }
            again
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(completions: Option<i64>, parallelism: i64) -> Value {
        let mut j = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "uid": "job-1"},
            "spec": {"parallelism": parallelism, "backoffLimit": 1,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}
        });
        if let Some(c) = completions {
            j["spec"]["completions"] = json!(c);
        }
        j
    }

    fn pod(name: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                            "creationTimestamp": format!("2026-01-01T00:00:0{}Z", name.len()),
                            "finalizers": [TRACKING],
                            "ownerReferences": [{"uid": "job-1", "controller": true}]},
               "status": {"phase": phase}})
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    /// The job after `p`'s status is written and its releases done.
    fn after(job: &Value, p: &Plan, pods: &mut [Value]) -> Value {
        let mut next = job.clone();
        next["status"] = p.status.clone();
        for name in &p.release {
            let i = pods
                .iter()
                .position(|q| q["metadata"]["name"] == name.as_str())
                .unwrap();
            pods[i] = released(&pods[i]);
        }
        next
    }

    #[test]
    fn runs_parallel_pods_and_counts_each_success_once() {
        let j = job(Some(3), 2);
        let p = plan(&j, &[], now());
        assert_eq!(p.create.len(), 2);
        assert!(p.status["startTime"].is_string());
        let mut pods = vec![pod("a", "Succeeded"), pod("bb", "Running")];
        let refs: Vec<&Value> = pods.iter().collect();
        let p = plan(&j, &refs, now());
        // Recorded first, counted after its finalizer went.
        assert_eq!(
            p.status["uncountedTerminatedPods"]["succeeded"],
            json!(["u-a"])
        );
        assert_eq!(p.release, ["a"]);
        assert_eq!(p.create.len(), 1);
        let j2 = after(&j, &p, &mut pods);
        let refs: Vec<&Value> = pods.iter().collect();
        let p = plan(&j2, &refs, now());
        assert_eq!(p.status["succeeded"], 1);
        assert!(p.status.get("uncountedTerminatedPods").is_none());
        // The pod is deleted: still counted once.
        let p = plan(&after(&j2, &p, &mut pods), &[&pods[1]], now());
        assert_eq!(p.status["succeeded"], 1);
    }

    #[test]
    fn completes_and_fails_by_backoff_limit_and_deadline() {
        let j = job(Some(1), 1);
        let done = [pod("a", "Succeeded")];
        let mut j2 = j.clone();
        j2["status"] = json!({"succeeded": 1});
        let p = plan(&j2, &[], now());
        assert_eq!(p.status["conditions"][1]["type"], "Complete");
        assert!(p.status["completionTime"].is_string());
        assert!(p.events.iter().any(|e| e.1 == "Completed"));
        let _ = done;

        let mut failing = j.clone();
        failing["status"] = json!({"failed": 2});
        let running = pod("b", "Running");
        // Decided at once; Failed once the running pod is gone and counted.
        let p = plan(&failing, &[&running], now());
        assert_eq!(p.status["conditions"][0]["type"], "FailureTarget");
        assert_eq!(p.status["conditions"][0]["reason"], "BackoffLimitExceeded");
        assert_eq!(p.status["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(p.delete, ["b"]);
        failing["status"] = p.status.clone();
        let p = plan(&failing, &[], now());
        assert_eq!(p.status["conditions"][1]["type"], "Failed");
        assert_eq!(p.status["conditions"][1]["reason"], "BackoffLimitExceeded");

        let mut late = j.clone();
        late["spec"]["activeDeadlineSeconds"] = json!(30);
        late["status"] = json!({"startTime": "2026-01-01T00:00:00Z"});
        let p = plan(&late, &[&running], now());
        assert_eq!(p.status["conditions"][0]["reason"], "DeadlineExceeded");
    }

    #[test]
    fn failed_pods_are_replaced_after_a_back_off() {
        let j = job(Some(1), 1);
        let mut f = pod("a", "Failed");
        f["metadata"]["finalizers"] = json!([]);
        f["status"]["containerStatuses"] =
            json!([{"state": {"terminated": {"finishedAt": "2026-01-01T00:00:55Z"}}}]);
        let mut j2 = j.clone();
        j2["status"] = json!({"failed": 1});
        let p = plan(&j2, &[&f], now());
        assert_eq!(p.create.len(), 0);
        assert_eq!(p.again, Some(Duration::from_secs(5)));
        let later = "2026-01-01T00:01:10Z".parse().unwrap();
        assert_eq!(plan(&j2, &[&f], later).create.len(), 1);
    }

    #[test]
    fn with_on_failure_container_restarts_count_against_the_backoff_limit() {
        let mut j = job(Some(1), 1);
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        let mut running = pod("a", "Running");
        running["status"]["containerStatuses"] = json!([{"restartCount": 1}]);
        assert!(plan(&j, &[&running], now())
            .status
            .get("conditions")
            .is_none());
        running["status"]["containerStatuses"] = json!([{"restartCount": 2}]);
        let p = plan(&j, &[&running], now());
        assert_eq!(p.status["conditions"][0]["reason"], "BackoffLimitExceeded");
        assert_eq!(p.delete, ["a"]);
    }

    #[test]
    fn a_work_queue_finishes_when_one_succeeded_and_the_rest_stopped() {
        let j = job(None, 2);
        assert_eq!(plan(&j, &[], now()).create.len(), 2);
        let mut j2 = j.clone();
        j2["status"] = json!({"succeeded": 1});
        let running = pod("b", "Running");
        let p = plan(&j2, &[&running], now());
        assert_eq!(p.create.len(), 0);
        assert!(p.status.get("completionTime").is_none());
        let p = plan(&j2, &[], now());
        assert!(p.status["completionTime"].is_string());
    }

    #[test]
    fn suspended_jobs_delete_their_pods() {
        let mut j = job(Some(2), 2);
        j["spec"]["suspend"] = json!(true);
        let running = pod("b", "Running");
        let p = plan(&j, &[&running], now());
        assert_eq!(p.delete, ["b"]);
        assert_eq!(p.create.len(), 0);
        assert_eq!(p.status["conditions"][0]["type"], "Suspended");
    }

    #[test]
    fn completed_indexes_are_read_and_written_as_kubernetes_does() {
        let set = parse_indexes("0-2,4, 7-8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 4, 7, 8]);
        assert_eq!(format_indexes(&set), "0-2,4,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("x,3-").is_empty());
    }

    #[test]
    fn an_indexed_job_runs_each_index_until_it_succeeds_once() {
        let mut j = job(Some(3), 2);
        j["spec"]["completionMode"] = json!("Indexed");
        let p = plan(&j, &[], now());
        assert_eq!(p.create, [Some(0), Some(1)]);

        // A pod carries its index everywhere Kubernetes puts it.
        let made = pod_for(&j, Some(1));
        assert_eq!(made["metadata"]["annotations"][COMPLETION_INDEX], "1");
        assert_eq!(made["metadata"]["labels"][COMPLETION_INDEX], "1");
        assert_eq!(made["metadata"]["generateName"], "pi-1-");
        assert_eq!(made["spec"]["hostname"], "pi-1");
        assert_eq!(
            made["spec"]["containers"][0]["env"][0],
            json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
        );

        let indexed = |name: &str, phase: &str, i: i64| {
            let mut p = pod(name, phase);
            p["metadata"]["annotations"] = json!({ COMPLETION_INDEX: i.to_string() });
            p
        };
        // Index 0 succeeded, index 1 failed: 1 again and 2 next; 0 is recorded at once.
        let mut pods = vec![indexed("a", "Succeeded", 0), indexed("bb", "Failed", 1)];
        let refs: Vec<&Value> = pods.iter().collect();
        let later = now() + jiff::SignedDuration::from_secs(600);
        let p = plan(&j, &refs, later);
        assert_eq!(p.status["completedIndexes"], "0");
        assert_eq!(p.create, [Some(1), Some(2)]);
        let j2 = after(&j, &p, &mut pods);

        // A second pod for one index, and a pod of an index already done, go.
        let dup = [
            indexed("c", "Running", 1),
            indexed("dd", "Running", 1),
            indexed("eee", "Running", 0),
        ];
        let refs: Vec<&Value> = dup.iter().collect();
        let p = plan(&j2, &refs, later);
        assert_eq!(p.delete, ["dd", "eee"]);
        assert_eq!(p.create, [Some(2)]);

        // Every index done: complete.
        let done = [indexed("f", "Succeeded", 1), indexed("gg", "Succeeded", 2)];
        let refs: Vec<&Value> = done.iter().collect();
        let p = plan(&j2, &refs, later);
        assert_eq!(p.status["completedIndexes"], "0-2");
        assert!(p.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "SuccessCriteriaMet"));
    }
}
