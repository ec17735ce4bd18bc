//! Deployments on hollow nodes against a three-replica cluster: a rolling update keeps within
//! maxSurge and maxUnavailable in every state the store went through, a rollback reuses the old
//! ReplicaSet under a new revision, pause holds a rollout, Recreate never runs old and new pods
//! together, and a rollout completes when the replica running the controllers is killed in the
//! middle of it, with no ReplicaSet over its count and no pod bound twice.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::cluster::Cluster;
use tests::pod_tracker::{is_active, is_ready, PodTracker, Pods};
use tests::wait;

const REVISION: &str = "deployment.kubernetes.io/revision";

fn deployment(replicas: i64, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image,
                          "resources": {"requests": {"cpu": "100m"}}}]}
            }
        }
    })
}

fn rolling(surge: i64, unavailable: i64) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

/// Waits until Deployment `web` reports `replicas` updated and available pods of `image`, and
/// exactly those pods are active.
async fn rolled_out(client: &Client, replicas: usize, want_image: &str) -> Value {
    let deployments = Kind::named("deployments").unwrap();
    let pods = Kind::named("pods").unwrap();
    wait::until(
        &format!("web to run {replicas} pods of {want_image}"),
        Duration::from_secs(60),
        || async move {
            let d = client.get(&deployments, "default", "web").await.ok()?;
            let s = &d["status"];
            let list = client
                .list(&pods, Some("default"), "app=web", "")
                .await
                .ok()?;
            let active: Vec<&Value> = list.items.iter().filter(|p| is_active(p)).collect();
            let done = s["observedGeneration"] == d["metadata"]["generation"]
                && s["updatedReplicas"] == replicas
                && s["availableReplicas"] == replicas
                && s["replicas"] == replicas
                && active.len() == replicas
                && active.iter().all(|p| image(p) == want_image && is_ready(p));
            done.then_some(d)
        },
    )
    .await
}

async fn replica_sets(client: &Client) -> Vec<Value> {
    let sets = Kind::named("replicasets").unwrap();
    client
        .list(&sets, Some("default"), "app=web", "")
        .await
        .unwrap()
        .items
}

fn revision(obj: &Value) -> &str {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .unwrap_or_default()
}

/// A check that active pods stay within `max_active` and ready ones at least `min_ready`.
fn within(max_active: usize, min_ready: usize) -> impl Fn(&Pods) -> Option<String> {
    move |pods: &Pods| {
        let active = pods.values().filter(|p| is_active(p)).count();
        let ready = pods.values().filter(|p| is_ready(p)).count();
        (active > max_active || ready < min_ready).then(|| {
            format!(
                "{active} active pods (at most {max_active}), {ready} ready (at least {min_ready})"
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_keep_their_limits_roll_back_pause_and_scale() {
    let cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 3, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let eps = cluster.endpoints();

    client
        .apply(&deployment(4, "web:1", rolling(1, 1)), "default")
        .await
        .unwrap();
    let d = rolled_out(&client, 4, "web:1").await;
    assert_eq!(revision(&d), "1");
    let first_sets = replica_sets(&client).await;
    assert_eq!(first_sets.len(), 1);
    let first = first_sets[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let hash = first_sets[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first, format!("web-{hash}"));

    // The update: never more than 5 pods, never fewer than 3 ready.
    let tracker =
        PodTracker::start(&cluster.client_urls(), "default", "app=web", within(5, 3)).await;
    client
        .apply(&deployment(4, "web:2", rolling(1, 1)), "default")
        .await
        .unwrap();
    let d = rolled_out(&client, 4, "web:2").await;
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    assert!(found.states >= 8, "only {} states seen", found.states);
    assert_eq!(revision(&d), "2");
    let sets = replica_sets(&client).await;
    assert_eq!(sets.len(), 2);
    for rs in &sets {
        let old = rs["metadata"]["name"] == first.as_str();
        assert_eq!(rs["spec"]["replicas"], if old { 0 } else { 4 });
        assert_eq!(revision(rs), if old { "1" } else { "2" });
    }
    let cond = |d: &Value, t: &str| {
        d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(cond(&d, "Available")["status"], "True");
    assert_eq!(cond(&d, "Progressing")["reason"], "NewReplicaSetAvailable");

    // Back to the first template: its ReplicaSet comes back as revision 3.
    client
        .apply(&deployment(4, "web:1", rolling(1, 1)), "default")
        .await
        .unwrap();
    let d = rolled_out(&client, 4, "web:1").await;
    assert_eq!(revision(&d), "3");
    let sets = replica_sets(&client).await;
    assert_eq!(sets.len(), 2);
    let back = sets
        .iter()
        .find(|rs| rs["metadata"]["name"] == first.as_str())
        .unwrap();
    assert_eq!(revision(back), "3");
    assert_eq!(back["spec"]["replicas"], 4);

    // Paused: a new template makes no new ReplicaSet, but scaling still works.
    let mut paused = deployment(4, "web:3", rolling(1, 1));
    paused["spec"]["paused"] = json!(true);
    client.apply(&paused, "default").await.unwrap();
    tests::cli::ok(&eps, &["scale", "deployment/web", "--replicas=6"]);
    wait::until(
        "the paused deployment to scale",
        Duration::from_secs(30),
        || {
            let client = &client;
            async move {
                let d = client
                    .get(&Kind::named("deployments").unwrap(), "default", "web")
                    .await
                    .ok()?;
                (d["status"]["availableReplicas"] == 6
                    && d["status"]["observedGeneration"] == d["metadata"]["generation"])
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(replica_sets(&client).await.len(), 2);
    let d = client
        .get(&Kind::named("deployments").unwrap(), "default", "web")
        .await
        .unwrap();
    assert_eq!(cond(&d, "Progressing")["reason"], "DeploymentPaused");
    // Resumed: it rolls out, and scales down.
    paused["spec"]["paused"] = json!(false);
    paused["spec"]["replicas"] = json!(2);
    client.apply(&paused, "default").await.unwrap();
    rolled_out(&client, 2, "web:3").await;
    assert_eq!(replica_sets(&client).await.len(), 3);

    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_runs_old_and_new_pods_together() {
    let cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 2, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let recreate = json!({"type": "Recreate"});
    client
        .apply(&deployment(3, "web:1", recreate.clone()), "default")
        .await
        .unwrap();
    rolled_out(&client, 3, "web:1").await;
    let tracker = PodTracker::start(
        &cluster.client_urls(),
        "default",
        "app=web",
        |pods: &Pods| {
            let old = pods.values().filter(|p| image(p) == "web:1").count();
            let new = pods.values().filter(|p| image(p) == "web:2").count();
            (old > 0 && new > 0).then(|| format!("{old} old pods beside {new} new ones"))
        },
    )
    .await;
    client
        .apply(&deployment(3, "web:2", recreate), "default")
        .await
        .unwrap();
    rolled_out(&client, 3, "web:2").await;
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    assert!(found.states >= 6, "only {} states seen", found.states);
    agent.kill().unwrap();
    agent.wait().unwrap();
}

async fn controller_holder(client: &Client) -> Option<String> {
    let st = client.cluster_status().await.ok()?;
    (!st.controller_leader.is_empty()).then_some(st.controller_leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_completes_when_the_controller_replica_is_killed() {
    let mut cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 3, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    // minReadySeconds slows each step to about a second, so the kill lands mid-rollout.
    let web = |image: &str| {
        let mut d = deployment(6, image, rolling(2, 1));
        d["spec"]["minReadySeconds"] = json!(1);
        d
    };
    client.apply(&web("web:1"), "default").await.unwrap();
    rolled_out(&client, 6, "web:1").await;

    let tracker =
        PodTracker::start(&cluster.client_urls(), "default", "app=web", within(8, 5)).await;
    client.apply(&web("web:2"), "default").await.unwrap();
    // Mid-rollout: some new pods ready, some old ones still there.
    let pods = Kind::named("pods").unwrap();
    wait::until(
        "the rollout to be half-way",
        Duration::from_secs(60),
        || {
            let client = &client;
            let pods = &pods;
            async move {
                let list = client
                    .list(pods, Some("default"), "app=web", "")
                    .await
                    .ok()?;
                let ready_new = list
                    .items
                    .iter()
                    .filter(|p| is_ready(p) && image(p) == "web:2")
                    .count();
                let old = list
                    .items
                    .iter()
                    .filter(|p| is_active(p) && image(p) == "web:1")
                    .count();
                (ready_new >= 2 && old >= 2).then_some(())
            }
        },
    )
    .await;
    let holder = controller_holder(&client)
        .await
        .expect("a controller holder");
    let index = cluster
        .members
        .iter()
        .position(|m| m.name == holder)
        .expect("the holder is a member");
    cluster.kill(index);
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != index)
        .map(|i| cluster.members[i].client_url())
        .collect();
    let client = Client::new(&survivors).unwrap();
    let d = rolled_out(&client, 6, "web:2").await;
    let new_holder = controller_holder(&client).await.expect("a new holder");
    assert_ne!(new_holder, holder);
    assert_eq!(revision(&d), "2");

    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    // Every ReplicaSet ends with exactly the pods it is meant to have.
    let all = client
        .list(&pods, Some("default"), "app=web", "")
        .await
        .unwrap()
        .items;
    for rs in replica_sets(&client).await {
        let uid = rs["metadata"]["uid"].as_str().unwrap();
        let mine = all
            .iter()
            .filter(|p| is_active(p) && p["metadata"]["ownerReferences"][0]["uid"] == uid)
            .count();
        assert_eq!(
            json!(mine),
            rs["spec"]["replicas"],
            "ReplicaSet {} pods",
            rs["metadata"]["name"]
        );
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
}
