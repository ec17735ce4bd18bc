//! The seam between the agent's pod loop and what runs pods: the real runtime (containers on
//! this machine) and the hollow nodes (nothing runs; everything reports Running) both implement
//! `PodRuntime`, and both report what they see as a `PodObservation`, from which one pure
//! function (`pods::status`) makes the Pod's status.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// How a container ended (also what the agent's pod records keep).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Terminated {
    pub exit_code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Completed, Error, OOMKilled, ContainerCannotRun, StartError…
    pub reason: String,
    pub message: String,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub container_id: String,
}

/// What a container is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Not running: ContainerCreating, ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
    /// CreateContainerConfigError, PodInitializing…
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

/// One container as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerObservation {
    pub name: String,
    pub image: String,
    /// The image's digest reference ("" until pulled).
    pub image_id: String,
    /// `skiff://<id>` of the current (or last) container, "" before the first one.
    pub container_id: String,
    pub state: RunState,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    /// Passing its readiness probe (or running without one).
    pub ready: bool,
    /// Past its startup probe (or running without one).
    pub started: bool,
}

/// A pod as the runtime sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodObservation {
    pub ip: Option<Ipv4Addr>,
    /// When the agent first began to run the pod.
    pub started_at: Option<Timestamp>,
    pub init_containers: Vec<ContainerObservation>,
    pub containers: Vec<ContainerObservation>,
    /// Why the pod cannot start at all (its sandbox failed), if so.
    pub sandbox_error: Option<String>,
}

/// What runs pods.
pub trait PodRuntime: Send + Sync + 'static {
    /// Moves the pod toward its spec (sandbox, images, containers, restarts) and says what it
    /// sees. Called whenever the pod changes and periodically while it lives.
    fn sync_pod(&self, pod: &Pod) -> impl Future<Output = PodObservation> + Send;

    /// Whether the pod needs a sync before its next periodic one (something changed, or is
    /// due). Called every second between syncs, so it must be cheap.
    fn needs_sync(&self, _pod: &Pod) -> bool {
        true
    }

    /// Stops every container of the pod (preStop, SIGTERM, then SIGKILL after `grace`) and
    /// frees what it held (network, directories).
    fn kill_pod(
        &self,
        pod: &Pod,
        grace: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The uids of the pods the runtime holds anything for (to find leftovers after a restart).
    fn pods_held(&self) -> Vec<String>;

    /// Frees everything held for a pod that no longer exists.
    fn remove_leftover(&self, uid: &str) -> impl Future<Output = Result<(), String>> + Send;
}
