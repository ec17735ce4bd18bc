//! `controller-bench`: the scheduler and controllers at scale, on three-replica clusters with
//! 1,000 hollow nodes (one `skiff-agent --hollow 1000` process). Printed as one Markdown table.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p tests --bin controller-bench
//! ```
//!
//! 1. Scheduling: 10,000 pods (100m CPU, 64Mi each) are created while no replica runs the
//!    controllers (`--controllers=false`), then one replica is restarted with them: the rate is
//!    bindings per second from the first binding seen to the last (each seen through a watch).
//! 2. A 1,000-replica Deployment on a fresh cluster: from apply to 1,000 available pods.
//! 3. Controller failover: the replica holding the controllers is killed (SIGKILL) ten times;
//!    the time until another replica holds them, as a survivor reports it.
//! 4. Memory: the largest skiff-server resident set after each phase.
//!
//! No Kubernetes can run here to compare against in the same run, so the table shows the
//! issue's target (5,000 pods/s) and Kubernetes' published scheduler_perf floor instead.
//! Results: docs/benchmarks.md.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::bench::percentile;
use tests::cluster::Cluster;
use tokio::task::JoinSet;

const NODES: usize = 1_000;
const PODS: usize = 10_000;
const DEPLOYMENT_REPLICAS: usize = 1_000;
const KILLS: usize = 10;
const CLIENTS: usize = 32;
const CLUSTER_CIDR: &str = "10.240.0.0/14";
/// Kubernetes' scheduler_perf throughput floors (pods/s) for its basic workloads.
const KUBERNETES_FLOOR: f64 = 680.0;
const TARGET: f64 = 5_000.0;

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i:05}"), "namespace": "sched", "labels": {"app": "sched"}},
        "spec": {"containers": [{"name": "c", "image": "pause:3.9",
                  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    })
}

fn rss_mib(pid: u32) -> f64 {
    tests::bench::rss_bytes(pid) as f64 / (1024.0 * 1024.0)
}

fn max_rss(cluster: &Cluster) -> f64 {
    (0..cluster.members.len())
        .filter_map(|i| cluster.pid(i))
        .map(rss_mib)
        .fold(0.0, f64::max)
}

/// Polls `check` every 50 ms until it gives a value or `limit` passes.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_agent(cluster: &Cluster) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::create(cluster.root().join("agent.log"))?;
    std::process::Command::new(tests::bins::bin("skiff-agent"))
        .args([
            "--endpoints",
            &cluster.endpoints(),
            "--hollow",
            &NODES.to_string(),
        ])
        .args(["--name", "hn", "--heartbeat-every", "10"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting skiff-agent")
}

/// Waits until all hollow nodes are registered Ready (and, if asked, have pod CIDRs).
async fn nodes_ready(client: &Client, with_cidrs: bool) -> anyhow::Result<()> {
    let nodes = Kind::named("nodes").expect("nodes");
    until("1,000 Ready nodes", Duration::from_secs(300), || async {
        let list = client
            .list(&nodes, None, "skiff.io/hollow=true", "")
            .await
            .ok()?;
        let ready = list
            .items
            .iter()
            .filter(|n| n["status"]["conditions"][0]["status"] == "True")
            .filter(|n| !with_cidrs || n["spec"]["podCIDR"].is_string())
            .count();
        (ready == NODES).then_some(())
    })
    .await
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .create(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            "",
        )
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("creating namespace {name}: {e}"))
}

struct Scheduling {
    register: Duration,
    create_rate: f64,
    bind_rate: f64,
    to_all_bound: Duration,
    rss: f64,
}

async fn scheduling() -> anyhow::Result<Scheduling> {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--controllers=false",
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--node-monitor-grace-period",
            "40",
        ],
    )
    .await;
    cluster.wait_for_built_in_namespaces().await;
    let client = Arc::new(Client::new(&cluster.client_urls())?);
    let started = Instant::now();
    let mut agent = start_agent(&cluster)?;
    nodes_ready(&client, false).await?;
    let register = started.elapsed();
    eprintln!("{NODES} nodes registered in {register:?}");
    namespace(&client, "sched").await?;

    let began = Instant::now();
    let mut creators = JoinSet::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        creators.spawn(async move {
            for i in (c..PODS).step_by(CLIENTS) {
                client
                    .create(&pod(i), "sched")
                    .await
                    .map_err(|e| anyhow::anyhow!("creating pod {i}: {e}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = creators.join_next().await {
        done??;
    }
    let create_rate = PODS as f64 / began.elapsed().as_secs_f64();
    eprintln!("{PODS} pods created in {:?}", began.elapsed());

    // Watch bindings from here, then give one replica the controllers.
    let pods = Kind::named("pods").expect("pods");
    let list = client.list(&pods, Some("sched"), "", "").await?;
    let mut watch = client.watch(&pods, Some("sched"), "", "", &list.resource_version);
    cluster.terminate(0);
    cluster.extra_args.retain(|a| a != "--controllers=false");
    let enabled = Instant::now();
    cluster.restart(0);
    let mut bound = BTreeSet::new();
    let mut first = None;
    let mut last = enabled;
    let deadline = Instant::now() + Duration::from_secs(600);
    while bound.len() < PODS {
        if Instant::now() > deadline {
            bail!("only {} of {PODS} pods bound after 10 minutes", bound.len());
        }
        let Some(ev) = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .context("no pod event for a minute")??
        else {
            bail!("the pod watch ended");
        };
        if ev.object["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
            && bound.insert(
                ev.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
        }
    }
    let first = first.unwrap_or(enabled);
    eprintln!(
        "all bound {:?} after the restart; first binding after {:?}",
        last.duration_since(enabled),
        first.duration_since(enabled)
    );
    let bind_rate = (PODS - 1) as f64 / last.duration_since(first).as_secs_f64().max(1e-9);
    let rss = max_rss(&cluster);
    let _ = agent.kill();
    let _ = agent.wait();
    Ok(Scheduling {
        register,
        create_rate,
        bind_rate,
        to_all_bound: last.duration_since(enabled),
        rss,
    })
}

struct Controllers {
    deployment: Duration,
    failovers: Vec<Duration>,
    rss: f64,
}

async fn holder(client: &Client) -> Option<String> {
    let st = client.cluster_status().await.ok()?;
    (!st.controller_leader.is_empty()).then_some(st.controller_leader)
}

async fn controllers() -> anyhow::Result<Controllers> {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--node-monitor-grace-period",
            "40",
        ],
    )
    .await;
    cluster.wait_for_built_in_namespaces().await;
    let client = Client::new(&cluster.client_urls())?;
    let mut agent = start_agent(&cluster)?;
    nodes_ready(&client, true).await?;
    namespace(&client, "deploy").await?;

    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "deploy"},
        "spec": {"replicas": DEPLOYMENT_REPLICAS, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                                        "resources": {"requests": {"cpu": "100m"}}}]}}}
    });
    let applied = Instant::now();
    client.apply(&deployment, "deploy").await?;
    let deployments = Kind::named("deployments").expect("deployments");
    until(
        "1,000 available replicas",
        Duration::from_secs(600),
        || async {
            let d = client.get(&deployments, "deploy", "web").await.ok()?;
            (d["status"]["availableReplicas"] == DEPLOYMENT_REPLICAS).then_some(())
        },
    )
    .await?;
    let deployment_time = applied.elapsed();
    eprintln!("deployment available in {deployment_time:?}");
    let rss = max_rss(&cluster);

    let mut failovers = Vec::new();
    for k in 0..KILLS {
        let old = until("a controller holder", Duration::from_secs(30), || {
            holder(&client)
        })
        .await?;
        let index = cluster
            .members
            .iter()
            .position(|m| m.name == old)
            .context("the holder is a member")?;
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != index)
            .map(|i| cluster.members[i].client_url())
            .collect();
        let watcher = Client::new(&survivors)?;
        holder(&watcher).await.context("survivors answer")?;
        let killed = Instant::now();
        cluster.kill(index);
        loop {
            if let Some(h) = holder(&watcher).await {
                if h != old {
                    break;
                }
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("kill {k}: no new controller holder after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failovers.push(killed.elapsed());
        eprintln!("failover {k}: {:?}", killed.elapsed());
        cluster.restart(index);
        let back = Client::new(&[cluster.members[index].client_url()])?;
        until(
            "the restarted replica to catch up",
            Duration::from_secs(60),
            || async {
                let mine = holder(&back).await?;
                let theirs = holder(&watcher).await?;
                (mine == theirs).then_some(())
            },
        )
        .await?;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    Ok(Controllers {
        deployment: deployment_time,
        failovers,
        rss: rss.max(max_rss(&cluster)),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s = scheduling().await.context("scheduling phase")?;
    eprintln!("scheduling phase done");
    let c = controllers().await.context("controllers phase")?;
    let p50 = percentile(&c.failovers, 50.0);
    let p99 = percentile(&c.failovers, 99.0);
    println!("| metric | Skiff | reference | Skiff/reference |");
    println!("|---|---|---|---|");
    println!(
        "| register {NODES} hollow nodes | {:.1} s | | |",
        s.register.as_secs_f64()
    );
    println!(
        "| create {PODS} pods ({CLIENTS} clients) | {:.0} pods/s | | |",
        s.create_rate
    );
    println!(
        "| schedule and bind {PODS} pods on {NODES} nodes | {:.0} pods/s | target {TARGET:.0} pods/s | {:.2}x |",
        s.bind_rate,
        s.bind_rate / TARGET
    );
    println!(
        "| (same) against Kubernetes' scheduler_perf floor | {:.0} pods/s | {KUBERNETES_FLOOR:.0} pods/s (published) | {:.2}x |",
        s.bind_rate,
        s.bind_rate / KUBERNETES_FLOOR
    );
    println!(
        "| controllers enabled to all {PODS} bound (incl. election) | {:.2} s | | |",
        s.to_all_bound.as_secs_f64()
    );
    println!(
        "| {DEPLOYMENT_REPLICAS}-replica Deployment to all available | {:.2} s | | |",
        c.deployment.as_secs_f64()
    );
    println!(
        "| controller failover after SIGKILL, p50 / p99 ({KILLS} kills) | {:.0} / {:.0} ms | lease 1,000 ms | |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "| skiff-server RSS, largest replica: {PODS} pods + {NODES} nodes | {:.0} MiB | | |",
        s.rss
    );
    println!(
        "| skiff-server RSS, largest replica: {DEPLOYMENT_REPLICAS}-pod Deployment + {NODES} nodes | {:.0} MiB | | |",
        c.rss
    );
    Ok(())
}
