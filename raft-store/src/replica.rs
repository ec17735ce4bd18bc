//! One member of the store cluster: the Raft handle, the state machine, and the requests that need
//! the leader. Any replica accepts any request: a follower forwards what only the leader can
//! serve (writes, read index, lease keep-alive and TTL, membership changes) over the peer port and
//! answers its client as if the leader had been called.
//!
//! The leader also runs the duties loop: it expires leases (deadlines restart from the full TTL
//! whenever leadership changes, as etcd does), compacts history automatically (`auto_compact`),
//! fixes the cluster ID once, and every replica
//! publishes its own name and client URLs through the log. Every replica also asks the leader
//! now and then whether it is still a member; one that was removed shuts down, as etcd's does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ReadPolicy, ServerState};

use crate::auto_compact::{AutoCompaction, AutoCompactor};
use crate::error::StoreError;
use crate::forward::{ForwardError, ForwardResult, LeaderRequest, LeaderResponse};
use crate::machine::command::{Command, CommandResult};
use crate::pb::etcdserverpb::{CompactionRequest, LeaseGrantResponse};
use crate::raft::network::Peers;
use crate::raft::state_machine::Shared;
use crate::raft::{PeerNode, Raft};

/// How long a client call may wait for a leader and for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A learner may be promoted once it has replicated this share of the leader's log (etcd: 90%).
const PROMOTE_READY_RATIO: f64 = 0.9;

/// Lease deadlines, valid only for the leader term they were set in.
#[derive(Default)]
struct LeaseClock {
    term: u64,
    deadlines: HashMap<i64, Instant>,
}

/// A snapshot of Raft's view for status reports.
#[derive(Clone, Debug, Default)]
pub struct RaftStatus {
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
}

/// Sizes and positions of a replica's store, for status reports and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub revision: i64,
    pub compact_revision: i64,
    /// The database's files.
    pub db_bytes: u64,
    /// The part of them holding live data.
    pub db_bytes_in_use: u64,
    /// Entries kept in the Raft log (behind and after the last snapshot).
    pub log_entries: u64,
    /// The current snapshot's body.
    pub snapshot_bytes: u64,
}

/// How long a database usage reading is reused (it walks every page).
const USAGE_FRESH_FOR: Duration = Duration::from_secs(2);

/// One member of the membership, as reported by MemberList.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// Who a replica is.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
    /// Cluster ID to fix if the cluster has none yet (set by the bootstrapping replicas).
    pub bootstrap_cluster_id: u64,
}

/// How a replica runs its duties (from the flags).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Shortest lease TTL granted, in seconds (etcd: 1.5 election timeouts, rounded up).
    pub min_lease_ttl: i64,
    /// What the leader compacts on its own.
    pub auto_compaction: AutoCompaction,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_lease_ttl: 1,
            auto_compaction: AutoCompaction::Off,
        }
    }
}

pub struct Replica {
    pub id: u64,
    pub identity: Identity,
    pub raft: Raft,
    pub sm: Arc<Shared>,
    pub peers: Peers,
    pub settings: Settings,
    leases: Mutex<LeaseClock>,
    compaction: Mutex<AutoCompactor>,
    usage: Mutex<Option<(Instant, crate::mvcc::backend::Usage)>>,
    stats_seen: Mutex<(Instant, crate::stats::Snapshot)>,
}

/// The current leader and its peer URL, if it is known and still a member (a leader that has
/// removed itself keeps leading for a moment but cannot be reached through the membership).
fn leader_of(m: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> Option<(u64, String)> {
    let leader = m.current_leader?;
    let node = m.membership_config.membership().get_node(&leader)?;
    Some((leader, node.peer_url.clone()))
}

/// A Raft API error as a forwarded request's error: "not the leader" (the caller retries) or a
/// store failure.
fn not_leader_or(
    e: openraft::errors::RaftError<
        crate::raft::TypeConfig,
        openraft::errors::ClientWriteError<crate::raft::TypeConfig>,
    >,
) -> ForwardError {
    if e.forward_to_leader().is_some() {
        ForwardError::NotLeader
    } else {
        ForwardError::Store(StoreError::Internal(e.to_string()))
    }
}

/// Whether a failed forward certainly did not reach the leader, so a retry cannot duplicate it.
fn never_delivered(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains("connect")
}

impl Replica {
    pub fn new(
        identity: Identity,
        raft: Raft,
        sm: Arc<Shared>,
        peers: Peers,
        settings: Settings,
    ) -> Self {
        Self {
            id: identity.id,
            identity,
            raft,
            sm,
            peers,
            settings,
            leases: Mutex::new(LeaseClock::default()),
            compaction: Mutex::new(AutoCompactor::new(settings.auto_compaction)),
            usage: Mutex::new(None),
            stats_seen: Mutex::new((Instant::now(), crate::stats::Snapshot::default())),
        }
    }

    /// What this replica's store holds and takes (database usage is read at most every two
    /// seconds).
    pub async fn store_stats(&self) -> StoreStats {
        let cached = *self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let usage = match cached {
            Some((at, u)) if at.elapsed() < USAGE_FRESH_FOR => u,
            _ => {
                let backend = self.sm.read().backend().clone();
                let u = tokio::task::spawn_blocking(move || backend.usage())
                    .await
                    .unwrap_or_default();
                *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), u));
                u
            }
        };
        let (revision, compact_revision) = {
            let m = self.sm.read();
            (m.kv.current_rev(), m.kv.compact_rev())
        };
        let metrics = self.raft.metrics().borrow_watched().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let purged = metrics.purged.map_or(0, |l| l.index + 1);
        StoreStats {
            revision,
            compact_revision,
            db_bytes: usage.on_disk,
            db_bytes_in_use: usage.in_use,
            log_entries: (last + 1).saturating_sub(purged),
            snapshot_bytes: self.sm.snapshot_bytes(),
        }
    }

    /// Grants a lease of at least `ttl` seconds (raised to the minimum TTL) with ID `id`, or a
    /// random one when `id` is 0. The ID and TTL are fixed before proposing, so every replica
    /// applies the same lease.
    pub async fn grant_lease(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, StoreError> {
        let id = if id == 0 {
            rand::Rng::gen_range(&mut rand::thread_rng(), 1..i64::MAX)
        } else {
            id
        };
        let ttl = ttl.max(self.settings.min_lease_ttl);
        match self.write(Command::LeaseGrant { id, ttl }).await? {
            CommandResult::LeaseGrant(r) => Ok(r),
            other => Err(StoreError::Internal(format!(
                "unexpected result for lease grant: {other:?}"
            ))),
        }
    }

    /// Revokes a lease, deleting its keys.
    pub async fn revoke_lease(&self, id: i64) -> Result<(), StoreError> {
        self.write(Command::LeaseRevoke { id }).await.map(|_| ())
    }

    /// Renews a lease on the leader: its TTL, or 0 when the lease does not exist. The leader
    /// answers only after a quorum confirmed it still leads, so a renewal that succeeded was
    /// seen by the leader every later leader succeeds: the lease cannot expire earlier than
    /// its TTL after the call was made.
    pub async fn keep_alive(&self, id: i64) -> Result<i64, StoreError> {
        match self
            .leader_call(LeaderRequest::LeaseKeepAlive(id), true)
            .await?
        {
            LeaderResponse::LeaseTtl(ttl) => Ok(ttl),
            other => Err(StoreError::Internal(format!(
                "unexpected keep-alive answer {other:?}"
            ))),
        }
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        RaftStatus {
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_learner: m.state == ServerState::Learner,
        }
    }

    /// The current Raft term (every response header carries it).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let machine = self.sm.read();
        membership
            .nodes()
            .map(|(id, node)| {
                let attrs = machine.member_attrs(*id).cloned().unwrap_or_default();
                MemberInfo {
                    id: *id,
                    name: attrs.name,
                    peer_urls: vec![node.peer_url.clone()],
                    client_urls: attrs.client_urls,
                    is_learner: !voters.contains(id),
                }
            })
            .collect()
    }

    fn leader_url(&self) -> Option<(u64, String)> {
        leader_of(&self.raft.metrics().borrow_watched())
    }

    /// Replicates a command through the leader and returns its result once this replica has
    /// applied it as well, so a later serializable read or watch progress here reflects it.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, StoreError> {
        match self.leader_call(LeaderRequest::Write(cmd), false).await? {
            LeaderResponse::Write { outcome, index } => {
                self.raft
                    .wait(Some(REQUEST_TIMEOUT))
                    .applied_index_at_least(Some(index), "forwarded write")
                    .await
                    .map_err(|_| StoreError::Timeout)?;
                outcome
            }
            other => Err(StoreError::Internal(format!(
                "unexpected leader answer {other:?}"
            ))),
        }
    }

    /// Waits until this replica's state reflects every write acknowledged before the call.
    pub async fn linearize(&self) -> Result<(), StoreError> {
        let LeaderResponse::ReadIndex(log_id) =
            self.leader_call(LeaderRequest::ReadIndex, true).await?
        else {
            return Err(StoreError::Internal("unexpected read-index answer".into()));
        };
        self.raft
            .wait(Some(REQUEST_TIMEOUT))
            .applied_index_at_least(log_id.map(|l| l.index), "read index")
            .await
            .map_err(|_| StoreError::Timeout)?;
        Ok(())
    }

    /// Serves `req` on the leader, locally or by forwarding, waiting (bounded) through elections.
    /// Non-idempotent requests are retried only when they certainly did not reach a leader.
    pub async fn leader_call(
        &self,
        req: LeaderRequest,
        idempotent: bool,
    ) -> Result<LeaderResponse, StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if self.leader_url().is_none() {
                    StoreError::NoLeader
                } else {
                    StoreError::Timeout
                });
            }
            match self.leader_url() {
                None => {
                    // Wait for the same condition `leader_url` needs; a weaker one (any current
                    // leader, even one no longer a member) would return at once and spin.
                    let _ = self
                        .raft
                        .wait(Some(remaining.min(Duration::from_millis(200))))
                        .metrics(|m| leader_of(m).is_some(), "a leader that is a member")
                        .await;
                }
                Some((leader, _)) if leader == self.id => {
                    match self.serve_leader(req.clone()).await {
                        Ok(resp) => return Ok(resp),
                        Err(ForwardError::Store(e)) => return Err(e),
                        Err(ForwardError::NotLeader) => self.pause().await,
                    }
                }
                Some((_, url)) => {
                    let started = Instant::now();
                    let answer = self.peers.forward(&url, &req, remaining).await;
                    if matches!(req, LeaderRequest::Write(_)) {
                        crate::stats::WRITE.forwarded.add(started.elapsed());
                    }
                    match answer {
                        Ok(Ok(resp)) => return Ok(resp),
                        Ok(Err(ForwardError::Store(e))) => return Err(e),
                        Ok(Err(ForwardError::NotLeader)) => self.pause().await,
                        Err(status) if idempotent || never_delivered(&status) => self.pause().await,
                        Err(status) => {
                            tracing::warn!(%status, "forwarded write lost with the leader");
                            return Err(StoreError::Timeout);
                        }
                    }
                }
            }
        }
    }

    /// Backs off briefly before retrying a leader call (a leader change is in progress).
    async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Serves a leader-only request on this replica, or says it is not the leader.
    pub async fn serve_leader(&self, req: LeaderRequest) -> ForwardResult {
        if let LeaderRequest::FindMember { peer_url } = &req {
            let found = self
                .members()
                .into_iter()
                .find(|m| m.peer_urls.contains(peer_url));
            return Ok(LeaderResponse::Member(found.map(|m| m.id)));
        }
        if !self.raft.is_leader() {
            return Err(ForwardError::NotLeader);
        }
        match req {
            LeaderRequest::Write(cmd) => {
                let started = Instant::now();
                let resp = self.raft.client_write(cmd).await.map_err(not_leader_or)?;
                crate::stats::WRITE.leader_writes.add(started.elapsed());
                Ok(LeaderResponse::Write {
                    outcome: resp.data.0,
                    index: resp.log_id.index,
                })
            }
            LeaderRequest::ReadIndex => {
                let (read, _) = self
                    .raft
                    .get_read_log_id(ReadPolicy::ReadIndex)
                    .await
                    // Not the leader, or no quorum confirmed it (yet): the caller retries until
                    // its deadline.
                    .map_err(|_| ForwardError::NotLeader)?;
                Ok(LeaderResponse::ReadIndex(Some(*read.log_id())))
            }
            LeaderRequest::LeaseKeepAlive(id) => {
                let ttl = self.sm.read().leases.get(id).map(|l| l.ttl);
                let Some(ttl) = ttl else {
                    return Ok(LeaderResponse::LeaseTtl(0));
                };
                // A deposed leader that has not noticed yet must not renew: a quorum confirms
                // this replica still leads (as etcd does since 3.5.11).
                self.raft
                    .get_read_log_id(ReadPolicy::ReadIndex)
                    .await
                    .map_err(|_| ForwardError::NotLeader)?;
                let term = self.term();
                let mut clock = self.lease_clock(term);
                clock
                    .deadlines
                    .insert(id, Instant::now() + Duration::from_secs(ttl as u64));
                Ok(LeaderResponse::LeaseTtl(ttl))
            }
            LeaderRequest::LeaseTimeToLive(id) => {
                let lease = self.sm.read().leases.get(id).cloned();
                let Some(lease) = lease else {
                    return Ok(LeaderResponse::TimeToLive {
                        ttl: -1,
                        granted: 0,
                        keys: Vec::new(),
                    });
                };
                let term = self.term();
                let mut clock = self.lease_clock(term);
                let now = Instant::now();
                let deadline = *clock
                    .deadlines
                    .entry(id)
                    .or_insert(now + Duration::from_secs(lease.ttl as u64));
                Ok(LeaderResponse::TimeToLive {
                    ttl: deadline.saturating_duration_since(now).as_secs() as i64,
                    granted: lease.ttl,
                    keys: lease.keys.into_iter().collect(),
                })
            }
            LeaderRequest::MemberAdd { peer_urls, learner } => {
                self.member_add(peer_urls, learner).await
            }
            LeaderRequest::MemberRemove(id) => {
                let member = self.members().into_iter().find(|m| m.id == id);
                let Some(member) = member else {
                    return Err(ForwardError::Store(StoreError::MemberNotFound));
                };
                let change = if member.is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                self.raft
                    .change_membership(change, false)
                    .await
                    .map_err(not_leader_or)?;
                Ok(LeaderResponse::Done)
            }
            LeaderRequest::MemberPromote(id) => {
                let member = self.members().into_iter().find(|m| m.id == id);
                match member {
                    None => return Err(ForwardError::Store(StoreError::MemberNotFound)),
                    Some(m) if !m.is_learner => {
                        return Err(ForwardError::Store(StoreError::MemberNotLearner))
                    }
                    Some(_) => {}
                }
                let metrics = self.raft.metrics().borrow_watched().clone();
                let leader_index = metrics.last_log_index.unwrap_or(0) as f64;
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index as f64)
                    .unwrap_or(0.0);
                if matched < leader_index * PROMOTE_READY_RATIO {
                    return Err(ForwardError::Store(StoreError::LearnerNotReady));
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(not_leader_or)?;
                Ok(LeaderResponse::Done)
            }
            LeaderRequest::IsMember(id) => Ok(LeaderResponse::IsMember(
                self.members().iter().any(|m| m.id == id),
            )),
            LeaderRequest::FindMember { .. } => unreachable!("answered above"),
        }
    }

    async fn member_add(&self, peer_urls: Vec<String>, learner: bool) -> ForwardResult {
        let Some(peer_url) = peer_urls.first().cloned() else {
            return Err(ForwardError::Store(StoreError::InvalidArgument(
                "member add needs a peer URL".into(),
            )));
        };
        if self
            .members()
            .iter()
            .any(|m| m.peer_urls.contains(&peer_url))
        {
            return Err(ForwardError::Store(StoreError::PeerUrlExists));
        }
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = crate::ids::member_id(&peer_url, &salt.to_string());
        self.raft
            .add_learner(id, PeerNode { peer_url }, false)
            .await
            .map_err(not_leader_or)?;
        if !learner {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(not_leader_or)?;
        }
        Ok(LeaderResponse::MemberAdded(id))
    }

    /// The lease clock for leader term `term`; a new term restarts every deadline from its TTL.
    fn lease_clock(&self, term: u64) -> std::sync::MutexGuard<'_, LeaseClock> {
        let mut clock = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if clock.term != term {
            clock.term = term;
            clock.deadlines.clear();
        }
        clock
    }

    /// Leases whose deadline passed, seen from leader term `term`.
    fn expired_leases(&self, term: u64) -> Vec<i64> {
        let granted: BTreeMap<i64, i64> = self.sm.read().leases.ids().collect();
        let now = Instant::now();
        let mut clock = self.lease_clock(term);
        clock.deadlines.retain(|id, _| granted.contains_key(id));
        let mut expired = Vec::new();
        for (id, ttl) in granted {
            let deadline = *clock
                .deadlines
                .entry(id)
                .or_insert(now + Duration::from_secs(ttl as u64));
            if deadline <= now {
                expired.push(id);
            }
        }
        expired
    }

    /// Asks the leader whether this replica is still a member: the leader of the peers this
    /// replica knows answers (followers refuse leader-only requests). `Some(false)` only when a
    /// leader said so; `None` when no leader could be asked.
    pub async fn still_a_member(&self) -> Option<bool> {
        if self.raft.is_leader() {
            return Some(true);
        }
        let metrics = self.raft.metrics().borrow_watched().clone();
        let mut urls: Vec<String> = Vec::new();
        if let Some((_, url)) = leader_of(&metrics) {
            urls.push(url);
        }
        for (id, node) in metrics.membership_config.membership().nodes() {
            if *id != self.id && !urls.contains(&node.peer_url) {
                urls.push(node.peer_url.clone());
            }
        }
        for url in urls {
            let req = LeaderRequest::IsMember(self.id);
            if let Ok(Ok(LeaderResponse::IsMember(answer))) =
                self.peers.forward(&url, &req, Duration::from_secs(1)).await
            {
                return Some(answer);
            }
        }
        None
    }

    /// Automatic compaction on the leader (see `auto_compact`).
    async fn auto_compact(&self, leading: bool) {
        let due = {
            let mut c = self.compaction.lock().unwrap_or_else(|p| p.into_inner());
            if !leading {
                c.reset();
                return;
            }
            let (current, compacted) = {
                let m = self.sm.read();
                (m.kv.current_rev(), m.kv.compact_rev())
            };
            c.due(Instant::now(), current, compacted)
        };
        let Some(revision) = due else {
            return;
        };
        let cmd = Command::Compact(CompactionRequest {
            revision,
            physical: false,
        });
        match self.raft.client_write(cmd).await {
            Ok(r) => match r.data.0 {
                Ok(_) => tracing::info!(revision, "compacted history (automatic)"),
                Err(e) => tracing::debug!(%e, revision, "automatic compaction refused"),
            },
            Err(e) => tracing::debug!(%e, "automatic compaction not written"),
        }
    }

    /// Logs the write path's counters every 10 s when there were writes (debug level).
    fn log_write_stats(&self) {
        let mut last = self.stats_seen.lock().unwrap_or_else(|p| p.into_inner());
        let (at, before) = *last;
        if at.elapsed() < Duration::from_secs(10) {
            return;
        }
        let now = crate::stats::WRITE.snapshot();
        let delta = now.since(&before);
        if delta.entries > 0 || delta.applied > 0 {
            tracing::debug!(target: "raft_store::stats", "write path: {}", delta.summary());
        }
        *last = (Instant::now(), now);
    }

    /// One round of the periodic duties; see the module comment.
    pub async fn run_duties(&self) {
        self.log_write_stats();
        let metrics = self.raft.metrics().borrow_watched().clone();
        self.auto_compact(metrics.state == ServerState::Leader)
            .await;
        if metrics.state == ServerState::Leader {
            for id in self.expired_leases(metrics.current_term) {
                match self.raft.client_write(Command::LeaseRevoke { id }).await {
                    Ok(_) => tracing::info!(lease = format!("{id:x}"), "lease expired"),
                    Err(e) => tracing::debug!(%e, "lease expiry not written"),
                }
            }
            let cluster_id = self.sm.read().cluster_id();
            if cluster_id == 0 && self.identity.bootstrap_cluster_id != 0 {
                let _ = self
                    .raft
                    .client_write(Command::SetClusterId(self.identity.bootstrap_cluster_id))
                    .await;
            }
        }
        if metrics.current_leader.is_some() {
            let published = self.sm.read().member_attrs(self.id).cloned();
            let mine = crate::machine::MemberAttrs {
                name: self.identity.name.clone(),
                client_urls: self.identity.client_urls.clone(),
            };
            let in_membership = metrics
                .membership_config
                .membership()
                .get_node(&self.id)
                .is_some();
            if in_membership && published.as_ref() != Some(&mine) {
                let cmd = Command::PublishMember {
                    id: self.id,
                    name: mine.name,
                    client_urls: mine.client_urls,
                };
                if let Err(e) = self.write(cmd).await {
                    tracing::debug!(%e, "member attributes not published yet");
                }
            }
        }
    }
}
