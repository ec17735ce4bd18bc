//! The etcd v3 gRPC API served on the client port: KV, Watch, Lease, Cluster, Maintenance and
//! Election. Each service is a thin adapter over [`Replica`]; errors carry etcd's codes and
//! messages.

pub mod cluster;
pub mod election;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;

use prost::Message;
use tonic::Status;

use crate::error::{Code, StoreError, MAX_REQUEST_BYTES};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::replica::Replica;

/// The etcd API version Skiff reports in Status (what its behaviour follows).
pub const ETCD_API_VERSION: &str = "3.5.0";

pub fn status_of(e: StoreError) -> Status {
    let msg = e.to_string();
    match e.code() {
        Code::InvalidArgument => Status::invalid_argument(msg),
        Code::NotFound => Status::not_found(msg),
        Code::FailedPrecondition => Status::failed_precondition(msg),
        Code::OutOfRange => Status::out_of_range(msg),
        Code::Unavailable => Status::unavailable(msg),
        Code::Internal => Status::internal(msg),
    }
}

/// Refuses requests above etcd's request size limit before anything is proposed.
pub fn check_size(msg: &impl Message) -> Result<(), Status> {
    if msg.encoded_len() > MAX_REQUEST_BYTES {
        return Err(status_of(StoreError::RequestTooLarge));
    }
    Ok(())
}

/// Fills the replica-specific parts of a response header.
pub fn header(replica: &Replica, revision: i64) -> Option<ResponseHeader> {
    let cluster_id = replica.sm.read().cluster_id();
    Some(ResponseHeader {
        cluster_id,
        member_id: replica.id,
        revision,
        raft_term: replica.term(),
    })
}

/// Completes a header the state machine filled with the revision only.
pub fn complete(replica: &Replica, h: &mut Option<ResponseHeader>) {
    let revision = h.as_ref().map(|h| h.revision).unwrap_or(0);
    *h = header(replica, revision);
}

pub type Shared = Arc<Replica>;
