//! etcd's Lease service. Grants and revokes go through the log; keep-alives and TTL queries are
//! answered by the leader, which alone decides when a lease expires.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{complete, header, status_of, Shared};
use crate::forward::{LeaderRequest, LeaderResponse};
use crate::machine::command::{Command, CommandResult};
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::*;

pub struct LeaseService {
    pub replica: Shared,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let mut r = self
            .replica
            .grant_lease(req.id, req.ttl)
            .await
            .map_err(status_of)?;
        complete(&self.replica, &mut r.header);
        Ok(Response::new(r))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        match self
            .replica
            .write(Command::LeaseRevoke { id })
            .await
            .map_err(status_of)?
        {
            CommandResult::LeaseRevoke(mut r) => {
                complete(&self.replica, &mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(Status::internal("unexpected result for lease revoke")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let replica = self.replica.clone();
        let out = request.into_inner().then(move |req| {
            let replica = replica.clone();
            async move {
                let id = req?.id;
                let ttl = replica.keep_alive(id).await.map_err(status_of)?;
                let revision = replica.sm.read().kv.current_rev();
                Ok(LeaseKeepAliveResponse {
                    header: header(&replica, revision),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let resp = self
            .replica
            .leader_call(LeaderRequest::LeaseTimeToLive(req.id), true)
            .await
            .map_err(status_of)?;
        let LeaderResponse::TimeToLive { ttl, granted, keys } = resp else {
            return Err(Status::internal("unexpected time-to-live answer"));
        };
        let revision = self.replica.sm.read().kv.current_rev();
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: header(&self.replica, revision),
            id: req.id,
            ttl,
            granted_ttl: granted,
            keys: if req.keys { keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.replica.linearize().await.map_err(status_of)?;
        let (leases, revision) = {
            let m = self.replica.sm.read();
            let leases = m.leases.ids().map(|(id, _)| LeaseStatus { id }).collect();
            (leases, m.kv.current_rev())
        };
        Ok(Response::new(LeaseLeasesResponse {
            header: header(&self.replica, revision),
            leases,
        }))
    }
}
