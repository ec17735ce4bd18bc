//! Requests only the Raft leader can serve, as a follower forwards them over the peer port.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::machine::command::{Command, CommandOutcome};
use crate::raft::LogId;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// Replicate a command and return its result.
    Write(Command),
    /// Confirm leadership with a quorum and return the log id a linearizable read must wait for.
    ReadIndex,
    LeaseKeepAlive(i64),
    LeaseTimeToLive(i64),
    /// Which member ID has this peer URL (any replica answers; used by a joining replica).
    FindMember {
        peer_url: String,
    },
    MemberAdd {
        peer_urls: Vec<String>,
        learner: bool,
    },
    MemberRemove(u64),
    MemberPromote(u64),
    /// Whether this member ID is in the leader's membership (a replica asks to learn that it was
    /// removed: the leader stops replicating to a removed member, so it may never see its removal
    /// in its own log).
    IsMember(u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderResponse {
    /// The command's result and the log index it was applied at, so the asking replica can wait
    /// until it has applied the write too (read-your-writes on every replica, as etcd gives).
    Write {
        outcome: CommandOutcome,
        index: u64,
    },
    ReadIndex(Option<LogId>),
    /// Remaining TTL after a keep-alive; 0 when the lease does not exist.
    LeaseTtl(i64),
    TimeToLive {
        ttl: i64,
        granted: i64,
        keys: Vec<Vec<u8>>,
    },
    Member(Option<u64>),
    IsMember(bool),
    MemberAdded(u64),
    Done,
}

/// Why a forwarded request was not served.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader (any more); the sender retries with the leader it names.
    NotLeader,
    Store(StoreError),
}

pub type ForwardResult = Result<LeaderResponse, ForwardError>;
