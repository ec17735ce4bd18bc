//! Skiff's replicated store: an MVCC key space with etcd's semantics, replicated by openraft over
//! tonic, persisted in sled, and served through the etcd v3 gRPC API.
pub mod authority;
pub mod auto_compact;
pub mod backup;
pub mod codec;
pub mod error;
pub mod etcd;
pub mod forward;
pub mod ids;
pub mod machine;
pub mod memory;
pub mod mvcc;
pub mod pb;
pub mod raft;
pub mod replica;
pub mod server;
pub mod stats;
pub mod watch;
