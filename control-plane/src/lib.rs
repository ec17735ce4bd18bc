//! `skiff-server`: one control-plane replica. It runs the replicated store and serves, on the
//! client port, the etcd v3 API and the Skiff API (`skiff.v1`), and, on the replica elected
//! to, the scheduler and controllers.

pub mod apiserver;
pub mod config;
pub mod controllers;
pub mod cron;
pub mod node_agent;
pub use skiff_api::quantity;
pub mod scheduler;
pub mod serve;
