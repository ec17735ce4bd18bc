//! `proxy-bench` (root): the service proxy's full sync at 1,000, 5,000 and 10,000 Services of
//! 10 endpoints each (NodePorts, so every chain kind is there), printed as one Markdown table.
//!
//! ```sh
//! cargo build --release --bins && sudo cargo run --release -p tests --bin proxy-bench
//! ```
//!
//! Each size runs in a network namespace of its own: a first sync into empty tables, then a
//! second one over the first (what every periodic sync does), each timed whole (jumps checked,
//! `iptables-save`, render, one `iptables-restore --noflush`). The reference, measured in the
//! same run, is the floor: the time `iptables-restore` alone takes to load the same text into
//! empty tables of a fresh namespace. Then 100 endpoint changes, each in another Service,
//! each followed by a partial sync (only the changed chains written): the time from change to
//! rules in the kernel, p50 and p99, against the full sync a proxy without partial syncs
//! would run. Targets: a full sync of 10,000 Services in at most 1 s; change → rules p99 at
//! most 100 ms at 1,000 Services.
//!
//! Results: docs/benchmarks.md.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netproxy::{render, Endpoint, Iptables, NodeContext, Protocol, ServicePort};
use tests::bench::percentile;
use tests::netns::TestNet;

const SIZES: [usize; 3] = [1_000, 5_000, 10_000];
const ENDPOINTS: usize = 10;
/// Endpoint changes timed per size.
const CHANGES: usize = 100;

fn ports(n: usize) -> Vec<ServicePort> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            ServicePort {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
                cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1),
                port: 80,
                // One NodePort each while the range lasts (2,768 of them).
                node_port: (i < 2768).then(|| 30000 + i as u16),
                external_ips: vec![],
                load_balancer_ips: vec![],
                affinity_seconds: None,
                endpoints: (0..ENDPOINTS as u32)
                    .map(|e| Endpoint {
                        ip: Ipv4Addr::from(
                            u32::from(Ipv4Addr::new(10, 244, 0, 0)) + i * ENDPOINTS as u32 + e,
                        ),
                        port: 8080,
                        node_name: None,
                    })
                    .collect(),
                external_local: false,
                internal_local: false,
            }
        })
        .collect()
}

/// Runs `f` on a thread inside the namespace of host 0 of `net`.
fn in_net<T: Send + 'static>(net: &TestNet, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    net.run_in_host(0, move || async move {
        let _ = tx.send(f());
    });
    rx.recv().expect("result")
}

/// `iptables-restore --noflush` of `text` alone, timed.
fn restore_alone(text: &str) -> Duration {
    let ipt = Iptables::detect().expect("iptables");
    let started = Instant::now();
    ipt.restore(text).expect("restore");
    started.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !tests::root::is_root() {
        eprintln!("proxy-bench needs root (network namespaces, iptables)");
        std::process::exit(1);
    }
    let node = NodeContext {
        cluster_cidr: Some("10.244.0.0/16".into()),
        pod_network: true,
        node_name: Some("bench".into()),
        localhost_node_ports: false,
    };
    println!("| Services × endpoints | rules | first sync | next sync | iptables-restore alone (reference) | first ÷ reference | change → rules p50 | p99 | p99 ÷ next sync | p50: render + diff | p50: restore |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // PROXY_BENCH_SIZES=1000,5000 runs only those sizes.
    let sizes: Vec<usize> = std::env::var("PROXY_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    for n in sizes {
        let sps = ports(n);
        let text = render(&sps, &node, &Default::default());
        let rules = text.rules;
        let reference = {
            let net = TestNet::create(1);
            let t = text.text.clone();
            in_net(&net, move || restore_alone(&t))
        };
        let (first, next, changes) = {
            let net = TestNet::create(1);
            let node = node.clone();
            in_net(&net, move || {
                let ipt = Iptables::detect().expect("iptables");
                let started = Instant::now();
                ipt.sync(&sps, &node).expect("first sync");
                let first = started.elapsed();
                let started = Instant::now();
                let (_, mut written) = ipt.sync_full(&sps, &node, None).expect("next sync");
                let next = started.elapsed();
                (first, next, partial_syncs(&ipt, sps, &node, &mut written))
            })
        };
        let totals: Vec<Duration> = changes.iter().map(|c| c.0).collect();
        let p = |q: f64| percentile(&totals, q);
        let render_p50 = percentile(&changes.iter().map(|c| c.1).collect::<Vec<_>>(), 50.0);
        let restore_p50 = percentile(&changes.iter().map(|c| c.2).collect::<Vec<_>>(), 50.0);
        println!(
            "| {n} × {ENDPOINTS} | {rules} | {} | {} | {} | {:.2} | {} | {} | {:.3} | {} | {} |",
            ms(first),
            ms(next),
            ms(reference),
            first.as_secs_f64() / reference.as_secs_f64(),
            ms_frac(p(50.0)),
            ms_frac(p(99.0)),
            p(99.0).as_secs_f64() / next.as_secs_f64(),
            ms_frac(render_p50),
            ms_frac(restore_p50),
        );
    }
}

/// CHANGES endpoint moves, each in a different Service (one endpoint replaced by a new
/// address, as a rescheduled pod does), each followed by a partial sync: the time from the
/// change to the rules being in the kernel (render, diff, restore).
fn partial_syncs(
    ipt: &Iptables,
    mut sps: Vec<ServicePort>,
    node: &NodeContext,
    written: &mut netproxy::Written,
) -> Vec<(Duration, Duration, Duration)> {
    let n = sps.len();
    (0..CHANGES)
        .map(|c| {
            let k = (c * 7919) % n;
            let e = c % ENDPOINTS;
            sps[k].endpoints[e].ip =
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 245, 0, 0)) + c as u32);
            let started = Instant::now();
            let (report, now) = ipt.sync_partial(&sps, node, written).expect("partial sync");
            let took = started.elapsed();
            assert!(report.chains_written > 0, "change {c} wrote nothing");
            *written = now;
            (took, report.render, report.restore)
        })
        .collect()
}

fn ms_frac(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
