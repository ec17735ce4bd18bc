//! `store-bench`: Skiff's store against etcd, three replicas each on loopback, driven by the same
//! client (etcd-client) with the same workload, printed as one Markdown table.
//!
//! Run it from the workspace root (it takes a few minutes and needs Debian's `etcd`):
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p tests --bin store-bench
//! ```
//!
//! The Skiff cluster runs first, then the etcd cluster, never both at once. Both fsync before
//! acknowledging (etcd's WAL by default; Skiff flushes its sled log), both use heartbeat 80 ms
//! and election timeout 400 ms (Skiff's default election timeout; etcd refuses one below five
//! heartbeats, hence 80 rather than Skiff's default 100; etcd campaigns 1x to 2x the configured
//! value after the last heartbeat, Skiff 1.5x to 2x), every process and client stays on 127.0.0.1, and every process is
//! killed when the benchmark ends. A failed measurement prints the tail of each member's log and
//! ends the benchmark with an error. Results and how to read them: docs/benchmarks.md.

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use tests::bench::{
    failover, leader_of, percentile, put_latency, throughput, watch_latency, Load, Probe, Table,
    Throughput, VALUE_BYTES,
};
use tests::cluster::{Cluster, Program};

const MEMBERS: usize = 3;
/// etcd requires an election timeout of at least five heartbeats.
const HEARTBEAT_MS: &str = "80";
const ELECTION_MS: &str = "400";

const LATENCY_WARMUP: usize = 200;
const LATENCY_OPS: usize = 2_000;
const CLIENTS: usize = 64;
/// Uncounted operations per client before a throughput run's clock starts.
const CLIENT_WARMUP: usize = 10;
const PUT_TOTAL: usize = 20_000;
const RANGE_TOTAL: usize = 50_000;
const WATCH_WARMUP: usize = 50;
const WATCH_EVENTS: usize = 1_000;
const DRILLS: usize = 10;
const PROBE: Probe = Probe {
    every: Duration::from_millis(10),
    attempt_timeout: Duration::from_secs(1),
    give_up: Duration::from_secs(30),
};

/// Everything measured on one system.
struct Results {
    put_latency: Vec<Duration>,
    put: Throughput,
    linearizable: Throughput,
    serializable: Throughput,
    watch: Vec<Duration>,
    failover: Vec<Option<Duration>>,
}

/// Runs every measurement on `target`; on failure, shows the members' logs.
async fn measure(name: &str, target: &mut Cluster) -> anyhow::Result<Results> {
    match run_all(name, target).await {
        Ok(results) => Ok(results),
        Err(e) => {
            for i in 0..MEMBERS {
                let log = target.log(i);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!("--- {name} member {i}: last lines of its log ---\n{tail}");
            }
            Err(anyhow!("{name}: {e}"))
        }
    }
}

async fn run_all(name: &str, target: &mut Cluster) -> Result<Results, String> {
    let urls = target.client_urls();
    let leader = leader_of(&urls).await;
    let follower = (leader + 1) % urls.len();

    eprintln!("{name}: put latency, 1 client on the leader ({LATENCY_OPS} puts)");
    let put_latency = put_latency(&urls[leader], LATENCY_WARMUP, LATENCY_OPS).await?;
    eprintln!("{name}: put throughput, {CLIENTS} clients ({PUT_TOTAL} puts)");
    let put = throughput(&urls, CLIENTS, CLIENT_WARMUP, PUT_TOTAL, Load::Put).await;
    eprintln!("{name}: linearizable range throughput ({RANGE_TOTAL} gets)");
    let linearizable = throughput(
        &urls,
        CLIENTS,
        CLIENT_WARMUP,
        RANGE_TOTAL,
        Load::Get {
            serializable: false,
        },
    )
    .await;
    eprintln!("{name}: serializable range throughput ({RANGE_TOTAL} gets)");
    let serializable = throughput(
        &urls,
        CLIENTS,
        CLIENT_WARMUP,
        RANGE_TOTAL,
        Load::Get { serializable: true },
    )
    .await;
    eprintln!("{name}: watch delivery ({WATCH_EVENTS} events, writer on the leader, watcher on a follower)");
    let watch = watch_latency(&urls[leader], &urls[follower], WATCH_WARMUP, WATCH_EVENTS).await?;
    eprintln!("{name}: {DRILLS} leader failover drills");
    let failover = failover(target, DRILLS, PROBE).await?;
    Ok(Results {
        put_latency,
        put,
        linearizable,
        serializable,
        watch,
        failover,
    })
}

/// `STORE_BENCH_ENDPOINTS=url,url,...`: only the two put rows, against a cluster started by
/// hand (for profiling one side, e.g. with the replicas' `raft_store::stats` debug log on).
async fn probe_writes(endpoints: &str) -> anyhow::Result<()> {
    let urls: Vec<String> = endpoints.split(',').map(str::to_string).collect();
    let leader = leader_of(&urls).await;
    let lat = put_latency(&urls[leader], LATENCY_WARMUP, LATENCY_OPS)
        .await
        .map_err(|e| anyhow!(e))?;
    println!(
        "put latency p50 {:?} p99 {:?}",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0)
    );
    let put = throughput(&urls, CLIENTS, CLIENT_WARMUP, PUT_TOTAL, Load::Put).await;
    println!(
        "put throughput {:.0} ops/s ({} errors)",
        put.ops_per_sec, put.errors
    );
    Ok(())
}

fn version(cmd: &std::path::Path) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", cmd.display()))?;
    ensure!(out.status.success(), "{} --version failed", cmd.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(endpoints) = std::env::var("STORE_BENCH_ENDPOINTS") {
        return probe_writes(&endpoints).await;
    }
    let etcd_version = version("etcd".as_ref())
        .context("etcd is needed (Debian's etcd-server; bash tests/run installs it)")?;
    let skiff_version = version(&tests::bins::bin("skiff-server"))?;
    let timing = [
        "--heartbeat-interval",
        HEARTBEAT_MS,
        "--election-timeout",
        ELECTION_MS,
    ];

    let skiff = {
        eprintln!("starting {MEMBERS} skiff-server replicas");
        let mut cluster = Cluster::start_with(MEMBERS, &timing).await;
        measure("skiff", &mut cluster).await?
    };
    let etcd = {
        eprintln!("starting {MEMBERS} etcd members");
        let mut cluster = Cluster::start_program(Program::Etcd, MEMBERS, &timing).await;
        measure("etcd", &mut cluster).await?
    };

    let mut table = Table::default();
    for p in [50.0, 99.0] {
        table.millis(
            &format!("put latency p{p}, 1 client"),
            percentile(&skiff.put_latency, p),
            percentile(&etcd.put_latency, p),
        );
    }
    table.rate(
        &format!("put throughput, {CLIENTS} clients"),
        skiff.put.ops_per_sec,
        etcd.put.ops_per_sec,
    );
    table.rate(
        &format!("linearizable range throughput, {CLIENTS} clients"),
        skiff.linearizable.ops_per_sec,
        etcd.linearizable.ops_per_sec,
    );
    table.rate(
        &format!("serializable range throughput, {CLIENTS} clients"),
        skiff.serializable.ops_per_sec,
        etcd.serializable.ops_per_sec,
    );
    for p in [50.0, 99.0] {
        table.millis(
            &format!("watch delivery latency p{p}"),
            percentile(&skiff.watch, p),
            percentile(&etcd.watch, p),
        );
    }
    let drills = |r: &Results| -> Vec<Duration> { r.failover.iter().flatten().copied().collect() };
    for p in [50.0, 99.0] {
        table.millis(
            &format!("leader failover p{p}, {DRILLS} drills"),
            percentile(&drills(&skiff), p),
            percentile(&drills(&etcd), p),
        );
    }

    println!("# store-bench: {MEMBERS} Skiff replicas vs {MEMBERS} etcd members on 127.0.0.1");
    println!();
    println!("- Skiff: {skiff_version}; etcd: {etcd_version}");
    println!(
        "- both: --heartbeat-interval {HEARTBEAT_MS} --election-timeout {ELECTION_MS} (ms; etcd \
         campaigns 1x-2x, Skiff 1.5x-2x the election timeout after the last heartbeat; etcd \
         requires at least 5 heartbeats per election timeout), fsync before acknowledging, other flags at their defaults"
    );
    println!(
        "- workload: {VALUE_BYTES}-byte values; latency: {LATENCY_OPS} sequential puts to the \
         leader after {LATENCY_WARMUP}; throughput: {CLIENTS} clients, one connection each, \
         spread over the members, {PUT_TOTAL} puts of new keys / {RANGE_TOTAL} gets of one key, \
         after {CLIENT_WARMUP} per client; watch: {WATCH_EVENTS} sequential puts on the leader, \
         watcher on a follower, from put call to event; failover: SIGKILL the leader, time to the \
         first acknowledged put through the survivors (a new attempt every {:?}, each abandoned \
         after {:?})",
        PROBE.every, PROBE.attempt_timeout
    );
    println!();
    print!("{}", table.render());
    println!();
    for (name, r) in [("Skiff", &skiff), ("etcd", &etcd)] {
        let runs = [
            ("put", &r.put),
            ("linearizable range", &r.linearizable),
            ("serializable range", &r.serializable),
        ];
        let errors: Vec<String> = runs
            .iter()
            .filter(|(_, t)| t.errors > 0)
            .map(|(what, t)| format!("{what} {} of {}", t.errors, t.errors + t.ok))
            .collect();
        if !errors.is_empty() {
            println!("- {name} errors: {}", errors.join(", "));
        }
        let drills: Vec<String> = r
            .failover
            .iter()
            .map(|d| match d {
                Some(d) => format!("{}", d.as_millis()),
                None => format!(">{}", PROBE.give_up.as_millis()),
            })
            .collect();
        println!("- {name} failover drills (ms): {}", drills.join(", "));
    }
    Ok(())
}
