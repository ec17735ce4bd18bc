//! Errors a client can cause or observe, with etcd's wording so that etcd clients recognise them.
//!
//! The state machine returns these as part of a command's result (they are deterministic and so
//! identical on every replica); the gRPC layer maps each to etcd's status code.

use serde::{Deserialize, Serialize};

/// Largest request the store accepts (etcd's default `--max-request-bytes`).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// Most operations one Txn branch may hold (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// Largest lease TTL etcd accepts, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// gRPC status codes used by etcd for these errors (tonic's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    OutOfRange,
    Unavailable,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl StoreError {
    /// The gRPC code etcd answers this error with.
    pub fn code(&self) -> Code {
        use StoreError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | InvalidArgument(_) => Code::InvalidArgument,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists | PeerUrlExists | MemberNotLearner | LearnerNotReady => {
                Code::FailedPrecondition
            }
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoLeader | Timeout => Code::Unavailable,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<crate::mvcc::backend::BackendError> for StoreError {
    fn from(e: crate::mvcc::backend::BackendError) -> Self {
        StoreError::Internal(e.to_string())
    }
}
