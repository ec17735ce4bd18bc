//! A container's `volumeMounts` as bind mounts (`MountSpec::Bind`): the volume's host path, or a
//! `subPath` (or `subPathExpr` expanded from the container's environment) inside it, at
//! `mountPath` (made absolute); read-only when the mount asks or the volume must be (configMap,
//! secret, downward API and projected volumes always are). A subPath that is absolute or holds
//! `..` is refused with the kubelet's message; a missing one is made as a directory with the
//! volume's mode; one that resolves (through symlinks) outside its volume is refused. Naming a
//! volume the pod does not define is an error. `mountPropagation` is not applied (mounts are
//! private).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::error::VolumeError;
use crate::real::process::expand;
use crate::runtime::spec::MountSpec;

/// A volume set up for the pod's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Where the volume is on the host.
    pub path: PathBuf,
    /// Containers get it read-only whatever their mount says.
    pub read_only: bool,
}

/// The pod's volumes that are ready, by name.
pub type PodVolumes = BTreeMap<String, Ready>;

/// Checks a subPath as the kubelet does before using it.
pub fn validate_sub_path(sub: &str) -> Result<(), VolumeError> {
    if sub.starts_with('/') {
        return Err(VolumeError::SubPathAbsolute(sub.into()));
    }
    if sub.split('/').any(|part| part == "..") {
        return Err(VolumeError::SubPathBackstep(sub.into()));
    }
    Ok(())
}

/// The path in the container: `mountPath`, made absolute.
pub fn container_path(mount_path: &str) -> PathBuf {
    if mount_path.starts_with('/') {
        PathBuf::from(mount_path)
    } else {
        Path::new("/").join(mount_path)
    }
}

/// The host path of `sub` inside the volume at `root`, made as directories if missing; never
/// outside the volume.
pub fn resolve_sub_path(
    root: &Path,
    sub: &str,
    volume: &str,
    container: &str,
) -> Result<PathBuf, VolumeError> {
    let escapes = || VolumeError::SubPathEscapes {
        volume: volume.into(),
        container: container.into(),
    };
    let create_failed = || VolumeError::SubPathCreate {
        volume: volume.into(),
        container: container.into(),
    };
    let root = std::fs::canonicalize(root).map_err(|e| VolumeError::io("resolving", root, e))?;
    let mode = std::fs::metadata(&root)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| VolumeError::io("reading", &root, e))?;
    let mut cur = root.clone();
    for part in Path::new(sub).components() {
        match part {
            Component::Normal(name) => cur.push(name),
            Component::CurDir => continue,
            _ => return Err(escapes()),
        }
        match cur.symlink_metadata() {
            Ok(m) if m.is_symlink() => {
                cur = std::fs::canonicalize(&cur).map_err(|_| escapes())?;
                if !cur.starts_with(&root) {
                    return Err(escapes());
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(|_| create_failed())?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))
                    .map_err(|_| create_failed())?;
            }
            Err(_) => return Err(create_failed()),
        }
    }
    let resolved = std::fs::canonicalize(&cur).map_err(|_| escapes())?;
    if !resolved.starts_with(&root) {
        return Err(escapes());
    }
    Ok(resolved)
}

/// The bind mounts of a container's `volumeMounts`.
pub fn container_mounts(
    volumes: &PodVolumes,
    c: &Container,
    env: &[(String, String)],
) -> Result<Vec<MountSpec>, VolumeError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let vol = volumes.get(&m.name).ok_or_else(|| VolumeError::NoVolume {
            volume: m.name.clone(),
            container: c.name.clone(),
        })?;
        let sub = match m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            Some(e) => {
                let vars = |n: &str| {
                    env.iter()
                        .rev()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                };
                expand(e, &vars)
            }
            None => m.sub_path.clone().unwrap_or_default(),
        };
        let source = if sub.is_empty() {
            vol.path.clone()
        } else {
            validate_sub_path(&sub)?;
            resolve_sub_path(&vol.path, &sub, &m.name, &c.name)?
        };
        out.push(MountSpec::Bind {
            source,
            destination: container_path(&m.mount_path),
            readonly: m.read_only == Some(true) || vol.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    #[test]
    fn sub_paths_are_refused_as_the_kubelet_refuses_them() {
        for ok in ["a", "a/b", "a/..b", "..a", "./a"] {
            assert!(validate_sub_path(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            validate_sub_path("/etc").expect_err("absolute").to_string(),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            validate_sub_path("a/../../etc")
                .expect_err("backsteps")
                .to_string(),
            "unable to provision SubPath `a/../../etc`: must not contain '..'"
        );
        assert_eq!(container_path("/data"), PathBuf::from("/data"));
        assert_eq!(container_path("data/x"), PathBuf::from("/data/x"));
    }

    fn mount(name: &str, path: &str, sub: Option<&str>, ro: bool) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub.map(Into::into),
            read_only: ro.then_some(true),
            ..Default::default()
        }
    }

    #[test]
    fn volume_mounts_become_binds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let conf = tmp.path().join("conf");
        let outside = tmp.path().join("outside");
        for d in [&data, &conf, &outside] {
            std::fs::create_dir(d).expect("dir");
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::os::unix::fs::symlink(&outside, data.join("escape")).expect("symlink");
        let volumes: PodVolumes = [
            (
                "data".to_string(),
                Ready {
                    path: data.clone(),
                    read_only: false,
                },
            ),
            (
                "conf".to_string(),
                Ready {
                    path: conf.clone(),
                    read_only: true,
                },
            ),
        ]
        .into();
        let mut c = Container {
            name: "main".into(),
            volume_mounts: Some(vec![
                mount("data", "/data", None, false),
                mount("data", "/ro", None, true),
                mount("conf", "etc/app", None, false),
                mount("data", "/sub", Some("a/b"), false),
            ]),
            ..Default::default()
        };
        let got = container_mounts(&volumes, &c, &[]).expect("mounts");
        let bind = |s: &Path, d: &str, readonly| MountSpec::Bind {
            source: s.to_path_buf(),
            destination: d.into(),
            readonly,
        };
        let real_data = std::fs::canonicalize(&data).expect("canonical");
        assert_eq!(
            got,
            [
                bind(&data, "/data", false),
                bind(&data, "/ro", true),
                bind(&conf, "/etc/app", true),
                bind(&real_data.join("a/b"), "/sub", false),
            ]
        );
        // The missing subPath was made with the volume's mode.
        let made = std::fs::metadata(data.join("a/b")).expect("made");
        assert!(made.is_dir());
        assert_eq!(made.permissions().mode() & 0o777, 0o777);

        // subPathExpr from the environment.
        c.volume_mounts = Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/logs".into(),
            sub_path_expr: Some("$(POD_NAME)".into()),
            ..Default::default()
        }]);
        let env = [("POD_NAME".to_string(), "web-0".to_string())];
        let got = container_mounts(&volumes, &c, &env).expect("expr");
        assert_eq!(got, [bind(&real_data.join("web-0"), "/logs", false)]);

        // A symlink out of the volume, `..`, and a volume the pod does not have: refused.
        for (m, want) in [
            (
                mount("data", "/x", Some("escape"), false),
                "failed to prepare subPath for volumeMount \"data\" of container \"main\"",
            ),
            (
                mount("data", "/x", Some("escape/deeper"), false),
                "failed to prepare subPath for volumeMount \"data\" of container \"main\"",
            ),
            (
                mount("data", "/x", Some("../outside"), false),
                "unable to provision SubPath `../outside`: must not contain '..'",
            ),
            (
                mount("nope", "/x", None, false),
                "cannot find volume \"nope\" to mount into container \"main\"",
            ),
        ] {
            c.volume_mounts = Some(vec![m]);
            let err = container_mounts(&volumes, &c, &[]).expect_err(want);
            assert_eq!(err.to_string(), want);
        }
        assert!(
            !outside.join("deeper").exists(),
            "nothing made outside the volume"
        );
    }
}
