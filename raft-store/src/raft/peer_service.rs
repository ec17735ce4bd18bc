//! The server side of the peer protocol: hands Raft RPCs to openraft and serves requests that
//! followers forward to the leader. Malformed input is refused with InvalidArgument and changes
//! nothing.

use std::sync::Arc;

use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use super::network::SnapshotHeader;
use super::{Snapshot, TypeConfig};
use crate::codec;
use crate::forward::LeaderRequest;
use crate::pb::skiffpb::peer_server::Peer;
use crate::pb::skiffpb::Blob;
use crate::replica::Replica;

/// Largest snapshot a peer may stream to us.
const MAX_SNAPSHOT_BYTES: usize = 8 * 1024 * 1024 * 1024;

pub struct PeerService {
    pub replica: Arc<Replica>,
}

fn decode<T: serde::de::DeserializeOwned>(blob: &Blob) -> Result<T, Status> {
    codec::decode(&blob.data).map_err(|e| Status::invalid_argument(format!("peer message: {e}")))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<Blob>, Status> {
    Ok(Response::new(Blob {
        data: codec::encode(value),
    }))
}

/// Decodes a Raft request, hands it to `handle`, and encodes its result (errors as text).
async fn raft_rpc<Req, Resp, E, Fut>(
    request: Request<Blob>,
    handle: impl FnOnce(Req) -> Fut,
) -> Result<Response<Blob>, Status>
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<Resp, E>>,
{
    let req: Req = decode(request.get_ref())?;
    reply(&handle(req).await.map_err(|e| e.to_string()))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        let raft = &self.replica.raft;
        raft_rpc(request, |r: AppendEntriesRequest<TypeConfig>| {
            raft.append_entries(r)
        })
        .await
    }

    async fn vote(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        let raft = &self.replica.raft;
        raft_rpc(request, |r: VoteRequest<TypeConfig>| raft.vote(r)).await
    }

    async fn pre_vote(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        let raft = &self.replica.raft;
        raft_rpc(request, |r: VoteRequest<TypeConfig>| raft.pre_vote(r)).await
    }

    async fn transfer_leader(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        let raft = &self.replica.raft;
        raft_rpc(request, |r: TransferLeaderRequest<TypeConfig>| {
            raft.handle_transfer_leader(r)
        })
        .await
    }

    async fn snapshot(&self, request: Request<Streaming<Blob>>) -> Result<Response<Blob>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let header: SnapshotHeader = decode(&first)?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot larger than 8 GiB"));
            }
            data.extend_from_slice(&chunk.data);
        }
        // Refuse a body that does not decode before handing it to Raft.
        super::state_machine::check_snapshot(&data)
            .map_err(|e| Status::invalid_argument(format!("snapshot body: {e}")))?;
        let snapshot = Snapshot {
            meta: header.meta,
            snapshot: data,
        };
        let res = self
            .replica
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(|e| e.to_string());
        reply(&res)
    }

    async fn forward(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        let req: LeaderRequest = decode(request.get_ref())?;
        let res = self.replica.serve_leader(req).await;
        reply(&res)
    }
}
