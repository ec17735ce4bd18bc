//! The soak benchmark's short version: three replicas, hollow nodes and a Deployment scaled up
//! and down for a few minutes with a short compaction retention. Compaction must happen, over
//! and over, and the database must stop growing once the retained history is a steady amount.

use std::time::Duration;

use tests::soak::{self, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_database_from_growing() {
    let settings = Settings {
        duration: Duration::from_secs(150),
        sample_every: Duration::from_secs(30),
        nodes: 20,
        low: 10,
        high: 30,
        scale_every: Duration::from_secs(5),
        server_args: vec![
            "--auto-compaction-retention".into(),
            "15s".into(),
            "--snapshot-count".into(),
            "500".into(),
        ],
    };
    let samples = soak::run(&settings, |s| eprintln!("{}", soak::rows(s)))
        .await
        .expect("the soak runs");
    let last = samples.last().expect("samples");
    let middle = &samples[samples.len() / 2];
    for (i, r) in last.replicas.iter().enumerate() {
        let mid = &middle.replicas[i];
        // Compaction happened and kept happening.
        assert!(
            r.compact_revision > mid.compact_revision && mid.compact_revision > 0,
            "{}: compacted at {} by the middle, {} at the end",
            r.name,
            mid.compact_revision,
            r.compact_revision
        );
        // The store kept writing all along, yet the database stopped growing.
        assert!(
            r.revision > mid.revision + 100,
            "{}: the workload stalled",
            r.name
        );
        let growth = r.db_bytes as f64 / mid.db_bytes.max(1) as f64;
        assert!(
            growth <= 1.25,
            "{}: the database grew {:.0}% in the second half ({} -> {} bytes)",
            r.name,
            (growth - 1.0) * 100.0,
            mid.db_bytes,
            r.db_bytes
        );
    }
}
