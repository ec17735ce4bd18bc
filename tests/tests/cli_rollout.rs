//! `skiff rollout` end to end. On a cluster without controllers the test plays the Deployment
//! controller itself (ReplicaSets with owner references and revision annotations, status
//! written through the API), so every message is checked against a known state: status once
//! and followed through a watch, timeouts, the progress deadline, history, undo, pause,
//! resume, restart and the refusals. Then a real rollout on hollow nodes goes forward, back
//! and restarts, with `rollout status` waiting for each step.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::cli::{ok, ok_with_input, skiff};
use tests::cluster::{Cluster, STORE_ONLY};
use tests::wait;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: nginx\n          image: nginx:1.27\n          ports: [{containerPort: 80}]\n";

const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

fn deployments() -> Kind {
    Kind::named("deployments").unwrap()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn get_web(eps: &str) -> Value {
    json_of(&ok(eps, &["get", "deployment/web", "-o", "json"]))
}

/// Writes `status` as Deployment web's, observed at its current generation unless it says.
async fn set_status(client: &Client, mut status: Value) {
    let mut d = client.get(&deployments(), "default", "web").await.unwrap();
    if status.get("observedGeneration").is_none() {
        status["observedGeneration"] = d["metadata"]["generation"].clone();
    }
    d["status"] = status;
    client.update_status(&d, "default").await.unwrap();
}

/// A ReplicaSet as the controller makes it: Deployment `d`'s template (with `image`) under a
/// hash label, a controller owner reference, the revision and an optional change-cause.
fn replica_set(d: &Value, revision: u32, image: &str, cause: Option<&str>) -> Value {
    let hash = format!("h{revision}");
    let mut template = d["spec"]["template"].clone();
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    template["spec"]["containers"][0]["image"] = json!(image);
    let mut annotations = json!({"deployment.kubernetes.io/revision": revision.to_string()});
    if let Some(c) = cause {
        annotations[CHANGE_CAUSE] = json!(c);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("web-{hash}"), "namespace": "default",
            "labels": template["metadata"]["labels"].clone(),
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": d["metadata"]["uid"].clone(), "controller": true}]
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
            "template": template
        }
    })
}

/// `skiff rollout status deployment/web` running in the background, read line by line.
struct Follower {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Follower {
    fn start(eps: &str, extra: &[&str]) -> Follower {
        let mut child = Command::new(tests::bins::bin("skiff"))
            .args(["--endpoints", eps, "--config", "/nonexistent"])
            .args(["rollout", "status", "deployment/web"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Follower { child, lines }
    }

    fn next_line(&mut self) -> String {
        self.lines
            .next()
            .expect("rollout status printed a line")
            .unwrap()
    }

    /// Waits for the exit; its status and stderr.
    fn finish(mut self) -> (bool, String) {
        let rest: Vec<String> = self.lines.by_ref().map(Result::unwrap).collect();
        assert!(rest.is_empty(), "unexpected output: {rest:?}");
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_against_a_history_the_test_writes() {
    let cluster = Cluster::start_with(3, STORE_ONLY).await;
    let eps = cluster.endpoints();
    let client = Client::new(&cluster.client_urls()).unwrap();
    ok_with_input(&eps, &["apply", "-f", "-"], DEPLOYMENT);

    // Refusals that need no state.
    let run = skiff(&eps, &["rollout", "status", "deployment/nope"], None);
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    let run = skiff(&eps, &["rollout", "pause", "configmap/x"], None);
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: rollout is not supported for configmaps"
    );
    let run = skiff(&eps, &["rollout", "history", "widgets", "x"], None);
    assert!(!run.ok && run.stderr.contains("resource type \"widgets\""));

    // Status: nothing observed yet, then what the "controller" reports.
    let once = ["rollout", "status", "deployment/web", "--watch=false"];
    assert_eq!(
        ok(&eps, &once).trim(),
        "Waiting for deployment spec update to be observed..."
    );
    set_status(
        &client,
        json!({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}),
    )
    .await;
    assert_eq!(
        ok(&eps, &once).trim(),
        "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated..."
    );
    let run = skiff(
        &eps,
        &["rollout", "status", "deploy", "web", "--timeout=1s"],
        None,
    );
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: timed out waiting for the condition"
    );
    assert!(
        run.stdout.contains("1 out of 2 new replicas"),
        "{}",
        run.stdout
    );

    // Followed: one line per new message, until the rollout is done.
    let mut follower = Follower::start(&eps, &["--timeout=60s"]);
    assert!(follower
        .next_line()
        .contains("1 out of 2 new replicas have been updated"));
    set_status(
        &client,
        json!({"replicas": 3, "updatedReplicas": 2, "availableReplicas": 1}),
    )
    .await;
    assert_eq!(
        follower.next_line(),
        "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
    );
    set_status(
        &client,
        json!({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
    )
    .await;
    assert_eq!(
        follower.next_line(),
        "Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available..."
    );
    set_status(
        &client,
        json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
    assert_eq!(
        follower.next_line(),
        "deployment \"web\" successfully rolled out"
    );
    let (done, stderr) = follower.finish();
    assert!(done, "{stderr}");

    // History: none yet; then two revisions owned by web, and one owned by someone else.
    assert_eq!(
        ok(&eps, &["rollout", "history", "deployment/web"]),
        "deployment.apps/web\nNo rollout history found.\n"
    );
    let d = get_web(&eps);
    let rs_kind = Kind::named("replicasets").unwrap();
    client
        .create(
            &replica_set(&d, 1, "nginx:1.26", Some("skiff apply -f web-v1.yaml")),
            "default",
        )
        .await
        .unwrap();
    client
        .create(&replica_set(&d, 2, "nginx:1.27", None), "default")
        .await
        .unwrap();
    let mut stranger = replica_set(&d, 9, "nginx:9", None);
    stranger["metadata"]["name"] = json!("other-h9");
    stranger["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    client.create(&stranger, "default").await.unwrap();
    assert_eq!(
        ok(&eps, &["rollout", "history", "deployment/web"]),
        "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         skiff apply -f web-v1.yaml\n2         <none>\n"
    );
    let one = ok(
        &eps,
        &["rollout", "history", "deployment/web", "--revision=1"],
    );
    assert!(
        one.starts_with("deployment.apps/web with revision #1\nPod Template:\n"),
        "{one}"
    );
    for want in [
        "pod-template-hash=h1",
        "kubernetes.io/change-cause=skiff apply -f web-v1.yaml",
        "   nginx:\n",
        "Image:        nginx:1.26",
        "Port:         80/TCP",
    ] {
        assert!(one.contains(want), "{want:?} missing from:\n{one}");
    }
    let run = skiff(
        &eps,
        &["rollout", "history", "deployment/web", "--revision=5"],
        None,
    );
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: unable to find the specified revision"
    );

    // Undo: back to revision 1 (template without the hash label, its change-cause), then no-ops.
    assert_eq!(
        ok(&eps, &["rollout", "undo", "deployment/web"]).trim(),
        "deployment.apps/web rolled back"
    );
    let d = get_web(&eps);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(
        d["metadata"]["annotations"][CHANGE_CAUSE],
        "skiff apply -f web-v1.yaml"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        ok(
            &eps,
            &["rollout", "undo", "deployment/web", "--to-revision=1"]
        )
        .trim(),
        "deployment.apps/web skipped rollback (current template already matches revision 1)"
    );
    // Still at the second newest revision's template: skipped again.
    assert!(ok(&eps, &["rollout", "undo", "deploy/web"]).contains("skipped rollback"));
    // The spec change is not observed yet; the status says so.
    assert_eq!(
        ok(&eps, &once).trim(),
        "Waiting for deployment spec update to be observed..."
    );
    let run = skiff(
        &eps,
        &["rollout", "undo", "deployment/web", "--to-revision=7"],
        None,
    );
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: unable to find specified revision 7 in history"
    );
    // Forward again to revision 2, which has no change-cause: the Deployment's goes.
    assert_eq!(
        ok(
            &eps,
            &["rollout", "undo", "deployment/web", "--to-revision=2"]
        )
        .trim(),
        "deployment.apps/web rolled back"
    );
    let d = get_web(&eps);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert!(
        d["metadata"]["annotations"].get(CHANGE_CAUSE).is_none(),
        "{d}"
    );

    // Pause and resume, each once and again; a paused deployment refuses undo and restart.
    assert_eq!(
        ok(&eps, &["rollout", "pause", "deployment/web"]).trim(),
        "deployment.apps/web paused"
    );
    assert_eq!(get_web(&eps)["spec"]["paused"], true);
    assert_eq!(
        ok(&eps, &["rollout", "pause", "deployment", "web"]).trim(),
        "deployment.apps/web already paused"
    );
    let run = skiff(&eps, &["rollout", "undo", "deployment/web"], None);
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: you cannot rollback a paused deployment; resume it first with 'skiff rollout \
         resume deployment/web' and try again"
    );
    let run = skiff(&eps, &["rollout", "restart", "deployment/web"], None);
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: can't restart paused deployment (run rollout resume first)"
    );
    assert_eq!(
        ok(&eps, &["rollout", "resume", "deployment/web"]).trim(),
        "deployment.apps/web resumed"
    );
    assert_eq!(get_web(&eps)["spec"]["paused"], false);
    assert_eq!(
        ok(&eps, &["rollout", "resume", "deployment/web"]).trim(),
        "deployment.apps/web is not paused"
    );

    // Restart: the template gets the time; nothing else changes.
    let before = get_web(&eps);
    assert_eq!(
        ok(&eps, &["rollout", "restart", "deployment/web"]).trim(),
        "deployment.apps/web restarted"
    );
    let after = get_web(&eps);
    let stamp = after["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("no restartedAt: {after}"));
    assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
    assert_eq!(
        after["metadata"]["generation"].as_i64().unwrap(),
        before["metadata"]["generation"].as_i64().unwrap() + 1
    );
    assert_eq!(
        after["spec"]["template"]["spec"],
        before["spec"]["template"]["spec"]
    );

    // A progress deadline ends the wait with an error, watching or not.
    set_status(
        &client,
        json!({"replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
               "conditions": [{"type": "Progressing", "status": "False",
                               "reason": "ProgressDeadlineExceeded",
                               "message": "ReplicaSet \"web-h2\" has timed out progressing."}]}),
    )
    .await;
    for extra in [&[][..], &["--watch=false"]] {
        let mut args = vec!["rollout", "status", "deployment/web"];
        args.extend_from_slice(extra);
        let run = skiff(&eps, &args, None);
        assert!(!run.ok);
        assert_eq!(
            run.stderr.trim(),
            "error: deployment \"web\" exceeded its progress deadline"
        );
    }
    // Pinned to a revision the Deployment is not at (it has no revision annotation: 0).
    let run = skiff(
        &eps,
        &["rollout", "status", "deployment/web", "--revision=2"],
        None,
    );
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "error: desired revision (2) is different from the running revision (0)"
    );

    // Deleted while followed: the wait ends with an error.
    set_status(&client, json!({"replicas": 1, "updatedReplicas": 1})).await;
    let mut follower = Follower::start(&eps, &["--timeout=60s"]);
    assert!(follower.next_line().contains("1 out of 2 new replicas"));
    ok(&eps, &["delete", "deployment/web"]);
    let (done, stderr) = follower.finish();
    assert!(!done);
    assert_eq!(
        stderr.trim(),
        "error: deployment \"web\" was deleted while waiting for its rollout"
    );
    // The ReplicaSets are the test's own; nothing collects them without controllers.
    let left = client
        .list(&rs_kind, Some("default"), "", "")
        .await
        .unwrap();
    assert_eq!(left.items.len(), 3);
}

fn manifest(image: &str, cause: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    {CHANGE_CAUSE}: {cause}\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: c\n          image: {image}\n          resources: {{requests: {{cpu: 100m}}}}\n"
    )
}

/// `rollout status` until the rollout finishes; its last line.
fn wait_rolled_out(eps: &str) {
    let out = ok(
        eps,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    );
    assert_eq!(
        out.lines().last(),
        Some("deployment \"web\" successfully rolled out"),
        "{out}"
    );
}

/// Waits until `rollout history` prints `table` (the controller trims and renumbers old
/// ReplicaSets in its own passes).
fn wait_history(eps: &str, table: &str) {
    let want = format!("deployment.apps/web\nREVISION  CHANGE-CAUSE\n{table}");
    wait::until_blocking(&format!("history\n{want}"), Duration::from_secs(30), || {
        let out = ok(eps, &["rollout", "history", "deployment/web"]);
        (out == want).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_rollout_goes_forward_back_and_restarts() {
    let cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 2, "hn", &[]);
    let eps = cluster.endpoints();

    ok_with_input(&eps, &["apply", "-f", "-"], &manifest("web:1", "first"));
    wait_rolled_out(&eps);
    ok_with_input(&eps, &["apply", "-f", "-"], &manifest("web:2", "second"));
    wait_rolled_out(&eps);
    wait_history(&eps, "1         first\n2         second\n");

    assert_eq!(
        ok(&eps, &["rollout", "undo", "deployment/web"]).trim(),
        "deployment.apps/web rolled back"
    );
    wait_rolled_out(&eps);
    let d = get_web(&eps);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert_eq!(d["metadata"]["annotations"][CHANGE_CAUSE], "first");
    // The first ReplicaSet comes back as revision 3.
    wait_history(&eps, "2         second\n3         first\n");
    let three = ok(
        &eps,
        &["rollout", "history", "deployment/web", "--revision=3"],
    );
    assert!(three.contains("Image:        web:1"), "{three}");
    assert!(ok(
        &eps,
        &["rollout", "undo", "deployment/web", "--to-revision=3"]
    )
    .contains("skipped rollback (current template already matches revision 3)"));

    assert_eq!(
        ok(&eps, &["rollout", "restart", "deployment/web"]).trim(),
        "deployment.apps/web restarted"
    );
    wait_rolled_out(&eps);
    wait_history(&eps, "2         second\n3         first\n4         first\n");

    agent.kill().unwrap();
    agent.wait().unwrap();
}
