//! Raft replication with openraft: the type configuration (declared once), the sled log store, the
//! state-machine store, the tonic network and the peer service that receives its calls.

pub mod compactor;
pub mod log_store;
pub mod network;
pub mod peer_service;
pub mod snapshot_file;
pub mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::machine::command::{Applied, Command};

/// What Raft knows about a member: where its peer port is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_url: String,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put(p) => write!(f, "put {:?}", String::from_utf8_lossy(&p.key)),
            Command::DeleteRange(d) => write!(f, "delete {:?}", String::from_utf8_lossy(&d.key)),
            Command::Txn(t) => write!(f, "txn ({} compares)", t.compare.len()),
            Command::Compact(c) => write!(f, "compact {}", c.revision),
            Command::LeaseGrant { id, ttl } => write!(f, "lease grant {id:x} ttl {ttl}"),
            Command::LeaseRevoke { id } => write!(f, "lease revoke {id:x}"),
            Command::PublishMember { id, name, .. } => write!(f, "publish member {id:x} {name}"),
            Command::SetClusterId(id) => write!(f, "set cluster id {id:x}"),
        }
    }
}

openraft::declare_raft_types!(
    /// Skiff's Raft types.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = PeerNode,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;
