//! Lifecycle hooks and exec probes end to end, on a test host of its own: a postStart hook runs
//! in the container as it starts, and one that fails kills the container with a
//! FailedPostStartHook Event; a preStop hook runs before the stop signal when the pod is
//! deleted; an exec readiness probe follows a file in the container (ready when it is there,
//! not when it is gone); a failing exec liveness probe restarts the container and tells the
//! command's output in its Unhealthy Event.

use std::time::Duration;

use serde_json::{json, Value};
use tests::agent::TestNode;
use tests::cli::skiff;
use tests::netns;
use tests::wait;

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn ready(p: &Value) -> bool {
    container_status(p)["ready"] == true
}

fn running(p: &Value) -> bool {
    container_status(p)["state"]["running"].is_object()
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

#[test]
fn hooks_run_in_the_container_and_exec_probes_decide() {
    netns::on_one_host(move |host_ip| async move {
        let node = TestNode::start(&host_ip).await;
        let eps = node.cluster.endpoints();
        let shared = tempfile::tempdir().expect("tempdir");
        let shared_dir = shared.path().to_str().expect("utf-8").to_string();

        // postStart writes a file; an exec readiness probe waits for another one.
        node.create_pod(
            "hooked",
            json!({}),
            json!({
                "terminationGracePeriodSeconds": 10,
                "volumes": [{"name": "out", "hostPath": {"path": shared_dir}}],
                "containers": [{
                    "name": "app", "image": "busybox", "command": sh("sleep 1000"),
                    "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                    "lifecycle": {
                        "postStart": {"exec": {"command": sh("echo started > /tmp/post-start")}},
                        "preStop": {"exec": {"command": sh("echo stopping > /out/pre-stop")}},
                    },
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                                       "periodSeconds": 1},
                }],
            }),
        )
        .await;
        node.until_pod("hooked", "running", running).await;
        let post = skiff(
            &eps,
            &["exec", "hooked", "--", "cat", "/tmp/post-start"],
            None,
        );
        assert_eq!(post.stdout, "started\n", "{post:?}");
        // Not ready while the probe's file is missing; ready once it is there; not again
        // when it goes.
        let unready = node.until_pod("hooked", "running", running).await;
        assert!(!ready(&unready), "ready before its probe could pass");
        let touched = skiff(&eps, &["exec", "hooked", "--", "touch", "/tmp/ready"], None);
        assert!(touched.ok, "{touched:?}");
        node.until_pod("hooked", "ready", ready).await;
        let removed = skiff(&eps, &["exec", "hooked", "--", "rm", "/tmp/ready"], None);
        assert!(removed.ok, "{removed:?}");
        node.until_pod("hooked", "unready again", |p| !ready(p))
            .await;
        let events = node.events_of("hooked").await;
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("Unhealthy: Readiness probe failed: cat:")),
            "{events:?}"
        );

        // Deleting the pod runs its preStop hook first.
        let pre_stop = shared.path().join("pre-stop");
        assert!(!pre_stop.exists());
        let pods = skiff_api::Kind::of("v1", "Pod").expect("Pod");
        node.client
            .delete(&pods, "default", "hooked")
            .await
            .expect("deleted");
        let gone = wait::try_until(Duration::from_secs(30), || async {
            node.client
                .get(&pods, "default", "hooked")
                .await
                .is_err()
                .then_some(())
        })
        .await;
        assert!(gone.is_some(), "the pod was never removed");
        assert_eq!(
            std::fs::read_to_string(&pre_stop).ok().as_deref(),
            Some("stopping\n"),
            "the preStop hook did not run"
        );

        // A failing exec liveness probe restarts the container; its output is the message.
        node.create_pod(
            "sick",
            json!({}),
            json!({"containers": [{
                "name": "app", "image": "busybox", "command": sh("sleep 1000"),
                "livenessProbe": {"exec": {"command": sh("echo not well; exit 1")},
                                  "periodSeconds": 1, "failureThreshold": 2},
            }], "terminationGracePeriodSeconds": 1}),
        )
        .await;
        node.until_pod("sick", "restarted", |p| {
            container_status(p)["restartCount"].as_i64() >= Some(1)
        })
        .await;
        let events = node.events_of("sick").await;
        assert!(
            events
                .iter()
                .any(|e| e == "Unhealthy: Liveness probe failed: not well"),
            "{events:?}"
        );

        // A postStart hook that fails kills its container.
        node.create_pod(
            "bad-hook",
            json!({}),
            json!({"restartPolicy": "Never", "containers": [{
                "name": "app", "image": "busybox", "command": sh("sleep 1000"),
                "lifecycle": {"postStart": {"exec": {"command": sh("exit 7")}}},
            }]}),
        )
        .await;
        node.until_pod("bad-hook", "terminated", |p| {
            container_status(p)["state"]["terminated"].is_object()
        })
        .await;
        let events = node.events_of("bad-hook").await;
        assert!(
            events.iter().any(|e| e.starts_with(
                "FailedPostStartHook: Exec lifecycle hook ([\"sh\", \"-c\", \"exit 7\"]) for \
                 Container \"app\" in Pod \"bad-hook_default("
            ) && e
                .ends_with("failed - error: command [\"sh\", \"-c\", \"exit 7\"] exited with 7")),
            "{events:?}"
        );
    });
}
