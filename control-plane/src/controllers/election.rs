//! Which replica runs the controllers: an election through two keys in the store.
//!
//! - `TERM_KEY` names the holder and changes only when leadership changes hands. Every write a
//!   controller makes carries the fence "TERM_KEY is still at the revision I won it at", so a
//!   replica that lost the election (deposed, or cut off and back) cannot write.
//! - `RENEW_KEY` is rewritten by the holder every `RENEW_EVERY`. A candidate that sees it
//!   unchanged for `LEASE` (by its own clock) takes over: a transaction that requires the renewal
//!   it saw to be the latest and writes both keys. The holder steps down by itself when it has not
//!   renewed for `STEP_DOWN`, well before anyone can have taken over (the margin covers its own
//!   loop's tick and scheduling delays).
//!
//! With a one-second lease, a dead holder is replaced in a little over a second.

use std::time::{Duration, Instant};

use raft_store::machine::command::{Command, CommandResult};
use raft_store::pb::etcdserverpb::{compare, Compare, RangeRequest, RequestOp, TxnRequest};
use raft_store::replica::Replica;
use tokio::sync::watch;

use crate::apiserver::registry::{cmp_key, put_op, Also};

pub const TERM_KEY: &str = "/skiff/controllers/term";
pub const RENEW_KEY: &str = "/skiff/controllers/renew";
/// How long a silent holder keeps the controllers.
pub const LEASE: Duration = Duration::from_millis(1000);
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_millis(200);
/// How long after sending its last successful renewal the holder stops leading.
pub const STEP_DOWN: Duration = Duration::from_millis(600);

/// What this replica may do: `Some(fence)` while it leads the controllers.
pub type Leadership = watch::Receiver<Option<Fence>>;

/// The proof of leadership a controller's writes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The revision at which `TERM_KEY` was won.
    pub term_revision: i64,
}

impl Fence {
    /// The compare every fenced write adds.
    pub fn also(&self) -> Also {
        let mut also = Also::default();
        also.require(TERM_KEY, self.term_revision);
        also
    }
}

/// A key's mod_revision and value as this replica has it (0 when absent).
fn local(replica: &Replica, key: &str) -> (i64, String) {
    let req = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    match replica.sm.read().range(&req) {
        Ok(r) => r
            .kvs
            .first()
            .map(|kv| {
                (
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .unwrap_or((0, String::new())),
        Err(_) => (0, String::new()),
    }
}

/// The holder's name, as this replica last applied it ("" if none).
pub fn holder(replica: &Replica) -> String {
    local(replica, TERM_KEY).1
}

fn put(key: &str, value: &str) -> RequestOp {
    put_op(key, value.as_bytes().to_vec())
}

fn mod_is(key: &str, revision: i64) -> Compare {
    cmp_key(key, compare::CompareTarget::Mod, revision)
}

/// Runs `compare` then `success`; the revision written, or None when a compare failed or the
/// store did not answer.
async fn txn(replica: &Replica, compare: Vec<Compare>, success: Vec<RequestOp>) -> Option<i64> {
    let req = TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    };
    match replica.write(Command::Txn(req)).await {
        Ok(CommandResult::Txn(r)) if r.succeeded => r.header.map(|h| h.revision),
        _ => None,
    }
}

/// Campaigns and holds leadership for ever, publishing it on `tx`.
pub async fn run(replica: std::sync::Arc<Replica>, me: String, tx: watch::Sender<Option<Fence>>) {
    // The renewal last seen, and since when (by this replica's clock).
    let mut seen = (i64::MIN, Instant::now());
    let mut tick = tokio::time::interval(RENEW_EVERY / 2);
    loop {
        tick.tick().await;
        let leading = tx.borrow().clone();
        match leading {
            Some(fence) => {
                // A renewal may hang (no quorum); it must not keep the holder from stepping
                // down in time, so it gets only until the step-down deadline.
                let deadline = seen.1 + STEP_DOWN;
                let budget = deadline
                    .saturating_duration_since(Instant::now())
                    .min(RENEW_EVERY);
                // Others see this renewal no earlier than it is sent: count the lease from here.
                let sent = Instant::now();
                let renewed = tokio::time::timeout(
                    budget,
                    txn(
                        &replica,
                        vec![mod_is(TERM_KEY, fence.term_revision)],
                        vec![put(RENEW_KEY, &me)],
                    ),
                )
                .await
                .ok()
                .flatten();
                match renewed {
                    Some(_) => seen = (i64::MIN, sent),
                    None => {
                        let (term_rev, _) = local(&replica, TERM_KEY);
                        let lost = term_rev != 0 && term_rev != fence.term_revision;
                        if lost || seen.1.elapsed() >= STEP_DOWN {
                            tracing::info!(lost, "stopped leading the controllers");
                            let _ = tx.send(None);
                            seen = (i64::MIN, Instant::now());
                        }
                    }
                }
            }
            None => {
                let (renew_rev, _) = local(&replica, RENEW_KEY);
                if renew_rev != seen.0 {
                    seen = (renew_rev, Instant::now());
                    if renew_rev != 0 {
                        continue;
                    }
                }
                if renew_rev != 0 && seen.1.elapsed() < LEASE {
                    continue;
                }
                // Nobody holds it, or the holder went silent: take over, if the renewal seen is
                // still the latest (nobody else took over meanwhile).
                let sent = Instant::now();
                let won = txn(
                    &replica,
                    vec![mod_is(RENEW_KEY, renew_rev)],
                    vec![put(TERM_KEY, &me), put(RENEW_KEY, &me)],
                )
                .await;
                if let Some(revision) = won {
                    tracing::info!(revision, "leading the controllers");
                    seen = (i64::MIN, sent);
                    let _ = tx.send(Some(Fence {
                        term_revision: revision,
                    }));
                }
            }
        }
    }
}
