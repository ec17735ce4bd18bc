//! Hollow nodes (`skiff-agent --hollow N`) against a three-replica cluster: they register Ready
//! with capacity, the control plane gives each a distinct pod CIDR, pods bound to them run with
//! an address from their node's CIDR, a deleted pod is confirmed gone, and stopping the process
//! makes their leases go silent. The scheduler against them: spreading, reasons for pods that
//! fit nowhere, cordons and drains, batches, and bindings admitted like any update.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind, Reason};
use tests::cluster::Cluster;
use tests::wait;

fn pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_run_pods_and_go_silent_when_stopped() {
    let cluster = Cluster::start(3).await;
    let log = std::fs::File::create(cluster.root().join("agent.log")).unwrap();
    let mut agent = Command::new(tests::bins::bin("skiff-agent"))
        .args([
            "--endpoints",
            &cluster.endpoints(),
            "--hollow",
            "5",
            "--name",
            "hn",
            "--heartbeat-every",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let client = Client::new(&cluster.client_urls()).unwrap();
    let nodes = Kind::named("nodes").unwrap();
    let pods = Kind::named("pods").unwrap();
    let leases = Kind::named("leases").unwrap();

    let registered = wait::until(
        "5 Ready nodes with pod CIDRs",
        Duration::from_secs(30),
        || {
            let client = &client;
            async move {
                let list = client
                    .list(&nodes, None, "skiff.io/hollow=true", "")
                    .await
                    .ok()?;
                let ready = list.items.iter().filter(|n| {
                    n["status"]["conditions"][0]["status"] == "True"
                        && n["spec"]["podCIDR"].is_string()
                        && n["status"]["allocatable"]["pods"] == "110"
                });
                (ready.count() == 5).then_some(list.items)
            }
        },
    )
    .await;
    let cidrs: BTreeSet<String> = registered
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cidrs.len(), 5, "distinct pod CIDRs: {cidrs:?}");

    for (i, n) in ["hn-0", "hn-3", "hn-3"].iter().enumerate() {
        client
            .create(&pod(&format!("p{i}"), n), "default")
            .await
            .unwrap();
    }
    let running = wait::until("the pods to run", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let list = client
                .list(&pods, Some("default"), "", "status.phase=Running")
                .await
                .ok()?;
            (list.items.len() == 3).then_some(list.items)
        }
    })
    .await;
    let mut ips = BTreeSet::new();
    for p in &running {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let cidr = registered
            .iter()
            .find(|n| n["metadata"]["name"] == node)
            .unwrap()["spec"]["podCIDR"]
            .as_str()
            .unwrap();
        let ip = p["status"]["podIP"].as_str().unwrap();
        let prefix = cidr.trim_end_matches("0/24");
        assert!(ip.starts_with(prefix), "{ip} in {cidr}");
        assert!(ips.insert(ip.to_string()), "address {ip} given twice");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    }

    // A bound pod being deleted is confirmed gone by its node.
    client.delete(&pods, "default", "p1").await.unwrap();
    wait::until(
        "the node to finish the deletion",
        Duration::from_secs(20),
        || {
            let client = &client;
            let pods = &pods;
            async move {
                match client.get(pods, "default", "p1").await {
                    Err(e) if e.reason == Reason::NotFound => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;

    // Leases renew while the process runs and stop when it is stopped.
    let renew_time = |l: Value| {
        l["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first = renew_time(
        client
            .get(&leases, "kube-node-lease", "hn-2")
            .await
            .unwrap(),
    );
    wait::until("a lease renewal", Duration::from_secs(10), || {
        let client = &client;
        let leases = &leases;
        let first = first.clone();
        async move {
            let now = renew_time(client.get(leases, "kube-node-lease", "hn-2").await.ok()?);
            (now != first).then_some(())
        }
    })
    .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let last = renew_time(
        client
            .get(&leases, "kube-node-lease", "hn-2")
            .await
            .unwrap(),
    );
    // An observation window of three heartbeats, not synchronisation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        renew_time(
            client
                .get(&leases, "kube-node-lease", "hn-2")
                .await
                .unwrap()
        ),
        last,
        "a stopped hollow node renewed its lease"
    );
}

fn start_agent(cluster: &Cluster, count: usize) -> std::process::Child {
    tests::hollow::start(cluster, count, "hn", &[])
}

fn pending_pod(name: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                  "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_places_pods_and_explains_those_that_fit_nowhere() {
    let cluster = Cluster::start(3).await;
    let mut agent = start_agent(&cluster, 3);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let nodes = Kind::named("nodes").unwrap();
    let pods = Kind::named("pods").unwrap();
    wait::until("3 nodes with pod CIDRs", Duration::from_secs(30), || {
        let client = &client;
        let nodes = &nodes;
        async move {
            let list = client
                .list(nodes, None, "skiff.io/hollow=true", "")
                .await
                .ok()?;
            (list
                .items
                .iter()
                .filter(|n| n["spec"]["podCIDR"].is_string())
                .count()
                == 3)
                .then_some(())
        }
    })
    .await;

    // Six pods of 2 CPUs on three nodes of 8: all placed, spread, and run.
    for i in 0..6 {
        client
            .create(&pending_pod(&format!("fit-{i}"), "2"), "default")
            .await
            .unwrap();
    }
    let running = wait::until("six running pods", Duration::from_secs(30), || {
        let client = &client;
        let pods = &pods;
        async move {
            let list = client
                .list(pods, Some("default"), "", "status.phase=Running")
                .await
                .ok()?;
            (list.items.len() == 6).then_some(list.items)
        }
    })
    .await;
    let mut per_node = std::collections::BTreeMap::new();
    for p in &running {
        *per_node
            .entry(p["spec"]["nodeName"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        let scheduled = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
        assert!(scheduled, "{p}");
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );

    // A pod that fits nowhere stays Pending with the reason, and an Event says so.
    client
        .create(&pending_pod("huge", "100"), "default")
        .await
        .unwrap();
    let message = "0/3 nodes are available: 3 Insufficient cpu.";
    wait::until(
        "the reason on the pending pod",
        Duration::from_secs(20),
        || {
            let client = &client;
            let pods = &pods;
            async move {
                let p = client.get(pods, "default", "huge").await.ok()?;
                let conds = p["status"]["conditions"].as_array()?.clone();
                conds
                    .iter()
                    .any(|c| {
                        c["type"] == "PodScheduled"
                            && c["status"] == "False"
                            && c["message"] == message
                    })
                    .then_some(())
            }
        },
    )
    .await;
    // The Event is written beside the condition, not before it: wait for it too.
    let endpoints = cluster.endpoints();
    let told = tests::wait::try_until(Duration::from_secs(20), || {
        let described = tests::cli::ok(&endpoints, &["describe", "pod", "huge"]);
        let found = described.contains("FailedScheduling") && described.contains(message);
        async move { found.then_some(()) }
    })
    .await;
    let described = tests::cli::ok(&endpoints, &["describe", "pod", "huge"]);
    assert!(told.is_some(), "{described}");
    let huge = client.get(&pods, "default", "huge").await.unwrap();
    assert!(huge["spec"]["nodeName"].is_null());

    // A cordoned node gets no new pods.
    let mut n0 = client.get(&nodes, "", "hn-0").await.unwrap();
    n0["spec"]["unschedulable"] = json!(true);
    client.update(&n0, "").await.unwrap();
    for i in 0..3 {
        client
            .create(&pending_pod(&format!("after-{i}"), "100m"), "default")
            .await
            .unwrap();
    }
    let placed = wait::until("the new pods to be placed", Duration::from_secs(30), || {
        let client = &client;
        let pods = &pods;
        async move {
            let list = client.list(pods, Some("default"), "", "").await.ok()?;
            let after: Vec<Value> = list
                .items
                .into_iter()
                .filter(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .starts_with("after-")
                })
                .filter(|p| p["spec"]["nodeName"].is_string())
                .collect();
            (after.len() == 3).then_some(after)
        }
    })
    .await;
    assert!(
        placed.iter().all(|p| p["spec"]["nodeName"] != "hn-0"),
        "{placed:?}"
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
}

const REPLICA_SET: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 5\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: c\n          image: nginx:1.27\n          resources: {requests: {cpu: 100m}}\n";

/// Running pods of the ReplicaSet `web` (not being deleted).
async fn running_web_pods(client: &Client) -> Vec<Value> {
    let pods = Kind::named("pods").unwrap();
    client
        .list(&pods, Some("default"), "app=web", "status.phase=Running")
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_keeps_its_pods_running() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let mut agent = start_agent(&cluster, 3);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let sets = Kind::named("replicasets").unwrap();
    let pods = Kind::named("pods").unwrap();
    tests::cli::ok_with_input(&eps, &["apply", "-f", "-"], REPLICA_SET);
    let wait_for = |n: usize| {
        let client = &client;
        let sets = &sets;
        async move {
            wait::until(
                &format!("{n} running pods and status"),
                Duration::from_secs(30),
                || async move {
                    let running = running_web_pods(client).await;
                    let rs = client.get(sets, "default", "web").await.ok()?;
                    let all = client
                        .list(
                            &Kind::named("pods").unwrap(),
                            Some("default"),
                            "app=web",
                            "",
                        )
                        .await
                        .ok()?;
                    (running.len() == n
                        && all.items.len() == n
                        && rs["status"]["readyReplicas"] == n)
                        .then_some(running)
                },
            )
            .await
        }
    };
    let first = wait_for(5).await;
    assert!(first
        .iter()
        .all(|p| p["metadata"]["ownerReferences"][0]["name"] == "web"));

    // Scale down: three go (the nodes confirm the deletions), two stay.
    tests::cli::ok(&eps, &["scale", "rs/web", "--replicas=2"]);
    wait_for(2).await;

    // A deleted pod is replaced.
    let victim = running_web_pods(&client).await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    client.delete(&pods, "default", &victim).await.unwrap();
    let replaced = wait_for(2).await;
    assert!(replaced
        .iter()
        .all(|p| p["metadata"]["name"] != victim.as_str()));

    // Deleting the ReplicaSet deletes its pods (garbage collection).
    tests::cli::ok(&eps, &["delete", "rs", "web"]);
    wait::until(
        "the pods to go with their ReplicaSet",
        Duration::from_secs(30),
        || {
            let client = &client;
            let pods = &pods;
            async move {
                let all = client
                    .list(pods, Some("default"), "app=web", "")
                    .await
                    .ok()?;
                all.items.is_empty().then_some(())
            }
        },
    )
    .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_drain_move_pods_to_other_nodes() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let mut agent = start_agent(&cluster, 2);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let nodes = Kind::named("nodes").unwrap();
    let pods = Kind::named("pods").unwrap();
    tests::cli::ok_with_input(
        &eps,
        &["apply", "-f", "-"],
        &REPLICA_SET.replace("replicas: 5", "replicas: 4"),
    );
    let running = wait::until("4 running pods", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let r = running_web_pods(client).await;
            (r.len() == 4).then_some(r)
        }
    })
    .await;
    assert!(
        running.iter().any(|p| p["spec"]["nodeName"] == "hn-0"),
        "spread over both nodes"
    );
    client
        .create(&pod("solo", "hn-0"), "default")
        .await
        .unwrap();

    assert_eq!(
        tests::cli::ok(&eps, &["cordon", "hn-0"]).trim(),
        "node/hn-0 cordoned"
    );
    let table = tests::cli::ok(&eps, &["get", "nodes"]);
    assert!(table.contains("Ready,SchedulingDisabled"), "{table}");

    // A pod no controller manages stops the drain unless forced.
    let run = tests::cli::skiff(&eps, &["drain", "hn-0"], None);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("cannot delete Pods that declare no controller")
            && run.stderr.contains("default/solo"),
        "{}",
        run.stderr
    );
    let out = tests::cli::ok(&eps, &["drain", "hn-0", "--force"]);
    assert!(out.trim_end().ends_with("node/hn-0 drained"), "{out}");
    let on_hn0 = client
        .list(&pods, None, "", "spec.nodeName=hn-0")
        .await
        .unwrap();
    assert!(on_hn0.items.is_empty(), "{:?}", on_hn0.items);
    wait::until(
        "the ReplicaSet's pods back to 4 on hn-1",
        Duration::from_secs(30),
        || {
            let client = &client;
            async move {
                let r = running_web_pods(client).await;
                (r.len() == 4 && r.iter().all(|p| p["spec"]["nodeName"] == "hn-1")).then_some(())
            }
        },
    )
    .await;

    assert_eq!(
        tests::cli::ok(&eps, &["uncordon", "hn-0"]).trim(),
        "node/hn-0 uncordoned"
    );
    let n0 = client.get(&nodes, "", "hn-0").await.unwrap();
    assert_eq!(n0["spec"]["unschedulable"], false);
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_pods_pending_at_once_are_all_bound() {
    // More pods than one store transaction may carry (128 operations): the scheduler binds
    // them in several batches of one pass.
    let cluster = Cluster::start(3).await;
    let mut agent = start_agent(&cluster, 3);
    let manifest = REPLICA_SET
        .replace("replicas: 5", "replicas: 300")
        .replace("cpu: 100m", "cpu: 10m");
    tests::cli::ok_with_input(&cluster.endpoints(), &["apply", "-f", "-"], &manifest);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let pods = Kind::named("pods").unwrap();
    wait::until("300 bound pods", Duration::from_secs(60), || async {
        let unbound = client
            .list(&pods, Some("default"), "app=web", "spec.nodeName=")
            .await
            .ok()?;
        let all = client
            .list(&pods, Some("default"), "app=web", "")
            .await
            .ok()?;
        (all.items.len() == 300 && unbound.items.is_empty()).then_some(())
    })
    .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
}

/// The FailedScheduling Events about pod `name` in `default`.
async fn failed_scheduling(client: &Client, name: &str) -> Option<Vec<String>> {
    let events = Kind::named("events").unwrap();
    let list = client.list(&events, Some("default"), "", "").await.ok()?;
    Some(
        list.items
            .iter()
            .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == "FailedScheduling")
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect(),
    )
}

async fn node_of(client: &Client, name: &str) -> Option<String> {
    let pods = Kind::named("pods").unwrap();
    let p = client.get(&pods, "default", name).await.ok()?;
    p["spec"]["nodeName"].as_str().map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_is_admitted_like_any_update_of_the_pod() {
    // A binding is an update of the pod, so admission checks it: a pod stored before
    // admission checked its CPU request (written here straight into the store) is not bound,
    // an Event says why (once), pods beside it are bound, and once the pod is corrected it is.
    let cluster = Cluster::start(3).await;
    let mut agent = start_agent(&cluster, 1);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let pods = Kind::named("pods").unwrap();
    let nodes = Kind::named("nodes").unwrap();
    wait::until(
        "a node with a pod CIDR",
        Duration::from_secs(30),
        || async {
            let n = client.get(&nodes, "", "hn-0").await.ok()?;
            n["spec"]["podCIDR"].is_string().then_some(())
        },
    )
    .await;
    let legacy = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "legacy", "namespace": "default", "uid": "legacy-uid",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                                 "resources": {"requests": {"cpu": "abc"}}}]}
    });
    tests::etcdctl::ok(
        &cluster.endpoints(),
        &["put", "/registry/pods/default/legacy", &legacy.to_string()],
    );
    client
        .create(&pending_pod("fresh", "100m"), "default")
        .await
        .unwrap();
    let refusal = "Binding rejected: Pod \"legacy\" is invalid: spec.containers[0].resources.requests.cpu: Invalid value: \"abc\": must match the regex";
    // Either the legacy pod is bound (its binding skipped admission) or its refusal is told.
    let bound_anyway = wait::until(
        "the legacy pod bound, or its binding refused",
        Duration::from_secs(30),
        || async {
            if let Some(node) = node_of(&client, "legacy").await {
                return Some(Some(node));
            }
            let told = failed_scheduling(&client, "legacy").await?;
            let fresh = node_of(&client, "fresh").await;
            (fresh.is_some() && told.iter().any(|m| m.starts_with(refusal))).then_some(None)
        },
    )
    .await;
    assert_eq!(bound_anyway, None, "an invalid pod was bound");

    // A later pass binds a new pod and leaves the unchanged legacy pod alone: told once.
    client
        .create(&pending_pod("later", "100m"), "default")
        .await
        .unwrap();
    wait::until("the later pod bound", Duration::from_secs(30), || async {
        node_of(&client, "later").await
    })
    .await;
    assert_eq!(node_of(&client, "legacy").await, None);
    let told = failed_scheduling(&client, "legacy").await.unwrap();
    assert_eq!(told.len(), 1, "{told:?}");

    // Corrected (an update, admitted), it is bound.
    let mut fixed = client.get(&pods, "default", "legacy").await.unwrap();
    fixed["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("100m");
    client.update(&fixed, "default").await.unwrap();
    wait::until(
        "the corrected pod bound",
        Duration::from_secs(30),
        || async { node_of(&client, "legacy").await },
    )
    .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
}
