//! The pods bound to this node: a manager follows them through a watch (field selector
//! `spec.nodeName`) and keeps one worker per pod, which syncs the pod through the `PodRuntime`
//! and reports its status; the status itself is computed by a pure function.

pub mod manager;
pub mod status;
mod worker;
