//! The MVCC key space with etcd's semantics, independent of Raft and gRPC.
pub mod backend;
pub mod key_index;
pub mod key_range;
pub mod kvstore;
pub mod revision;
