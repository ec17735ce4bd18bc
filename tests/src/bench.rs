//! The store benchmark's measurements, the same for Skiff and etcd: they only speak the etcd v3
//! API through etcd-client. Sequential put latency, throughput of concurrent clients, watch
//! delivery latency and leader failover drills, plus the percentile and table helpers that
//! `store-bench` prints with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, WatchOptions};
use tokio::task::JoinSet;

use crate::cluster::{agreed_leader, connect, position_of_member, Cluster};

/// Size of every value the benchmark writes.
pub const VALUE_BYTES: usize = 256;

fn value() -> Vec<u8> {
    vec![b'v'; VALUE_BYTES]
}

/// The `p`-th percentile (0..=100, nearest rank) of `samples`; zero when there are none.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Position in `urls` of the leader, once every member serving there agrees on it.
pub async fn leader_of(urls: &[String]) -> usize {
    let id = agreed_leader(urls).await;
    position_of_member(urls, id)
        .await
        .unwrap_or_else(|| panic!("no member at {urls:?} has the leader's ID {id:x}"))
}

/// Latencies of `ops` sequential puts by one client connected to `url`, after `warmup` puts
/// that are not counted. Every put is acknowledged before the next starts; a failed put ends the
/// run with an error.
pub async fn put_latency(url: &str, warmup: usize, ops: usize) -> Result<Vec<Duration>, String> {
    let mut client = connect(&[url.to_string()]).await;
    let mut samples = Vec::with_capacity(ops);
    for i in 0..warmup + ops {
        let key = format!("bench/lat/{i:08}");
        let start = Instant::now();
        client
            .put(key, value(), None)
            .await
            .map_err(|e| format!("put {i} of the latency run, to {url}: {e}"))?;
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

/// The request each client of a throughput run repeats.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// A put of a new key (a fresh key per operation).
    Put,
    /// A get of the single key [`READ_KEY`], linearizable or serializable.
    Get { serializable: bool },
}

/// The key the range loads read; [`throughput`] writes it before a range load starts.
pub const READ_KEY: &str = "bench/read";

/// Outcome of a throughput run.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    /// Successful operations per second over the run's wall time.
    pub ops_per_sec: f64,
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
}

/// Runs `total` operations of `load` through `clients` concurrent clients, client `c` connected
/// (with a connection of its own) to `urls[c % urls.len()]`. Each client first does `warmup`
/// uncounted operations; the clock starts once every client is connected and warmed up.
pub async fn throughput(
    urls: &[String],
    clients: usize,
    warmup: usize,
    total: usize,
    load: Load,
) -> Throughput {
    if let Load::Get { .. } = load {
        let mut c = connect(urls).await;
        c.put(READ_KEY, value(), None)
            .await
            .expect("write the key the range load reads");
    }
    let mut conns = Vec::with_capacity(clients);
    for c in 0..clients {
        conns.push(connect(&[urls[c % urls.len()].clone()]).await);
    }
    // Warm-up: every connection carries a few requests before the clock starts.
    let mut warm = JoinSet::new();
    for (c, client) in conns.iter().enumerate() {
        let mut client = client.clone();
        warm.spawn(async move {
            for i in 0..warmup {
                let _ = one_op(&mut client, load, c * warmup + i, "warm").await;
            }
        });
    }
    warm.join_all().await;

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for mut client in conns {
        let next = next.clone();
        set.spawn(async move {
            let (mut ok, mut errors) = (0, 0);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return (ok, errors);
                }
                match one_op(&mut client, load, n, "tp").await {
                    Ok(()) => ok += 1,
                    Err(_) => errors += 1,
                }
            }
        });
    }
    let (mut ok, mut errors) = (0, 0);
    for (o, e) in set.join_all().await {
        ok += o;
        errors += e;
    }
    let elapsed = start.elapsed();
    Throughput {
        ops_per_sec: ok as f64 / elapsed.as_secs_f64(),
        ok,
        errors,
        elapsed,
    }
}

async fn one_op(
    client: &mut etcd_client::Client,
    load: Load,
    n: usize,
    tag: &str,
) -> Result<(), etcd_client::Error> {
    match load {
        Load::Put => client
            .put(format!("bench/{tag}/{n:08}"), value(), None)
            .await
            .map(drop),
        Load::Get { serializable } => {
            let opts = serializable.then(|| GetOptions::new().with_serializable());
            let resp = client.get(READ_KEY, opts).await?;
            assert_eq!(resp.kvs().len(), 1, "{READ_KEY} must exist");
            Ok(())
        }
    }
}

/// Watch delivery latency: a watcher on the prefix `bench/watch/` through `watcher_url`, and
/// one writer through `writer_url` putting `warmup + events` keys one after the other (each
/// acknowledged before the next). A key's latency runs from the start of its put call to the
/// arrival of its event at the watcher; the first `warmup` are not counted. A failed put, a
/// broken stream or an event missing after 60 s ends the run with an error.
pub async fn watch_latency(
    writer_url: &str,
    watcher_url: &str,
    warmup: usize,
    events: usize,
) -> Result<Vec<Duration>, String> {
    let n = warmup + events;
    let mut watcher = connect(&[watcher_url.to_string()]).await;
    let mut stream = watcher
        .watch("bench/watch/", Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("open a watch stream: {e}"))?;
    match stream.message().await {
        Ok(Some(created)) if created.created() => {}
        other => return Err(format!("watch creation answered {other:?}")),
    }

    let receiver = tokio::spawn(async move {
        let mut arrived: Vec<Option<Instant>> = vec![None; n];
        let mut seen = 0;
        while seen < n {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                other => {
                    return Err(format!(
                        "watch stream ended after {seen} of {n} events: {other:?}"
                    ))
                }
            };
            let now = Instant::now();
            for ev in resp.events() {
                let kv = ev.kv().expect("put events carry the key");
                let key = String::from_utf8_lossy(kv.key());
                let i: usize = key["bench/watch/".len()..].parse().expect("numbered key");
                if arrived[i].replace(now).is_none() {
                    seen += 1;
                }
            }
        }
        drop(stream);
        Ok(arrived)
    });

    let mut writer = connect(&[writer_url.to_string()]).await;
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        writer
            .put(format!("bench/watch/{i:06}"), value(), None)
            .await
            .map_err(|e| format!("watched put {i}, to {writer_url}: {e}"))?;
        sent.push(start);
    }
    let arrived = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .map_err(|_| "watched events still missing 60 s after the last put".to_string())?
        .map_err(|e| format!("watch receiver: {e}"))??;
    Ok(sent
        .iter()
        .zip(arrived)
        .skip(warmup)
        // The receiver returns only once every key has arrived.
        .map(|(s, a)| a.unwrap_or(*s).duration_since(*s))
        .collect())
}

/// How a failover drill probes for the first acknowledged write after the kill.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// A new put attempt starts this often, whether or not earlier ones have answered.
    pub every: Duration,
    /// Each attempt is abandoned after this long.
    pub attempt_timeout: Duration,
    /// The drill gives up (and records no time) after this long.
    pub give_up: Duration,
}

/// Leader failover drills: each finds the leader (Status on every member, once they agree),
/// connects a client to the other members, SIGKILLs the leader and measures the time from the
/// kill to the first acknowledged put through the survivors; then it restarts the killed member
/// and waits until all members agree on a leader before the next drill. `None` is a drill that
/// gave up; a put failing before the kill ends the run with an error.
pub async fn failover(
    target: &mut Cluster,
    drills: usize,
    probe: Probe,
) -> Result<Vec<Option<Duration>>, String> {
    let urls = target.client_urls();
    let mut times = Vec::with_capacity(drills);
    for d in 0..drills {
        let leader = leader_of(&urls).await;
        let survivors: Vec<String> = urls
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != leader)
            .map(|(_, u)| u.clone())
            .collect();
        let mut client = connect(&survivors).await;
        // Both connections carry a request before the clock starts.
        for i in 0..4 {
            client
                .put(format!("bench/failover/{d}/warm{i}"), value(), None)
                .await
                .map_err(|e| format!("put before failover drill {d}: {e}"))?;
        }

        let killed_at = Instant::now();
        target.kill(leader);
        times.push(first_put_after(&client, d, killed_at, probe).await);

        target.restart(leader);
        agreed_leader(&urls).await;
    }
    Ok(times)
}

async fn first_put_after(
    client: &etcd_client::Client,
    drill: usize,
    since: Instant,
    probe: Probe,
) -> Option<Duration> {
    let mut attempts = JoinSet::new();
    let mut tick = tokio::time::interval(probe.every);
    let mut n = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if since.elapsed() > probe.give_up {
                    return None;
                }
                let mut c = client.clone();
                let key = format!("bench/failover/{drill}/{n}");
                n += 1;
                let limit = probe.attempt_timeout;
                attempts.spawn(async move {
                    match tokio::time::timeout(limit, c.put(key, value(), None)).await {
                        Ok(Ok(_)) => Some(Instant::now()),
                        _ => None,
                    }
                });
            }
            Some(done) = attempts.join_next() => {
                if let Ok(Some(at)) = done {
                    attempts.abort_all();
                    return Some(at.duration_since(since));
                }
            }
        }
    }
}

/// A table of `metric | Skiff | etcd | Skiff/etcd` rows, printed as Markdown.
#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    /// A row of durations, shown in milliseconds.
    pub fn millis(&mut self, metric: &str, skiff: Duration, etcd: Duration) {
        self.rows.push([
            metric.to_string(),
            format!("{:.2} ms", skiff.as_secs_f64() * 1e3),
            format!("{:.2} ms", etcd.as_secs_f64() * 1e3),
            ratio(skiff.as_secs_f64(), etcd.as_secs_f64()),
        ]);
    }

    /// A row of rates, shown in operations per second.
    pub fn rate(&mut self, metric: &str, skiff: f64, etcd: f64) {
        self.rows.push([
            metric.to_string(),
            format!("{skiff:.0} ops/s"),
            format!("{etcd:.0} ops/s"),
            ratio(skiff, etcd),
        ]);
    }

    pub fn render(&self) -> String {
        let header = ["metric", "Skiff", "etcd", "Skiff/etcd"];
        let mut widths = header.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: [&str; 4]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| match i {
                    0 => format!("{c:<w$}"),
                    _ => format!("{c:>w$}"),
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(header);
        // Cells are padded by one space each side; numbers are right-aligned.
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| match i {
                0 => "-".repeat(w + 2),
                _ => format!("{}:", "-".repeat(w + 1)),
            })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
        }
        out
    }
}

fn ratio(skiff: f64, etcd: f64) -> String {
    if etcd > 0.0 {
        format!("{:.2}", skiff / etcd)
    } else {
        "-".to_string()
    }
}

/// The proportional set size of process `pid` in bytes (pages shared with other processes
/// counted in part), from /proc/PID/smaps_rollup (0 when it cannot be read): what one more
/// such process really costs when many run the same program.
pub fn pss_bytes(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:") * 1024
}

/// The resident set of process `pid` in bytes (0 when it cannot be read).
pub fn rss_bytes(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:") * 1024
}

/// Where the resident set of process `pid` lies, from `/proc/PID/smaps`: bytes per mapped file
/// and permissions (`skiff-agent (r-xp)` is its code), `[heap]`, `[stack]`, and `[anon]` for
/// the other anonymous mappings (thread stacks, allocator arenas), largest first.
pub fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut by: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: `start-end perms offset dev inode [path]`.
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            current = match fields.get(5) {
                Some(path) if path.starts_with('[') => (*path).to_string(),
                Some(path) => format!(
                    "{} ({})",
                    path.rsplit('/').next().unwrap_or(path),
                    fields.get(1).copied().unwrap_or("?")
                ),
                None => "[anon]".to_string(),
            };
        } else if fields.first() == Some(&"Rss:") {
            let kib: u64 = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            *by.entry(current.clone()).or_default() += kib * 1024;
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, b)| *b > 0).collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.1));
    v
}

/// The `kB` value on the line of `file` that starts with `field` (0 when there is none).
fn proc_kib(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_processs_memory_is_read_from_proc() {
        let me = std::process::id();
        let (rss, pss) = (rss_bytes(me), pss_bytes(me));
        assert!(rss > 0 && pss > 0 && pss <= rss, "rss {rss}, pss {pss}");
        assert_eq!(rss_bytes(u32::MAX), 0, "no such process");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&samples, 50.0), ms(50));
        assert_eq!(percentile(&samples, 99.0), ms(99));
        assert_eq!(percentile(&samples, 100.0), ms(100));
        assert_eq!(percentile(&[ms(7)], 99.0), ms(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::default();
        t.rate("put throughput", 1000.0, 2000.0);
        t.millis("p50", Duration::from_millis(3), Duration::from_millis(2));
        let text = t.render();
        let widths: Vec<usize> = text.lines().map(str::len).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(
            text.contains("| 0.50 |") || text.contains("0.50 |"),
            "{text}"
        );
        assert!(text.contains("1.50"), "{text}");
    }
}
