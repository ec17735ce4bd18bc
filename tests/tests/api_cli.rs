//! The Skiff API through the `skiff` CLI on a three-replica cluster: Kubernetes manifests applied
//! through each replica and read back from the others, re-apply and apply keeping what others
//! own, optimistic concurrency, selectors, namespace deletion, bad input refused with a message
//! naming the problem (and nothing stored), and a leader killed during a stream of applies
//! through a follower (every acknowledged apply is stored).

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind, Reason};
use tests::cli::{ok, ok_with_input, skiff};
use tests::cluster::{Cluster, STORE_ONLY};
use tests::wait;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: two-containers
  labels: {app: web}
spec:
  containers:
    - name: nginx
      image: nginx:1.27
      ports:
        - containerPort: 80
          name: http
    - name: metrics
      image: prom/exporter:v1
      ports:
        - containerPort: 9100
"#;

const REPLICA_SET: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
  labels: {tier: frontend}
spec:
  replicas: 3
  selector:
    matchLabels: {tier: frontend}
  template:
    metadata:
      labels: {tier: frontend}
    spec:
      containers:
        - name: php
          image: php:8-apache
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: nginx
          image: nginx:1.27
          ports:
            - containerPort: 80
"#;

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  backoffLimit: 4
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: pi
          image: perl:5.34
          command: ["perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"]
"#;

const CRON_JOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: hello
              image: busybox:1.36
              command: ["sh", "-c", "date; echo Hello"]
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web-public
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - name: http
      port: 80
      targetPort: http
    - name: metrics
      port: 9100
"#;

fn all_manifests() -> String {
    [POD, REPLICA_SET, DEPLOYMENT, JOB, CRON_JOB, SERVICES]
        .iter()
        .map(|m| m.trim())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn get_json(endpoint: &str, namespace: &str, what: &str) -> Value {
    let out = ok(endpoint, &["get", what, "-n", namespace, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_apply_through_each_replica_and_read_back_from_the_others() {
    let cluster = Cluster::start(3).await;
    for i in 0..3 {
        let here = cluster.members[i].endpoint();
        let there = cluster.members[(i + 1) % 3].endpoint();
        let ns = format!("team-{i}");
        let created = ok_with_input(
            &here,
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
        );
        assert_eq!(created.trim(), format!("namespace/{ns} created"));
        let out = ok_with_input(&here, &["apply", "-n", &ns, "-f", "-"], &all_manifests());
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "pod/two-containers created",
                "replicaset.apps/frontend created",
                "deployment.apps/web created",
                "job.batch/pi created",
                "cronjob.batch/hello created",
                "service/web created",
                "service/web-public created",
            ]
        );

        // Read back from another replica, with the server's defaults filled in.
        let pod = get_json(&there, &ns, "pod/two-containers");
        assert_eq!(
            pod["spec"]["containers"][1]["ports"][0]["containerPort"],
            9100
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["metadata"]["namespace"], ns.as_str());
        assert!(!pod["metadata"]["uid"].as_str().unwrap().is_empty());
        assert!(pod["metadata"]["creationTimestamp"].is_string());
        let deploy = get_json(&there, &ns, "deployment/web");
        assert_eq!(deploy["spec"]["replicas"], 4);
        assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
        assert_eq!(deploy["spec"]["revisionHistoryLimit"], 10);
        let job = get_json(&there, &ns, "job/pi");
        assert_eq!(job["spec"]["backoffLimit"], 4);
        assert_eq!(job["spec"]["completions"], 1);
        let cron = get_json(&there, &ns, "cj/hello");
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow");
        let svc = get_json(&there, &ns, "svc/web");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        let public = get_json(&there, &ns, "svc/web-public");
        assert_eq!(public["spec"]["ports"][1]["targetPort"], 9100);
        assert_eq!(public["spec"]["ports"][0]["targetPort"], "http");

        // Applying the same manifests again changes nothing.
        let again = ok_with_input(&there, &["apply", "-n", &ns, "-f", "-"], &all_manifests());
        assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

        // Tables as kubectl prints them, on the third replica.
        let third = cluster.members[(i + 2) % 3].endpoint();
        // (The ReplicaSet's controller adds pods of its own; the selector leaves them out.)
        let table = ok(&third, &["get", "pods", "-n", &ns, "-l", "app=web"]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        );
        assert_eq!(
            lines[1].split_whitespace().take(4).collect::<Vec<_>>(),
            ["two-containers", "0/2", "Pending", "0"]
        );
        let table = ok(&third, &["get", "deploy", "-n", &ns, "-o", "wide"]);
        assert!(
            table.contains("nginx:1.27") && table.contains("app=web"),
            "{table}"
        );
    }
    // A directory of manifests: YAML and JSON files, in name order; other files are skipped.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-job.yaml"), JOB).unwrap();
    std::fs::write(
        dir.path().join("b-config.json"),
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "fast"}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let eps = cluster.endpoints();
    let out = ok(&eps, &["apply", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["job.batch/pi created", "configmap/settings created"]
    );
    let out = ok(&eps, &["delete", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["job.batch \"pi\" deleted", "configmap \"settings\" deleted"]
    );

    let all = ok(
        &cluster.members[0].endpoint(),
        &["get", "deployments", "-A"],
    );
    for i in 0..3 {
        assert!(all.contains(&format!("team-{i}")), "{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_keeps_what_others_changed_and_updates_are_optimistic() {
    // No controllers: the test plays "someone else" itself, and a Deployment controller
    // writing status meanwhile would turn its read-then-update steps into conflicts.
    let cluster = Cluster::start_with(3, STORE_ONLY).await;
    let eps = cluster.endpoints();
    let client = Client::new(&cluster.client_urls()).unwrap();
    let deployments = Kind::named("deployments").unwrap();
    ok_with_input(&eps, &["apply", "-f", "-"], DEPLOYMENT);

    // Someone else scales it and sets a status; a manifest without `replicas` keeps the scale.
    let mut live = client.get(&deployments, "default", "web").await.unwrap();
    live["spec"]["replicas"] = json!(7);
    client.update(&live, "default").await.unwrap();
    let mut live = client.get(&deployments, "default", "web").await.unwrap();
    live["status"] = json!({"replicas": 7, "readyReplicas": 5});
    client.update_status(&live, "default").await.unwrap();
    let without_replicas = DEPLOYMENT.replace("  replicas: 4\n", "");
    // The manifest no longer names replicas, which it did before: apply removes the field...
    ok_with_input(&eps, &["apply", "-f", "-"], &without_replicas);
    let after = client.get(&deployments, "default", "web").await.unwrap();
    assert_eq!(
        after["spec"]["replicas"], 1,
        "dropped from the manifest: default"
    );
    assert_eq!(after["status"]["readyReplicas"], 5, "status is kept");
    // ...but a field the manifests never named survives every apply.
    let mut live = after.clone();
    live["spec"]["paused"] = json!(true);
    client.update(&live, "default").await.unwrap();
    let changed = without_replicas.replace("nginx:1.27", "nginx:1.28");
    let out = ok_with_input(&eps, &["apply", "-f", "-"], &changed);
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let after = client.get(&deployments, "default", "web").await.unwrap();
    assert_eq!(after["spec"]["paused"], true);
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(after["status"]["readyReplicas"], 5);
    assert!(after["metadata"]["generation"].as_i64().unwrap() >= 3);

    // An update carrying a stale resourceVersion is refused as a conflict and changes nothing.
    let stale = client.get(&deployments, "default", "web").await.unwrap();
    let mut first = stale.clone();
    first["spec"]["replicas"] = json!(2);
    client.update(&first, "default").await.unwrap();
    let mut second = stale.clone();
    second["spec"]["replicas"] = json!(9);
    let err = client.update(&second, "default").await.unwrap_err();
    assert_eq!(err.reason, Reason::Conflict);
    assert!(
        err.message.starts_with(
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified"
        ),
        "{}",
        err.message
    );
    let now = client.get(&deployments, "default", "web").await.unwrap();
    assert_eq!(now["spec"]["replicas"], 2);

    // Create refuses an existing object.
    let run = skiff(&eps, &["create", "-f", "-"], Some(DEPLOYMENT));
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("Error from server (AlreadyExists): error when creating \"STDIN\": deployments.apps \"web\" already exists"),
        "{}",
        run.stderr
    );
}

fn pod_manifest(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  containers:\n    - name: c\n      image: busybox:1.36\n"
    )
}

fn names(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_namespace_deletion() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let manifests = [
        pod_manifest("a", "{app: web, tier: front}"),
        pod_manifest("b", "{app: web, tier: db}"),
        pod_manifest("c", "{app: batch}"),
        pod_manifest("d", "{}"),
    ]
    .join("---\n");
    ok_with_input(&eps, &["apply", "-f", "-"], &manifests);
    let cases: &[(&str, &[&str])] = &[
        ("app=web", &["pod/a", "pod/b"]),
        ("app==web,tier!=db", &["pod/a"]),
        ("tier in (front,db)", &["pod/a", "pod/b"]),
        ("app notin (web)", &["pod/c", "pod/d"]),
        ("tier", &["pod/a", "pod/b"]),
        ("!tier", &["pod/c", "pod/d"]),
    ];
    for (selector, want) in cases {
        let out = ok(&eps, &["get", "pods", "-l", selector, "-o", "name"]);
        assert_eq!(names(&out), *want, "-l {selector}");
    }
    let out = ok(
        &eps,
        &[
            "get",
            "pods",
            "--field-selector",
            "metadata.name=c",
            "-o",
            "name",
        ],
    );
    assert_eq!(names(&out), ["pod/c"]);
    let out = ok(
        &eps,
        &[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Pending,metadata.name!=a",
            "-o",
            "name",
        ],
    );
    assert_eq!(names(&out), ["pod/b", "pod/c", "pod/d"]);
    let run = skiff(
        &eps,
        &["get", "pods", "--field-selector", "spec.bogus=1"],
        None,
    );
    assert!(
        !run.ok && run.stderr.contains("field label not supported: spec.bogus"),
        "{}",
        run.stderr
    );

    // Deleting a namespace deletes what is in it.
    ok_with_input(
        &eps,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scratch\n",
    );
    ok_with_input(&eps, &["apply", "-n", "scratch", "-f", "-"], &manifests);
    ok_with_input(&eps, &["apply", "-n", "scratch", "-f", "-"], SERVICES);
    assert_eq!(
        names(&ok(&eps, &["get", "pods", "-n", "scratch", "-o", "name"])).len(),
        4
    );
    let out = ok(&eps, &["delete", "namespace", "scratch"]);
    assert_eq!(out.trim(), "namespace \"scratch\" deleted");
    let left = skiff(
        &eps,
        &["get", "pods,services", "-n", "scratch", "-o", "name"],
        None,
    );
    assert!(left.ok && left.stdout.is_empty(), "{left:?}");
    let run = skiff(
        &eps,
        &["apply", "-n", "scratch", "-f", "-"],
        Some(&manifests),
    );
    assert!(!run.ok);
    assert!(
        run.stderr.contains("namespaces \"scratch\" not found"),
        "{}",
        run.stderr
    );
    // The default namespace's pods are untouched; built-in namespaces cannot be deleted.
    assert_eq!(names(&ok(&eps, &["get", "pods", "-o", "name"])).len(), 4);
    let run = skiff(&eps, &["delete", "ns", "kube-system"], None);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("Error from server (Forbidden)"),
        "{}",
        run.stderr
    );

    // Delete by label.
    let out = ok(&eps, &["delete", "pods", "-l", "app=web"]);
    assert_eq!(names(&out), ["pod \"a\" deleted", "pod \"b\" deleted"]);
    assert_eq!(
        names(&ok(&eps, &["get", "pods", "-o", "name"])),
        ["pod/c", "pod/d"]
    );

    // kubectl's JSONPath output: a list, a range with quoted text, one object, a filter,
    // and a template that does not parse.
    assert_eq!(
        ok(
            &eps,
            &["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]
        ),
        "c d"
    );
    assert_eq!(
        ok(
            &eps,
            &[
                "get",
                "pods",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.metadata.namespace}{"\n"}{end}"#
            ]
        ),
        "c\tdefault\nd\tdefault\n"
    );
    assert_eq!(
        ok(
            &eps,
            &["get", "pod", "c", "-o=jsonpath='{.kind}/{.metadata.name}'"]
        ),
        "Pod/c"
    );
    assert_eq!(
        ok(
            &eps,
            &[
                "get",
                "pods",
                "-o",
                r#"jsonpath={.items[?(@.metadata.name=="d")].kind}"#
            ]
        ),
        "Pod"
    );
    let bad = skiff(&eps, &["get", "pods", "-o", "jsonpath={.items[*]"], None);
    assert!(!bad.ok);
    assert_eq!(
        bad.stderr.trim(),
        "error: error parsing jsonpath {.items[*], unclosed action in template \"{.items[*]\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_problem_and_nothing_is_stored() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let big = "x".repeat(2 * 1024 * 1024);
    let oversized =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  blob: {big}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid YAML", "kind: Pod\nmetadata: [unclosed\n".into(), "error parsing STDIN"),
        (
            "unknown kind",
            "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n".into(),
            "no matches for kind \"Widget\" in version \"v1\"",
        ),
        (
            "unknown apiVersion",
            "apiVersion: apps/v2\nkind: Deployment\nmetadata:\n  name: w\n".into(),
            "no matches for kind \"Deployment\" in version \"apps/v2\"",
        ),
        (
            "missing image",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n    - name: c\n".into(),
            "Pod \"noimage\" is invalid: spec.containers[0].image: Required value",
        ),
        (
            "missing name",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\ndata: {a: b}\n".into(),
            "metadata.name: Required value",
        ),
        (
            "wrong type",
            DEPLOYMENT.replace("replicas: 4", "replicas: four").replace("name: web", "name: typo"),
            "spec.replicas: invalid type: string \"four\", expected i32",
        ),
        (
            "a CPU request that is not a quantity",
            DEPLOYMENT.replace("name: web", "name: bad-cpu").replace(
                "image: nginx:1.27",
                "image: nginx:1.27\n          resources:\n            requests: {cpu: abc}",
            ),
            "Deployment \"bad-cpu\" is invalid: spec.template.spec.containers[0].resources.requests.cpu: Invalid value: \"abc\": must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$",
        ),
        (
            "not a DNS name",
            pod_manifest("Not_A_Name", "{}"),
            "metadata.name: Invalid value: \"Not_A_Name\"",
        ),
        ("oversized", oversized, "too large"),
    ];
    for (what, manifest, expected) in &cases {
        let run = skiff(&eps, &["apply", "-f", "-"], Some(manifest));
        assert!(!run.ok, "{what}: accepted");
        assert!(
            run.stderr.contains(expected),
            "{what}: expected {expected:?} in {:?}",
            run.stderr
        );
    }
    let run = skiff(&eps, &["get", "widgets"], None);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("the server doesn't have a resource type \"widgets\""),
        "{}",
        run.stderr
    );
    let run = skiff(&eps, &["get", "pods", "-l", "app in web"], None);
    assert!(
        !run.ok && run.stderr.contains("app in web"),
        "{}",
        run.stderr
    );
    // Nothing was stored.
    let out = ok(
        &eps,
        &["get", "pods,deployments,configmaps", "-A", "-o", "name"],
    );
    assert!(out.is_empty(), "stored after bad input: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_apply_acknowledged_through_a_follower_survives_a_leader_kill() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let client = Client::new(&[cluster.members[follower].client_url()]).unwrap();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut failed = 0;
        for i in 0..150 {
            let name = format!("cm-{i:03}");
            let cm = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"i": i.to_string()}
            });
            match client.apply(&cm, "default").await {
                Ok(w) => {
                    // "unchanged" when the client retried an apply whose first answer was
                    // lost with the leader although it was stored.
                    assert!(
                        w.outcome == "created" || w.outcome == "unchanged",
                        "{}",
                        w.outcome
                    );
                    acked.push(name);
                }
                Err(_) => failed += 1,
            }
        }
        (acked, failed)
    });
    let probe = Client::new(&[cluster.members[follower].client_url()]).unwrap();
    let configmaps = Kind::named("configmaps").unwrap();
    wait::until(
        "some applies before the kill",
        Duration::from_secs(30),
        || {
            let probe = &probe;
            async move {
                let list = probe
                    .list(&configmaps, Some("default"), "", "")
                    .await
                    .ok()?;
                (list.items.len() >= 30).then_some(())
            }
        },
    )
    .await;
    cluster.kill(leader);
    let (acked, failed) = writer.await.unwrap();
    assert!(
        acked.len() >= 100,
        "only {} applies acknowledged ({failed} failed)",
        acked.len()
    );
    // Every acknowledged apply is stored, as seen by both survivors.
    for i in [follower, other] {
        let c = Client::new(&[cluster.members[i].client_url()]).unwrap();
        let list = c.list(&configmaps, Some("default"), "", "").await.unwrap();
        let stored: std::collections::BTreeSet<String> = list
            .items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        for name in &acked {
            assert!(
                stored.contains(name),
                "{name} acknowledged but not stored on member {i}"
            );
        }
    }
}
