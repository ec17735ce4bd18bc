//! The real pod runtime: each pod gets a network namespace attached through CNI, its own
//! /etc files and a cgroup under its QoS class; each container an image made available by the
//! image service and a shim-held container from the runtime. What happened is kept in the
//! pod's record (`record`) so a restarted agent carries on where it was; when a stopped
//! container runs again is decided by `restart`, what it runs by `process` and
//! `container_config`.

pub mod container_config;
pub mod files;
pub mod hooks;
pub mod image_gc;
mod pleg;
pub mod probe_checks;
pub mod probes;
pub mod process;
mod qos_levels;
pub mod record;
pub mod resolv;
pub mod restart;
pub mod service_env;
mod sync;
pub mod volumes;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::Client;

use crate::config::Args;
use crate::events::Recorder;
use crate::image::ImageService;
use crate::network::cni::Cni;
use crate::pod_runtime::{PodObservation, PodRuntime};
use crate::runtime::containers::Containers;
use crate::runtime::log_rotation::LogRotation;
use record::Records;

/// What pods are told about the cluster's Services: its DNS and the Services themselves.
pub struct ClusterServices {
    /// None: pods get the node's resolv.conf.
    pub dns: Option<resolv::ClusterDns>,
    /// Every Service, for the containers' environment variables.
    pub services: skiff_api::runtime::Store<k8s_openapi::api::core::v1::Service>,
}

pub struct RealRuntime {
    client: Client,
    events: Recorder,
    prober: probes::Prober,
    pleg: pleg::Pleg,
    /// What the volumes remember between syncs.
    volume_memory: Mutex<volumes::Memory>,
    /// Containers being stopped because a probe failed, and since when.
    stopping: Mutex<HashMap<String, std::time::Instant>>,
    images: Arc<ImageService>,
    containers: Containers,
    cni: Cni,
    records: Records,
    netns_dir: PathBuf,
    cgroup_root: String,
    /// The values of the QoS class levels, from the pods synced.
    qos_levels: qos_levels::QosLevels,
    pids_limit: Option<i64>,
    host_ip: Ipv4Addr,
    node_memory_bytes: u64,
    /// The cluster's DNS for pods' resolv.conf (None: pods get the node's).
    dns: Option<resolv::ClusterDns>,
    cluster_domain: String,
    resolv_conf: PathBuf,
    /// Every Service, for the containers' Service environment variables.
    services: skiff_api::runtime::Store<k8s_openapi::api::core::v1::Service>,
    /// One lock per pod: a sync and a kill of one pod never run at once.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RealRuntime {
    pub fn open(
        client: Client,
        args: &Args,
        cni: Cni,
        facts: &crate::node::facts::Facts,
        events: Recorder,
        images: Arc<ImageService>,
        cluster: ClusterServices,
    ) -> anyhow::Result<RealRuntime> {
        let containers = Containers::open(args.root_dir.join("containers"), args.shim_path()?)?
            .with_log_rotation(LogRotation {
                max_size: args.container_log_max_size,
                max_files: args.container_log_max_files,
            });
        Ok(RealRuntime {
            client,
            events,
            prober: probes::Prober::new(containers.clone()),
            pleg: pleg::Pleg::default(),
            volume_memory: Mutex::default(),
            stopping: Mutex::default(),
            images,
            containers,
            cni,
            records: Records::under(&args.root_dir),
            netns_dir: args.root_dir.join("netns"),
            cgroup_root: args.cgroup_root.clone(),
            qos_levels: qos_levels::QosLevels::new(&args.cgroup_root),
            pids_limit: (args.pod_pids_limit > 0).then_some(args.pod_pids_limit),
            host_ip: facts.address,
            node_memory_bytes: facts.memory_bytes,
            dns: cluster.dns,
            cluster_domain: args.cluster_domain.clone(),
            resolv_conf: args.resolv_conf.clone(),
            services: cluster.services,
            locks: Mutex::default(),
        })
    }

    fn lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid.to_string())
            .or_default()
            .clone()
    }

    fn forget_lock(&self, uid: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl PodRuntime for RealRuntime {
    async fn sync_pod(&self, pod: &Pod) -> PodObservation {
        let lock = self.lock(&uid(pod));
        let _held = lock.lock().await;
        let obs = sync::sync_pod(self, pod).await;
        self.pleg
            .synced(&uid(pod), &obs, &self.prober, volumes::refreshes(pod));
        obs
    }

    fn needs_sync(&self, pod: &Pod) -> bool {
        self.pleg
            .needs_sync(&uid(pod), &self.containers, &self.prober)
    }

    async fn kill_pod(&self, pod: &Pod, grace: Duration) -> Result<(), String> {
        let u = uid(pod);
        let lock = self.lock(&u);
        let held = lock.lock().await;
        let r = sync::kill_pod(self, Some(pod), &u, grace).await;
        drop(held);
        self.prober.forget(&u, None);
        self.pleg.forget(&u);
        if r.is_ok() {
            self.forget_lock(&u);
        }
        r
    }

    fn pods_held(&self) -> Vec<String> {
        self.records.uids()
    }

    async fn remove_leftover(&self, uid: &str) -> Result<(), String> {
        let lock = self.lock(uid);
        let held = lock.lock().await;
        let r = sync::kill_pod(self, None, uid, Duration::ZERO).await;
        drop(held);
        self.prober.forget(uid, None);
        self.pleg.forget(uid);
        self.forget_lock(uid);
        r
    }
}
