//! etcd's Election service (v3election): Campaign, Proclaim, Leader, Observe and Resign, built
//! like etcd's own server on the `concurrency` election recipe, over the replicated key space.
//!
//! A candidate of election `name` is the key `name/<lease ID in hex>`, attached to its lease; the
//! leader is the key under `name/` with the smallest create revision. Campaign creates the key
//! (or keeps the one the same lease already holds) and waits until every older candidate is
//! gone; a campaign the client cancels resigns, as etcd's does. Waiting follows the watch hub
//! (subscribed before reading, re-reading after a lag or a snapshot install).
//!
//! etcd's election server returns its errors as plain Go errors, so clients see them with gRPC
//! code Unknown and etcd's message (`election: not leader`, `election: no leader`,
//! `etcdserver: requested lease not found`, ...); this module answers the same way.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{header, Shared};
use crate::error::{StoreError, MAX_REQUEST_BYTES};
use crate::machine::command::{Command, CommandResult};
use crate::machine::kv_ops::to_kv;
use crate::mvcc::key_range::{prefix_end, KeyRange};
use crate::mvcc::kvstore::{Event, EventKind};
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::*;
use crate::replica::Replica;
use crate::watch::feed::{Feed, FeedError};
use crate::watch::hub::Notice;

/// TTL of the lease etcd grants for a campaign or proclamation that names no lease (its
/// session's default TTL).
const SESSION_TTL: i64 = 60;
/// Leader responses buffered per Observe stream.
const OBSERVE_BUFFER: usize = 16;

#[derive(Debug, thiserror::Error)]
enum ElectionError {
    #[error("election: not leader")]
    NotLeader,
    #[error("election: no leader")]
    NoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("lost watcher waiting for delete")]
    LostWatcher,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ElectionError> for Status {
    fn from(e: ElectionError) -> Self {
        Status::unknown(e.to_string())
    }
}

pub struct ElectionService {
    pub replica: Shared,
}

/// The key prefix shared by an election's candidates.
fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// `prefix` + the lease ID as Go's `%x` prints an int64.
fn candidate_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = prefix.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k
}

fn create_rev_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// The oldest (`Ascend`) or newest (`Descend`) candidate under `prefix`, at most `max_create`
/// when it is not 0.
fn candidate_query(
    prefix: &[u8],
    order: range_request::SortOrder,
    max_create: i64,
) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: range_request::SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

/// Reads from this replica's state as it is now.
fn read_local(replica: &Replica, req: &RangeRequest) -> Result<RangeResponse, ElectionError> {
    Ok(replica.sm.read().range(req)?)
}

async fn txn(replica: &Replica, t: TxnRequest) -> Result<TxnResponse, ElectionError> {
    if t.encoded_len() > MAX_REQUEST_BYTES {
        return Err(StoreError::RequestTooLarge.into());
    }
    match replica.write(Command::Txn(t)).await? {
        CommandResult::Txn(r) => Ok(r),
        other => Err(StoreError::Internal(format!("unexpected result for txn: {other:?}")).into()),
    }
}

fn revision_of(t: &TxnResponse) -> i64 {
    t.header.as_ref().map(|h| h.revision).unwrap_or(0)
}

/// Puts `value` on `key` while it still has create revision `rev`.
async fn proclaim(
    replica: &Replica,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<TxnResponse, ElectionError> {
    let resp = txn(
        replica,
        TxnRequest {
            compare: vec![create_rev_is(key, rev)],
            success: vec![put_op(key, value, lease)],
            failure: vec![],
        },
    )
    .await?;
    if !resp.succeeded {
        return Err(ElectionError::NotLeader);
    }
    Ok(resp)
}

/// Deletes `key` if it still has create revision `rev`; not being the leader is no error.
async fn resign(replica: &Replica, key: &[u8], rev: i64) -> Result<TxnResponse, ElectionError> {
    let delete = RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    };
    txn(
        replica,
        TxnRequest {
            compare: vec![create_rev_is(key, rev)],
            success: vec![delete],
            failure: vec![],
        },
    )
    .await
}

/// Withdraws a candidacy when a campaign ends without winning because the client went away
/// (its future was dropped), as etcd resigns when the campaign's context is cancelled.
struct ResignOnDrop {
    replica: Option<Shared>,
    key: Vec<u8>,
    rev: i64,
}

impl ResignOnDrop {
    fn disarm(&mut self) {
        self.replica = None;
    }
}

impl Drop for ResignOnDrop {
    fn drop(&mut self) {
        let Some(replica) = self.replica.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, rev) = (std::mem::take(&mut self.key), self.rev);
        rt.spawn(async move {
            match resign(&replica, &key, rev).await {
                Ok(_) => tracing::debug!(key = %String::from_utf8_lossy(&key), "cancelled campaign resigned"),
                Err(e) => tracing::warn!(%e, key = %String::from_utf8_lossy(&key), "cancelled campaign could not resign"),
            }
        });
    }
}

/// etcd's `waitDeletes`: returns once no key under `prefix` has a create revision of at most
/// `max_create`, waiting each time for the deletion of the newest such key.
async fn wait_deletes(
    replica: &Replica,
    prefix: &[u8],
    max_create: i64,
) -> Result<(), ElectionError> {
    if max_create <= 0 {
        // Nothing can be older; and 0 would mean "no bound" to Range.
        return Ok(());
    }
    let query = candidate_query(prefix, range_request::SortOrder::Descend, max_create);
    let mut notices = replica.sm.hub.subscribe();
    replica.linearize().await?;
    loop {
        let resp = read_local(replica, &query)?;
        let Some(older) = resp.kvs.first() else {
            return Ok(());
        };
        let read_rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        // Notices at or below the read revision are already reflected in it.
        loop {
            match notices.recv().await {
                Ok(n) => match &*n {
                    Notice::Changes { revision, events } => {
                        if *revision > read_rev
                            && events
                                .iter()
                                .any(|e| e.kind == EventKind::Delete && e.kv.key == older.key)
                        {
                            break;
                        }
                    }
                    Notice::Reset => break,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Err(ElectionError::LostWatcher),
            }
        }
    }
}

impl ElectionService {
    /// The lease a request's session uses: its own, or (etcd's session default) a new one.
    async fn session_lease(&self, lease: i64) -> Result<i64, ElectionError> {
        if lease != 0 {
            return Ok(lease);
        }
        Ok(self.replica.grant_lease(0, SESSION_TTL).await?.id)
    }

    async fn do_campaign(&self, req: CampaignRequest) -> Result<CampaignResponse, ElectionError> {
        let lease = self.session_lease(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = candidate_key(&prefix, lease);
        let get = RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        };
        let resp = txn(
            &self.replica,
            TxnRequest {
                compare: vec![create_rev_is(&key, 0)],
                success: vec![put_op(&key, &req.value, lease)],
                failure: vec![get],
            },
        )
        .await?;
        let txn_rev = revision_of(&resp);
        let mut guard = ResignOnDrop {
            replica: Some(self.replica.clone()),
            key: key.clone(),
            rev: txn_rev,
        };
        if !resp.succeeded {
            // Campaigning again with the same lease: keep the existing candidacy.
            let existing = resp.responses.first().and_then(|r| match &r.response {
                Some(response_op::Response::ResponseRange(r)) => r.kvs.first(),
                _ => None,
            });
            let Some(existing) = existing else {
                guard.disarm();
                return Err(StoreError::Internal("campaign txn returned no key".into()).into());
            };
            guard.rev = existing.create_revision;
            if existing.value != req.value {
                if let Err(e) = proclaim(&self.replica, &key, guard.rev, lease, &req.value).await {
                    guard.disarm();
                    let _ = resign(&self.replica, &key, existing.create_revision).await;
                    return Err(e);
                }
            }
        }
        let rev = guard.rev;
        let waited = wait_deletes(&self.replica, &prefix, rev - 1).await;
        // Won, or failed for a reason other than the client leaving: the key stays.
        guard.disarm();
        waited?;
        tracing::debug!(key = %String::from_utf8_lossy(&key), rev, "campaign won");
        Ok(CampaignResponse {
            header: header(&self.replica, txn_rev),
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        })
    }

    async fn do_proclaim(&self, req: ProclaimRequest) -> Result<ProclaimResponse, ElectionError> {
        let leader = req.leader.ok_or(ElectionError::MissingLeaderKey)?;
        let lease = self.session_lease(leader.lease).await?;
        let resp = proclaim(&self.replica, &leader.key, leader.rev, lease, &req.value).await?;
        Ok(ProclaimResponse {
            header: header(&self.replica, revision_of(&resp)),
        })
    }

    async fn do_leader(&self, req: LeaderRequest) -> Result<LeaderResponse, ElectionError> {
        let query = candidate_query(&prefix_of(&req.name), range_request::SortOrder::Ascend, 0);
        self.replica.linearize().await?;
        let resp = read_local(&self.replica, &query)?;
        let revision = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        let kv = resp.kvs.into_iter().next().ok_or(ElectionError::NoLeader)?;
        Ok(LeaderResponse {
            header: header(&self.replica, revision),
            kv: Some(kv),
        })
    }

    async fn do_resign(&self, req: ResignRequest) -> Result<ResignResponse, ElectionError> {
        let leader = req.leader.ok_or(ElectionError::MissingLeaderKey)?;
        let resp = resign(&self.replica, &leader.key, leader.rev).await?;
        Ok(ResignResponse {
            header: header(&self.replica, revision_of(&resp)),
        })
    }
}

/// The Observe client went away.
struct Gone;

/// One Observe stream: follows the leader key, sending its value each time it is put, and moves
/// to the next leader when that key is deleted (etcd's `observe` loop over the watch hub).
struct Observer {
    replica: Shared,
    query: RangeRequest,
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, Status>>,
    /// The key being followed and its create revision; `None` waits for the first candidate.
    leader: Option<(Vec<u8>, i64)>,
    /// Mod revision of the last value sent for the followed key.
    last_sent: i64,
    /// Every change up to this revision has been looked at.
    synced: i64,
}

impl Observer {
    async fn run(mut self) {
        if let Err(e) = self.replica.linearize().await {
            let _ = self.tx.send(Err(ElectionError::from(e).into())).await;
            return;
        }
        let range = KeyRange::new(&self.prefix, &prefix_end(&self.prefix));
        loop {
            // The current leader from the state, then every change after it through the
            // store's change feed (which replays what a slow observer missed). If the feed
            // falls behind compaction, start over from the state.
            if self.resync().await.is_err() {
                return;
            }
            let mut feed = Feed::new(self.replica.sm.clone(), range.clone(), self.synced + 1);
            loop {
                let batch = tokio::select! {
                    _ = self.tx.closed() => return,
                    b = feed.next() => b,
                };
                match batch {
                    Ok(batch) => {
                        for events in batch
                            .events
                            .chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision)
                        {
                            let revision = events[0].kv.mod_revision;
                            if self.on_changes(revision, events).await.is_err() {
                                return;
                            }
                        }
                        self.synced = self.synced.max(batch.revision);
                    }
                    Err(FeedError::Compacted { .. }) => break,
                    Err(FeedError::Closed) => return,
                    Err(e) => {
                        let _ = self.tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                }
            }
        }
    }

    async fn send(&mut self, revision: i64, kv: KeyValue) -> Result<(), Gone> {
        self.leader = Some((kv.key.clone(), kv.create_revision));
        self.last_sent = kv.mod_revision;
        let resp = LeaderResponse {
            header: header(&self.replica, revision),
            kv: Some(kv),
        };
        self.tx.send(Ok(resp)).await.map_err(|_| Gone)
    }

    /// Reads the current leader from the local state and sends it unless already sent.
    async fn resync(&mut self) -> Result<(), Gone> {
        let resp = match read_local(&self.replica, &self.query) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.tx.send(Err(e.into())).await;
                return Err(Gone);
            }
        };
        self.synced = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        match resp.kvs.into_iter().next() {
            Some(kv) => {
                let same = self.leader.as_ref() == Some(&(kv.key.clone(), kv.create_revision));
                if same && kv.mod_revision <= self.last_sent {
                    return Ok(());
                }
                let synced = self.synced;
                self.send(synced, kv).await
            }
            None => {
                self.leader = None;
                Ok(())
            }
        }
    }

    async fn on_changes(&mut self, revision: i64, events: &[Event]) -> Result<(), Gone> {
        if revision <= self.synced {
            return Ok(());
        }
        self.synced = revision;
        match self.leader.clone() {
            Some((key, _)) => {
                for e in events.iter().filter(|e| e.kv.key == key) {
                    match e.kind {
                        EventKind::Put => self.send(revision, to_kv(&e.kv)).await?,
                        // The state already includes this revision: find the next leader.
                        EventKind::Delete => return self.resync().await,
                    }
                }
                Ok(())
            }
            None => {
                // The first candidate put under the prefix becomes the followed leader.
                let first = events
                    .iter()
                    .find(|e| e.kind == EventKind::Put && e.kv.key.starts_with(&self.prefix));
                match first {
                    Some(e) => self.send(e.kv.mod_revision, to_kv(&e.kv)).await,
                    None => Ok(()),
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        Ok(Response::new(self.do_campaign(request.into_inner()).await?))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        Ok(Response::new(self.do_proclaim(request.into_inner()).await?))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        Ok(Response::new(self.do_leader(request.into_inner()).await?))
    }

    type ObserveStream = ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let observer = Observer {
            replica: Arc::clone(&self.replica),
            query: candidate_query(&prefix, range_request::SortOrder::Ascend, 0),
            prefix,
            tx,
            leader: None,
            last_sent: 0,
            synced: 0,
        };
        tokio::spawn(observer.run());
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        Ok(Response::new(self.do_resign(request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_keys_print_the_lease_as_go_does() {
        assert_eq!(
            candidate_key(b"e/", 0x694d77aa9e38260f),
            b"e/694d77aa9e38260f".to_vec()
        );
        assert_eq!(candidate_key(b"e/", -255), b"e/-ff".to_vec());
    }

    #[test]
    fn errors_carry_etcds_messages_with_code_unknown() {
        let s: Status = ElectionError::NotLeader.into();
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::Unknown, "election: not leader")
        );
        let s: Status = ElectionError::NoLeader.into();
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::Unknown, "election: no leader")
        );
        let s: Status = ElectionError::from(StoreError::LeaseNotFound).into();
        assert_eq!(s.message(), "etcdserver: requested lease not found");
    }
}
