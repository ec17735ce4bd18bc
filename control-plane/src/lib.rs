//! `skiff-server`: one control-plane replica. Today it runs the replicated store and serves the
//! etcd v3 API on the client port; the Skiff API, scheduler and controllers join it in later
//! issues.

pub mod config;
pub mod serve;
