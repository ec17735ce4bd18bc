//! `soak`: three replicas, 100 hollow nodes and a Deployment scaled between 50 and 150 pods
//! every 10 s for 30 minutes, with Skiff's default compaction (periodic, 5 minutes). Every
//! 5 minutes it prints each replica's revision rate, compacted revision, database size, Raft
//! log length, snapshot size and resident memory; at the end, how each of them moved between
//! minute 10 and minute 30 (a plateau is within ±20%). Results: docs/benchmarks.md.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p tests --bin soak
//! ```
//!
//! `SOAK_MINUTES` shortens or lengthens the run (samples every sixth of it, at most every
//! 5 minutes); `SOAK_RETENTION` sets `--auto-compaction-retention` (default: Skiff's 5m).

use std::time::Duration;

use tests::soak::{self, Sample, Settings};

fn change(
    samples: &[Sample],
    from_min: f64,
    metric: impl Fn(&soak::ReplicaSample) -> f64,
) -> String {
    let at = |min: f64| {
        samples
            .iter()
            .min_by(|a, b| {
                let da = (a.at.as_secs_f64() / 60.0 - min).abs();
                let db = (b.at.as_secs_f64() / 60.0 - min).abs();
                da.total_cmp(&db)
            })
            .cloned()
    };
    let (Some(first), Some(last)) = (at(from_min), samples.last().cloned()) else {
        return "-".into();
    };
    first
        .replicas
        .iter()
        .zip(&last.replicas)
        .map(|(a, b)| {
            let (a, b) = (metric(a), metric(b));
            if a == 0.0 {
                format!("{}: -", b)
            } else {
                format!("{:+.0}%", (b - a) / a * 100.0)
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30.0);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let settings = Settings {
        duration,
        sample_every: (duration / 6).min(Duration::from_secs(300)),
        nodes: 100,
        low: 50,
        high: 150,
        scale_every: Duration::from_secs(10),
        server_args: match std::env::var("SOAK_RETENTION") {
            Ok(r) => vec!["--auto-compaction-retention".into(), r],
            Err(_) => Vec::new(),
        },
    };
    eprintln!("soak: {settings:?}");
    println!("{}", soak::header());
    let samples = soak::run(&settings, |s| println!("{}", soak::rows(s))).await?;
    let from = minutes / 3.0;
    println!();
    println!("Change from minute {from:.0} to the end (replica by replica):");
    println!();
    println!("| metric | change |");
    println!("|---|---|");
    type Metric = fn(&soak::ReplicaSample) -> f64;
    let metrics: [(&str, Metric); 5] = [
        ("db size", |r| r.db_bytes as f64),
        ("db in use", |r| r.db_bytes_in_use as f64),
        ("log entries", |r| r.log_entries as f64),
        ("snapshot", |r| r.snapshot_bytes as f64),
        ("RSS", |r| r.rss_bytes as f64),
    ];
    for (name, metric) in metrics {
        println!("| {name} | {} |", change(&samples, from, metric));
    }
    Ok(())
}
