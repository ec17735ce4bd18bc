//! What goes through the Raft log: commands for the state machine and their results.
//!
//! etcd's own request messages are reused as payloads (they derive serde), so a forwarded client
//! request is replicated exactly as the client sent it.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::pb::etcdserverpb as pb;

/// A deterministic change to the replicated state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put(pb::PutRequest),
    DeleteRange(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    /// Grants lease `id` (chosen at random by the replica that received the request when the
    /// client left it 0, so that the log carries the ID every replica applies).
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revokes a lease and deletes its keys; also how the leader expires a lease.
    LeaseRevoke {
        id: i64,
    },
    /// A member announces its name and client URLs once it has started.
    PublishMember {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// Fixes the cluster ID; proposed by a leader that was started to bootstrap the cluster while
    /// none is set (applied only the first time).
    SetClusterId(u64),
}

/// A command's successful result. Response headers carry only the revision here; the gRPC layer
/// fills in cluster, member and term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compact(pb::CompactionResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    Done,
}

/// What applying a command produced; errors are deterministic, hence part of the replicated result.
pub type CommandOutcome = Result<CommandResult, StoreError>;

/// The Raft application-data response type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied(pub CommandOutcome);
