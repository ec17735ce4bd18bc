//! The client side of the peer protocol: openraft's network (AppendEntries, Vote, full snapshots)
//! and the forwarding of leader-only requests, both over one lazily connected tonic channel per
//! peer URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use tonic::transport::{Channel, Endpoint};

use super::{PeerNode, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::codec;
use crate::forward::{ForwardResult, LeaderRequest};
use crate::pb::skiffpb::peer_client::PeerClient;
use crate::pb::skiffpb::Blob;

/// Largest peer message (snapshot chunks are smaller).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// First message of a snapshot stream.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

/// Channels to peers by URL, shared by Raft replication and request forwarding.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub fn client(&self, url: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(url) {
            Some(c) => c.clone(),
            None => {
                // Keep-alives notice a dead connection (a peer gone or cut off) within about two
                // seconds instead of TCP's minutes.
                let c = Endpoint::from_shared(url.to_string())?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(1))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                map.insert(url.to_string(), c.clone());
                c
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }

    /// Forgets the channel to `url` after a timeout or an unreachable peer, so that the next call
    /// dials a fresh connection rather than waiting on one a partition left hanging.
    pub fn reset(&self, url: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(url);
    }

    /// Sends a leader-only request to the peer at `url`.
    pub async fn forward(
        &self,
        url: &str,
        req: &LeaderRequest,
        timeout: Duration,
    ) -> Result<ForwardResult, tonic::Status> {
        let mut client = self
            .client(url)
            .map_err(|e| tonic::Status::unavailable(format!("bad peer URL {url}: {e}")))?;
        let mut request = tonic::Request::new(Blob {
            data: codec::encode(req),
        });
        request.set_timeout(timeout);
        let reply = client.forward(request).await.inspect_err(|s| {
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) {
                self.reset(url);
            }
        })?;
        codec::decode(&reply.into_inner().data).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

pub struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> Self::Network {
        PeerConnection {
            target,
            url: node.peer_url.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// The unary Raft RPCs of the peer protocol.
#[derive(Clone, Copy, Debug)]
enum RaftRpc {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

pub struct PeerConnection {
    target: u64,
    url: String,
    peers: Peers,
}

type RemoteResult<T> = Result<T, String>;

impl PeerConnection {
    async fn call<Req, Resp>(
        &mut self,
        rpc: RaftRpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.url)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(Blob {
            data: codec::encode(req),
        });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            RaftRpc::Append => client.append(request).await,
            RaftRpc::Vote => client.vote(request).await,
            RaftRpc::PreVote => client.pre_vote(request).await,
            RaftRpc::TransferLeader => client.transfer_leader(request).await,
        };
        let reply = reply.map_err(|s| {
            let err = status_to_rpc(self.target, s);
            if !matches!(err, RPCError::Network(_)) {
                self.peers.reset(&self.url);
            }
            err
        })?;
        let decoded: RemoteResult<Resp> = codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|msg| RPCError::Network(NetworkError::from_string(msg)))
    }
}

fn status_to_rpc(target: u64, s: tonic::Status) -> RPCError<TypeConfig> {
    let msg = format!("peer {target:x}: {}", s.message());
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::from_string(msg))
        }
        _ => RPCError::Network(NetworkError::from_string(msg)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::PreVote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftRpc::TransferLeader, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .peers
            .client(&self.url)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let header = Blob {
            data: codec::encode(&SnapshotHeader {
                vote,
                meta: snapshot.meta.clone(),
            }),
        };
        let chunks: Vec<Blob> = std::iter::once(header)
            .chain(
                snapshot
                    .snapshot
                    .chunks(SNAPSHOT_CHUNK)
                    .map(|c| Blob { data: c.to_vec() }),
            )
            .collect();
        let mut request = tonic::Request::new(tokio_stream::iter(chunks));
        request.set_timeout(option.hard_ttl().max(Duration::from_secs(60)));
        let reply = client.snapshot(request).await.map_err(|s| {
            let err = status_to_rpc(self.target, s);
            if !matches!(err, RPCError::Network(_)) {
                self.peers.reset(&self.url);
            }
            StreamingError::from(err)
        })?;
        let decoded: RemoteResult<SnapshotResponse<TypeConfig>> =
            codec::decode(&reply.into_inner().data)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|msg| StreamingError::Network(NetworkError::from_string(msg)))
    }
}
