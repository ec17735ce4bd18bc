//! A client workload for fault tests: workers bound to given endpoints read and write a few
//! registers (recorded for the linearizability check) and put unique keys (remembered when
//! acknowledged), until stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use rand::Rng;
use tokio::task::JoinHandle;

use crate::history::{Recorder, RegisterOp};

pub const REGISTERS: [&str; 3] = ["/reg/x", "/reg/y", "/reg/z"];
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct State {
    registers: [Recorder; 3],
    acked: Mutex<BTreeMap<String, String>>,
    stop: AtomicBool,
    next_process: AtomicUsize,
}

pub struct Workload {
    state: Arc<State>,
    workers: Vec<JoinHandle<()>>,
}

impl Workload {
    /// One worker per entry; each talks only to the endpoints it is given.
    pub fn start(endpoints_per_worker: Vec<Vec<String>>) -> Workload {
        let state = Arc::new(State::default());
        let workers = endpoints_per_worker
            .into_iter()
            .map(|eps| tokio::spawn(worker(eps, state.clone())))
            .collect();
        Workload { state, workers }
    }

    /// Register operations recorded so far.
    pub fn operations(&self) -> usize {
        self.state.registers.iter().map(Recorder::operations).sum()
    }

    /// Unique keys acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.state.acked.lock().unwrap().len()
    }

    /// Stops the workers; returns every acknowledged unique key with its value.
    pub async fn stop(self) -> Outcome {
        self.state.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("worker");
        }
        let acked = self.state.acked.lock().unwrap().clone();
        Outcome {
            state: self.state,
            acked,
        }
    }
}

pub struct Outcome {
    state: Arc<State>,
    pub acked: BTreeMap<String, String>,
}

impl Outcome {
    /// Panics unless every acknowledged key is readable (linearizably) through every running
    /// member of `cluster` and all of them hold the same key space at one revision (the first
    /// member's read sets it; later reads ask for it, so keys the control plane changes while
    /// the members are read one after another, such as the controllers' election, cannot make
    /// them differ).
    pub async fn assert_present_everywhere(&self, cluster: &crate::cluster::Cluster) {
        let mut dumps: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        let mut at_revision: Option<i64> = None;
        for (i, m) in cluster.members.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            let c = cluster.client_for(&[i]).await;
            let all = crate::wait::until(
                "a linearizable read through every member",
                Duration::from_secs(30),
                || {
                    let mut c = c.clone();
                    let mut opts = etcd_client::GetOptions::new().with_prefix();
                    if let Some(rev) = at_revision {
                        opts = opts.with_revision(rev);
                    }
                    async move { c.get("/", Some(opts)).await.ok() }
                },
            )
            .await;
            if at_revision.is_none() {
                at_revision = all.header().map(|h| h.revision());
            }
            let got: BTreeMap<String, String> = all
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap_or_default().into(),
                        kv.value_str().unwrap_or_default().into(),
                    )
                })
                .collect();
            for (k, v) in &self.acked {
                assert_eq!(
                    got.get(k),
                    Some(v),
                    "acknowledged {k} missing on {}",
                    m.name
                );
            }
            dumps.push((m.name.clone(), got));
        }
        for pair in dumps.windows(2) {
            assert_eq!(
                pair[0].1, pair[1].1,
                "{} and {} disagree",
                pair[0].0, pair[1].0
            );
        }
    }

    /// Panics unless every register's history is linearizable (and saw some use).
    pub fn assert_linearizable(&self) {
        for (name, r) in REGISTERS.iter().zip(&self.state.registers) {
            assert!(
                r.operations() > 10,
                "too few operations on {name}: {}",
                r.operations()
            );
            assert!(r.is_linearizable(), "history of {name} is not linearizable");
        }
    }
}

async fn worker(endpoints: Vec<String>, state: Arc<State>) {
    let opts = ConnectOptions::new()
        .with_timeout(OP_TIMEOUT)
        .with_connect_timeout(Duration::from_millis(500));
    let mut client = loop {
        if let Ok(c) = Client::connect(endpoints.clone(), Some(opts.clone())).await {
            break c;
        }
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
    };
    let mut process = state.next_process.fetch_add(1, Ordering::Relaxed);
    let mut seq = 0u64;
    while !state.stop.load(Ordering::Relaxed) {
        seq += 1;
        let roll = rand::thread_rng().gen_range(0..10);
        if roll < 2 {
            let key = format!("/uniq/{process}/{seq}");
            let put = tokio::time::timeout(OP_TIMEOUT, client.put(key.clone(), "1", None)).await;
            if matches!(put, Ok(Ok(_))) {
                state.acked.lock().unwrap().insert(key, "1".into());
            }
            continue;
        }
        let r = rand::thread_rng().gen_range(0..REGISTERS.len());
        let recorder = &state.registers[r];
        if roll < 6 {
            let value = (process as u64) * 1_000_000 + seq;
            let call = recorder.call(process, RegisterOp::Write(value));
            match tokio::time::timeout(
                OP_TIMEOUT,
                client.put(REGISTERS[r], value.to_string(), None),
            )
            .await
            {
                Ok(Ok(_)) => recorder.done(call, RegisterOp::Write(value)),
                _ => {
                    recorder.unknown(call);
                    // The pending write may still happen: continue as a new process.
                    process = state.next_process.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let call = recorder.call(process, RegisterOp::Read(None));
            match tokio::time::timeout(OP_TIMEOUT, client.get(REGISTERS[r], None)).await {
                Ok(Ok(resp)) => {
                    let v = resp
                        .kvs()
                        .first()
                        .and_then(|kv| kv.value_str().ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    recorder.done(call, RegisterOp::Read(Some(v)));
                }
                _ => recorder.unknown(call),
            }
        }
    }
}
