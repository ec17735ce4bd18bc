//! Skiff's shared API: the kinds it serves and where they are stored, selectors, JSON merge
//! patches, errors, the
//! `skiff.v1` gRPC protocol, and a client that fails over between control-plane replicas.

pub mod client;
pub mod deployments;
pub mod error;
pub mod events;
pub mod example_image;
pub mod exec;
pub mod images;
pub mod kinds;
pub mod logs;
pub mod merge;
pub mod object;
pub mod port_forward;
pub mod quantity;
pub mod runtime;
pub mod selector;
mod streams;

/// Code generated from `proto/skiff/v1/api.proto`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/api/skiff.v1.rs"));
}

/// Code generated from `proto/skiff/agent/v1/agent.proto`: the service each node agent serves
/// on its port, for the API server.
pub mod agent_pb {
    tonic::include_proto!("skiff.agent.v1");
}

pub use client::{Client, DeleteOptions, Event, List, Watch, Written};
pub use error::{ApiError, Reason};
pub use kinds::Kind;
pub use logs::{LogOptions, LogStream};

/// The API version string `skiff version` reports.
pub const API_VERSION: &str = "skiff.v1";
