//! Watch: fan-out of applied changes and the etcd watch streams built on it.
pub mod feed;
pub mod hub;
pub mod session;
