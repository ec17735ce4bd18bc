//! Skiff's shared API types and client.
//!
//! The object model (Kubernetes kinds) and the `skiff.v1` client land with the API-server issue;
//! until then this crate only names the API version the workspace speaks.

/// The API group/version every Skiff object is served under.
pub const API_VERSION: &str = "skiff.v1";
