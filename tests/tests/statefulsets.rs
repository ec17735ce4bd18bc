//! StatefulSets on hollow nodes against a three-replica cluster: pods start strictly in
//! ordinal order, each after the one before it is ready, with their claims created first and
//! their identity (hostname, subdomain, claim volume) in place; a template change replaces the
//! pods highest first, one ready pod at a time, until the update revision is current; a scale
//! down removes the highest ordinal first and keeps the claims (Retain); a failed pod comes back
//! under its name; and a scale up reuses the claims kept. With Parallel pods start together,
//! and with the Delete retention policies claims go on scale down and with the set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::cluster::Cluster;
use tests::pod_tracker::{is_active, is_ready, PodTracker, Pods};
use tests::wait;

const REVISION_LABEL: &str = "controller-revision-hash";

fn web(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image,
                          "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                          "resources": {"requests": {"cpu": "100m"}}}]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    })
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

fn by_name(pods: &Pods) -> BTreeMap<&str, &Value> {
    pods.values().map(|p| (name(p), p)).collect()
}

/// Waits until StatefulSet `web` runs exactly `web-0..replicas` of `want_image`, all ready and
/// on the update revision, and says so in its status; returns the set.
async fn settled(client: &Client, replicas: usize, want_image: &str) -> Value {
    let sets = Kind::named("statefulsets").unwrap();
    let pods = Kind::named("pods").unwrap();
    wait::until(
        &format!("web to run {replicas} pods of {want_image}"),
        Duration::from_secs(60),
        || async move {
            let s = client.get(&sets, "default", "web").await.ok()?;
            let st = &s["status"];
            let list = client
                .list(&pods, Some("default"), "app=web", "")
                .await
                .ok()?;
            let active: Vec<&Value> = list.items.iter().filter(|p| is_active(p)).collect();
            let names: BTreeSet<&str> = active.iter().map(|p| name(p)).collect();
            let wanted: BTreeSet<String> = (0..replicas).map(|i| format!("web-{i}")).collect();
            let done = st["observedGeneration"] == s["metadata"]["generation"]
                && st["replicas"] == replicas
                && st["readyReplicas"] == replicas
                && st["availableReplicas"] == replicas
                && st["updatedReplicas"] == replicas
                && st["currentReplicas"] == replicas
                && st["currentRevision"] == st["updateRevision"]
                && names == wanted.iter().map(String::as_str).collect()
                && active.iter().all(|p| {
                    is_ready(p)
                        && image(p) == want_image
                        && p["metadata"]["labels"][REVISION_LABEL] == st["updateRevision"]
                });
            done.then_some(s)
        },
    )
    .await
}

async fn claims(client: &Client) -> BTreeMap<String, Value> {
    let kind = Kind::named("persistentvolumeclaims").unwrap();
    client
        .list(&kind, Some("default"), "", "")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| (name(&c).to_string(), c))
        .collect()
}

async fn pod(client: &Client, pod_name: &str) -> Value {
    let pods = Kind::named("pods").unwrap();
    client.get(&pods, "default", pod_name).await.unwrap()
}

/// A check that records, in order, the name of each pod (by uid) as it starts terminating or
/// disappears, and complains when fewer than `min_ready` pods are ready.
fn replacements(
    order: Arc<Mutex<Vec<String>>>,
    min_ready: usize,
) -> impl Fn(&Pods) -> Option<String> {
    // uid -> name, for every pod seen; and the uids already recorded.
    let seen = Mutex::new((BTreeMap::<String, String>::new(), BTreeSet::<String>::new()));
    move |pods: &Pods| {
        let mut seen = seen.lock().unwrap();
        let (names, recorded) = &mut *seen;
        let mut order = order.lock().unwrap();
        for (uid, p) in pods {
            names.insert(uid.clone(), name(p).to_string());
            if !p["metadata"]["deletionTimestamp"].is_null() && recorded.insert(uid.clone()) {
                order.push(name(p).to_string());
            }
        }
        for (uid, n) in names.iter() {
            if !pods.contains_key(uid) && recorded.insert(uid.clone()) {
                order.push(n.clone());
            }
        }
        let ready = pods.values().filter(|p| is_ready(p)).count();
        (ready < min_ready).then(|| format!("{ready} ready pods (at least {min_ready})"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_pods_with_claims_roll_highest_first_and_scale_down_keeping_claims() {
    let cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 3, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let eps = cluster.endpoints();

    // Creation: web-i never exists before web-(i-1) is ready.
    let in_order = |pods: &Pods| {
        let pods = by_name(pods);
        (1..3).find_map(|i| {
            let (this, before) = (format!("web-{i}"), format!("web-{}", i - 1));
            let waited = pods.get(before.as_str()).is_some_and(|p| is_ready(p));
            (pods.contains_key(this.as_str()) && !waited)
                .then(|| format!("{this} exists while {before} is not ready"))
        })
    };
    let tracker = PodTracker::start(&cluster.client_urls(), "default", "app=web", in_order).await;
    client.apply(&web(3, "web:1"), "default").await.unwrap();
    let s = settled(&client, 3, "web:1").await;
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    assert!(found.states >= 6, "only {} states seen", found.states);
    let first_revision = s["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_eq!(s["status"]["collisionCount"], 0);
    assert!(first_revision.starts_with("web-"), "{first_revision}");

    // Identity and storage.
    let kept = claims(&client).await;
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        ["data-web-0", "data-web-1", "data-web-2"]
    );
    for (i, (claim_name, claim)) in kept.iter().enumerate() {
        assert_eq!(claim["metadata"]["labels"], json!({"app": "web"}));
        assert!(claim["metadata"]["ownerReferences"].is_null(), "{claim}");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        let p = pod(&client, &format!("web-{i}")).await;
        assert_eq!(p["spec"]["hostname"], name(&p));
        assert_eq!(p["spec"]["subdomain"], "web");
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name(&p));
        assert_eq!(labels["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(labels[REVISION_LABEL], first_revision.as_str());
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}])
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    }
    let events = Kind::named("events").unwrap();
    let messages: Vec<String> = client
        .list(&events, Some("default"), "", "")
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e["source"]["component"] == "statefulset-controller")
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "SuccessfulCreate create Claim data-web-0 Pod web-0 in StatefulSet web success",
        "SuccessfulCreate create Pod web-0 in StatefulSet web successful",
        "SuccessfulCreate create Pod web-2 in StatefulSet web successful",
    ] {
        assert!(
            messages.iter().any(|m| m == want),
            "{want} in {messages:#?}"
        );
    }

    // A new template: replaced highest first, never more than one pod down.
    let order = Arc::new(Mutex::new(Vec::new()));
    let tracker = PodTracker::start(
        &cluster.client_urls(),
        "default",
        "app=web",
        replacements(order.clone(), 2),
    )
    .await;
    client.apply(&web(3, "web:2"), "default").await.unwrap();
    let s = settled(&client, 3, "web:2").await;
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    assert_eq!(*order.lock().unwrap(), ["web-2", "web-1", "web-0"]);
    assert_ne!(s["status"]["updateRevision"], first_revision.as_str());
    assert_eq!(
        s["status"]["currentRevision"],
        s["status"]["updateRevision"]
    );

    // Scale down: web-2 is gone before web-1 starts going; the claims stay.
    let highest_first = |pods: &Pods| {
        let pods = by_name(pods);
        let web1_going = pods
            .get("web-1")
            .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null());
        (pods.contains_key("web-2") && web1_going)
            .then(|| "web-1 is going while web-2 is still there".to_string())
    };
    let tracker =
        PodTracker::start(&cluster.client_urls(), "default", "app=web", highest_first).await;
    tests::cli::ok(&eps, &["scale", "statefulset/web", "--replicas=1"]);
    settled(&client, 1, "web:2").await;
    let found = tracker.stop();
    assert!(found.violations.is_empty(), "{:#?}", found.violations);
    assert!(found.states >= 4, "only {} states seen", found.states);
    let after = claims(&client).await;
    assert_eq!(after.len(), 3, "{:?}", after.keys());
    for (n, c) in &kept {
        assert_eq!(after[n]["metadata"]["uid"], c["metadata"]["uid"], "{n}");
    }

    // A failed pod is deleted and created again under its name.
    let failed_uid = {
        let mut p = pod(&client, "web-0").await;
        p["status"]["phase"] = json!("Failed");
        client.update_status(&p, "default").await.unwrap();
        p["metadata"]["uid"].clone()
    };
    wait::until("web-0 to come back", Duration::from_secs(30), || {
        let client = &client;
        let failed_uid = &failed_uid;
        async move {
            let p = client
                .get(&Kind::named("pods").unwrap(), "default", "web-0")
                .await
                .ok()?;
            (p["metadata"]["uid"] != *failed_uid && is_ready(&p)).then_some(())
        }
    })
    .await;

    // Scale up again: the claims kept are used again.
    tests::cli::ok(&eps, &["scale", "statefulset/web", "--replicas=3"]);
    settled(&client, 3, "web:2").await;
    let again = claims(&client).await;
    for (n, c) in &kept {
        assert_eq!(again[n]["metadata"]["uid"], c["metadata"]["uid"], "{n}");
    }
    assert_eq!(again.len(), 3);

    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pods_start_together_and_claims_go_as_the_retention_policy_says() {
    let cluster = Cluster::start(3).await;
    let mut agent = tests::hollow::start(&cluster, 3, "hn", &[]);
    let client = Client::new(&cluster.client_urls()).unwrap();
    let eps = cluster.endpoints();
    let mut set = web(3, "web:1");
    set["spec"]["podManagementPolicy"] = json!("Parallel");
    set["spec"]["persistentVolumeClaimRetentionPolicy"] =
        json!({"whenDeleted": "Delete", "whenScaled": "Delete"});

    // Parallel: web-2 is created without waiting for web-0 to be ready.
    let overlapped = Arc::new(Mutex::new(false));
    let saw = overlapped.clone();
    let tracker = PodTracker::start(
        &cluster.client_urls(),
        "default",
        "app=web",
        move |pods: &Pods| {
            let pods = by_name(pods);
            if pods.contains_key("web-2") && !pods.get("web-0").is_some_and(|p| is_ready(p)) {
                *saw.lock().unwrap() = true;
            }
            None
        },
    )
    .await;
    client.apply(&set, "default").await.unwrap();
    let s = settled(&client, 3, "web:1").await;
    tracker.stop();
    assert!(
        *overlapped.lock().unwrap(),
        "web-2 only started after web-0 was ready"
    );

    // whenDeleted: Delete: every claim is owned (not controlled) by the set.
    let uid = s["metadata"]["uid"].clone();
    let made = claims(&client).await;
    assert_eq!(made.len(), 3);
    for c in made.values() {
        let refs = &c["metadata"]["ownerReferences"];
        assert_eq!(refs.as_array().map(Vec::len), Some(1), "{c}");
        assert_eq!(refs[0]["uid"], uid);
        assert_eq!(refs[0]["kind"], "StatefulSet");
        assert!(refs[0]["controller"].is_null(), "{c}");
    }

    // whenScaled: Delete: the claims of the pods removed go with them.
    tests::cli::ok(&eps, &["scale", "statefulset/web", "--replicas=1"]);
    settled(&client, 1, "web:1").await;
    wait::until(
        "the claims of web-1 and web-2 to go",
        Duration::from_secs(30),
        || {
            let client = &client;
            async move {
                let left: Vec<String> = claims(client).await.into_keys().collect();
                (left == ["data-web-0"]).then_some(())
            }
        },
    )
    .await;

    // Deleting the set takes its pods and the remaining claim.
    let sets = Kind::named("statefulsets").unwrap();
    client.delete(&sets, "default", "web").await.unwrap();
    let pods = Kind::named("pods").unwrap();
    wait::until(
        "the pods and claims to go with the set",
        Duration::from_secs(30),
        || {
            let (client, pods) = (&client, &pods);
            async move {
                let left = client
                    .list(pods, Some("default"), "app=web", "")
                    .await
                    .ok()?
                    .items;
                (left.is_empty() && claims(client).await.is_empty()).then_some(())
            }
        },
    )
    .await;

    agent.kill().unwrap();
    agent.wait().unwrap();
}
