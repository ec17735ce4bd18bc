//! Why a volume could not be set up or mounted into a container, worded as the kubelet words
//! it (the FailedMount Event and CreateContainerConfigError messages quote these).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapMissing(String),
    #[error("secret \"{0}\" not found")]
    SecretMissing(String),
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKey(String),
    #[error("references non-existent secret key: {0}")]
    SecretKey(String),
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimMissing(String),
    #[error("PVC {namespace}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})")]
    ClaimNotBound {
        namespace: String,
        name: String,
        phase: String,
        volume: String,
    },
    #[error("persistentvolume \"{0}\" not found")]
    VolumeMissing(String),
    #[error("persistentvolume \"{0}\" is not a hostPath or local volume, the only kinds this node mounts")]
    VolumeKind(String),
    #[error("hostPath type check failed: {path} is not a {what}")]
    HostPathType { path: String, what: &'static str },
    #[error("{0} is an invalid volume type")]
    HostPathTypeUnknown(String),
    #[error("volume type {0} is not supported by this node")]
    Unsupported(&'static str),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource : {0}")]
    Resource(String),
    #[error("Cannot find container whose name is {0:?}")]
    NoContainer(String),
    #[error("invalid divisor {0:?}")]
    Divisor(String),
    #[error("getting {what}: {message}")]
    Api { what: String, message: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    NoVolume { volume: String, container: String },
    #[error("error SubPath `{0}` must not be an absolute path")]
    SubPathAbsolute(String),
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    SubPathBackstep(String),
    #[error("failed to prepare subPath for volumeMount {volume:?} of container {container:?}")]
    SubPathEscapes { volume: String, container: String },
    #[error(
        "failed to create subPath directory for volumeMount {volume:?} of container {container:?}"
    )]
    SubPathCreate { volume: String, container: String },
}

impl VolumeError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VolumeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
