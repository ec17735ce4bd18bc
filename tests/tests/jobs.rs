//! Jobs on hollow nodes, with the test acting as the node that finishes their pods: completions
//! with parallelism (never more pods at once than allowed, every success counted once), the
//! backoff limit, the active deadline, and deleting a Job with its pods.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::cluster::Cluster;
use tests::pod_tracker::{is_active, PodTracker, Pods};
use tests::wait;

fn job(name: &str, completions: i64, parallelism: i64, extra: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "completions": completions, "parallelism": parallelism, "backoffLimit": 1,
            "template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "c", "image": "busybox:1.36"}]}}
        }
    });
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            j["spec"][k] = v.clone();
        }
    }
    j
}

/// Finishes one running pod of job `name` with `phase`, as its node would; returns its name.
async fn finish_one(client: &Client, name: &str, phase: &str) -> String {
    let pods = Kind::named("pods").unwrap();
    let selector = format!("job-name={name}");
    loop {
        let pod = wait::until(
            &format!("a running pod of {name}"),
            Duration::from_secs(30),
            || async {
                let list = client
                    .list(&pods, Some("default"), &selector, "status.phase=Running")
                    .await
                    .ok()?;
                list.items.into_iter().find(is_active)
            },
        )
        .await;
        let mut done = pod.clone();
        let code = if phase == "Succeeded" { 0 } else { 1 };
        done["status"]["phase"] = json!(phase);
        done["status"]["containerStatuses"][0]["ready"] = json!(false);
        done["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"}}});
        for c in done["status"]["conditions"].as_array_mut().unwrap() {
            if c["type"] == "Ready" {
                c["status"] = json!("False");
            }
        }
        // The node may have moved it on meanwhile: take the next one then.
        if client.update_status(&done, "default").await.is_ok() {
            return pod["metadata"]["name"].as_str().unwrap().to_string();
        }
    }
}

async fn condition(client: &Client, name: &str, kind: &str) -> Value {
    let jobs = Kind::named("jobs").unwrap();
    wait::until(
        &format!("{name} to be {kind}"),
        Duration::from_secs(30),
        || async {
            let j = client.get(&jobs, "default", name).await.ok()?;
            let found = j["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True");
            found.then_some(j)
        },
    )
    .await
}

/// The reason of a Job's Failed condition.
fn failed_reason(job: &Value) -> String {
    job["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Failed"))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_and_go_with_their_pods() {
    let cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 2, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let pods = Kind::named("pods").unwrap();

    // Three completions, two at a time.
    let tracker = PodTracker::start(
        &cluster.client_urls(),
        "default",
        "job-name=pi",
        |pods: &Pods| {
            let active = pods.values().filter(|p| is_active(p)).count();
            (active > 2).then(|| format!("{active} pods running at once"))
        },
    )
    .await;
    client
        .create(&job("pi", 3, 2, json!({})), "default")
        .await
        .unwrap();
    for _ in 0..3 {
        finish_one(&client, "pi", "Succeeded").await;
    }
    let done = condition(&client, "pi", "Complete").await;
    assert_eq!(done["status"]["succeeded"], 3);
    assert!(done["status"]["completionTime"].is_string());
    assert!(done["status"].get("uncountedTerminatedPods").is_none());
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    let kept = client
        .list(&pods, Some("default"), "job-name=pi", "")
        .await
        .unwrap();
    assert_eq!(kept.items.len(), 3, "finished pods stay");
    assert!(kept
        .items
        .iter()
        .all(|p| p["status"]["phase"] == "Succeeded"
            && p["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())));

    // Two failures with backoffLimit 1: failed, the running pod deleted.
    client
        .create(&job("flaky", 1, 1, json!({})), "default")
        .await
        .unwrap();
    finish_one(&client, "flaky", "Failed").await;
    finish_one(&client, "flaky", "Failed").await;
    let failed = condition(&client, "flaky", "Failed").await;
    assert_eq!(failed_reason(&failed), "BackoffLimitExceeded");
    assert_eq!(failed["status"]["failed"], 2);

    // Past its deadline: failed, its pod deleted.
    client
        .create(
            &job("slow", 1, 1, json!({"activeDeadlineSeconds": 2})),
            "default",
        )
        .await
        .unwrap();
    let slow = condition(&client, "slow", "Failed").await;
    assert_eq!(failed_reason(&slow), "DeadlineExceeded");
    wait::until(
        "the slow job's pod to be gone",
        Duration::from_secs(30),
        || async {
            let list = client
                .list(&pods, Some("default"), "job-name=slow", "")
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;

    // Deleting a Job deletes its pods, finished or not.
    tests::cli::ok(&cluster.endpoints(), &["delete", "job", "pi"]);
    wait::until("pi's pods to be gone", Duration::from_secs(30), || async {
        let list = client
            .list(&pods, Some("default"), "job-name=pi", "")
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
}

async fn jobs_of(client: &Client, cronjob: &str) -> Vec<Value> {
    let jobs = Kind::named("jobs").unwrap();
    client
        .list(&jobs, Some("default"), "", "")
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cronjob)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_run_on_schedule_forbid_overlap_keep_history_and_catch_up() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let mut agent = tests::hollow::start(&cluster, 2, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let template = json!({"spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}});
    // Every two seconds (Skiff's seconds field), never two at once, two successes kept.
    let tick = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "tick", "namespace": "default"},
        "spec": {"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid",
                 "successfulJobsHistoryLimit": 2, "jobTemplate": template}
    });
    client.create(&tick, "default").await.unwrap();
    let first = wait::until("the first run", Duration::from_secs(30), || async {
        jobs_of(&client, "tick").await.into_iter().next()
    })
    .await;
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    let stamp: i64 = first_name.trim_start_matches("tick-").parse().unwrap();
    assert_eq!(stamp % 2, 0, "named by its scheduled second");
    // While it runs, later times are not started.
    wait::until(
        "a run held back by Forbid",
        Duration::from_secs(30),
        || async {
            let events = tests::cli::ok(&eps, &["get", "events"]);
            events.contains("JobAlreadyActive").then_some(())
        },
    )
    .await;
    assert_eq!(jobs_of(&client, "tick").await.len(), 1);

    // Finish runs as they come; history keeps the last two.
    for _ in 0..4 {
        let running = jobs_of(&client, "tick").await;
        let active: Vec<String> = running
            .iter()
            .filter(|j| {
                j["status"]["conditions"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
            })
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let name = match active.first() {
            Some(n) => n.clone(),
            None => {
                wait::until("the next run", Duration::from_secs(30), || async {
                    jobs_of(&client, "tick")
                        .await
                        .into_iter()
                        .find(|j| {
                            j["status"]["conditions"]
                                .as_array()
                                .is_none_or(|c| c.is_empty())
                        })
                        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
                })
                .await
            }
        };
        finish_one(&client, &name, "Succeeded").await;
        condition(&client, &name, "Complete").await;
    }
    let kept = wait::until(
        "history trimmed to two",
        Duration::from_secs(30),
        || async {
            let done: Vec<Value> = jobs_of(&client, "tick")
                .await
                .into_iter()
                .filter(|j| {
                    j["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"))
                })
                .collect();
            (done.len() == 2).then_some(done)
        },
    )
    .await;
    assert!(kept
        .iter()
        .all(|j| j["metadata"]["name"] != first_name.as_str()));
    let cj = client
        .get(&Kind::named("cronjobs").unwrap(), "default", "tick")
        .await
        .unwrap();
    assert!(cj["status"]["lastSuccessfulTime"].is_string());
    assert!(cj["status"]["lastScheduleTime"].is_string());

    // Missed times: a yearly job last run long ago starts its latest missed run at once.
    let yearly = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "yearly", "namespace": "default"},
        "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": template}
    });
    let mut made = client.create(&yearly, "default").await.unwrap().object;
    made["status"] = json!({"lastScheduleTime": "2020-06-01T00:00:00Z"});
    let made = client.update_status(&made, "default").await.unwrap().object;
    let mut resumed = made.clone();
    resumed["spec"]["suspend"] = json!(false);
    client.update(&resumed, "default").await.unwrap();
    let ran = wait::until("the missed yearly run", Duration::from_secs(30), || async {
        jobs_of(&client, "yearly").await.into_iter().next()
    })
    .await;
    let now_year: i16 = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .year();
    let latest: jiff::Timestamp = format!("{now_year}-01-01T00:00:00Z").parse().unwrap();
    assert_eq!(
        ran["metadata"]["name"],
        format!("yearly-{}", latest.as_second() / 60),
        "only the latest missed time runs"
    );
    assert_eq!(jobs_of(&client, "yearly").await.len(), 1);
    agent.kill().unwrap();
    agent.wait().unwrap();
}
