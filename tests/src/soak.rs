//! The soak: a three-replica cluster with hollow nodes and a Deployment scaled up and down
//! without pause, sampled now and then for what must not grow without bound: the store's
//! revision rate, its compacted revision, database size (on disk and in use), Raft log length,
//! snapshot size and each replica's resident memory. Shared by the `soak` benchmark (30 minutes)
//! and its short version in the test suite.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use skiff_api::Client;

use crate::bench::rss_bytes;
use crate::cluster::Cluster;

/// How the soak runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub sample_every: Duration,
    pub nodes: usize,
    /// The Deployment alternates between these replica counts.
    pub low: u32,
    pub high: u32,
    pub scale_every: Duration,
    /// Extra `skiff-server` flags (compaction retention, snapshot count).
    pub server_args: Vec<String>,
}

/// One replica at one moment.
#[derive(Clone, Debug, Default)]
pub struct ReplicaSample {
    pub name: String,
    pub revision: i64,
    pub compact_revision: i64,
    pub db_bytes: u64,
    pub db_bytes_in_use: u64,
    pub log_entries: u64,
    pub snapshot_bytes: u64,
    pub rss_bytes: u64,
}

/// Every replica at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Duration,
    /// Revisions per second since the previous sample.
    pub revision_rate: f64,
    pub replicas: Vec<ReplicaSample>,
}

async fn sample_replicas(cluster: &Cluster) -> anyhow::Result<Vec<ReplicaSample>> {
    let mut out = Vec::new();
    for (i, m) in cluster.members.iter().enumerate() {
        let client = Client::new(&[m.client_url()])?.with_deadline(Duration::ZERO);
        let st = client
            .cluster_status()
            .await
            .with_context(|| format!("status of {}", m.name))?;
        out.push(ReplicaSample {
            name: m.name.clone(),
            revision: st.revision,
            compact_revision: st.compact_revision,
            db_bytes: st.db_bytes,
            db_bytes_in_use: st.db_bytes_in_use,
            log_entries: st.log_entries,
            snapshot_bytes: st.snapshot_bytes,
            rss_bytes: cluster.pid(i).map_or(0, rss_bytes),
        });
    }
    Ok(out)
}

fn deployment(replicas: u32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "soak", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "soak"}},
            "template": {
                "metadata": {"labels": {"app": "soak"}},
                "spec": {"containers": [{"name": "web", "image": "skiff/hostname:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            }
        }
    })
}

/// The table header [`row`] fills.
pub fn header() -> String {
    "| minute | replica | revisions/s | revision | compacted | db size | db in use | log entries | snapshot | RSS |\n\
     |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        .to_string()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One Markdown table row per replica of `s`.
pub fn rows(s: &Sample) -> String {
    s.replicas
        .iter()
        .map(|r| {
            format!(
                "| {:.1} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                s.at.as_secs_f64() / 60.0,
                r.name,
                s.revision_rate,
                r.revision,
                r.compact_revision,
                mib(r.db_bytes),
                mib(r.db_bytes_in_use),
                r.log_entries,
                mib(r.snapshot_bytes),
                mib(r.rss_bytes),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the soak; `on_sample` sees every sample as it is taken (the first at the start).
pub async fn run(
    settings: &Settings,
    mut on_sample: impl FnMut(&Sample),
) -> anyhow::Result<Vec<Sample>> {
    let args: Vec<&str> = settings.server_args.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with(3, &args).await;
    let mut agent = crate::hollow::start(
        &cluster,
        settings.nodes,
        "soak",
        &["--heartbeat-every", "10"],
    );
    let result = drive(&cluster, settings, &mut on_sample).await;
    let _ = agent.kill();
    let _ = agent.wait();
    if result.is_err() {
        eprintln!("{}", cluster.all_logs());
        let log = std::fs::read_to_string(cluster.root().join("agent-soak.log"));
        eprintln!("--- hollow agent\n{}", log.unwrap_or_default());
    }
    result
}

async fn drive(
    cluster: &Cluster,
    settings: &Settings,
    on_sample: &mut impl FnMut(&Sample),
) -> anyhow::Result<Vec<Sample>> {
    let client = Client::new(&cluster.client_urls())?;
    let nodes = skiff_api::Kind::named("nodes").context("nodes kind")?;
    let wait_from = Instant::now();
    loop {
        let list = client.list(&nodes, None, "skiff.io/hollow=true", "").await;
        if list.is_ok_and(|l| l.items.len() == settings.nodes) {
            break;
        }
        if wait_from.elapsed() > Duration::from_secs(120) {
            bail!("the hollow nodes did not register within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = started;
    let mut next_scale = started;
    let mut high = false;
    loop {
        let now = Instant::now();
        if now >= next_scale {
            let replicas = if high { settings.high } else { settings.low };
            high = !high;
            client
                .apply(&deployment(replicas), "default")
                .await
                .context("scaling the soak Deployment")?;
            next_scale += settings.scale_every;
        }
        if now >= next_sample {
            let replicas = sample_replicas(cluster).await?;
            let at = started.elapsed();
            let revision = replicas.iter().map(|r| r.revision).max().unwrap_or(0);
            let revision_rate = match samples.last() {
                Some(prev) => {
                    let before = prev.replicas.iter().map(|r| r.revision).max().unwrap_or(0);
                    (revision - before) as f64 / (at - prev.at).as_secs_f64().max(1e-3)
                }
                None => 0.0,
            };
            let sample = Sample {
                at,
                revision_rate,
                replicas,
            };
            on_sample(&sample);
            samples.push(sample);
            if at >= settings.duration {
                break;
            }
            next_sample += settings.sample_every;
        }
        let wake = next_sample.min(next_scale);
        tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
    }
    Ok(samples)
}
