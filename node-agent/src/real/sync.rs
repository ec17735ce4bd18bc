//! One sync of one pod, and stopping one: the kubelet's SyncPod and KillPod for Skiff. A sync
//! makes sure the pod's sandbox (network namespace through CNI, /etc files) exists, then walks
//! the init containers in order and, once they all succeeded, the app containers: a running
//! container is observed, a stopped one is restarted under the restart policy and back-off, a
//! missing one is pulled and started. Every decision lands in the pod's record before the
//! next step, so an agent killed at any point picks up from the record and the shims' files.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_api::Kind;

use super::container_config::{container_config, pod_resources, user, PodContext};
use super::files;
use super::probes::Outcome;
use super::process::{self, ImageProcess, Sources};
use super::qos_levels;
use super::record::{ContainerRecord, PodRecord};
use super::restart::should_restart;
use super::volumes;
use super::RealRuntime;
use crate::image::registries::DockerConfigJson;
use crate::image::{ImageService, PullPolicy};
use crate::network::cni::PortMapping;
use crate::network::netns;
use crate::pod_runtime::{ContainerObservation, PodObservation, RunState, Terminated};
use crate::runtime::cgroups::{pod_cgroup_path, qos_class, remove_cgroup, QosClass};
use crate::runtime::containers::Containers;
use crate::runtime::containers::{ContainerState, StartRequest};
use crate::runtime::pod_cgroup;

use super::hooks::{self, Hook};
use super::probe_checks::Target;

/// What a container gets between SIGTERM and SIGKILL at least, after its preStop hook (the
/// kubelet's minimum).
const MIN_STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a stopped pod's containers get after SIGKILL to be seen gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often a stopping pod's containers are looked at.
const STOP_POLL: Duration = Duration::from_millis(50);

fn waiting(reason: &str, message: impl Into<String>) -> RunState {
    RunState::Waiting {
        reason: reason.into(),
        message: message.into(),
    }
}

fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// A new container ID: 32 random bytes in hex, as Docker's.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let t = Timestamp::now().as_nanosecond().to_le_bytes();
        bytes[..16].copy_from_slice(&t);
    }
    hex::encode(bytes)
}

/// The pod's cgroup, relative to the cgroup mounts.
fn pod_cgroup(root: &str, pod: &Pod) -> PathBuf {
    let qos = pod
        .spec
        .as_ref()
        .map(qos_class)
        .unwrap_or(QosClass::BestEffort);
    pod_cgroup_path(root, qos, pod.metadata.uid.as_deref().unwrap_or_default())
}

fn log_path(rt: &RealRuntime, pod: &Pod, name: &str, restart: i32) -> PathBuf {
    rt.records
        .dir
        .parent()
        .map(|root| root.join("logs"))
        .unwrap_or_else(|| PathBuf::from("logs"))
        .join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default()
        ))
        .join(name)
        .join(format!("{restart}.log"))
}

/// The hostPort mappings of a pod's containers, for the portmap plugin.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                host_i_p: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// What the pod's volumes need from the runtime.
fn volume_host<'a>(rt: &'a RealRuntime, uid: &str) -> volumes::Host<'a> {
    volumes::Host::new(
        &rt.client,
        &rt.events,
        rt.records.pod_dir(uid),
        rt.node_memory_bytes,
        &rt.volume_memory,
    )
}

/// Brings the sandbox up: namespace, CNI, /etc files. Returns the pod's address.
async fn sandbox(rt: &RealRuntime, pod: &Pod, rec: &mut PodRecord) -> Result<(), String> {
    let uid = rec.uid.clone();
    let ns_path = rt.netns_dir.join(&uid);
    if rec.ip.is_none() || !netns::exists(&ns_path) {
        if !netns::exists(&ns_path) {
            netns::create(&ns_path).map_err(|e| e.to_string())?;
        }
        let attached = match rt.cni.attached(&uid) {
            Some(a) if rec.ip == Some(a.ip) => a,
            _ => rt
                .cni
                .add(&uid, &ns_path, &port_mappings(pod))
                .await
                .map_err(|e| format!("failed to set up sandbox network: {e}"))?,
        };
        rec.ip = Some(attached.ip);
    }
    let etc = rt.records.pod_dir(&uid).join("etc");
    if !etc.join("resolv.conf").exists() {
        std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
        let node_resolv = std::fs::read_to_string(&rt.resolv_conf).unwrap_or_default();
        let write = |name: &str, text: String| {
            std::fs::write(etc.join(name), text)
                .map_err(|e| format!("writing the pod's {name}: {e}"))
        };
        write("hosts", files::hosts(pod, rec.ip, &rt.cluster_domain))?;
        write("hostname", format!("{}\n", files::hostname(pod)))?;
        write(
            "resolv.conf",
            super::resolv::resolv_conf(pod, &node_resolv, rt.dns.as_ref()),
        )?;
    }
    // Every sync, not only the first: after a restart the levels learn the pods again.
    if let Err(e) = rt.qos_levels.set(&uid, Some(qos_levels::demand(pod))) {
        tracing::warn!(uid, %e, "QoS cgroup levels not written");
    }
    if !rec.cgroup_ready {
        let limits = pod_resources(&pod.spec.clone().unwrap_or_default(), rt.pids_limit);
        pod_cgroup::ensure(&pod_cgroup(&rt.cgroup_root, pod), &limits)
            .map_err(|e| format!("failed to create the pod's cgroup: {e}"))?;
        rec.cgroup_ready = true;
    }
    Ok(())
}

pub(super) async fn sync_pod(rt: &RealRuntime, pod: &Pod) -> PodObservation {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let loaded = rt.records.load(&uid);
    let mut rec = loaded.clone().unwrap_or_else(|| PodRecord {
        uid: uid.clone(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        started_at: Some(Timestamp::now()),
        ..Default::default()
    });
    let spec = pod.spec.clone().unwrap_or_default();
    let mut obs = PodObservation {
        started_at: rec.started_at,
        ..Default::default()
    };
    let creating = |c: &Container| ContainerObservation {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        container_id: String::new(),
        state: waiting("ContainerCreating", ""),
        last_terminated: None,
        restart_count: 0,
        ready: false,
        started: false,
    };
    if let Err(e) = sandbox(rt, pod, &mut rec).await {
        tracing::warn!(pod = %pod_label(pod), %e, "sandbox");
        obs.sandbox_error = Some(e);
        obs.init_containers = spec
            .init_containers
            .iter()
            .flatten()
            .map(creating)
            .collect();
        obs.containers = spec.containers.iter().map(creating).collect();
        save_changed(rt, loaded.as_ref(), &rec);
        return obs;
    }
    obs.ip = rec.ip;
    volumes::refresh(&volume_host(rt, &uid), pod).await;
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    // Init containers restart on failure unless the pod never restarts anything.
    let init_policy = if policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    let mut initialized = true;
    for c in spec.init_containers.iter().flatten() {
        let o = if initialized {
            container(rt, pod, &mut rec, c, init_policy).await
        } else {
            let mut o = creating(c);
            o.state = waiting("PodInitializing", "");
            o
        };
        let done = matches!(&o.state, RunState::Terminated(t) if t.exit_code == 0);
        initialized &= done;
        obs.init_containers.push(o);
    }
    for c in &spec.containers {
        let o = if initialized {
            container(rt, pod, &mut rec, c, &policy).await
        } else {
            let mut o = creating(c);
            o.state = waiting("PodInitializing", "");
            o
        };
        obs.containers.push(o);
    }
    save_changed(rt, loaded.as_ref(), &rec);
    obs
}

/// Writes the record when this sync changed it (most syncs of a running pod change nothing).
fn save_changed(rt: &RealRuntime, loaded: Option<&PodRecord>, rec: &PodRecord) {
    if loaded != Some(rec) {
        save(rt, rec);
    }
}

fn save(rt: &RealRuntime, rec: &PodRecord) {
    if let Err(e) = rt.records.save(rec) {
        tracing::error!(uid = %rec.uid, %e, "pod record not saved");
    }
}

fn observation(c: &Container, r: &ContainerRecord, state: RunState) -> ContainerObservation {
    probed(
        c,
        r,
        state,
        Outcome {
            started: true,
            ready: true,
            failed: false,
        },
    )
}

/// The observation of a container whose probes say `outcome`.
fn probed(
    c: &Container,
    r: &ContainerRecord,
    state: RunState,
    outcome: Outcome,
) -> ContainerObservation {
    let running = matches!(state, RunState::Running { .. });
    ContainerObservation {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: r.image_id.clone(),
        container_id: if r.id.is_empty() {
            String::new()
        } else {
            format!("skiff://{}", r.id)
        },
        state,
        last_terminated: r.last.clone(),
        restart_count: r.restart_count,
        ready: running && outcome.ready,
        started: running && outcome.started,
    }
}

/// Tells, in Events, what changed about a container since it was last told.
fn announce(rt: &RealRuntime, pod: &Pod, c: &Container, r: &mut ContainerRecord, state: &RunState) {
    let key = match state {
        RunState::Waiting { reason, .. } => reason.clone(),
        RunState::Running { .. } => "Running".to_string(),
        RunState::Terminated(t) => format!("Terminated:{}", t.reason),
    };
    if r.shown == key {
        return;
    }
    r.shown = key;
    let image = c.image.clone().unwrap_or_default();
    let ev = &rt.events;
    match state {
        RunState::Waiting { reason, message } => match reason.as_str() {
            "CrashLoopBackOff" => ev.warning(
                pod,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    c.name,
                    pod_label(pod)
                ),
            ),
            "ImagePullBackOff" => {
                ev.normal(
                    pod,
                    "BackOff",
                    format!("Back-off pulling image \"{image}\""),
                );
                ev.warning(pod, "Failed", "Error: ImagePullBackOff");
            }
            "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                // The status says "failed to pull…"; the Event, as the kubelet's, "Failed…".
                let mut chars = message.chars();
                let told = chars
                    .next()
                    .map(|f| f.to_uppercase().chain(chars).collect::<String>())
                    .unwrap_or_default();
                ev.warning(pod, "Failed", told);
                ev.warning(pod, "Failed", format!("Error: {reason}"));
            }
            "CreateContainerConfigError" => ev.warning(pod, "Failed", format!("Error: {message}")),
            _ => {}
        },
        RunState::Terminated(t) if t.reason == "StartError" => {
            ev.warning(pod, "Failed", format!("Error: {}", t.message))
        }
        _ => {}
    }
}

/// Observes one container and starts it when it should run, telling what changed.
async fn container(
    rt: &RealRuntime,
    pod: &Pod,
    rec: &mut PodRecord,
    c: &Container,
    policy: &str,
) -> ContainerObservation {
    let o = observe(rt, pod, rec, c, policy).await;
    if let Some(r) = rec.containers.get_mut(&c.name) {
        announce(rt, pod, c, r, &o.state);
    }
    o
}

async fn observe(
    rt: &RealRuntime,
    pod: &Pod,
    rec: &mut PodRecord,
    c: &Container,
    policy: &str,
) -> ContainerObservation {
    let now = Timestamp::now();
    let mut r = rec.containers.get(&c.name).cloned().unwrap_or_default();
    if !r.id.is_empty() && r.ended.is_none() {
        match rt.containers.state(&r.id) {
            ContainerState::Running { started_at, .. } => {
                rec.containers.insert(c.name.clone(), r.clone());
                let outcome = match rec.ip {
                    Some(ip) => rt.prober.observe(&rt.events, pod, c, &r.id, ip),
                    None => Outcome::default(),
                };
                if let (true, Some(ip)) = (outcome.failed, rec.ip) {
                    stop_unhealthy(rt, pod, c, &r.id, ip);
                }
                return probed(c, &r, RunState::Running { started_at }, outcome);
            }
            ContainerState::Exited(exit) => {
                rt.stopping
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&r.id);
                r.ended = Some(Terminated {
                    exit_code: exit.exit_code,
                    signal: exit.signal,
                    reason: exit.reason,
                    message: exit.message,
                    started_at: exit.started_at,
                    finished_at: exit.finished_at,
                    container_id: format!("skiff://{}", r.id),
                });
            }
            ContainerState::Unknown => {
                r.ended = Some(Terminated {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    message: "The container could not be located when the pod was synced".into(),
                    finished_at: Some(now),
                    container_id: format!("skiff://{}", r.id),
                    ..Default::default()
                });
            }
        }
    }
    if let Some(ended) = r.ended.clone() {
        if !should_restart(policy, ended.exit_code) {
            rec.containers.insert(c.name.clone(), r.clone());
            return observation(c, &r, RunState::Terminated(ended.clone()));
        }
        r.crash_backoff
            .reset_after_run(ended.started_at, ended.finished_at);
        let since = ended.finished_at.unwrap_or(now);
        if r.crash_backoff.remaining(since, now).is_some() {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                r.crash_backoff.delay_secs,
                c.name,
                pod_label(pod)
            );
            // While backing off, the ended run is the last state.
            let mut shown = r.clone();
            shown.last = Some(ended);
            rec.containers.insert(c.name.clone(), r);
            return observation(c, &shown, waiting("CrashLoopBackOff", message));
        }
    }
    let state = start(rt, pod, rec, c, &mut r).await;
    rec.containers.insert(c.name.clone(), r.clone());
    match (&state, rec.ip) {
        // A container just started is probed from now on: not ready before its probes say so.
        (RunState::Running { .. }, Some(ip)) => {
            let outcome = rt.prober.observe(&rt.events, pod, c, &r.id, ip);
            probed(c, &r, state, outcome)
        }
        _ => observation(c, &r, state),
    }
}

/// Stops a container a probe found unhealthy: its preStop hook and then SIGTERM first,
/// SIGKILL once the pod's grace period has passed; the restart policy takes it from there.
fn stop_unhealthy(rt: &RealRuntime, pod: &Pod, c: &Container, id: &str, ip: Ipv4Addr) {
    let grace = grace_period(pod);
    let mut stopping = rt.stopping.lock().unwrap_or_else(|e| e.into_inner());
    match stopping.get(id) {
        None => {
            stopping.insert(id.to_string(), std::time::Instant::now());
            let (containers, events) = (rt.containers.clone(), rt.events.clone());
            let (pod, c, id) = (pod.clone(), c.clone(), id.to_string());
            tokio::spawn(async move {
                pre_stop(&containers, &events, &pod, &c, &id, ip, grace).await;
                if let Err(e) = containers.signal(&id, nix::sys::signal::Signal::SIGTERM) {
                    tracing::debug!(%id, %e, "unhealthy container not signalled");
                }
            });
        }
        Some(since) if since.elapsed() >= grace => {
            if let Err(e) = rt.containers.signal(id, nix::sys::signal::Signal::SIGKILL) {
                tracing::debug!(%id, %e, "unhealthy container not killed");
            }
        }
        Some(_) => {}
    }
}

/// The pod's `terminationGracePeriodSeconds` (30 s unless it says otherwise).
fn grace_period(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    )
}

/// Runs the container's preStop hook, if it has one, for at most `limit`; a failure is told
/// in an Event and the stop goes on.
async fn pre_stop(
    containers: &Containers,
    events: &crate::events::Recorder,
    pod: &Pod,
    c: &Container,
    id: &str,
    ip: Ipv4Addr,
    limit: Duration,
) {
    let Some(h) = Hook::PreStop.handler(c) else {
        return;
    };
    let target = Target {
        ip,
        container: c,
        containers,
        id,
    };
    if let Err(e) = hooks::run(h, &target, limit).await {
        events.warning(
            pod,
            Hook::PreStop.failed_reason(),
            hooks::failure_message(h, c, pod, &e),
        );
    }
}

/// How long a postStart hook may run (the kubelet sets no limit; this one keeps a hook that
/// never ends from holding the pod's syncs for ever).
const POST_START_LIMIT: Duration = Duration::from_secs(300);

/// Runs the container's postStart hook, if it has one; a failure is told in an Event and
/// kills the container, which then restarts as its policy says.
async fn post_start(rt: &RealRuntime, pod: &Pod, rec: &PodRecord, c: &Container, id: &str) {
    let Some(h) = Hook::PostStart.handler(c) else {
        return;
    };
    let target = Target {
        ip: rec.ip.unwrap_or(Ipv4Addr::LOCALHOST),
        container: c,
        containers: &rt.containers,
        id,
    };
    if let Err(e) = hooks::run(h, &target, POST_START_LIMIT).await {
        rt.events.warning(
            pod,
            Hook::PostStart.failed_reason(),
            hooks::failure_message(h, c, pod, &e),
        );
        rt.events.normal(
            pod,
            "Killing",
            format!("FailedPostStartHook: stopping container {}", c.name),
        );
        if let Err(e) = rt.containers.signal(id, nix::sys::signal::Signal::SIGKILL) {
            tracing::debug!(%id, %e, "container not killed after its postStart hook failed");
        }
    }
}

/// Why a start did not happen.
enum NotStarted {
    Image {
        reason: &'static str,
        message: String,
    },
    Config(String),
    Start(String),
    /// A volume of the pod is not set up yet (told in a FailedMount Event).
    Mount,
}

async fn start(
    rt: &RealRuntime,
    pod: &Pod,
    rec: &mut PodRecord,
    c: &Container,
    r: &mut ContainerRecord,
) -> RunState {
    let now = Timestamp::now();
    let image_ref = c.image.clone().unwrap_or_default();
    if let Some((reason, _, since)) = &r.failure {
        if reason == "ErrImagePull" && r.failure_backoff.remaining(*since, now).is_some() {
            return waiting(
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image_ref}\""),
            );
        }
    }
    let id = new_id();
    match prepare_and_start(rt, pod, rec, c, r, &id).await {
        Ok(started_at) => {
            r.failure = None;
            r.failure_backoff = Default::default();
            if let Some(ended) = r.ended.take() {
                // The container before the previous one goes; the previous is kept for
                // `logs --previous`.
                if let Some(old) = r.last.take() {
                    let old_id = old.container_id.trim_start_matches("skiff://").to_string();
                    if let Err(e) = rt.containers.remove(&old_id).await {
                        tracing::debug!(id = %old_id, %e, "old container not removed");
                    }
                }
                r.last = Some(ended);
                r.restart_count += 1;
                r.crash_backoff.tried();
            }
            post_start(rt, pod, rec, c, &id).await;
            RunState::Running { started_at }
        }
        Err(NotStarted::Image { reason, message }) => {
            r.failure = Some((reason.into(), message.clone(), now));
            r.failure_backoff.tried();
            waiting(reason, message)
        }
        Err(NotStarted::Config(message)) => waiting("CreateContainerConfigError", message),
        Err(NotStarted::Mount) => waiting("ContainerCreating", ""),
        Err(NotStarted::Start(message)) => {
            // The kubelet shows a failed start as a run that ended at once with 128.
            let ended = Terminated {
                exit_code: 128,
                reason: "StartError".into(),
                message: message.clone(),
                started_at: Some(now),
                finished_at: Some(now),
                container_id: format!("skiff://{id}"),
                ..Default::default()
            };
            if let Some(prev) = r.ended.take() {
                r.last = Some(prev);
                r.restart_count += 1;
            }
            r.id = id;
            r.ended = Some(ended.clone());
            r.crash_backoff.tried();
            RunState::Terminated(ended.clone())
        }
    }
}

/// Reads the configMaps and secrets the container's environment names, and the Services'
/// variables.
async fn sources(rt: &RealRuntime, pod: &Pod, c: &Container) -> Sources {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut maps = Vec::new();
    let mut secrets = Vec::new();
    for e in c.env.iter().flatten() {
        if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                maps.push(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for f in c.env_from.iter().flatten() {
        if let Some(r) = &f.config_map_ref {
            maps.push(r.name.clone());
        }
        if let Some(r) = &f.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    let mut out = Sources::default();
    // As the kubelet, a container starts only once the node has listed the Services.
    rt.services.wait_until_ready().await;
    let services = rt.services.state();
    out.services = super::service_env::service_env(pod, services.iter().map(|s| &**s));
    for name in maps {
        let data = get_data(rt, "ConfigMap", &ns, &name).await;
        out.config_maps.insert(name, data);
    }
    for name in secrets {
        let data = get_data(rt, "Secret", &ns, &name).await;
        out.secrets.insert(name, data);
    }
    out
}

/// A configMap's `data` or a secret's decoded `data` (plus `stringData`), None if missing.
async fn get_data(
    rt: &RealRuntime,
    kind: &str,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    let k = Kind::of("v1", kind)?;
    let obj = rt.client.get(&k, ns, name).await.ok()?;
    let mut out = BTreeMap::new();
    if kind == "Secret" {
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(obj).ok()?;
        for (k, v) in s.data.unwrap_or_default() {
            out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert(k, v);
        }
    } else {
        let m: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(obj).ok()?;
        out.extend(m.data.unwrap_or_default());
    }
    Some(out)
}

async fn pull_secrets(rt: &RealRuntime, pod: &Pod) -> Vec<DockerConfigJson> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Vec::new();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let Some(kind) = Kind::of("v1", "Secret") else {
        return out;
    };
    for r in refs {
        let Ok(obj) = rt.client.get(&kind, &ns, &r.name).await else {
            tracing::warn!(secret = %r.name, "image pull secret not found");
            continue;
        };
        let Ok(secret) = serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(obj) else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        if let Some(bytes) = data.get(".dockerconfigjson") {
            match DockerConfigJson::parse(&bytes.0) {
                Ok(c) => out.push(c),
                Err(e) => tracing::warn!(secret = %r.name, %e, "unreadable image pull secret"),
            }
        }
    }
    out
}

async fn pull(
    images: &ImageService,
    c: &Container,
    secrets: &[DockerConfigJson],
) -> Result<crate::image::Image, NotStarted> {
    let reference = c.image.clone().unwrap_or_default();
    let policy =
        PullPolicy::from_spec(c.image_pull_policy.as_deref(), &reference).ok_or_else(|| {
            NotStarted::Config(format!("unknown imagePullPolicy {:?}", c.image_pull_policy))
        })?;
    images
        .ensure(&reference, policy, secrets)
        .await
        .map_err(|e| NotStarted::Image {
            reason: e.reason(),
            message: e.to_string(),
        })
}

async fn prepare_and_start(
    rt: &RealRuntime,
    pod: &Pod,
    rec: &mut PodRecord,
    c: &Container,
    r: &mut ContainerRecord,
    id: &str,
) -> Result<Timestamp, NotStarted> {
    // Volumes first, as the kubelet mounts them before it pulls.
    let pod_volumes = volumes::setup(&volume_host(rt, &rec.uid), pod)
        .await
        .map_err(|_| NotStarted::Mount)?;
    let secrets = pull_secrets(rt, pod).await;
    let image = pull(&rt.images, c, &secrets).await?;
    r.image_id = image.image_id.clone();
    let reference = c.image.clone().unwrap_or_default();
    match &image.pulled {
        Some(report) => {
            rt.events
                .normal(pod, "Pulling", format!("Pulling image \"{reference}\""));
            rt.events.normal(
                pod,
                "Pulled",
                format!(
                    "Successfully pulled image \"{reference}\" in {:?}. Image size: {} bytes.",
                    report.duration, image.size
                ),
            );
        }
        None if r.id.is_empty() => rt.events.normal(
            pod,
            "Pulled",
            format!("Container image \"{reference}\" already present on machine"),
        ),
        None => {}
    }
    let config = image.config.config().clone().unwrap_or_default();
    let image_process = ImageProcess {
        entrypoint: config.entrypoint().clone().unwrap_or_default(),
        cmd: config.cmd().clone().unwrap_or_default(),
        env: config.env().clone().unwrap_or_default(),
        working_dir: config.working_dir().clone().unwrap_or_default(),
        user: config.user().clone().unwrap_or_default(),
    };
    let srcs = sources(rt, pod, c).await;
    let ip = rec.ip.map(|i| i.to_string()).unwrap_or_default();
    let env = process::environment(pod, c, &image_process, &srcs, &ip, &rt.host_ip.to_string())
        .map_err(|e| NotStarted::Config(e.to_string()))?;
    let argv =
        process::argv(c, &image_process, &env).map_err(|e| NotStarted::Config(e.to_string()))?;
    let ids = user(pod, c, &image_process.user, &image.layers)
        .map_err(|e| NotStarted::Config(e.to_string()))?;
    let volume_mounts = volumes::container_mounts(&pod_volumes, c, &env)
        .map_err(|e| NotStarted::Config(e.to_string()))?;
    let ctx = PodContext {
        pod,
        netns: Some(rt.netns_dir.join(&rec.uid)),
        pod_cgroup: pod_cgroup(&rt.cgroup_root, pod),
        etc_dir: rt.records.pod_dir(&rec.uid).join("etc"),
        hostname: files::hostname(pod),
        node_memory_bytes: rt.node_memory_bytes,
    };
    let cfg = container_config(
        &ctx,
        c,
        id,
        &PathBuf::new(),
        argv,
        env,
        process::working_dir(c, &image_process),
        ids,
        volume_mounts,
    );
    // The record names the container before it exists, so a crash in between leaves nothing
    // the next agent cannot find.
    let previous_id = std::mem::replace(&mut r.id, id.to_string());
    rec.containers.insert(c.name.clone(), r.clone());
    save(rt, rec);
    let log = log_path(
        rt,
        pod,
        &c.name,
        r.restart_count + i32::from(r.ended.is_some()),
    );
    match rt
        .containers
        .start(StartRequest {
            config: &cfg,
            layers: &image.layers,
            log_path: &log,
        })
        .await
    {
        Ok(started) => {
            rt.events
                .normal(pod, "Created", format!("Created container: {}", c.name));
            rt.events
                .normal(pod, "Started", format!("Started container {}", c.name));
            Ok(started.started_at)
        }
        Err(e) => {
            r.id = previous_id;
            if let Err(e) = rt.containers.remove(id).await {
                tracing::debug!(%id, %e, "failed container not removed");
            }
            Err(NotStarted::Start(e.to_string()))
        }
    }
}

pub(super) async fn kill_pod(
    rt: &RealRuntime,
    pod: Option<&Pod>,
    uid: &str,
    grace: Duration,
) -> Result<(), String> {
    let rec = rt.records.load(uid);
    let mut ids: Vec<String> = Vec::new();
    if let Some(rec) = &rec {
        for r in rec.containers.values() {
            if !r.id.is_empty() {
                ids.push(r.id.clone());
            }
            if let Some(last) = &r.last {
                ids.push(last.container_id.trim_start_matches("skiff://").to_string());
            }
        }
    }
    let running = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| matches!(rt.containers.state(id), ContainerState::Running { .. }))
            .cloned()
            .collect()
    };
    let live = running(&ids);
    let deadline = tokio::time::Instant::now() + grace;
    if let (Some(pod), Some(rec)) = (pod, &rec) {
        let spec = pod.spec.clone().unwrap_or_default();
        let all: Vec<&Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        let mut hooks = Vec::new();
        for (name, r) in &rec.containers {
            if !live.contains(&r.id) {
                continue;
            }
            rt.events
                .normal(pod, "Killing", format!("Stopping container {name}"));
            if let Some(c) = all.iter().find(|c| &c.name == name) {
                let ip = rec.ip.unwrap_or(Ipv4Addr::LOCALHOST);
                hooks.push(pre_stop(
                    &rt.containers,
                    &rt.events,
                    pod,
                    c,
                    &r.id,
                    ip,
                    grace,
                ));
            }
        }
        // The hooks run side by side, within the grace period.
        futures::future::join_all(hooks).await;
    }
    for id in &live {
        let _ = rt.containers.signal(id, nix::sys::signal::Signal::SIGTERM);
    }
    // After the hooks, the containers get what is left of the grace period, and at least
    // the kubelet's 2 s.
    let deadline = deadline.max(tokio::time::Instant::now() + MIN_STOP_GRACE);
    while !running(&live).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(STOP_POLL).await;
    }
    let left = running(&live);
    for id in &left {
        let _ = rt.containers.signal(id, nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    while !running(&left).is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "containers {:?} did not stop after SIGKILL",
                running(&left)
            ));
        }
        tokio::time::sleep(STOP_POLL).await;
    }
    for id in &ids {
        rt.containers
            .remove(id)
            .await
            .map_err(|e| format!("removing container {id}: {e}"))?;
    }
    let ns_path = rt.netns_dir.join(uid);
    let ports = pod.map(port_mappings).unwrap_or_default();
    if rt.cni.attached(uid).is_some() || netns::exists(&ns_path) {
        if let Err(e) = rt.cni.del(uid, &ns_path, &ports).await {
            tracing::warn!(uid, %e, "CNI DEL");
        }
    }
    netns::remove(&ns_path).map_err(|e| e.to_string())?;
    // The pod's cgroup sits under one of the QoS classes; its containers' are gone by now.
    for qos in [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ] {
        let path = pod_cgroup_path(&rt.cgroup_root, qos, uid);
        if let Err(e) = remove_cgroup(&path) {
            tracing::debug!(path = %path.display(), %e, "pod cgroup not removed");
        }
    }
    if let Err(e) = rt.qos_levels.set(uid, None) {
        tracing::warn!(uid, %e, "QoS cgroup levels not written");
    }
    // Volumes after the containers: nothing uses their mounts any more.
    volumes::cleanup(&rt.records.pod_dir(uid), &rt.volume_memory).map_err(|e| e.to_string())?;
    rt.records.remove(uid).map_err(|e| e.to_string())?;
    Ok(())
}
