//! Pod volumes on the real node agent, end to end on a test host of its own (a network
//! namespace with a control-plane replica, a loopback registry holding the example busybox
//! image, and a `skiff-agent`): emptyDir shared by two containers and on a tmpfs for medium
//! Memory, hostPath made or refused by its type, subPath, a claim bound to a hostPath
//! PersistentVolume, configMaps and secrets projected with
//! items and modes and kept current in place, the downward API and projected volumes, a missing
//! configMap holding the pod in ContainerCreating with a FailedMount Event until it exists —
//! and nothing left mounted or on disk once the pods are gone.
//!
//! Containers report what they see through their exit code (restartPolicy Never: Succeeded or
//! Failed, their output in the CRI log printed on failure) or over HTTP from the pod's address.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

/// The CRI logs of the pod's containers on the node (for failure messages).
fn logs_of(n: &Node, name: &str) -> String {
    let dir = n.agent.dir().join("logs");
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for pod_dir in entries.filter_map(Result::ok) {
        let pod_name = pod_dir.file_name().to_string_lossy().into_owned();
        if !pod_name.starts_with(&format!("default_{name}_")) {
            continue;
        }
        for c in std::fs::read_dir(pod_dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for log in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                out.push_str(&format!("--- {}\n{text}", log.path().display()));
            }
        }
    }
    out
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn waiting_reason(p: &Value) -> &str {
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
}

/// Waits for a restartPolicy Never pod to succeed, failing at once if it fails.
async fn succeeds(n: &Node, name: &str) {
    let p = n
        .until_pod(name, "finished", |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await;
    assert_eq!(
        phase(&p),
        "Succeeded",
        "pod {name}: {}\ncontainer logs:\n{}",
        p["status"],
        logs_of(n, name)
    );
}

/// Waits until the pod's web server answers `want`.
async fn serves(n: &Node, name: &str, want: &str) {
    let p = n
        .until_pod(name, "Running", |p| phase(p) == "Running")
        .await;
    let ip = p["status"]["podIP"].as_str().expect("pod IP").to_string();
    let addr = format!("{ip}:{EXAMPLE_PORT}");
    let got = wait::try_until(LIMIT, || async {
        tests::http::get(&addr).await.filter(|b| b.trim() == want)
    })
    .await;
    assert!(
        got.is_some(),
        "pod {name} never served {want:?} (last: {:?})\ncontainer logs:\n{}",
        tests::http::get(&addr).await,
        logs_of(n, name)
    );
}

/// Waits for an Event about `pod` that reads `want` (or starts so, when `want` ends in `…`).
async fn until_event(n: &Node, pod: &str, want: &str) {
    let matches = |e: &String| match want.strip_suffix('…') {
        Some(prefix) => e.starts_with(prefix),
        None => e == want,
    };
    let found = wait::try_until(LIMIT, || async {
        events_of(&n.client, pod)
            .await
            .iter()
            .any(matches)
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no event {want:?} for pod {pod}; events: {:?}",
        events_of(&n.client, pod).await
    );
}

/// Mount points at or below `dir` (as the host sees them).
fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Deletes every pod and checks the agent left no pod directory and nothing mounted.
async fn delete_all_and_check_nothing_is_left(n: &Node, names: &[&str]) {
    for name in names {
        n.client
            .delete(&pods(), "default", name)
            .await
            .expect("pod deleted");
    }
    for name in names {
        let gone = wait::try_until(LIMIT, || async {
            get_pod(&n.client, name).await.is_none().then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "pod {name} not deleted\nagent log:\n{}",
            n.agent.log()
        );
    }
    let pods_dir = n.agent.dir().join("pods");
    let left: Vec<PathBuf> = std::fs::read_dir(&pods_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pod directories left: {left:?}");
    let mounted = mounts_below(&n.agent.dir());
    assert!(mounted.is_empty(), "left mounted: {mounted:?}");
}

fn pod(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "demo"}},
        "spec": spec
    })
}

/// A restartPolicy Never pod whose one container runs `script` with `mounts`, over `volumes`.
fn checker(name: &str, script: &str, mounts: Value, volumes: Value) -> Value {
    pod(
        name,
        json!({
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox",
                            "command": ["sh", "-c", script],
                            "resources": {"limits": {"memory": "64Mi"}},
                            "volumeMounts": mounts}],
            "volumes": volumes
        }),
    )
}

/// A hostPath PersistentVolume at `path`, and a claim naming it with no class (static binding,
/// as Kubernetes' docs have it), which the binder binds.
async fn bound_claim(client: &Client, path: &Path) {
    client
        .create(
            &json!({"apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": "local-pv"},
                    "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                             "hostPath": {"path": path.to_string_lossy(),
                                          "type": "DirectoryOrCreate"}}}),
            "",
        )
        .await
        .expect("persistent volume");
    client
        .create(
            &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "claim", "namespace": "default"},
                    "spec": {"volumeName": "local-pv", "accessModes": ["ReadWriteOnce"],
                             "storageClassName": "",
                             "resources": {"requests": {"storage": "1Gi"}}}}),
            "default",
        )
        .await
        .expect("claim");
    let kind = Kind::of("v1", "PersistentVolumeClaim").expect("PersistentVolumeClaim");
    let bound = tests::wait::try_until(std::time::Duration::from_secs(30), || async {
        let c = client.get(&kind, "default", "claim").await.ok()?;
        (c["status"]["phase"] == "Bound").then_some(())
    })
    .await;
    assert!(bound.is_some(), "the claim was never bound to local-pv");
}

#[test]
fn empty_dirs_host_paths_sub_paths_and_claims() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let host_dir = tempfile::tempdir().expect("tempdir");
        let made = host_dir.path().join("made/here");
        let a_file = host_dir.path().join("a-file");
        std::fs::write(&a_file, "not a directory").expect("file");

        // Two containers share an emptyDir: one writes the page, the other serves it.
        let shared = pod(
            "shared",
            json!({
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "web", "image": "busybox",
                     "command": ["sh", "-c", "exec httpd -f -p 8080 -h /data"],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "writer", "image": "busybox",
                     "command": ["sh", "-c", "echo hello-from-writer > /data/index.html; exec sleep 3600"],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }),
        );
        // medium Memory: a tmpfs of the sizeLimit.
        let memory = checker(
            "memory",
            "grep ' /cache ' /proc/mounts; grep -q ' /cache tmpfs .*size=8192k' /proc/mounts",
            json!([{"name": "cache", "mountPath": "/cache"}]),
            json!([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]),
        );
        // DirectoryOrCreate makes the directory on the host; the pod writes into it.
        let host = checker(
            "host",
            "echo from-pod > /host/note",
            json!([{"name": "h", "mountPath": "/host"}]),
            json!([{"name": "h", "hostPath": {"path": made.to_string_lossy(),
                                              "type": "DirectoryOrCreate"}}]),
        );
        // A file where a directory is wanted: the pod never starts.
        let bad_host = checker(
            "bad-host",
            "true",
            json!([{"name": "bad", "mountPath": "/host"}]),
            json!([{"name": "bad", "hostPath": {"path": a_file.to_string_lossy(),
                                                "type": "Directory"}}]),
        );
        // subPath: an init container writes through a subPath, the app reads the whole volume.
        let mut sub = checker(
            "sub",
            "cat /all/a/b/f; test \"$(cat /all/a/b/f)\" = deep",
            json!([{"name": "data", "mountPath": "/all"}]),
            json!([{"name": "data", "emptyDir": {}}]),
        );
        sub["spec"]["initContainers"] = json!([{
            "name": "init", "image": "busybox",
            "command": ["sh", "-c", "echo deep > /sub/f"],
            "volumeMounts": [{"name": "data", "mountPath": "/sub", "subPath": "a/b"}]
        }]);
        // A subPath out of the volume is refused.
        let backstep = checker(
            "backstep",
            "true",
            json!([{"name": "data", "mountPath": "/x", "subPath": "../escape"}]),
            json!([{"name": "data", "emptyDir": {}}]),
        );
        // A claim bound to a hostPath PersistentVolume; another not bound at all.
        let pv_dir = host_dir.path().join("pv");
        bound_claim(&n.client, &pv_dir).await;
        let claimer = checker(
            "claimer",
            "echo on-the-volume > /pv/file",
            json!([{"name": "c", "mountPath": "/pv"}]),
            json!([{"name": "c", "persistentVolumeClaim": {"claimName": "claim"}}]),
        );
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": "pending-claim", "namespace": "default"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                                 "resources": {"requests": {"storage": "1Gi"}}}}),
                "default",
            )
            .await
            .expect("claim");
        // Bound to the node by hand, past the scheduler (which would hold it Pending for the
        // claim): the agent holds it in ContainerCreating.
        let mut unbound = checker(
            "unbound",
            "true",
            json!([{"name": "c", "mountPath": "/pv"}]),
            json!([{"name": "c", "persistentVolumeClaim": {"claimName": "pending-claim"}}]),
        );
        unbound["spec"]["nodeName"] = json!("node-a");
        for p in [
            &shared, &memory, &host, &bad_host, &sub, &backstep, &claimer, &unbound,
        ] {
            n.client.create(p, "default").await.expect("pod created");
        }

        serves(&n, "shared", "hello-from-writer").await;
        succeeds(&n, "memory").await;
        succeeds(&n, "host").await;
        assert_eq!(
            std::fs::read_to_string(made.join("note")).expect("written by the pod"),
            "from-pod\n"
        );
        let mode = std::fs::metadata(&made).expect("made").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        succeeds(&n, "sub").await;
        succeeds(&n, "claimer").await;
        assert_eq!(
            std::fs::read_to_string(pv_dir.join("file")).expect("written through the claim"),
            "on-the-volume\n"
        );
        until_event(
            &n,
            "unbound",
            "FailedMount: MountVolume.SetUp failed for volume \"c\" : PVC default/pending-claim \
             has non-bound phase…",
        )
        .await;

        until_event(
            &n,
            "bad-host",
            &format!(
                "FailedMount: MountVolume.SetUp failed for volume \"bad\" : hostPath type check \
                 failed: {} is not a directory",
                a_file.display()
            ),
        )
        .await;
        let p = n
            .until_pod("bad-host", "ContainerCreating", |p| {
                waiting_reason(p) == "ContainerCreating"
            })
            .await;
        assert_eq!(phase(&p), "Pending");

        let p = n
            .until_pod("backstep", "refused for its subPath", |p| {
                waiting_reason(p) == "CreateContainerConfigError"
            })
            .await;
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
            "unable to provision SubPath `../escape`: must not contain '..'"
        );

        delete_all_and_check_nothing_is_left(
            &n,
            &[
                "shared", "memory", "host", "bad-host", "sub", "backstep", "claimer", "unbound",
            ],
        )
        .await;
        assert!(made.join("note").exists(), "a hostPath outlives its pod");
    });
}

#[test]
fn config_maps_secrets_and_the_downward_api_are_projected_and_kept_current() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let config_map = |data: Value| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "site", "namespace": "default"},
                   "data": data})
        };
        n.client
            .create(
                &config_map(json!({"index.html": "v1", "other": "not chosen"})),
                "default",
            )
            .await
            .expect("configmap");
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "creds", "namespace": "default"},
                        // "s3cret"
                        "data": {"password": "czNjcmV0"}}),
                "default",
            )
            .await
            .expect("secret");

        // A web server over a configMap volume: one item, defaultMode 0440.
        let site = pod(
            "site",
            json!({
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": "busybox",
                                "command": ["sh", "-c", "exec httpd -f -p 8080 -h /www"],
                                "volumeMounts": [{"name": "conf", "mountPath": "/www"}]}],
                "volumes": [{"name": "conf", "configMap": {
                    "name": "site", "defaultMode": 0o440,
                    "items": [{"key": "index.html", "path": "index.html"}]}}]
            }),
        );
        // A secret with an item mode: its value, its mode, on a tmpfs.
        let secret = checker(
            "secret-reader",
            "ls -la /secret/; stat -L -c %a /secret/password; \
             test \"$(cat /secret/password)\" = s3cret && \
             test \"$(stat -L -c %a /secret/password)\" = 400 && \
             grep -q ' /secret tmpfs ' /proc/mounts",
            json!([{"name": "s", "mountPath": "/secret"}]),
            json!([{"name": "s", "secret": {"secretName": "creds",
                    "items": [{"key": "password", "path": "password", "mode": 0o400}]}}]),
        );
        // The downward API and a projected volume of all three.
        let downward = checker(
            "downward",
            "head /info/* /all/*; \
             test \"$(cat /info/name)\" = downward && grep -qx 'app=\"demo\"' /info/labels && \
             test \"$(cat /info/mem)\" = 64 && test \"$(cat /all/site.html)\" = v1 && \
             test \"$(cat /all/password)\" = s3cret && test \"$(cat /all/ns)\" = default && \
             grep -q ' /all tmpfs ' /proc/mounts",
            json!([{"name": "info", "mountPath": "/info"},
                   {"name": "all", "mountPath": "/all", "readOnly": true}]),
            json!([
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "main",
                        "resource": "limits.memory", "divisor": "1Mi"}}]}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "site",
                                   "items": [{"key": "index.html", "path": "site.html"}]}},
                    {"secret": {"name": "creds"}},
                    {"downwardAPI": {"items": [
                        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
            ]),
        );
        // A configMap that does not exist yet.
        let late = pod(
            "late",
            json!({
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox",
                                "command": ["sh", "-c", "cat /conf/greeting; exec sleep 3600"],
                                "volumeMounts": [{"name": "conf", "mountPath": "/conf"}]}],
                "volumes": [{"name": "conf", "configMap": {"name": "later"}}]
            }),
        );
        for p in [&site, &secret, &downward, &late] {
            n.client.create(p, "default").await.expect("pod created");
        }

        serves(&n, "site", "v1").await;
        // The kubelet's layout on the node: ..data → a timestamped directory, keys through it.
        let site_pod = get_pod(&n.client, "site").await.expect("site");
        let uid = site_pod["metadata"]["uid"].as_str().expect("uid");
        let vol = n
            .agent
            .dir()
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~configmap/conf");
        let data = std::fs::read_link(vol.join("..data")).expect("..data is a symlink");
        let data = data.to_string_lossy().into_owned();
        assert!(
            data.starts_with("..20") && data.len() == "..2026_12_04_10_00_00.123456789".len(),
            "{data}"
        );
        assert_eq!(
            std::fs::read_link(vol.join("index.html")).expect("key link"),
            PathBuf::from("..data/index.html")
        );
        let mode = std::fs::metadata(vol.join("index.html"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);
        assert!(!vol.join("other").exists(), "only the item chosen");

        // The configMap changes: the file changes in place, the container still running.
        let mut cm = n
            .client
            .get(
                &Kind::of("v1", "ConfigMap").expect("ConfigMap"),
                "default",
                "site",
            )
            .await
            .expect("configmap");
        cm["data"]["index.html"] = json!("v2");
        n.client.update(&cm, "default").await.expect("updated");
        serves(&n, "site", "v2").await;
        let again = get_pod(&n.client, "site").await.expect("site");
        assert_eq!(again["status"]["containerStatuses"][0]["restartCount"], 0);
        let new_data = std::fs::read_link(vol.join("..data")).expect("..data");
        assert_ne!(
            new_data.to_string_lossy(),
            data,
            "a new timestamped directory"
        );
        assert!(!vol.join(&data).exists(), "the old one removed");

        succeeds(&n, "secret-reader").await;
        succeeds(&n, "downward").await;

        // Missing configMap: FailedMount and ContainerCreating until it exists.
        until_event(
            &n,
            "late",
            "FailedMount: MountVolume.SetUp failed for volume \"conf\" : configmap \"later\" not found",
        )
        .await;
        let p = n
            .until_pod("late", "ContainerCreating", |p| {
                waiting_reason(p) == "ContainerCreating"
            })
            .await;
        assert_eq!(phase(&p), "Pending");
        n.client
            .create(
                &json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "later", "namespace": "default"},
                        "data": {"greeting": "hello"}}),
                "default",
            )
            .await
            .expect("configmap");
        n.until_pod("late", "Running once its configMap exists", |p| {
            phase(p) == "Running"
        })
        .await;

        delete_all_and_check_nothing_is_left(&n, &["site", "secret-reader", "downward", "late"])
            .await;
    });
}
