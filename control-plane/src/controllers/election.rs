//! Which replica runs the controllers: an election through one key in the store, held with a
//! store lease.
//!
//! - `TERM_KEY` names the holder. It is created (only if absent) with a lease of `LEASE_TTL`
//!   that the holder keeps alive every `RENEW_EVERY`; a keep-alive is answered by the Raft
//!   leader without writing anything, so a cluster left alone does not grow. When the holder
//!   dies its lease expires, the leader revokes it, which deletes the key, and the first
//!   candidate to create it again takes over.
//! - Every write a controller makes carries the fence "TERM_KEY is still at the revision I
//!   created it at", so a replica that lost the election (deposed, or cut off and back) cannot
//!   write.
//! - The holder steps down by itself `step_down(ttl)` after sending its last successful
//!   keep-alive. A keep-alive succeeds only on a leader that a quorum still follows, and every
//!   later leader restarts lease deadlines from its own election, so nobody can expire the
//!   lease (and take over) within the TTL of that send; the margin covers the holder's own tick
//!   and scheduling delays. It steps down at once when the key changed or the lease is gone.
//!
//! With a one-second lease, a dead holder is replaced in a little over a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_store::machine::command::{Command, CommandResult};
use raft_store::pb::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use raft_store::replica::Replica;
use tokio::sync::watch;

use crate::apiserver::registry::{cmp_key, Also};

pub const TERM_KEY: &str = "/skiff/controllers/term";
/// The holder's lease TTL in seconds (the store may raise it to its minimum).
pub const LEASE_TTL: i64 = 1;
/// How often the holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_millis(200);
/// How often a candidate looks for a free election.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// How long after sending its last successful keep-alive the holder of a `ttl`-second lease
/// stops leading: 600 ms for one second, leaving 400 ms for delays.
fn step_down(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(1) as u64).saturating_sub(Duration::from_millis(400))
}

/// What this replica may do: `Some(fence)` while it leads the controllers.
pub type Leadership = watch::Receiver<Option<Fence>>;

/// The proof of leadership a controller's writes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The revision at which `TERM_KEY` was created.
    pub term_revision: i64,
    /// The store lease that holds `TERM_KEY`.
    pub lease: i64,
}

impl Fence {
    /// The compare every fenced write adds.
    pub fn also(&self) -> Also {
        let mut also = Also::default();
        also.require(TERM_KEY, self.term_revision);
        also
    }
}

/// `TERM_KEY`'s mod_revision and value as this replica has it (0 when absent).
fn local(replica: &Replica) -> (i64, String) {
    let req = RangeRequest {
        key: TERM_KEY.as_bytes().to_vec(),
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
    local(replica).1
}

/// Creates `TERM_KEY` naming `me` with `lease` if nobody holds it; the revision written.
async fn claim(replica: &Replica, me: &str, lease: i64) -> Option<i64> {
    let absent: Compare = cmp_key(TERM_KEY, compare::CompareTarget::Create, 0);
    let put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: TERM_KEY.as_bytes().to_vec(),
            value: me.as_bytes().to_vec(),
            lease,
            ..Default::default()
        })),
    };
    let req = TxnRequest {
        compare: vec![absent],
        success: vec![put],
        failure: Vec::new(),
    };
    match replica.write(Command::Txn(req)).await {
        Ok(CommandResult::Txn(r)) if r.succeeded => r.header.map(|h| h.revision),
        _ => None,
    }
}

/// Tries to take the election: a new lease, then the key. Returns the fence and when the lease
/// was asked for (its TTL runs from no earlier than that).
async fn campaign(replica: &Replica, me: &str) -> Option<(Fence, i64, Instant)> {
    let asked = Instant::now();
    let granted = match replica.grant_lease(0, LEASE_TTL).await {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(%e, "no lease for the controller election");
            return None;
        }
    };
    match claim(replica, me, granted.id).await {
        Some(term_revision) => Some((
            Fence {
                term_revision,
                lease: granted.id,
            },
            granted.ttl,
            asked,
        )),
        None => {
            // Someone else was quicker; this lease holds nothing.
            if let Err(e) = replica.revoke_lease(granted.id).await {
                tracing::debug!(%e, "unused election lease left to expire");
            }
            None
        }
    }
}

/// Campaigns and holds leadership for ever, publishing it on `tx`.
pub async fn run(replica: Arc<Replica>, me: String, tx: watch::Sender<Option<Fence>>) {
    loop {
        // A candidate: wait until nobody holds the election (a local read, no writes).
        let (rev, _) = local(&replica);
        if rev != 0 {
            tokio::time::sleep(LOOK_EVERY).await;
            continue;
        }
        let Some((fence, ttl, mut renewed)) = campaign(&replica, &me).await else {
            tokio::time::sleep(LOOK_EVERY).await;
            continue;
        };
        tracing::info!(revision = fence.term_revision, "leading the controllers");
        let _ = tx.send(Some(fence.clone()));
        let why = hold(&replica, &fence, ttl, &mut renewed).await;
        tracing::info!(why, "stopped leading the controllers");
        let _ = tx.send(None);
    }
}

/// Keeps the lease alive until leadership is lost; says why it ended.
async fn hold(replica: &Replica, fence: &Fence, ttl: i64, renewed: &mut Instant) -> &'static str {
    let limit = step_down(ttl);
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (rev, _) = local(replica);
        if rev != fence.term_revision {
            return "the election key changed";
        }
        // A renewal may hang (no quorum); it must not keep the holder from stepping down in
        // time, so it gets only until the step-down deadline.
        let deadline = *renewed + limit;
        let budget = deadline.saturating_duration_since(Instant::now());
        let sent = Instant::now();
        match tokio::time::timeout(budget, replica.keep_alive(fence.lease)).await {
            Ok(Ok(0)) => return "the lease is gone",
            Ok(Ok(_)) => *renewed = sent,
            Ok(Err(e)) => tracing::debug!(%e, "controller lease not renewed"),
            Err(_) => {}
        }
        if renewed.elapsed() >= limit {
            return "the lease could not be renewed in time";
        }
    }
}

/// Gives the election up at once (on shutdown), so that another replica takes over without
/// waiting for the lease to expire.
pub async fn resign(replica: &Replica, leadership: &Leadership) {
    let Some(fence) = leadership.borrow().clone() else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(1), replica.revoke_lease(fence.lease)).await {
        Ok(Ok(())) => tracing::info!("resigned the controller election"),
        Ok(Err(e)) => tracing::warn!(%e, "could not resign the controller election"),
        Err(_) => tracing::warn!("resigning the controller election timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_steps_down_well_inside_its_lease() {
        assert_eq!(step_down(1), Duration::from_millis(600));
        assert_eq!(step_down(2), Duration::from_millis(1600));
        assert!(step_down(1) + RENEW_EVERY < Duration::from_secs(1));
    }
}
