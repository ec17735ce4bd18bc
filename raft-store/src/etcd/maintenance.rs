//! etcd's Maintenance service: Status, Alarm (always healthy: Skiff raises no alarms yet),
//! Defragment (a no-op: sled reuses and gives back freed space by itself; see
//! docs/architecture.md), HashKV (to compare replicas), Snapshot (a backup
//! stream) and MoveLeader.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::{header, status_of, Shared, ETCD_API_VERSION};
use crate::error::StoreError;
use crate::mvcc::key_range::KeyRange;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::*;

const BACKUP_CHUNK: usize = 64 * 1024;

pub struct MaintenanceService {
    pub replica: Shared,
}

fn revision(replica: &crate::replica::Replica) -> i64 {
    replica.sm.read().kv.current_rev()
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(AlarmResponse {
            header: header(&self.replica, revision(&self.replica)),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let st = self.replica.status();
        let stats = self.replica.store_stats().await;
        Ok(Response::new(StatusResponse {
            header: header(&self.replica, revision(&self.replica)),
            version: ETCD_API_VERSION.to_string(),
            db_size: stats.db_bytes as i64,
            leader: st.leader.unwrap_or(0),
            raft_index: st.last_log_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors: Vec::new(),
            db_size_in_use: stats.db_bytes_in_use as i64,
            is_learner: st.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Ok(Response::new(DefragmentResponse {
            header: header(&self.replica, revision(&self.replica)),
        }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("Hash is not supported; use HashKV"))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let at = request.into_inner().revision;
        let (hash, compact_revision, rev) = {
            let m = self.replica.sm.read();
            let all =
                m.kv.range(&KeyRange::new(b"\0", b"\0"), at, 0, false)
                    .map_err(status_of)?;
            let mut h = crc32fast::Hasher::new();
            for kv in &all.kvs {
                h.update(&crate::codec::encode(kv));
            }
            (h.finalize(), m.kv.compact_rev(), all.rev)
        };
        Ok(Response::new(HashKvResponse {
            header: header(&self.replica, rev),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let sm = self.replica.sm.clone();
        let body = tokio::task::spawn_blocking(move || sm.backup_body())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status_of(StoreError::Internal(e.to_string())))?;
        let file = crate::backup::seal(body);
        let total = file.len();
        let hdr = header(&self.replica, revision(&self.replica));
        let chunks: Vec<Result<SnapshotResponse, Status>> = file
            .chunks(BACKUP_CHUNK)
            .enumerate()
            .map(|(i, c)| {
                let sent = (i * BACKUP_CHUNK + c.len()) as u64;
                Ok(SnapshotResponse {
                    header: hdr,
                    remaining_bytes: total as u64 - sent,
                    blob: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        if !self.replica.raft.is_leader() {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        if !self
            .replica
            .members()
            .iter()
            .any(|m| m.id == target && !m.is_learner)
        {
            return Err(status_of(StoreError::MemberNotFound));
        }
        self.replica
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MoveLeaderResponse {
            header: header(&self.replica, revision(&self.replica)),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not supported"))
    }
}
