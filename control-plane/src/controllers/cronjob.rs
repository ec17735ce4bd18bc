//! CronJobs: start a Job from `jobTemplate` at each time `schedule` names, as Kubernetes does.
//!
//! - Times are read in `spec.timeZone` (UTC when unset). Of the times missed since the last
//!   run (or the CronJob's creation), only the latest is run; more than 100 missed times are
//!   reported with a Warning. With `startingDeadlineSeconds`, a time older than that is skipped.
//! - The Job of a scheduled time has a fixed name, `<cronjob>-<minutes since the epoch>` (or
//!   seconds, for a schedule with a seconds field), so a time is never run twice, even across a
//!   controller failover.
//! - concurrencyPolicy: Allow runs beside active Jobs; Forbid waits until none is active (the
//!   missed time then runs late, within the starting deadline); Replace deletes the active ones.
//! - `suspend` stops new runs; finished Jobs beyond successfulJobsHistoryLimit and
//!   failedJobsHistoryLimit are deleted, oldest first.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::pods;
use super::runner::{sooner, values, Again, Pass};
use super::Context;
use crate::cron;

pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed times counted before giving up counting (Kubernetes' limit).
const MISSED_CAP: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The Job to start, if a time is due.
    pub start: Option<Value>,
    /// Active Jobs to delete first (Replace).
    pub replace: Vec<String>,
    /// Finished Jobs beyond the history limits.
    pub prune: Vec<String>,
    pub status: Value,
    /// (warning, reason, message)
    pub events: Vec<(bool, String, String)>,
    pub again: Again,
}

fn finished(job: &Value) -> Option<&'static str> {
    ["Complete", "Failed"].into_iter().find(|kind| {
        pods::condition(job, kind)
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some("True")
    })
}

fn reference(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "name": object::name(job), "namespace": object::namespace(job),
        "uid": object::meta_str(job, "uid"),
    })
}

fn parse_time(v: Option<&Value>) -> Option<jiff::Timestamp> {
    v.and_then(Value::as_str).and_then(|t| t.parse().ok())
}

/// The Job for the run at `at`.
pub fn job_for(cj: &Value, at: jiff::Timestamp, sub_minute: bool) -> Value {
    let template = object::field(cj, "spec.jobTemplate")
        .cloned()
        .unwrap_or(json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    let stamp = if sub_minute {
        at.as_second()
    } else {
        at.as_second() / 60
    };
    metadata["name"] = json!(format!("{}-{stamp}", object::name(cj)));
    metadata["namespace"] = json!(object::namespace(cj));
    object::set_in(
        &mut metadata,
        &["annotations", SCHEDULED_AT],
        json!(at.to_string()),
    );
    metadata["ownerReferences"] = json!([pods::owner_ref(cj)]);
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// What `cj` needs now, given the Jobs it owns. A schedule or zone that does not parse (it
/// was validated when stored, so only after an upgrade) is reported and not run.
pub fn plan(cj: &Value, jobs: &[&Value], now: jiff::Timestamp) -> Plan {
    let previous = cj.get("status").cloned().unwrap_or(json!({}));
    let mut events = Vec::new();
    let mut active: Vec<&Value> = jobs
        .iter()
        .copied()
        .filter(|j| finished(j).is_none())
        .collect();
    active.sort_by_key(|j| object::name(j).to_string());

    // History.
    let mut prune = Vec::new();
    for (kind, limit) in [
        (
            "Complete",
            pods::spec_int(cj, "successfulJobsHistoryLimit", 3),
        ),
        ("Failed", pods::spec_int(cj, "failedJobsHistoryLimit", 1)),
    ] {
        let mut done: Vec<&Value> = jobs
            .iter()
            .copied()
            .filter(|j| finished(j) == Some(kind))
            .collect();
        done.sort_by_key(|j| object::meta_str(j, "creationTimestamp").to_string());
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        prune.extend(done[..extra].iter().map(|j| object::name(j).to_string()));
    }
    let last_successful = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| parse_time(object::field(j, "status.completionTime")))
        .max();

    let mut start = None;
    let mut replace = Vec::new();
    let mut again: Again = None;
    let mut last_schedule = parse_time(previous.get("lastScheduleTime"));
    let schedule_text = object::field_string(cj, "spec.schedule");
    let zone = object::field_string(cj, "spec.timeZone");
    let parsed = cron::parse(&schedule_text).and_then(|s| {
        let tz = if zone.is_empty() {
            jiff::tz::TimeZone::UTC
        } else {
            cron::parse_time_zone(&zone)?
        };
        Ok((s, tz))
    });
    let suspended = object::field(cj, "spec.suspend").and_then(Value::as_bool) == Some(true);
    match parsed {
        Err(e) => events.push((
            true,
            "InvalidSchedule".into(),
            format!("invalid schedule: {e}"),
        )),
        Ok(_) if suspended => {}
        Ok((schedule, tz)) => {
            let created =
                parse_time(object::field(cj, "metadata.creationTimestamp")).unwrap_or(now);
            let mut earliest = last_schedule.unwrap_or(created);
            let deadline =
                object::field(cj, "spec.startingDeadlineSeconds").and_then(Value::as_i64);
            if let Some(d) = deadline {
                let floor = jiff::Timestamp::from_second(now.as_second() - d).unwrap_or(now);
                earliest = earliest.max(floor);
            }
            let missed = schedule.missed(earliest, now, &tz, MISSED_CAP);
            if missed.capped {
                events.push((
                    true,
                    "TooManyMissedTimes".into(),
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                ));
            }
            if let Some(at) = missed.latest {
                let policy = object::field_string(cj, "spec.concurrencyPolicy");
                if policy == "Forbid" && !active.is_empty() {
                    // Run late once the active Job is done (within the starting deadline).
                    events.push((
                        false,
                        "JobAlreadyActive".into(),
                        "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                    ));
                } else {
                    if policy == "Replace" {
                        replace = active.iter().map(|j| object::name(j).to_string()).collect();
                    }
                    let job = job_for(cj, at, schedule.sub_minute());
                    let name = object::name(&job).to_string();
                    let exists = jobs.iter().any(|j| object::name(j) == name);
                    if !exists {
                        start = Some(job);
                    }
                    last_schedule = Some(at);
                }
            }
            if let Some(next) = schedule.next_after(now, &tz) {
                let wait = (next.as_millisecond() - now.as_millisecond()).max(0) as u64;
                again = Some(Duration::from_millis(wait));
            }
        }
    }

    let mut refs: Vec<Value> = active
        .iter()
        .filter(|j| !replace.contains(&object::name(j).to_string()))
        .map(|j| reference(j))
        .collect();
    if let Some(job) = &start {
        let mut r = reference(job);
        if let Some(m) = r.as_object_mut() {
            m.remove("uid");
        }
        refs.push(r);
    }
    let mut status = json!({});
    if !refs.is_empty() {
        status["active"] = Value::Array(refs);
    }
    if let Some(t) = last_schedule {
        status["lastScheduleTime"] = json!(t.to_string());
    }
    if let Some(t) = last_successful {
        status["lastSuccessfulTime"] = json!(t.to_string());
    }
    Plan {
        start,
        replace,
        prune,
        status,
        events,
        again,
    }
}

const COMPONENT: &str = "cronjob-controller";

/// Deletes Job `name` of `cj` with its pods and records it; false if it could not.
async fn delete_job(pass: &Pass, cj: &Value, name: &str) -> bool {
    let job_kind = Kind::named("jobs").expect("Job is served");
    let ns = object::namespace(cj);
    match pass
        .delete_with(&job_kind, ns, name, -1, "Background")
        .await
    {
        Ok(()) => {
            let msg = format!("Deleted job {name}");
            pass.event(cj, false, "SuccessfulDelete", &msg, COMPONENT)
                .await;
            true
        }
        Err(e) => {
            tracing::debug!(job = %name, %e, "job not deleted");
            false
        }
    }
}

async fn reconcile(pass: &Pass, cj: &Value, jobs: &[&Value]) -> Again {
    let p = plan(cj, jobs, jiff::Timestamp::now());
    let component = COMPONENT;
    for name in &p.replace {
        if !delete_job(pass, cj, name).await {
            return Some(Duration::from_millis(200));
        }
    }
    let mut status = p.status.clone();
    if let Some(job) = &p.start {
        let name = object::name(job).to_string();
        match pass.create(job).await {
            Ok(created) => {
                pass.event(
                    cj,
                    false,
                    "SuccessfulCreate",
                    &format!("Created job {name}"),
                    component,
                )
                .await;
                // The reference gets the uid now known.
                if let Some(refs) = status.get_mut("active").and_then(Value::as_array_mut) {
                    for r in refs.iter_mut() {
                        if r["name"] == name.as_str() {
                            *r = reference(&created.object);
                        }
                    }
                }
            }
            Err(e) if e.reason == skiff_api::Reason::AlreadyExists => {}
            Err(e) => {
                let msg = format!("Error creating job: {e}");
                pass.event(cj, true, "FailedCreate", &msg, component).await;
                return Some(Duration::from_secs(1));
            }
        }
    }
    for name in &p.prune {
        delete_job(pass, cj, name).await;
    }
    for (warning, reason, message) in &p.events {
        pass.event(cj, *warning, reason, message, component).await;
    }
    if cj.get("status").unwrap_or(&json!({})) != &status {
        let mut next = cj.clone();
        next["status"] = status;
        if let Err(e) = pass.update_status(&next).await {
            tracing::debug!(cronjob = object::name(cj), %e, "status not written");
            return Some(Duration::from_millis(200));
        }
    }
    p.again
}

/// Runs CronJobs whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let cronjobs = Kind::named("cronjobs").expect("CronJob is served");
    let jobs = Kind::named("jobs").expect("Job is served");
    super::runner::run(
        ctx,
        &[cronjobs.prefix(None), jobs.prefix(None)],
        Duration::from_secs(10),
        |pass| async move {
            let job_items = pass.cache.list(&jobs, None);
            let job_refs = values(&job_items);
            let mut again: Again = None;
            for c in pass.live(&cronjobs) {
                let owned = pods::owned_by(&c.object, job_refs.iter().copied());
                again = sooner(again, reconcile(&pass, &c.object, &owned).await);
            }
            again
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob(schedule: &str, policy: &str) -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "default", "uid": "cj-1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"schedule": schedule, "concurrencyPolicy": policy,
                     "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
                     "jobTemplate": {"metadata": {"labels": {"app": "tick"}},
                                     "spec": {"template": {"spec": {"restartPolicy": "Never"}}}}}
        })
    }

    fn job(name: &str, done: Option<&str>, created: &str) -> Value {
        let mut j = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                                        "creationTimestamp": created}, "status": {}});
        if let Some(kind) = done {
            j["status"]["conditions"] = json!([{"type": kind, "status": "True"}]);
            j["status"]["completionTime"] = json!(created);
        }
        j
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_latest_missed_time_runs_under_a_fixed_name() {
        let cj = cronjob("*/5 * * * *", "Allow");
        let p = plan(&cj, &[], at("2026-01-01T00:17:30Z"));
        let job = p.start.unwrap();
        let minutes = at("2026-01-01T00:15:00Z").as_second() / 60;
        assert_eq!(job["metadata"]["name"], format!("tick-{minutes}"));
        assert_eq!(job["metadata"]["labels"]["app"], "tick");
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_AT],
            "2026-01-01T00:15:00Z"
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(p.status["lastScheduleTime"], "2026-01-01T00:15:00Z");
        assert_eq!(p.status["active"][0]["name"], format!("tick-{minutes}"));
        assert_eq!(p.again, Some(Duration::from_secs(150)));
        // Already made (a failover after the create): not again.
        let existing = job_for(&cj, at("2026-01-01T00:15:00Z"), false);
        let p = plan(&cj, &[&existing], at("2026-01-01T00:17:30Z"));
        assert!(p.start.is_none());
    }

    #[test]
    fn forbid_waits_replace_deletes_and_suspend_stops() {
        let mut cj = cronjob("* * * * *", "Forbid");
        cj["status"] = json!({"lastScheduleTime": "2026-01-01T00:09:00Z"});
        let running = job("tick-1", None, "2026-01-01T00:09:00Z");
        let p = plan(&cj, &[&running], at("2026-01-01T00:10:30Z"));
        assert!(p.start.is_none());
        assert_eq!(p.status["lastScheduleTime"], "2026-01-01T00:09:00Z");
        cj["spec"]["concurrencyPolicy"] = json!("Replace");
        let p = plan(&cj, &[&running], at("2026-01-01T00:10:30Z"));
        assert_eq!(p.replace, ["tick-1"]);
        assert!(p.start.is_some());
        cj["spec"]["suspend"] = json!(true);
        assert!(plan(&cj, &[&running], at("2026-01-01T00:10:30Z"))
            .start
            .is_none());
    }

    #[test]
    fn starting_deadline_skips_old_times_and_history_is_pruned() {
        let mut cj = cronjob("0 * * * *", "Allow");
        cj["spec"]["startingDeadlineSeconds"] = json!(60);
        // Due at 01:00, seen at 01:05: too late.
        let p = plan(&cj, &[], at("2026-01-01T01:05:00Z"));
        assert!(p.start.is_none());
        let old = job("tick-a", Some("Complete"), "2026-01-01T00:00:00Z");
        let new = job("tick-b", Some("Complete"), "2026-01-01T01:00:00Z");
        let failed = job("tick-c", Some("Failed"), "2026-01-01T01:00:00Z");
        let p = plan(&cj, &[&new, &old, &failed], at("2026-01-01T01:05:00Z"));
        assert_eq!(p.prune, ["tick-a"]);
        assert_eq!(p.status["lastSuccessfulTime"], "2026-01-01T01:00:00Z");
    }

    #[test]
    fn many_missed_times_are_reported_and_seconds_schedules_name_by_second() {
        let cj = cronjob("* * * * *", "Allow");
        let p = plan(&cj, &[], at("2026-01-02T00:00:30Z"));
        assert!(p.events.iter().any(|e| e.1 == "TooManyMissedTimes"));
        assert!(p.start.is_some());
        let fast = cronjob("*/2 * * * * *", "Allow");
        let p = plan(&fast, &[], at("2026-01-01T00:00:03Z"));
        let name = p.start.unwrap()["metadata"]["name"].clone();
        assert_eq!(
            name,
            format!("tick-{}", at("2026-01-01T00:00:02Z").as_second())
        );
    }
}
