//! The `skiff` commands beyond apply/get/delete, against a three-replica cluster: scale, label,
//! edit (with a scripted $EDITOR), describe with events, cluster status (including a replica
//! that is down), endpoint failover, completion scripts and help.

use std::time::Duration;

use serde_json::Value;
use tests::cli::{ok, ok_with_input, skiff};
use tests::cluster::Cluster;
use tests::wait;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: nginx\n          image: nginx:1.27\n";

/// Runs `skiff edit deployment/web` with `editor` as the editor.
fn edit_deployment(eps: &str, editor: &str) -> std::process::Output {
    std::process::Command::new(tests::bins::bin("skiff"))
        .args([
            "--endpoints",
            eps,
            "--config",
            "/nonexistent",
            "edit",
            "deployment/web",
        ])
        .env("SKIFF_EDITOR", editor)
        .output()
        .unwrap()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_label_edit_and_describe() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    ok_with_input(&eps, &["apply", "-f", "-"], DEPLOYMENT);

    assert_eq!(
        ok(&eps, &["scale", "deployment/web", "--replicas=5"]).trim(),
        "deployment.apps/web scaled"
    );
    let d = json_of(&ok(&eps, &["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 5);
    // Re-applying a manifest that does not name replicas keeps the scale's value.
    let unscaled = DEPLOYMENT.replace("  replicas: 2\n", "");
    ok_with_input(&eps, &["apply", "-f", "-"], &unscaled);
    ok(&eps, &["scale", "deployment/web", "--replicas=7"]);
    let out = ok_with_input(&eps, &["apply", "-f", "-"], &unscaled);
    assert_eq!(out.trim(), "deployment.apps/web unchanged");
    let d = json_of(&ok(&eps, &["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 7);
    ok(&eps, &["scale", "deployment/web", "--replicas=5"]);
    let run = skiff(&eps, &["scale", "deployment/web", "--replicas=-1"], None);
    assert!(!run.ok);
    let run = skiff(&eps, &["scale", "configmap/x", "--replicas=1"], None);
    assert!(
        !run.ok && run.stderr.contains("cannot scale"),
        "{}",
        run.stderr
    );

    assert_eq!(
        ok(&eps, &["label", "deploy", "web", "tier=front"]).trim(),
        "deployment.apps/web labeled"
    );
    let run = skiff(&eps, &["label", "deploy", "web", "app=other"], None);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("'app' already has a value (web), and --overwrite is false"),
        "{}",
        run.stderr
    );
    ok(
        &eps,
        &["label", "deploy/web", "app=other", "tier-", "--overwrite"],
    );
    let d = json_of(&ok(&eps, &["get", "deploy/web", "-o", "json"]));
    assert_eq!(d["metadata"]["labels"], serde_json::json!({"app": "other"}));
    let table = ok(&eps, &["get", "deploy", "--show-labels"]);
    assert!(
        table.contains("LABELS") && table.contains("app=other"),
        "{table}"
    );

    // Edit with an "editor" that changes the image.
    let run = edit_deployment(&eps, "sed -i s/nginx:1.27/nginx:1.28/");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "deployment.apps/web edited"
    );
    let d = json_of(&ok(&eps, &["get", "deploy/web", "-o", "json"]));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    // An editor that changes nothing changes nothing.
    let run = edit_deployment(&eps, "true");
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("Edit cancelled, no changes made."));

    // generateName: the server picks the name.
    let out = ok_with_input(
        &eps,
        &["create", "-f", "-", "-o", "name"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: job-\n",
    );
    let name = out.trim();
    assert!(
        name.starts_with("configmap/job-") && name.len() == "configmap/job-".len() + 5,
        "{name}"
    );
    ok(&eps, &["get", name]);

    // Describe shows the facts and the events that name the object.
    ok_with_input(
        &eps,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.1\ninvolvedObject:\n  kind: Deployment\n  name: web\n  namespace: default\nreason: ScalingReplicaSet\nmessage: Scaled up replica set web-abc to 5\ntype: Normal\nsource:\n  component: deployment-controller\n",
    );
    let out = ok(&eps, &["describe", "deployment", "web"]);
    assert!(out.contains("Name:         web"), "{out}");
    assert!(out.contains("replicas: 5"), "{out}");
    assert!(
        out.contains("ScalingReplicaSet") && out.contains("Scaled up replica set web-abc to 5"),
        "{out}"
    );
    assert!(!out.contains("last-applied"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_failover_completion_and_help() {
    let mut cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    // Members publish their names and client URLs through the log shortly after starting.
    let out = wait::until(
        "every replica healthy in cluster status",
        Duration::from_secs(20),
        || {
            let out = ok(&eps, &["cluster", "status"]);
            let healthy = out.lines().filter(|l| l.ends_with("healthy")).count();
            async move { (healthy == 3).then_some(out) }
        },
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[4].starts_with("controllers: m"), "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(" leader ")).count(),
        1,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("healthy")).count(),
        3,
        "{out}"
    );

    // With one replica down, the CLI still works through the others and reports it.
    let leader = cluster.leader_index().await;
    let down = (leader + 1) % 3;
    cluster.kill(down);
    let urls = format!(
        "{},{}",
        cluster.members[down].endpoint(),
        cluster.members[(down + 1) % 3].endpoint()
    );
    let run = skiff(&urls, &["cluster", "status"], None);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.ends_with("unreachable"))
            .count(),
        1,
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 of 3 replicas unreachable"),
        "{}",
        run.stderr
    );
    ok_with_input(&urls, &["apply", "-f", "-"], DEPLOYMENT);
    assert!(ok(&urls, &["get", "deploy"]).contains("web"));

    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&urls, &["completion", shell]);
        assert!(script.contains("skiff"), "{shell}");
    }
    let run = skiff(&urls, &["completion", "tcsh"], None);
    assert!(!run.ok);
    for cmd in [
        "apply", "get", "delete", "describe", "edit", "label", "scale", "cluster", "logs",
    ] {
        let help = ok(&urls, &[cmd, "--help"]);
        assert!(
            help.starts_with(char::is_alphabetic) && help.contains("Usage: skiff"),
            "{cmd}: {help}"
        );
    }
    let run = skiff(&urls, &["frobnicate"], None);
    assert!(
        !run.ok && run.stderr.contains("unrecognized subcommand"),
        "{}",
        run.stderr
    );
}
