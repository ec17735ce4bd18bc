//! Control loops that keep stored objects consistent. Each is level-triggered: it reads the
//! objects from the shared cache, decides with a pure function what to change, and writes
//! through the API's own paths. They act only on the replica elected to run them (`election`),
//! and every write they make carries that election's fence.

pub mod cache;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod election;
pub mod endpoints;
pub mod gc;
pub mod ipam;
pub mod job;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod pods;
pub mod replicaset;
pub mod runner;
pub mod servicelb;
pub mod statefulset;
pub mod writes;

use std::sync::Arc;

use crate::apiserver::ApiService;
use cache::Cache;
use election::Leadership;

/// What every controller is given.
#[derive(Clone)]
pub struct Context {
    pub api: Arc<ApiService>,
    pub cache: Arc<Cache>,
    pub leadership: Leadership,
    pub node_lifecycle: nodelifecycle::Settings,
    pub pod_network: ipam::PodNetwork,
}
