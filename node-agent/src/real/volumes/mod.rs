//! Pod volumes, as the kubelet does them. Before a pod's container starts, every volume of the
//! pod is set up (`setup`): emptyDir a directory under `<pod>/volumes/kubernetes.io~empty-dir`
//! (a tmpfs the agent mounts for medium Memory, sized as the kubelet sizes it); hostPath its
//! `type` checked (or the path made); configMap, secret, downwardAPI and projected volumes
//! written by the atomic writer (secrets and projected volumes on a tmpfs); a
//! persistentVolumeClaim the hostPath or local volume bound to it. A volume that fails keeps
//! every container of the pod from starting (it stays ContainerCreating) and is told in a
//! FailedMount Event, as the kubelet's `MountVolume.SetUp failed for volume "x" : …`; it is
//! tried again on the next sync. Once written, projected volumes are compared with their
//! sources every few seconds (`refresh`) and swapped in place when they changed; a source that
//! went away leaves the files as they were (and an Event). `container_mounts` turns a
//! container's volumeMounts into bind mounts; `cleanup` unmounts and removes everything when
//! the pod goes.
//!
//! What the agent remembers between syncs (when it last refreshed a pod's volumes, which
//! failures it told) is kept in memory for the process; a restarted agent refreshes and tells
//! once more, nothing else.

pub mod atomic;
pub mod error;
pub mod host_path;
pub mod layout;
pub mod mounts;
pub mod mounts_host;
mod objects;
pub mod payload;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimVolumeSource, Pod, Secret, Volume,
};
use skiff_api::Client;

use crate::events::Recorder;
pub use error::VolumeError;
use layout::Source;
pub use mounts::{container_mounts, PodVolumes, Ready};
use payload::{default_mode, NodeCapacity, Payload};

/// How often a running pod's configMap, secret, downward API and projected volumes are
/// compared with their sources.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3);
/// How often the same mount failure of a volume is told again.
pub const RETELL_EVERY: Duration = Duration::from_secs(60);

/// What volumes need from the agent.
pub struct Host<'a> {
    pub client: &'a Client,
    pub events: &'a Recorder,
    /// `<root>/pods/<uid>`.
    pub pod_dir: PathBuf,
    pub node: NodeCapacity,
    /// What the runtime remembers about volumes between syncs.
    pub memory: &'a Mutex<Memory>,
}

impl<'a> Host<'a> {
    pub fn new(
        client: &'a Client,
        events: &'a Recorder,
        pod_dir: PathBuf,
        node_memory_bytes: u64,
        memory: &'a Mutex<Memory>,
    ) -> Host<'a> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        Host {
            client,
            events,
            memory,
            pod_dir,
            node: NodeCapacity {
                cpu_millis: cpus * 1000,
                memory_bytes: i64::try_from(node_memory_bytes).unwrap_or(i64::MAX),
            },
        }
    }
}

/// Some of the pod's volumes could not be set up (each told in an Event).
#[derive(Debug)]
pub struct SetupFailed(pub Vec<String>);

/// When each pod's volumes were last refreshed and which failures were told: kept by the
/// runtime, forgotten when a pod's volumes are cleaned up.
#[derive(Default)]
pub struct Memory {
    /// Pod directory → when its volumes were last refreshed.
    refreshed: HashMap<PathBuf, Instant>,
    /// (pod directory, volume) → the failure last told, and when.
    told: HashMap<(PathBuf, String), (String, Instant)>,
}

fn memory<'m>(host: &Host<'m>) -> std::sync::MutexGuard<'m, Memory> {
    host.memory.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tells a volume's failure in a FailedMount Event: when it is new, or again after a while.
fn tell(host: &Host<'_>, pod: &Pod, volume: &str, e: &VolumeError) -> String {
    let message = format!("MountVolume.SetUp failed for volume \"{volume}\" : {e}");
    let key = (host.pod_dir.clone(), volume.to_string());
    let now = Instant::now();
    let due = {
        let mut m = memory(host);
        let due = match m.told.get(&key) {
            Some((told, at)) => *told != message || now.duration_since(*at) >= RETELL_EVERY,
            None => true,
        };
        if due {
            m.told.insert(key, (message.clone(), now));
        }
        due
    };
    if due {
        tracing::warn!(pod = ?pod.metadata.name, volume, %e, "volume not set up");
        host.events.warning(pod, "FailedMount", message.clone());
    }
    message
}

fn forget_told(host: &Host<'_>, volume: &str) {
    memory(host)
        .told
        .remove(&(host.pod_dir.clone(), volume.to_string()));
}

/// Makes a volume's directory (with `mode` whatever the umask) if it is not there.
fn ensure_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| VolumeError::io("creating", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("setting the mode of", dir, e))
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

async fn config_map_payload(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    match objects::get::<ConfigMap>(client, "ConfigMap", ns, name).await? {
        Some(cm) => payload::keys(
            &payload::config_map_data(&cm),
            items,
            mode,
            optional,
            VolumeError::ConfigMapKey,
        ),
        None if optional => Ok(Payload::new()),
        None => Err(VolumeError::ConfigMapMissing(name.into())),
    }
}

async fn secret_payload(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    match objects::get::<Secret>(client, "Secret", ns, name).await? {
        Some(s) => payload::keys(
            &payload::secret_data(&s),
            items,
            mode,
            optional,
            VolumeError::SecretKey,
        ),
        None if optional => Ok(Payload::new()),
        None => Err(VolumeError::SecretMissing(name.into())),
    }
}

/// The files a configMap, secret, downward API or projected volume should hold now.
async fn projection(
    host: &Host<'_>,
    pod: &Pod,
    source: &Source<'_>,
) -> Result<Payload, VolumeError> {
    let ns = namespace(pod);
    match source {
        Source::ConfigMap(s) => {
            config_map_payload(
                host.client,
                ns,
                &s.name,
                s.items.as_deref(),
                default_mode(s.default_mode),
                s.optional == Some(true),
            )
            .await
        }
        Source::Secret(s) => {
            secret_payload(
                host.client,
                ns,
                s.secret_name.as_deref().unwrap_or_default(),
                s.items.as_deref(),
                default_mode(s.default_mode),
                s.optional == Some(true),
            )
            .await
        }
        Source::DownwardApi(d) => payload::downward_api(
            pod,
            d.items.as_deref().unwrap_or_default(),
            default_mode(d.default_mode),
            host.node,
        ),
        Source::Projected(p) => {
            let mode = default_mode(p.default_mode);
            let mut out = Payload::new();
            // serviceAccountToken, clusterTrustBundle and podCertificate sources are not
            // projected: Skiff issues no tokens or certificates yet.
            for s in p.sources.iter().flatten() {
                if let Some(c) = &s.config_map {
                    let optional = c.optional == Some(true);
                    let items = c.items.as_deref();
                    out.extend(
                        config_map_payload(host.client, ns, &c.name, items, mode, optional).await?,
                    );
                }
                if let Some(c) = &s.secret {
                    let optional = c.optional == Some(true);
                    let items = c.items.as_deref();
                    out.extend(
                        secret_payload(host.client, ns, &c.name, items, mode, optional).await?,
                    );
                }
                if let Some(d) = &s.downward_api {
                    let items = d.items.as_deref().unwrap_or_default();
                    out.extend(payload::downward_api(pod, items, mode, host.node)?);
                }
            }
            Ok(out)
        }
        _ => Ok(Payload::new()),
    }
}

/// The host path of the hostPath or local volume bound to a claim.
async fn claim(
    host: &Host<'_>,
    pod: &Pod,
    c: &PersistentVolumeClaimVolumeSource,
) -> Result<Ready, VolumeError> {
    let ns = namespace(pod);
    let pvc: PersistentVolumeClaim =
        objects::get(host.client, "PersistentVolumeClaim", ns, &c.claim_name)
            .await?
            .ok_or_else(|| VolumeError::ClaimMissing(c.claim_name.clone()))?;
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(VolumeError::ClaimNotBound {
            namespace: ns.into(),
            name: c.claim_name.clone(),
            phase,
            volume,
        });
    }
    let pv: PersistentVolume = objects::get(host.client, "PersistentVolume", "", &volume)
        .await?
        .ok_or_else(|| VolumeError::VolumeMissing(volume.clone()))?;
    let spec = pv.spec.unwrap_or_default();
    let path = if let Some(h) = &spec.host_path {
        host_path::check(&h.path, h.type_.as_deref().unwrap_or(""))?;
        h.path.clone()
    } else if let Some(l) = &spec.local {
        host_path::check(&l.path, "Directory")?;
        l.path.clone()
    } else {
        return Err(VolumeError::VolumeKind(volume));
    };
    Ok(Ready {
        path: PathBuf::from(path),
        read_only: c.read_only == Some(true),
    })
}

async fn setup_one(host: &Host<'_>, pod: &Pod, v: &Volume) -> Result<Ready, VolumeError> {
    let source = Source::of(v);
    let dir = layout::volume_dir(&host.pod_dir, &source, &v.name);
    match (source, dir) {
        (Source::HostPath { path, type_ }, _) => {
            host_path::check(path, type_)?;
            Ok(Ready {
                path: PathBuf::from(path),
                read_only: false,
            })
        }
        (Source::Claim(c), _) => claim(host, pod, c).await,
        (Source::Unsupported(name), _) => Err(VolumeError::Unsupported(name)),
        (
            Source::EmptyDir {
                memory,
                size_limit,
                mode,
            },
            Some(dir),
        ) => {
            ensure_dir(&dir, mode.unwrap_or(0o777))?;
            if memory {
                let size = layout::tmpfs_size(
                    host.node.memory_bytes.max(0) as u64,
                    layout::pod_memory_limit(pod),
                    size_limit,
                );
                if !mounts_host::is_mount_point(&dir) {
                    mounts_host::ensure_tmpfs(&dir, Some(size))?;
                    if let Some(m) = mode {
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m))
                            .map_err(|e| VolumeError::io("setting the mode of", &dir, e))?;
                    }
                }
            }
            Ok(Ready {
                path: dir,
                read_only: false,
            })
        }
        (source, Some(dir)) => {
            ensure_dir(&dir, 0o777)?;
            if source.on_tmpfs() {
                mounts_host::ensure_tmpfs(&dir, None)?;
            }
            if !atomic::written(&dir) {
                let files = projection(host, pod, &source).await?;
                atomic::write(&dir, &files, Timestamp::now())?;
            }
            Ok(Ready {
                path: dir,
                read_only: true,
            })
        }
        (_, None) => Err(VolumeError::Unsupported("(none)")),
    }
}

/// Sets up every volume of the pod that is not set up yet; the pod's containers may start only
/// when this succeeds.
pub async fn setup(host: &Host<'_>, pod: &Pod) -> Result<PodVolumes, SetupFailed> {
    let mut ready = PodVolumes::new();
    let mut failed = Vec::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        match setup_one(host, pod, v).await {
            Ok(r) => {
                forget_told(host, &v.name);
                ready.insert(v.name.clone(), r);
            }
            Err(e) => failed.push(tell(host, pod, &v.name, &e)),
        }
    }
    if failed.is_empty() {
        Ok(ready)
    } else {
        Err(SetupFailed(failed))
    }
}

/// Whether the pod has volumes that follow their sources (configMap, secret, downward API,
/// projected), so it is synced often enough for [`refresh`].
pub fn refreshes(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.config_map.is_some()
                    || v.secret.is_some()
                    || v.downward_api.is_some()
                    || v.projected.is_some()
            })
        })
}

/// Brings the pod's written configMap, secret, downward API and projected volumes up to date
/// with their sources, at most every [`REFRESH_EVERY`].
pub async fn refresh(host: &Host<'_>, pod: &Pod) {
    {
        let mut m = memory(host);
        let now = Instant::now();
        match m.refreshed.get(&host.pod_dir) {
            Some(at) if now.duration_since(*at) < REFRESH_EVERY => return,
            _ => {
                m.refreshed.insert(host.pod_dir.clone(), now);
            }
        }
    }
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let source = Source::of(v);
        let Some(dir) = layout::volume_dir(&host.pod_dir, &source, &v.name) else {
            continue;
        };
        if !source.is_projection() || !atomic::written(&dir) {
            continue;
        }
        let updated = match projection(host, pod, &source).await {
            Ok(files) => atomic::write(&dir, &files, Timestamp::now()),
            Err(e) => Err(e),
        };
        match updated {
            Ok(true) => {
                tracing::info!(pod = ?pod.metadata.name, volume = %v.name, "volume updated")
            }
            Ok(false) => {}
            Err(e) => {
                tell(host, pod, &v.name, &e);
            }
        }
    }
}

/// Unmounts everything under the pod's directory and removes its volumes; afterwards nothing
/// of the pod's volumes is left on the node.
pub fn cleanup(pod_dir: &Path, memory: &Mutex<Memory>) -> Result<(), VolumeError> {
    mounts_host::unmount_below(pod_dir)?;
    let dir = layout::volumes_dir(pod_dir);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(VolumeError::io("removing", &dir, e))
        }
        _ => {}
    }
    let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
    m.refreshed.remove(pod_dir);
    m.told.retain(|(p, _), _| p != pod_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root may mount; elsewhere the test is skipped, except in CI, which runs it as root.
    fn may_mount() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root && std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("mount tests need root, and CI runs them");
        }
        root
    }

    #[test]
    fn tmpfs_volumes_are_mounted_once_and_cleanup_leaves_nothing() {
        if !may_mount() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let pod_dir = tmp.path().join("pods/u1");
        let secret = pod_dir.join("volumes/kubernetes.io~secret/creds");
        let cache = pod_dir.join("volumes/kubernetes.io~empty-dir/cache");
        for d in [&secret, &cache] {
            ensure_dir(d, 0o777).expect("dir");
        }
        mounts_host::ensure_tmpfs(&secret, None).expect("tmpfs");
        mounts_host::ensure_tmpfs(&secret, None).expect("tmpfs again");
        mounts_host::ensure_tmpfs(&cache, Some(1 << 20)).expect("sized tmpfs");
        let real_pod = std::fs::canonicalize(&pod_dir).expect("canonical");
        let mounted = || {
            let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
            mounts_host::below(&mounts_host::mount_points(&text), &real_pod)
        };
        assert_eq!(mounted().len(), 2, "one tmpfs each: {:?}", mounted());
        let stat = nix::sys::statvfs::statvfs(&cache).expect("statvfs");
        assert_eq!(stat.blocks() * stat.fragment_size(), 1 << 20);
        let files = [(
            "password".to_string(),
            payload::File {
                data: b"s3cret".to_vec(),
                mode: 0o400,
            },
        )]
        .into();
        atomic::write(&secret, &files, Timestamp::now()).expect("written");

        let memory = Mutex::default();
        cleanup(&pod_dir, &memory).expect("cleanup");
        assert!(mounted().is_empty(), "left mounted: {:?}", mounted());
        assert!(!pod_dir.join("volumes").exists());
        cleanup(&pod_dir, &memory).expect("cleanup twice is fine");
    }
}
