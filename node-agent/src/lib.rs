//! `skiff-agent` as a library: the kubelet of Skiff. It registers this machine as a Node, follows
//! the pods bound to it through a watch, and runs them as containers (images pulled into a
//! content-addressed store, each container an OCI bundle held by its own shim process, a pod
//! network through CNI). Hollow nodes, for tests and benchmarks of the control plane, sit behind
//! the same pod-runtime seam.

pub mod agent;
pub mod config;
pub mod events;
pub mod hollow;
pub mod image;
pub mod network;
pub mod node;
pub mod pod_runtime;
pub mod pods;
pub mod real;
pub mod runtime;
pub mod server;
