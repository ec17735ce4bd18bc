//! Helpers for the end-to-end tests: real Skiff binaries started as processes on loopback ports
//! with their own data directories, the outside clients that drive them, and the store benchmark's
//! measurements.

pub mod agent;
pub mod bench;
pub mod bins;
pub mod cli;
pub mod cluster;
pub mod containerd;
pub mod dns_wire;
pub mod etcdctl;
pub mod history;
pub mod hollow;
pub mod http;
pub mod multi_host;
pub mod netns;
pub mod pod_tracker;
pub mod registry;
pub mod root;
pub mod soak;
pub mod upstream_dns;
pub mod vm;
pub mod wait;
pub mod workload;
