//! The real node agent end to end, on a test host of its own (a network namespace): one
//! control-plane replica and one `skiff-agent` in it, images from Debian's docker-registry on
//! the host's loopback through a `docker.io` mirror entry. A pod runs the example image and
//! answers on its pod IP; exit codes and restart policies come back as Kubernetes reports them;
//! the agent survives SIGKILL without touching its containers; a deleted pod leaves nothing;
//! Jobs complete, an Indexed one with each pod told its index.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::agent::{events_of, TestNode};
use tests::netns;
use tests::registry::EXAMPLE_PORT;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(60);

fn pods() -> Kind {
    Kind::of("v1", "Pod").expect("Pod")
}

type Node = TestNode;

async fn node(host_ip: &str) -> Node {
    TestNode::start(host_ip).await
}

async fn get_pod(client: &Client, name: &str) -> Option<Value> {
    client.get(&pods(), "default", name).await.ok()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

#[test]
fn a_pod_runs_answers_on_its_ip_survives_an_agent_kill_and_leaves_nothing_when_deleted() {
    netns::on_one_host(move |host_ip| async move {
        let mut n = node(&host_ip).await;
        n.client
            .create(
                &json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {
                        "terminationGracePeriodSeconds": 3,
                        "containers": [{"name": "web", "image": "busybox",
                                        "ports": [{"containerPort": 8080, "hostPort": 18080}]}]
                    }
                }),
                "default",
            )
            .await
            .expect("pod created");
        let p = n
            .until_pod("web", "Running and ready", |p| {
                phase(p) == "Running" && container_status(p)["ready"] == true
            })
            .await;
        let ip = p["status"]["podIP"].as_str().expect("pod IP").to_string();
        assert!(ip.starts_with("10.244."), "pod IP {ip}");
        assert_eq!(p["status"]["hostIP"], host_ip.as_str());
        let cs = container_status(&p).clone();
        assert!(
            cs["imageID"]
                .as_str()
                .unwrap_or_default()
                .contains("@sha256:"),
            "{cs}"
        );
        let id = cs["containerID"].as_str().expect("containerID").to_string();
        assert!(id.starts_with("skiff://"), "{id}");

        // The example image answers with its hostname: the pod's name.
        let addr = format!("{ip}:{EXAMPLE_PORT}");
        let body = wait::until("the pod to answer on its IP", LIMIT, || {
            tests::http::get(&addr)
        })
        .await;
        assert_eq!(body.trim(), "web");
        // And on the node's address through its hostPort.
        let through_host = format!("{host_ip}:18080");
        let body = wait::until("the hostPort to answer", LIMIT, || {
            tests::http::get(&through_host)
        })
        .await;
        assert_eq!(body.trim(), "web");

        // SIGKILL the agent: the container keeps answering; the restarted agent adopts it with
        // the same ID and restart count.
        n.agent.kill();
        assert_eq!(
            tests::http::get(&addr).await.as_deref().map(str::trim),
            Some("web")
        );
        n.agent.restart();
        let again = n
            .until_pod("web", "reported by the restarted agent", |p| {
                phase(p) == "Running"
            })
            .await;
        assert_eq!(container_status(&again)["containerID"], id.as_str());
        assert_eq!(container_status(&again)["restartCount"], 0);
        assert_eq!(
            tests::http::get(&addr).await.as_deref().map(str::trim),
            Some("web")
        );

        // Deleting the pod stops it (the web server dies on SIGTERM) and removes it.
        n.client
            .delete(&pods(), "default", "web")
            .await
            .expect("pod deleted");
        wait::until("the pod to be gone from the API", LIMIT, || async {
            get_pod(&n.client, "web").await.is_none().then_some(())
        })
        .await;
        assert_eq!(
            tests::http::get(&addr).await,
            None,
            "nothing answers on the old IP"
        );
        assert_eq!(
            tests::http::get(&through_host).await,
            None,
            "the hostPort is gone"
        );
        let pods_dir = n.agent.dir().join("pods");
        let left: Vec<_> = std::fs::read_dir(&pods_dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "pod directories left: {left:?}");
    });
}

#[test]
fn exit_codes_and_restart_policies_read_as_in_kubernetes() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let pod = |name: &str, policy: &str, script: &str| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "restartPolicy": policy,
                    "containers": [{
                        "name": "main", "image": "busybox",
                        "command": ["sh", "-c", script]
                    }]
                }
            })
        };
        for p in [
            pod("fails", "Never", "echo bye; exit 3"),
            pod("succeeds", "OnFailure", "exit 0"),
            pod("crashes", "Always", "exit 1"),
            pod("no-such-command", "Never", "exec /no/such/binary"),
        ] {
            n.client.create(&p, "default").await.expect("created");
        }
        let failed = n
            .until_pod("fails", "Failed", |p| phase(p) == "Failed")
            .await;
        let t = &container_status(&failed)["state"]["terminated"];
        assert_eq!(t["exitCode"], 3, "{failed:#}");
        assert_eq!(t["reason"], "Error");

        let ok = n
            .until_pod("succeeds", "Succeeded", |p| phase(p) == "Succeeded")
            .await;
        assert_eq!(
            container_status(&ok)["state"]["terminated"]["reason"],
            "Completed"
        );

        // restartPolicy Always: restarted at once, then backing off.
        let looping = n
            .until_pod("crashes", "in CrashLoopBackOff", |p| {
                container_status(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            })
            .await;
        let cs = container_status(&looping);
        assert!(cs["restartCount"].as_i64().unwrap_or(0) >= 1, "{cs:#}");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(phase(&looping), "Running");

        let missing = n
            .until_pod("no-such-command", "Failed", |p| phase(p) == "Failed")
            .await;
        assert_eq!(
            container_status(&missing)["state"]["terminated"]["exitCode"],
            127,
            "{missing:#}"
        );
    });
}

#[test]
fn bad_input_is_reported_with_kubernetes_reasons_and_a_job_completes() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let pod = |name: &str, image: &str, env: Value| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{
                    "name": "main", "image": image, "env": env,
                    "command": ["sh", "-c", "echo $GREETING; sleep 3600"]
                }]}
            })
        };
        let from_map = json!([{"name": "GREETING", "valueFrom": {
            "configMapKeyRef": {"name": "settings", "key": "greeting"}}}]);
        n.client
            .create(&pod("no-image", "does-not-exist:v1", json!([])), "default")
            .await
            .expect("created");
        n.client
            .create(&pod("no-config", "busybox", from_map), "default")
            .await
            .expect("created");

        // An image nobody has: ErrImagePull, then ImagePullBackOff, with Events.
        let p = n
            .until_pod("no-image", "backing off its pull", |p| {
                container_status(p)["state"]["waiting"]["reason"] == "ImagePullBackOff"
            })
            .await;
        assert_eq!(phase(&p), "Pending");
        let events = wait::until("the pull failure's events", LIMIT, || async {
            let ev = events_of(&n.client, "no-image").await;
            (ev.iter()
                .any(|e| e.starts_with("Failed: Failed to pull image"))
                && ev.iter().any(|e| e == "Failed: Error: ErrImagePull")
                && ev
                    .iter()
                    .any(|e| e.starts_with("BackOff: Back-off pulling image")))
            .then_some(ev)
        })
        .await;
        assert!(
            events.iter().any(|e| e.contains("does-not-exist")),
            "{events:?}"
        );

        // A configMap key that does not exist: CreateContainerConfigError, until it does.
        let p = n
            .until_pod("no-config", "refused for its config", |p| {
                container_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
            })
            .await;
        assert_eq!(
            container_status(&p)["state"]["waiting"]["message"],
            "configmap \"settings\" not found"
        );
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "settings", "namespace": "default"},
                        "data": {"greeting": "hello"}}),
                "default",
            )
            .await
            .expect("configmap");
        n.until_pod("no-config", "running once its config exists", |p| {
            phase(p) == "Running"
        })
        .await;
        // The Events are written beside the status, not before it: wait for them (with a
        // deadline) rather than read them once the pod is Running.
        let wanted = [
            "Created: Created container: main",
            "Started: Started container main",
        ];
        let has_all = |events: &[String]| wanted.iter().all(|w| events.iter().any(|e| e == w));
        let found = wait::try_until(Duration::from_secs(30), || async {
            let events = events_of(&n.client, "no-config").await;
            has_all(&events).then_some(events)
        })
        .await;
        let events = match found {
            Some(events) => events,
            None => events_of(&n.client, "no-config").await,
        };
        for want in wanted {
            assert!(events.iter().any(|e| e == want), "{want} in {events:?}");
        }

        // A Job's pod runs to completion and the Job completes.
        n.client
            .create(
                &json!({"apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": "once", "namespace": "default"},
                        "spec": {"template": {"spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "work", "image": "busybox",
                                            "command": ["sh", "-c", "echo done"]}]}}}}),
                "default",
            )
            .await
            .expect("job");
        let jobs = Kind::of("batch/v1", "Job").expect("Job");
        let c = n.client.clone();
        wait::until("the Job to complete", LIMIT, || {
            let c = c.clone();
            async move {
                let job = c.get(&jobs, "default", "once").await.ok()?;
                (job["status"]["succeeded"] == 1).then_some(())
            }
        })
        .await;

        // An Indexed Job: a pod per index, each told its index and named after it.
        n.client
            .create(
                &json!({"apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": "idx", "namespace": "default"},
                        "spec": {"completionMode": "Indexed", "completions": 3,
                                 "parallelism": 2,
                                 "template": {"spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "work", "image": "busybox",
                                            "command": ["sh", "-c",
                                                "echo index=$JOB_COMPLETION_INDEX host=$(hostname)"]}]}}}}),
                "default",
            )
            .await
            .expect("indexed job");
        let c = n.client.clone();
        let done = wait::try_until(LIMIT, || {
            let c = c.clone();
            async move {
                let job = c.get(&jobs, "default", "idx").await.ok()?;
                let complete = job["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True");
                complete.then_some(job)
            }
        })
        .await
        .expect("the Indexed Job completes");
        assert_eq!(done["status"]["completedIndexes"], "0-2", "{done:#}");
        assert_eq!(done["status"]["succeeded"], 3, "{done:#}");
        let list = n
            .client
            .list(
                &pods(),
                Some("default"),
                "batch.kubernetes.io/job-name=idx",
                "",
            )
            .await
            .expect("the Job's pods")
            .items;
        let mut said: Vec<String> = vec![];
        for p in &list {
            let name = p["metadata"]["name"].as_str().expect("name");
            let logs = tests::cli::skiff(&n.cluster.endpoints(), &["logs", name], None);
            assert!(logs.ok, "logs of {name}: {}", logs.stderr);
            said.push(logs.stdout.trim().to_string());
        }
        said.sort();
        assert_eq!(
            said,
            [
                "index=0 host=idx-0",
                "index=1 host=idx-1",
                "index=2 host=idx-2"
            ]
        );
    });
}

#[test]
fn readiness_gates_ready_and_a_failing_liveness_probe_restarts_the_container() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        // Ready only once /ready exists, which the container makes after a moment.
        let serve = "mkdir -p /www && hostname > /www/index.html; \
                     (sleep 2; touch /www/ready) & exec httpd -f -p 8080 -h /www";
        n.client
            .create(
                &json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "slow", "namespace": "default"},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                        "name": "web", "image": "busybox", "command": ["sh", "-c", serve],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                           "periodSeconds": 1}
                    }]}
                }),
                "default",
            )
            .await
            .expect("created");
        n.client
            .create(
                &json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "dead", "namespace": "default"},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                        "name": "web", "image": "busybox",
                        "livenessProbe": {"tcpSocket": {"port": 9999},
                                          "periodSeconds": 1, "failureThreshold": 2}
                    }]}
                }),
                "default",
            )
            .await
            .expect("created");

        let unready = n
            .until_pod("slow", "running but not ready", |p| phase(p) == "Running")
            .await;
        assert_eq!(container_status(&unready)["ready"], false, "{unready:#}");
        n.until_pod("slow", "ready once /ready exists", |p| {
            container_status(p)["ready"] == true
        })
        .await;

        let restarted = n
            .until_pod("dead", "restarted by its liveness probe", |p| {
                container_status(p)["restartCount"].as_i64().unwrap_or(0) >= 1
            })
            .await;
        let last = &container_status(&restarted)["lastState"]["terminated"];
        // Stopped with SIGTERM first, which the example image's shell answers by exiting 0.
        assert_eq!(last["exitCode"], 0, "stopped: {last}");
        let events = wait::until("the probe's events", LIMIT, || async {
            let ev = events_of(&n.client, "dead").await;
            (ev.iter()
                .any(|e| e.starts_with("Unhealthy: Liveness probe failed"))
                && ev.iter().any(|e| {
                    e == "Killing: Container web failed liveness probe, will be restarted"
                }))
            .then_some(ev)
        })
        .await;
        assert!(!events.is_empty());
    });
}
