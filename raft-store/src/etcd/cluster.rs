//! etcd's Cluster service over Raft membership. Adding a member makes it a Raft learner first
//! (and, unless asked for a learner, a voter right away, as etcd does); promoting checks that the
//! learner has caught up.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use tonic::{Request, Response, Status};

use super::{header, status_of, Shared};
use crate::forward::{LeaderRequest, LeaderResponse};
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::*;
use crate::replica::{MemberInfo, Replica, REQUEST_TIMEOUT};

pub struct ClusterService {
    pub replica: Shared,
}

fn to_member(m: &MemberInfo) -> Member {
    Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

fn member_list(replica: &Replica) -> Vec<Member> {
    replica.members().iter().map(to_member).collect()
}

/// Waits until this replica's membership satisfies `done` (a change committed on the leader
/// reaches followers a moment later).
async fn await_membership(replica: &Replica, done: impl Fn(&[MemberInfo]) -> bool) {
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let mut rx = replica.raft.metrics();
    while !done(&replica.members()) && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
    }
}

fn revision(replica: &Replica) -> i64 {
    replica.sm.read().kv.current_rev()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = request.into_inner();
        if req.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: member add needs at least one peer URL",
            ));
        }
        for u in &req.peer_ur_ls {
            url::Url::parse(u)
                .map_err(|e| Status::invalid_argument(format!("invalid peer URL {u:?}: {e}")))?;
        }
        let resp = self
            .replica
            .leader_call(
                LeaderRequest::MemberAdd {
                    peer_urls: req.peer_ur_ls.clone(),
                    learner: req.is_learner,
                },
                false,
            )
            .await
            .map_err(status_of)?;
        let LeaderResponse::MemberAdded(id) = resp else {
            return Err(Status::internal("unexpected member-add answer"));
        };
        await_membership(&self.replica, |ms| ms.iter().any(|m| m.id == id)).await;
        Ok(Response::new(MemberAddResponse {
            header: header(&self.replica, revision(&self.replica)),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members: member_list(&self.replica),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        self.replica
            .leader_call(LeaderRequest::MemberRemove(id), false)
            .await
            .map_err(status_of)?;
        await_membership(&self.replica, |ms| ms.iter().all(|m| m.id != id)).await;
        Ok(Response::new(MemberRemoveResponse {
            header: header(&self.replica, revision(&self.replica)),
            members: member_list(&self.replica),
        }))
    }

    async fn member_update(
        &self,
        _request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "member update is not supported: remove the member and add it with its new peer URL",
        ))
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: header(&self.replica, revision(&self.replica)),
            members: member_list(&self.replica),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        self.replica
            .leader_call(LeaderRequest::MemberPromote(id), false)
            .await
            .map_err(status_of)?;
        await_membership(&self.replica, |ms| {
            ms.iter().any(|m| m.id == id && !m.is_learner)
        })
        .await;
        Ok(Response::new(MemberPromoteResponse {
            header: header(&self.replica, revision(&self.replica)),
            members: member_list(&self.replica),
        }))
    }
}
