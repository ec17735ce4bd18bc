//! What each pod volume is on this node and where it lives, as the kubelet lays it out: a
//! directory per volume under `<pod>/volumes/<plugin>/<name>` (`kubernetes.io~empty-dir`,
//! `~configmap`, `~secret`, `~downward-api`, `~projected`), a tmpfs for emptyDir medium Memory,
//! secrets and projected volumes, and the size an emptyDir tmpfs gets. hostPath volumes have no
//! directory of their own. Pure.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, DownwardAPIVolumeSource, PersistentVolumeClaimVolumeSource,
    Pod, ProjectedVolumeSource, SecretVolumeSource, Volume,
};
use skiff_api::quantity::Quantity;

/// The mode of files projected from a configMap, secret or the downward API when the volume
/// names none (Kubernetes' default, 0644).
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// One pod volume as this node handles it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source<'a> {
    EmptyDir {
        /// `medium: Memory`: a tmpfs.
        memory: bool,
        /// `sizeLimit` in bytes (the tmpfs size when `memory`; not enforced on disk).
        size_limit: Option<u64>,
        /// `mode` of the directory (alpha in Kubernetes 1.37; 0777 when unset).
        mode: Option<u32>,
    },
    HostPath {
        path: &'a str,
        /// `type`: "" (no check), DirectoryOrCreate, Directory, FileOrCreate, File, Socket,
        /// CharDevice, BlockDevice.
        type_: &'a str,
    },
    ConfigMap(&'a ConfigMapVolumeSource),
    Secret(&'a SecretVolumeSource),
    DownwardApi(&'a DownwardAPIVolumeSource),
    Projected(&'a ProjectedVolumeSource),
    Claim(&'a PersistentVolumeClaimVolumeSource),
    /// A volume type this node cannot set up (its API field name).
    Unsupported(&'static str),
}

impl<'a> Source<'a> {
    pub fn of(v: &'a Volume) -> Source<'a> {
        if let Some(e) = &v.empty_dir {
            return Source::EmptyDir {
                memory: e.medium.as_deref() == Some("Memory"),
                size_limit: e
                    .size_limit
                    .as_ref()
                    .and_then(|q| Quantity::parse(&q.0).ok())
                    .map(|q| q.value())
                    .filter(|b| *b > 0)
                    .map(|b| b as u64),
                mode: e.mode.map(|m| (m as u32) & 0o7777),
            };
        }
        if let Some(h) = &v.host_path {
            return Source::HostPath {
                path: &h.path,
                type_: h.type_.as_deref().unwrap_or(""),
            };
        }
        if let Some(c) = &v.config_map {
            return Source::ConfigMap(c);
        }
        if let Some(s) = &v.secret {
            return Source::Secret(s);
        }
        if let Some(d) = &v.downward_api {
            return Source::DownwardApi(d);
        }
        if let Some(p) = &v.projected {
            return Source::Projected(p);
        }
        if let Some(c) = &v.persistent_volume_claim {
            return Source::Claim(c);
        }
        Source::Unsupported(unsupported_name(v))
    }

    /// The kubelet's plugin directory name, for the volumes that get a directory.
    pub fn plugin_dir(&self) -> Option<&'static str> {
        match self {
            Source::EmptyDir { .. } => Some("kubernetes.io~empty-dir"),
            Source::ConfigMap(_) => Some("kubernetes.io~configmap"),
            Source::Secret(_) => Some("kubernetes.io~secret"),
            Source::DownwardApi(_) => Some("kubernetes.io~downward-api"),
            Source::Projected(_) => Some("kubernetes.io~projected"),
            Source::HostPath { .. } | Source::Claim(_) | Source::Unsupported(_) => None,
        }
    }

    /// Whether the volume's directory is a tmpfs the agent mounts.
    pub fn on_tmpfs(&self) -> bool {
        matches!(
            self,
            Source::EmptyDir { memory: true, .. } | Source::Secret(_) | Source::Projected(_)
        )
    }

    /// Whether the volume's files are written by the atomic writer (and refreshed in place).
    pub fn is_projection(&self) -> bool {
        matches!(
            self,
            Source::ConfigMap(_)
                | Source::Secret(_)
                | Source::DownwardApi(_)
                | Source::Projected(_)
        )
    }
}

fn unsupported_name(v: &Volume) -> &'static str {
    let named: [(&'static str, bool); 23] = [
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("cinder", v.cinder.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("flocker", v.flocker.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("nfs", v.nfs.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("rbd", v.rbd.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
    ];
    named
        .iter()
        .find(|(_, set)| *set)
        .map(|(n, _)| *n)
        .unwrap_or("(none)")
}

/// `<pod>/volumes`: everything the pod's volumes hold on this node.
pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// The directory of a volume that has one.
pub fn volume_dir(pod_dir: &Path, source: &Source<'_>, name: &str) -> Option<PathBuf> {
    source
        .plugin_dir()
        .map(|plugin| volumes_dir(pod_dir).join(plugin).join(name))
}

fn memory_limit(c: &Container) -> Option<i64> {
    let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    Quantity::parse(&q.0)
        .ok()
        .map(|q| q.value())
        .filter(|v| *v > 0)
}

/// The pod's memory limit as its cgroup gets it: the sum of its containers' limits or the
/// largest init container's, whichever is more; None unless every container has one.
pub fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let mut sum = 0i64;
    for c in &spec.containers {
        sum = sum.saturating_add(memory_limit(c)?);
    }
    let mut init_max = 0i64;
    for c in spec.init_containers.iter().flatten() {
        init_max = init_max.max(memory_limit(c)?);
    }
    Some(sum.max(init_max) as u64)
}

/// The size of an emptyDir tmpfs, as the kubelet sizes memory-backed volumes: the node's
/// memory, or the pod's memory limit if smaller, or the volume's sizeLimit if smaller still.
pub fn tmpfs_size(node_memory: u64, pod_limit: Option<u64>, size_limit: Option<u64>) -> u64 {
    let mut size = node_memory;
    for bound in [pod_limit, size_limit].into_iter().flatten() {
        if bound > 0 && bound <= size {
            size = bound;
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, HostPathVolumeSource, NFSVolumeSource, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn volumes_get_the_kubelets_directories() {
        let pod_dir = Path::new("/var/lib/skiff-agent/pods/u1");
        let mut v = vol("cache");
        v.empty_dir = Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Q("8Mi".into())),
            ..Default::default()
        });
        let s = Source::of(&v);
        assert_eq!(
            s,
            Source::EmptyDir {
                memory: true,
                size_limit: Some(8 << 20),
                mode: None,
            }
        );
        assert!(s.on_tmpfs());
        assert_eq!(
            volume_dir(pod_dir, &s, "cache"),
            Some(PathBuf::from(
                "/var/lib/skiff-agent/pods/u1/volumes/kubernetes.io~empty-dir/cache"
            ))
        );
        let mut disk = vol("d");
        disk.empty_dir = Some(EmptyDirVolumeSource::default());
        assert!(!Source::of(&disk).on_tmpfs());

        let mut cm = vol("conf");
        cm.config_map = Some(ConfigMapVolumeSource {
            name: "settings".into(),
            ..Default::default()
        });
        let s = Source::of(&cm);
        assert!(s.is_projection() && !s.on_tmpfs());
        assert_eq!(
            volume_dir(pod_dir, &s, "conf"),
            Some(pod_dir.join("volumes/kubernetes.io~configmap/conf"))
        );
        let mut secret = vol("creds");
        secret.secret = Some(SecretVolumeSource::default());
        let s = Source::of(&secret);
        assert!(s.is_projection() && s.on_tmpfs());
        assert_eq!(
            volume_dir(pod_dir, &s, "creds"),
            Some(pod_dir.join("volumes/kubernetes.io~secret/creds"))
        );
        let mut host = vol("h");
        host.host_path = Some(HostPathVolumeSource {
            path: "/srv".into(),
            type_: Some("Directory".into()),
        });
        let s = Source::of(&host);
        assert_eq!(
            s,
            Source::HostPath {
                path: "/srv",
                type_: "Directory"
            }
        );
        assert_eq!(volume_dir(pod_dir, &s, "h"), None);
        let mut nfs = vol("n");
        nfs.nfs = Some(NFSVolumeSource::default());
        assert_eq!(Source::of(&nfs), Source::Unsupported("nfs"));
    }

    fn limited(memory: Option<&str>) -> Container {
        Container {
            resources: Some(ResourceRequirements {
                limits: memory.map(|m| [("memory".to_string(), Q(m.into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tmpfs_sizes_follow_the_kubelet() {
        let pod = |apps: Vec<Container>, inits: Vec<Container>| Pod {
            spec: Some(PodSpec {
                containers: apps,
                init_containers: Some(inits),
                ..Default::default()
            }),
            ..Default::default()
        };
        let both = pod(
            vec![limited(Some("64Mi")), limited(Some("64Mi"))],
            vec![limited(Some("100Mi"))],
        );
        assert_eq!(pod_memory_limit(&both), Some(128 << 20));
        let big_init = pod(vec![limited(Some("64Mi"))], vec![limited(Some("1Gi"))]);
        assert_eq!(pod_memory_limit(&big_init), Some(1 << 30));
        let unlimited = pod(vec![limited(Some("64Mi")), limited(None)], vec![]);
        assert_eq!(pod_memory_limit(&unlimited), None);

        let node = 4u64 << 30;
        for (pod_limit, size_limit, want) in [
            (None, None, node),
            (Some(128 << 20), None, 128 << 20),
            (Some(128 << 20), Some(8 << 20), 8 << 20),
            (Some(128 << 20), Some(1 << 30), 128 << 20),
            (None, Some(8 << 40), node),
            (Some(0), Some(0), node),
        ] {
            assert_eq!(
                tmpfs_size(node, pod_limit, size_limit),
                want,
                "{pod_limit:?} {size_limit:?}"
            );
        }
    }
}
