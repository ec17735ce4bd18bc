//! How long compacting a million revisions holds up writes. A key space on a real sled database
//! gets 1,000,000 revisions (1,000 keys written 1,000 times each); a writer then puts one key
//! after another, as the state machine applies entries (taking the same kind of lock), while the
//! history below the newest revision is compacted:
//!
//! - **Skiff now:** the index half under the write lock, then the records deleted by
//!   `CompactJob::step` in batches of `compactor::BATCH` beside the writer (not under its lock), with a 1 ms
//!   pause between batches (`compactor::PAUSE`), as `raft::compactor` does;
//! - **all at once** (how Skiff compacted before): the index and every record in one go under
//!   the write lock;
//! - **no compaction:** the writer alone, for the baseline.
//!
//! Printed as one Markdown table: the longest and p99 write latency while each runs.
//!
//! ```sh
//! cargo bench -p raft-store --bench compaction_stall
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft_store::mvcc::backend::{Backend, Batch, SledBackend};
use raft_store::mvcc::kvstore::KvStore;
use raft_store::raft::compactor;

const KEYS: usize = 1_000;
const VERSIONS: usize = 1_000;

fn open() -> (tempfile::TempDir, Arc<SledBackend>, KvStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("sled opens");
    let tree = db.open_tree("state").expect("tree");
    let backend = Arc::new(SledBackend::new(db, tree));
    let mut kv = KvStore::open(backend.clone()).expect("store opens");
    // A million revisions, written in big batches.
    let value = vec![b'v'; 100];
    for round in 0..VERSIONS {
        let mut batch = Batch::default();
        for k in 0..KEYS {
            let mut txn = kv.write();
            txn.put(format!("/bench/key/{k:04}").as_bytes(), value.clone(), 0)
                .expect("put");
            txn.finish(&mut batch);
        }
        backend.write(batch).expect("write");
        if round % 100 == 99 {
            eprintln!("  {} revisions written", (round + 1) * KEYS);
        }
    }
    (dir, backend, kv)
}

#[derive(Clone, Copy, PartialEq)]
enum How {
    Batched,
    AllAtOnce,
    None,
}

struct Run {
    max: Duration,
    p99: Duration,
    writes: usize,
    compaction: Duration,
    index_half: Duration,
}

fn run(how: How) -> Run {
    eprintln!("preparing 1,000,000 revisions");
    let (_dir, backend, kv) = open();
    let kv = Arc::new(RwLock::new(kv));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (kv, backend, stop) = (kv.clone(), backend.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                {
                    let mut kv = kv.write().expect("lock");
                    let mut batch = Batch::default();
                    let mut txn = kv.write();
                    txn.put(format!("/bench/live/{i}").as_bytes(), b"x".to_vec(), 0)
                        .expect("put");
                    txn.finish(&mut batch);
                    backend.write(batch).expect("write");
                }
                latencies.push(started.elapsed());
                i += 1;
                // About 2,000 writes a second, like a busy cluster.
                std::thread::sleep(Duration::from_micros(500));
            }
            latencies
        })
    };
    // Let the writer settle, then compact at the newest revision before the writes began.
    std::thread::sleep(Duration::from_millis(300));
    let at = (KEYS * VERSIONS) as i64;
    let started = Instant::now();
    let mut index_half = Duration::ZERO;
    match how {
        How::None => std::thread::sleep(Duration::from_secs(3)),
        How::AllAtOnce => {
            let mut kv = kv.write().expect("lock");
            let mut batch = Batch::default();
            kv.compact(at, &mut batch).expect("compact");
            backend.write(batch).expect("write");
            index_half = started.elapsed();
            kv.finish_compaction().expect("delete records");
        }
        How::Batched => {
            let mut job = {
                let mut kv = kv.write().expect("lock");
                let mut batch = Batch::default();
                kv.compact(at, &mut batch).expect("compact");
                backend.write(batch).expect("write");
                kv.take_compaction().expect("a job")
            };
            index_half = started.elapsed();
            loop {
                let done = job.step(&*backend, compactor::BATCH).expect("step");
                if done {
                    break;
                }
                std::thread::sleep(compactor::PAUSE);
            }
        }
    }
    let compaction = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let mut latencies = writer.join().expect("writer");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    Run {
        max: *latencies.last().unwrap_or(&Duration::ZERO),
        p99,
        writes: latencies.len(),
        compaction,
        index_half,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let none = run(How::None);
    let batched = run(How::Batched);
    let at_once = run(How::AllAtOnce);
    println!("| compacting 1,000,000 revisions | longest write | p99 write | writes | compaction took | index half | longest / no compaction |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("no compaction (baseline)", &none),
        ("Skiff: index, then records in batches", &batched),
        ("all at once under the write lock", &at_once),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} |",
            ms(r.max),
            ms(r.p99),
            r.writes,
            if r.compaction.is_zero() || name.starts_with("no") {
                "-".to_string()
            } else {
                ms(r.compaction)
            },
            if name.starts_with("no") {
                "-".to_string()
            } else {
                ms(r.index_half)
            },
            r.max.as_secs_f64() / none.max.as_secs_f64().max(1e-9),
        );
    }
}
