//! PersistentVolumeClaims out of the box, as k3s ships them. On a real node (a test host with a
//! replica, a registry and `skiff-agent`): a StatefulSet's claims, which name no class, get the
//! default `local-path` class, wait for the scheduler to choose their pods' node, are
//! provisioned as hostPath volumes under the agent's storage directory and bound; the pods
//! write into them; a pod deleted comes back under its name and finds what it wrote; `skiff get
//! pvc,pv` shows them Bound; once the set and its claims are deleted the volumes are deleted and
//! the agent removes their directories. A static hostPath volume binds to a claim asking for
//! no class (`storageClassName: ""`). On hollow nodes (control plane only): the scheduler's
//! volume-binding reasons, the provisioner's refusals (a node without the directory
//! annotation, an Immediate class), provisioning once the node publishes its directory, a
//! claim's spec immutable, and `skiff get sc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::agent::{events_of, TestNode};
use tests::cluster::Cluster;
use tests::netns;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(90);

fn kind(name: &str) -> Kind {
    Kind::named(name).expect("a served kind")
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn phase(obj: &Value) -> &str {
    obj["status"]["phase"].as_str().unwrap_or_default()
}

async fn get(client: &Client, k: &str, namespace: &str, n: &str) -> Option<Value> {
    client.get(&kind(k), namespace, n).await.ok()
}

/// Waits for an Event about `involved` containing `part`.
async fn until_event(client: &Client, involved: &str, part: &str) {
    let found = wait::try_until(LIMIT, || async {
        events_of(client, involved)
            .await
            .iter()
            .any(|e| e.contains(part))
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no event with {part:?} about {involved}; events: {:#?}",
        events_of(client, involved).await
    );
}

/// The StatefulSet `web`: each pod records its first start in its volume (`first`) and, when
/// started again on the same volume, what it found there (`seen`).
fn web(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "c", "image": "busybox",
                        "command": ["sh", "-c",
                            "if [ -f /data/first ]; then cp /data/first /data/seen; \
                             else cat /etc/hostname > /data/first; fi; exec sleep 3600"],
                        "resources": {"limits": {"memory": "64Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "64Mi"}}}
            }]
        }
    })
}

/// Waits until claim `claim` is Bound; returns it and its volume.
async fn bound(client: &Client, claim: &str) -> (Value, Value) {
    let found = wait::try_until(LIMIT, || async {
        let c = get(client, "pvc", "default", claim).await?;
        let volume = c["spec"]["volumeName"].as_str()?.to_string();
        let v = get(client, "pv", "", &volume).await?;
        (phase(&c) == "Bound" && phase(&v) == "Bound").then_some((c, v))
    })
    .await;
    match found {
        Some(found) => found,
        None => panic!(
            "claim {claim} not bound: {:#}\nevents: {:#?}",
            get(client, "pvc", "default", claim)
                .await
                .unwrap_or_default(),
            events_of(client, claim).await
        ),
    }
}

/// Waits until pod `pod` runs (with a uid other than `not_uid`); returns it.
async fn running(n: &TestNode, pod: &str, not_uid: &str) -> Value {
    let found = wait::try_until(LIMIT, || async {
        let p = get(&n.client, "pods", "default", pod).await?;
        (phase(&p) == "Running" && p["metadata"]["uid"] != not_uid).then_some(p)
    })
    .await;
    match found {
        Some(p) => p,
        None => panic!(
            "pod {pod} not running: {:#}\nevents: {:#?}\nagent log:\n{}",
            get(&n.client, "pods", "default", pod)
                .await
                .map(|p| p["status"].clone())
                .unwrap_or_default(),
            events_of(&n.client, pod).await,
            n.agent.log()
        ),
    }
}

/// Waits until the file at `path` reads `want` (a pod writes it).
async fn file_reads(path: &Path, want: &str) {
    let got = wait::try_until(LIMIT, || async {
        std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.trim() == want)
    })
    .await;
    assert!(
        got.is_some(),
        "{} never read {want:?} (it reads {:?})",
        path.display(),
        std::fs::read_to_string(path)
    );
}

fn host_path(volume: &Value) -> PathBuf {
    PathBuf::from(
        volume["spec"]["hostPath"]["path"]
            .as_str()
            .unwrap_or_default(),
    )
}

#[test]
fn stateful_set_claims_are_provisioned_on_the_node_and_outlive_their_pods() {
    netns::on_one_host(move |host_ip| async move {
        let n = TestNode::start(&host_ip).await;
        let storage = std::fs::canonicalize(n.agent.dir().join("storage"))
            .expect("the agent made its storage directory");
        let node = get(&n.client, "nodes", "", "node-a").await.expect("node");
        assert_eq!(
            node["metadata"]["annotations"]["skiff.io/local-path-dir"],
            storage.to_string_lossy().as_ref()
        );

        n.client
            .create(&web(2), "default")
            .await
            .expect("statefulset");
        let mut dirs = BTreeMap::new();
        for i in 0..2 {
            let claim = format!("data-web-{i}");
            let (c, v) = bound(&n.client, &claim).await;
            // DefaultStorageClass admission gave the claim the default class.
            assert_eq!(c["spec"]["storageClassName"], "local-path");
            assert_eq!(
                c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
                "node-a"
            );
            assert_eq!(
                c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
                "yes"
            );
            assert_eq!(
                c["metadata"]["finalizers"],
                json!(["kubernetes.io/pvc-protection"])
            );
            assert_eq!(c["status"]["capacity"]["storage"], "64Mi");
            let uid = c["metadata"]["uid"].as_str().expect("uid");
            assert_eq!(name(&v), format!("pvc-{uid}"));
            assert_eq!(v["spec"]["claimRef"]["name"], claim.as_str());
            assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
            assert_eq!(v["spec"]["storageClassName"], "local-path");
            assert_eq!(v["spec"]["hostPath"]["type"], "DirectoryOrCreate");
            assert_eq!(
                v["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
                "skiff.io/local-path"
            );
            assert_eq!(
                v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
                    [0]["values"],
                json!(["node-a"])
            );
            assert_eq!(
                host_path(&v),
                storage.join(format!("pvc-{uid}_default_{claim}"))
            );
            until_event(
                &n.client,
                &claim,
                "ProvisioningSucceeded: Successfully provisioned volume",
            )
            .await;
            // Each pod writes into its own volume, on this node's disk.
            let pod = running(&n, &format!("web-{i}"), "").await;
            assert_eq!(pod["spec"]["nodeName"], "node-a");
            file_reads(&host_path(&v).join("first"), &format!("web-{i}")).await;
            dirs.insert(i, host_path(&v));
        }

        // `skiff get pvc,pv`: both kinds, every line Bound.
        let eps = n.cluster.endpoints();
        let out = tests::cli::ok(&eps, &["get", "pvc,pv"]);
        let bound_lines = out.lines().filter(|l| l.contains("Bound")).count();
        assert_eq!(bound_lines, 4, "{out}");
        assert!(out.contains("local-path"), "{out}");
        let out = tests::cli::ok(&eps, &["get", "sc"]);
        assert!(out.contains("local-path (default)"), "{out}");
        assert!(out.contains("WaitForFirstConsumer"), "{out}");

        // A pod deleted comes back under its name and finds what it wrote before.
        let old = get(&n.client, "pods", "default", "web-0")
            .await
            .expect("web-0");
        let old_uid = old["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        n.client
            .delete(&kind("pods"), "default", "web-0")
            .await
            .expect("pod deleted");
        running(&n, "web-0", &old_uid).await;
        file_reads(&dirs[&0].join("seen"), "web-0").await;

        // The set, then its claims, deleted: the volumes are deleted (reclaim policy Delete)
        // and their directories removed from the node.
        n.client
            .delete(&kind("statefulsets"), "default", "web")
            .await
            .expect("set deleted");
        for i in 0..2 {
            n.client
                .delete(&kind("pvc"), "default", &format!("data-web-{i}"))
                .await
                .expect("claim deleted");
        }
        let client = &n.client;
        wait::until("the pods, claims and volumes to go", LIMIT, || async {
            let left = |k: &'static str| async move {
                client
                    .list(&kind(k), None, "", "")
                    .await
                    .map(|l| l.items.len())
                    .ok()
            };
            (left("pods").await? == 0 && left("pvc").await? == 0 && left("pv").await? == 0)
                .then_some(())
        })
        .await;
        wait::until(
            "the agent to remove the volumes' directories",
            LIMIT,
            || async { dirs.values().all(|d| !d.exists()).then_some(()) },
        )
        .await;
        assert!(storage.is_dir(), "the storage directory itself stays");
    });
}

#[test]
fn a_static_volume_binds_to_a_claim_asking_for_no_class() {
    netns::on_one_host(move |host_ip| async move {
        let n = TestNode::start(&host_ip).await;
        let host_dir = tempfile::tempdir().expect("tempdir");
        let pv_dir = host_dir.path().join("static");
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "PersistentVolume",
                        "metadata": {"name": "static-pv"},
                        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                 "hostPath": {"path": pv_dir.to_string_lossy(),
                                              "type": "DirectoryOrCreate"}}}),
                "",
            )
            .await
            .expect("volume");
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": "static", "namespace": "default"},
                        "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": "512Mi"}}}}),
                "default",
            )
            .await
            .expect("claim");
        let (c, v) = bound(&n.client, "static").await;
        assert_eq!(name(&v), "static-pv");
        assert_eq!(c["spec"]["storageClassName"], "");
        assert_eq!(c["status"]["capacity"]["storage"], "1Gi");
        assert_eq!(
            c["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
            "yes"
        );
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "writer", "namespace": "default"},
                        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                 "containers": [{"name": "c", "image": "busybox",
                                     "command": ["sh", "-c", "echo static > /v/file"],
                                     "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "static"}}]}}),
                "default",
            )
            .await
            .expect("pod");
        file_reads(&pv_dir.join("file"), "static").await;

        // The claim deleted: Retain keeps the volume, Released, and its data.
        wait::until("the pod to finish", LIMIT, || async {
            let p = get(&n.client, "pods", "default", "writer").await?;
            (phase(&p) == "Succeeded").then_some(())
        })
        .await;
        n.client
            .delete(&kind("pvc"), "default", "static")
            .await
            .expect("claim deleted");
        wait::until("the volume to be Released", LIMIT, || async {
            let v = get(&n.client, "pv", "", "static-pv").await?;
            (phase(&v) == "Released").then_some(())
        })
        .await;
        assert!(get(&n.client, "pvc", "default", "static").await.is_none());
        assert!(pv_dir.join("file").exists());
    });
}

/// Waits until pod `pod`'s PodScheduled condition says `message`.
async fn unschedulable(client: &Client, pod: &str, message: &str) {
    let found = wait::try_until(LIMIT, || async {
        let p = get(client, "pods", "default", pod).await?;
        let conditions = p["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["message"] == message)
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "pod {pod} never unschedulable with {message:?}: {:#}",
        get(client, "pods", "default", pod)
            .await
            .unwrap_or_default()["status"]
    );
}

fn claim(claim_name: &str, class: Option<&str>) -> Value {
    let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    if let Some(k) = class {
        c["spec"]["storageClassName"] = json!(k);
    }
    c
}

fn pod_with(pod_name: &str, claim_name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim_name}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_schedule_claims_and_provision_where_a_directory_is_published() {
    let cluster = Cluster::start(1).await;
    let mut agent = tests::hollow::start(&cluster, 1, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).expect("client");
    let eps = cluster.endpoints();

    // The default class is there from the start.
    let out = wait::until("the default storage class", LIMIT, || async {
        let out = tests::cli::ok(&eps, &["get", "sc"]);
        out.contains("local-path (default)").then_some(out)
    })
    .await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ]
    );
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        [
            "local-path",
            "(default)",
            "skiff.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );

    // A claim that does not exist, and one unbound in an Immediate class, keep pods off every
    // node; the local-path provisioner refuses an Immediate class.
    client
        .create(
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "now"}, "provisioner": "skiff.io/local-path"}),
            "",
        )
        .await
        .expect("class");
    client
        .create(&claim("soon", Some("now")), "default")
        .await
        .expect("claim");
    for p in [pod_with("lonely", "missing"), pod_with("hurried", "soon")] {
        client.create(&p, "default").await.expect("pod");
    }
    unschedulable(
        &client,
        "lonely",
        "0/1 nodes are available: persistentvolumeclaim \"missing\" not found.",
    )
    .await;
    unschedulable(
        &client,
        "hurried",
        "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
    )
    .await;
    until_event(&client, "soon", "ProvisioningFailed: failed to provision volume with StorageClass \"now\": configuration error, no node was specified").await;

    // A claim of the default class: the pod is scheduled, the claim gets the node, and the
    // provisioner names what the hollow node lacks.
    client
        .create(&claim("data", None), "default")
        .await
        .expect("claim");
    client
        .create(&pod_with("user", "data"), "default")
        .await
        .expect("pod");
    until_event(
        &client,
        "data",
        "node \"hn-0\" has no skiff.io/local-path-dir annotation",
    )
    .await;
    let c = get(&client, "pvc", "default", "data").await.expect("claim");
    assert_eq!(c["spec"]["storageClassName"], "local-path");
    assert_eq!(
        c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "hn-0"
    );
    assert_eq!(phase(&c), "Pending");
    let p = get(&client, "pods", "default", "user").await.expect("pod");
    assert_eq!(p["spec"]["nodeName"], "hn-0");

    // Once the node publishes a directory, the volume is made there and bound.
    let mut node = get(&client, "nodes", "", "hn-0").await.expect("node");
    node["metadata"]["annotations"]["skiff.io/local-path-dir"] = json!("/srv/skiff/storage");
    client.update(&node, "").await.expect("node annotated");
    let (c, v) = bound(&client, "data").await;
    let uid = c["metadata"]["uid"].as_str().unwrap_or_default();
    assert_eq!(
        v["spec"]["hostPath"]["path"],
        format!("/srv/skiff/storage/pvc-{uid}_default_data")
    );

    // The claim's spec is immutable.
    let mut changed = c.clone();
    changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    let e = client
        .update(&changed, "default")
        .await
        .expect_err("refused");
    assert_eq!(
        e.message,
        "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after \
         creation except resources.requests and volumeAttributesClassName for bound claims"
    );

    // Deleting the claim waits for the pod using it (pvc-protection); then the volume goes.
    client
        .delete(&kind("pvc"), "default", "data")
        .await
        .expect("claim deleted");
    let c = get(&client, "pvc", "default", "data")
        .await
        .expect("claim held by its pod");
    assert!(!c["metadata"]["deletionTimestamp"].is_null());
    client
        .delete(&kind("pods"), "default", "user")
        .await
        .expect("pod deleted");
    wait::until("the claim and its volume to go", LIMIT, || async {
        let claim_gone = get(&client, "pvc", "default", "data").await.is_none();
        let volume_gone = get(&client, "pv", "", name(&v)).await.is_none();
        (claim_gone && volume_gone).then_some(())
    })
    .await;

    agent.kill().expect("agent killed");
    agent.wait().expect("agent reaped");
}
