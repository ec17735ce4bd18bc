//! `api-bench`: the Skiff API on a three-replica cluster, through the leader and through a
//! follower, against the same operations as raw etcd v3 calls on a three-member etcd cluster
//! (the floor any Kubernetes-style API over etcd pays). Printed as one Markdown table.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p tests --bin api-bench
//! ```
//!
//! Objects are ConfigMaps of about 300 bytes of JSON; etcd gets the same bytes under the same
//! keys. Rows: create latency (1 client, sequential), create and get throughput (32 clients),
//! list latency (1,000 objects), watch delivery latency with 1 and 100 watchers (from the start
//! of a create to its event at every watcher). Results: docs/benchmarks.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{GetOptions, WatchOptions};
use serde_json::{json, Value};
use skiff_api::{Client, Kind};
use tests::bench::{leader_of, percentile};
use tests::cluster::{connect, Cluster, Program};
use tokio::task::JoinSet;

const CLIENTS: usize = 32;
const LATENCY_OPS: usize = 500;
const CREATE_TOTAL: usize = 5_000;
const GET_TOTAL: usize = 10_000;
const LIST_OBJECTS: usize = 1_000;
const LIST_OPS: usize = 100;
const WATCH_EVENTS: usize = 200;

/// Namespaces the benchmark writes to (created first on Skiff).
const NAMESPACES: &[&str] = &["lat", "tp", "list", "watch1", "watch100"];

fn config_map(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "data": {"payload": "x".repeat(160)}
    })
}

fn key(ns: &str, name: &str) -> String {
    format!("/registry/configmaps/{ns}/{name}")
}

/// Where operations go: the Skiff API at one replica, or raw etcd calls at one member.
#[derive(Clone)]
enum Target {
    Api(String),
    Etcd(String),
}

/// One connection to a target.
#[derive(Clone)]
enum Conn {
    Api(Arc<Client>),
    Etcd(Box<etcd_client::Client>),
}

impl Target {
    async fn connect(&self) -> anyhow::Result<Conn> {
        Ok(match self {
            Target::Api(url) => Conn::Api(Arc::new(Client::new(std::slice::from_ref(url))?)),
            Target::Etcd(url) => Conn::Etcd(Box::new(connect(std::slice::from_ref(url)).await)),
        })
    }
}

impl Conn {
    async fn create(&mut self, ns: &str, name: &str) -> anyhow::Result<()> {
        let obj = config_map(ns, name);
        match self {
            Conn::Api(c) => {
                c.create(&obj, ns).await?;
            }
            Conn::Etcd(c) => {
                c.put(key(ns, name), serde_json::to_vec(&obj)?, None)
                    .await?;
            }
        }
        Ok(())
    }

    async fn get(&mut self, ns: &str, name: &str) -> anyhow::Result<()> {
        match self {
            Conn::Api(c) => {
                c.get(&Kind::named("cm").expect("kind"), ns, name).await?;
            }
            Conn::Etcd(c) => {
                let r = c.get(key(ns, name), None).await?;
                anyhow::ensure!(r.kvs().len() == 1, "missing {name}");
            }
        }
        Ok(())
    }

    async fn list(&mut self, ns: &str) -> anyhow::Result<usize> {
        Ok(match self {
            Conn::Api(c) => c
                .list(&Kind::named("cm").expect("kind"), Some(ns), "", "")
                .await?
                .items
                .len(),
            Conn::Etcd(c) => c
                .get(
                    format!("/registry/configmaps/{ns}/"),
                    Some(GetOptions::new().with_prefix()),
                )
                .await?
                .kvs()
                .len(),
        })
    }
}

async fn create_latency(target: &Target, ns: &str) -> anyhow::Result<Vec<Duration>> {
    let mut c = target.connect().await?;
    for i in 0..50 {
        c.create(ns, &format!("warm-{i}")).await?;
    }
    let mut samples = Vec::with_capacity(LATENCY_OPS);
    for i in 0..LATENCY_OPS {
        let start = Instant::now();
        c.create(ns, &format!("lat-{i}")).await?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// One operation of a throughput run: takes the connection and gives it back.
type OpFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Conn, anyhow::Result<()>)> + Send>>;

/// Runs `total` operations over `CLIENTS` connections; returns ops/s and per-op latencies.
async fn concurrent(
    target: &Target,
    total: usize,
    op: fn(Conn, usize) -> OpFuture,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(target.connect().await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for conn in conns {
        let next = next.clone();
        set.spawn(async move {
            let mut conn = conn;
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(samples);
                }
                let t = Instant::now();
                let (c, r) = op(conn, n).await;
                conn = c;
                r?;
                samples.push(t.elapsed());
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok((all.len() as f64 / start.elapsed().as_secs_f64(), all))
}

fn create_op(mut c: Conn, n: usize) -> OpFuture {
    Box::pin(async move {
        let r = c.create("tp", &format!("cm-{n:06}")).await;
        (c, r)
    })
}

fn get_op(mut c: Conn, _n: usize) -> OpFuture {
    Box::pin(async move {
        let r = c.get("lat", "lat-0").await;
        (c, r)
    })
}

async fn list_latency(target: &Target) -> anyhow::Result<Vec<Duration>> {
    let mut c = target.connect().await?;
    for i in 0..LIST_OBJECTS {
        c.create("list", &format!("item-{i:05}")).await?;
    }
    let mut samples = Vec::new();
    for _ in 0..LIST_OPS {
        let start = Instant::now();
        let n = c.list("list").await?;
        samples.push(start.elapsed());
        anyhow::ensure!(n == LIST_OBJECTS, "listed {n} of {LIST_OBJECTS}");
    }
    Ok(samples)
}

/// Delivery latencies of `WATCH_EVENTS` creates to each of `watchers` watchers.
async fn watch_latency(
    target: &Target,
    watchers: usize,
    ns: &str,
) -> anyhow::Result<Vec<Duration>> {
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; WATCH_EVENTS]));
    let ready = Arc::new(tokio::sync::Barrier::new(watchers + 1));
    let mut set = JoinSet::new();
    for _ in 0..watchers {
        let target = target.clone();
        let sent = sent.clone();
        let ready = ready.clone();
        let ns = ns.to_string();
        set.spawn(async move {
            let mut latencies = Vec::new();
            match target {
                Target::Api(url) => {
                    let client = Client::new(&[url])?;
                    let cms = Kind::named("cm").expect("kind");
                    let rv = client.list(&cms, Some(&ns), "", "").await?.resource_version;
                    let mut w = client.watch(&cms, Some(&ns), "", "", &rv);
                    ready.wait().await;
                    while latencies.len() < WATCH_EVENTS {
                        let ev = tokio::time::timeout(Duration::from_secs(60), w.next())
                            .await
                            .context("watch event in time")??
                            .context("watch open")?;
                        if ev.kind != "ADDED" {
                            continue;
                        }
                        let name = ev.object["metadata"]["name"].as_str().unwrap_or_default();
                        let i: usize = name.trim_start_matches("w-").parse()?;
                        let at = sent.lock().expect("lock")[i];
                        latencies.push(at.map(|t| t.elapsed()).unwrap_or_default());
                    }
                }
                Target::Etcd(url) => {
                    let mut c = connect(&[url]).await;
                    let mut stream = c
                        .watch(
                            format!("/registry/configmaps/{ns}/"),
                            Some(WatchOptions::new().with_prefix()),
                        )
                        .await?;
                    ready.wait().await;
                    while latencies.len() < WATCH_EVENTS {
                        let resp = tokio::time::timeout(Duration::from_secs(60), stream.message())
                            .await
                            .context("watch event in time")??
                            .context("watch open")?;
                        for ev in resp.events() {
                            let k = ev
                                .kv()
                                .map(|kv| kv.key_str().unwrap_or_default().to_string())
                                .unwrap_or_default();
                            let name = k.rsplit('/').next().unwrap_or_default();
                            let i: usize = name.trim_start_matches("w-").parse()?;
                            let at = sent.lock().expect("lock")[i];
                            latencies.push(at.map(|t| t.elapsed()).unwrap_or_default());
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    ready.wait().await;
    let mut writer = target.connect().await?;
    for i in 0..WATCH_EVENTS {
        sent.lock().expect("lock")[i] = Some(Instant::now());
        writer.create(ns, &format!("w-{i:05}")).await?;
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

struct Results {
    create: Vec<Duration>,
    create_tp: (f64, Vec<Duration>),
    get_tp: (f64, Vec<Duration>),
    list: Vec<Duration>,
    watch1: Vec<Duration>,
    watch100: Vec<Duration>,
}

async fn measure(name: &str, target: Target) -> anyhow::Result<Results> {
    if let Target::Api(url) = &target {
        let client = Client::new(std::slice::from_ref(url))?;
        for ns in NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            client.apply(&obj, "").await?;
        }
    }
    eprintln!("{name}: create latency");
    let create = create_latency(&target, "lat").await?;
    eprintln!("{name}: create throughput");
    let create_tp = concurrent(&target, CREATE_TOTAL, create_op).await?;
    eprintln!("{name}: get throughput");
    let get_tp = concurrent(&target, GET_TOTAL, get_op).await?;
    eprintln!("{name}: list latency");
    let list = list_latency(&target).await?;
    eprintln!("{name}: watch fan-out");
    let watch1 = watch_latency(&target, 1, "watch1").await?;
    let watch100 = watch_latency(&target, 100, "watch100").await?;
    Ok(Results {
        create,
        create_tp,
        get_tp,
        list,
        watch1,
        watch100,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Skiff through the leader, then a fresh Skiff cluster through a follower, then etcd.
    let skiff = Cluster::start(3).await;
    let urls = skiff.client_urls();
    let leader = leader_of(&urls).await;
    let via_leader = measure("skiff via leader", Target::Api(urls[leader].clone())).await?;
    // Fresh cluster for the follower run, so both start from the same state.
    drop(skiff);
    let skiff = Cluster::start(3).await;
    let urls = skiff.client_urls();
    let leader2 = leader_of(&urls).await;
    let via_follower = measure(
        "skiff via follower",
        Target::Api(urls[(leader2 + 1) % 3].clone()),
    )
    .await?;
    drop(skiff);
    let etcd = Cluster::start_program(Program::Etcd, 3, &[]).await;
    let eurls = etcd.client_urls();
    let eleader = leader_of(&eurls).await;
    let raw = measure("etcd raw via leader", Target::Etcd(eurls[eleader].clone())).await?;
    drop(etcd);

    println!("# api-bench: Skiff API (3 replicas) vs raw etcd v3 calls (3 members), loopback\n");
    println!("| metric | Skiff API via leader | Skiff API via follower | etcd raw via leader | leader / etcd |");
    println!("|---|---:|---:|---:|---:|");
    let lat = |name: &str, f: &dyn Fn(&Results) -> Duration| {
        let (a, b, c) = (f(&via_leader), f(&via_follower), f(&raw));
        println!(
            "| {name} | {} | {} | {} | {:.2} |",
            ms(a),
            ms(b),
            ms(c),
            a.as_secs_f64() / c.as_secs_f64().max(1e-9)
        );
    };
    let rate = |name: &str, f: &dyn Fn(&Results) -> f64| {
        let (a, b, c) = (f(&via_leader), f(&via_follower), f(&raw));
        println!(
            "| {name} | {a:.0} ops/s | {b:.0} ops/s | {c:.0} ops/s | {:.2} |",
            a / c.max(1e-9)
        );
    };
    lat("create latency p50, 1 client", &|r| {
        percentile(&r.create, 50.0)
    });
    lat("create latency p99, 1 client", &|r| {
        percentile(&r.create, 99.0)
    });
    rate(&format!("create throughput, {CLIENTS} clients"), &|r| {
        r.create_tp.0
    });
    lat(&format!("create p99, {CLIENTS} clients"), &|r| {
        percentile(&r.create_tp.1, 99.0)
    });
    rate(&format!("get throughput, {CLIENTS} clients"), &|r| {
        r.get_tp.0
    });
    lat(&format!("get p99, {CLIENTS} clients"), &|r| {
        percentile(&r.get_tp.1, 99.0)
    });
    lat(&format!("list of {LIST_OBJECTS} p50"), &|r| {
        percentile(&r.list, 50.0)
    });
    lat(&format!("list of {LIST_OBJECTS} p99"), &|r| {
        percentile(&r.list, 99.0)
    });
    lat("watch delivery p50, 1 watcher", &|r| {
        percentile(&r.watch1, 50.0)
    });
    lat("watch delivery p99, 1 watcher", &|r| {
        percentile(&r.watch1, 99.0)
    });
    lat("watch delivery p50, 100 watchers", &|r| {
        percentile(&r.watch100, 50.0)
    });
    lat("watch delivery p99, 100 watchers", &|r| {
        percentile(&r.watch100, 99.0)
    });
    println!("\nFor latency rows a ratio below 1 favours Skiff; for throughput rows, above 1.");
    Ok(())
}
