//! `dns-bench` (root): the node's cluster DNS server against dnsmasq, measured in the same
//! run, as one Markdown table of queries per second and latency.
//!
//! ```sh
//! cargo build --release --bins && sudo cargo run --release -p tests --bin dns-bench
//! ```
//!
//! In a network namespace of its own: an upstream server (the site's resolver) on the host's
//! address, Skiff's server (`netproxy::dns`, the zone of 1,000 Services, forwarding to the
//! upstream with its cache) on 127.0.0.1:53, and dnsmasq (Debian's `dnsmasq-base`, the same
//! 1,000 names from a hosts file, forwarding to the same upstream, caching) on 127.0.0.2:53.
//! The load: CLIENTS sockets on one client, each asking its next question as soon as the last
//! is answered, for SECONDS per row — Service names (answered from the zone), one outside
//! name asked again and again (answered from the cache), and a new outside name every time
//! (forwarded every time; the upstream says NXDOMAIN). Every answer is checked (its ID, its
//! code, an address where one is due). Results: docs/benchmarks.md.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproxy::dns::server::{self, ClusterDns, ZoneHandle};
use netproxy::dns::zone::Zone;
use tests::bench::percentile;
use tests::dns_wire::{answered, query, Expect};
use tests::netns::TestNet;
use tests::upstream_dns::UpstreamDns;

const SERVICES: u32 = 1_000;
const CLIENTS: usize = 16;
const SECONDS: u64 = 5;
const SKIFF: &str = "127.0.0.1:53";
const DNSMASQ: &str = "127.0.0.2:53";

struct Outcome {
    qps: f64,
    p50: Duration,
    p99: Duration,
    failed: u64,
}

/// CLIENTS sockets asking `name(n)` of `server` for SECONDS.
async fn load(server: SocketAddr, name: fn(u64) -> String, expect: Expect) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CLIENTS {
        let (next, failed) = (next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("client socket");
            socket.connect(server).await.expect("connect");
            let mut latencies = vec![];
            let mut buf = [0u8; 1500];
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let id = (n % 65_536) as u16;
                let asked = Instant::now();
                if socket.send(&query(id, &name(n))).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let got = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await;
                match got {
                    Ok(Ok(len)) if answered(&buf[..len], id, expect) => {
                        latencies.push(asked.elapsed())
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let took = started.elapsed();
    Outcome {
        qps: all.len() as f64 / took.as_secs_f64(),
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        failed: failed.load(Ordering::Relaxed),
    }
}

fn service_name(n: u64) -> String {
    format!("svc-{}.bench.svc.cluster.local", n % u64::from(SERVICES))
}

fn cached_name(_: u64) -> String {
    "cached.example.test".into()
}

fn new_name(n: u64) -> String {
    format!("q{n}.example.test")
}

fn service_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1)
}

/// Waits until `server` answers a Service name.
async fn until_answering(server: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("socket");
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = socket.send_to(&query(1, &service_name(0)), server).await;
        if let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
        {
            if answered(&buf[..len], 1, Expect::Address) {
                return;
            }
        }
    }
    panic!("{server} never answered");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !tests::root::is_root() {
        eprintln!("dns-bench needs root (a network namespace, port 53)");
        std::process::exit(1);
    }
    if std::process::Command::new("dnsmasq")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("dns-bench needs dnsmasq (Debian's dnsmasq-base; tests/install-deps)");
        std::process::exit(1);
    }
    let net = TestNet::create(1);
    let host_ip: Ipv4Addr = net.hosts[0].ip.parse().expect("host address");
    let (tx, rx) = std::sync::mpsc::channel();
    net.run_in_host(0, move || async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let _upstream = UpstreamDns::start(
            host_ip,
            "example.test",
            &[("cached.example.test", Ipv4Addr::new(192, 0, 2, 1))],
        )
        .await;

        // Skiff's server.
        let services: Vec<k8s_openapi::api::core::v1::Service> = (0..SERVICES)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
                    "spec": {"clusterIP": service_ip(i).to_string(),
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
                }))
                .expect("service")
            })
            .collect();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, format!("nameserver {host_ip}\n")).expect("resolv.conf");
        let zone = ZoneHandle::default();
        zone.set(Zone::build("cluster.local", services.iter(), []));
        let handler = ClusterDns::new("cluster.local", zone, &resolv).expect("cluster DNS");
        let skiff: SocketAddr = SKIFF.parse().expect("address");
        tokio::spawn(server::serve(skiff, handler));

        // dnsmasq, the reference: the same names, the same upstream, its cache.
        let hosts = dir.path().join("hosts");
        let lines: String = (0..SERVICES)
            .map(|i| format!("{} svc-{i}.bench.svc.cluster.local\n", service_ip(i)))
            .collect();
        std::fs::write(&hosts, lines).expect("hosts file");
        let mut dnsmasq = std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-hosts",
                "--no-resolv",
                "--user=root",
                "--bind-interfaces",
                "--listen-address=127.0.0.2",
                "--port=53",
                "--cache-size=10000",
                "--local-ttl=5",
                "--pid-file=",
            ])
            .arg(format!("--server={host_ip}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .spawn()
            .expect("dnsmasq starts");
        let reference: SocketAddr = DNSMASQ.parse().expect("address");
        until_answering(skiff).await;
        until_answering(reference).await;

        let mut rows = vec![];
        type Row = (&'static str, fn(u64) -> String, Expect);
        let kinds: [Row; 3] = [
            (
                "Service name (from the zone)",
                service_name,
                Expect::Address,
            ),
            (
                "outside name, asked again (cached)",
                cached_name,
                Expect::Address,
            ),
            (
                "outside name, new each time (forwarded)",
                new_name,
                Expect::NxDomain,
            ),
        ];
        for (what, name, expect) in kinds {
            let ours = load(skiff, name, expect).await;
            let theirs = load(reference, name, expect).await;
            rows.push(format!(
                "| {what} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} |",
                ours.qps,
                ms(ours.p50),
                ms(ours.p99),
                ours.failed,
                theirs.qps,
                ms(theirs.p50),
                ms(theirs.p99),
                theirs.failed,
                ours.qps / theirs.qps
            ));
        }
        let _ = dnsmasq.kill();
        let _ = dnsmasq.wait();
        let _ = tx.send(rows);
    });
    let rows = rx.recv().expect("results");
    println!(
        "| questions ({CLIENTS} clients, {SECONDS} s each) | Skiff q/s | p50 | p99 | failed | dnsmasq q/s (reference) | p50 | p99 | failed | Skiff ÷ dnsmasq (q/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
