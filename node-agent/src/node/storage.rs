//! This node's local volumes: the directory the control plane's local-path provisioner puts
//! volumes in on this node (`<root-dir>/storage`, published on the Node as the
//! `skiff.io/local-path-dir` annotation and made at start), and the sweep that removes the
//! directories of volumes that are gone. A provisioned volume's directory is named
//! `pvc-<claim uid>_<namespace>_<claim>` after its PersistentVolume `pvc-<claim uid>`; it is made
//! by the hostPath `DirectoryOrCreate` set-up when a pod first mounts it. When the volume is
//! deleted (its claim gone, reclaim policy Delete), the sweep removes the directory — after a
//! fresh list of the PersistentVolumes shows it gone and no pod bound to this node names the
//! claim. The sweep runs when the agent sees a PersistentVolume deleted, and every minute.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::Value;
use skiff_api::runtime::{Config, Event, Watcher};
use skiff_api::{Client, Kind};

/// The Node annotation naming where local volumes go (the control plane's
/// `local_path::DIR_ANNOTATION`; the crates share no code, only this name).
pub const DIR_ANNOTATION: &str = "skiff.io/local-path-dir";
/// How often the sweep runs without a PersistentVolume deletion to prompt it.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where local volumes go under the agent's root directory.
pub fn dir(root_dir: &Path) -> PathBuf {
    root_dir.join("storage")
}

/// Makes the directory and returns its absolute path (what volumes' hostPaths start with).
pub fn ensure_dir(root_dir: &Path) -> std::io::Result<PathBuf> {
    let d = dir(root_dir);
    std::fs::create_dir_all(&d)?;
    std::fs::canonicalize(&d)
}

/// A provisioned volume's directory name, split: (volume name, namespace, claim), or None for
/// anything else.
pub fn parse_entry(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.splitn(3, '_');
    let volume = parts.next()?;
    let namespace = parts.next()?;
    let claim = parts.next()?;
    (volume.starts_with("pvc-") && volume.len() > 4 && !namespace.is_empty() && !claim.is_empty())
        .then_some((volume, namespace, claim))
}

/// The entries of the storage directory to remove (pure): provisioned volumes' directories
/// whose PersistentVolume does not exist and whose claim (namespace, name) no pod of this node
/// names.
pub fn stale<'a>(
    entries: &'a [String],
    volumes: &BTreeSet<String>,
    claims_in_use: &BTreeSet<(String, String)>,
) -> Vec<&'a str> {
    entries
        .iter()
        .filter_map(|e| {
            let (volume, namespace, claim) = parse_entry(e)?;
            let used = claims_in_use.contains(&(namespace.to_string(), claim.to_string()));
            (!volumes.contains(volume) && !used).then_some(e.as_str())
        })
        .collect()
}

/// The claims the pods name (namespace, claim).
fn claims_of(pods: &[Value]) -> BTreeSet<(String, String)> {
    let mut used = BTreeSet::new();
    for pod in pods {
        let ns = skiff_api::object::namespace(pod).to_string();
        let pod_name = skiff_api::object::name(pod);
        for v in pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(c) = v
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            {
                used.insert((ns.clone(), c.to_string()));
            } else if v.get("ephemeral").is_some() {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                used.insert((ns.clone(), format!("{pod_name}-{name}")));
            }
        }
    }
    used
}

/// One sweep: the directory read first, then the volumes and this node's pods listed, so a
/// directory is removed only if its volume was gone after the directory was seen.
pub async fn sweep(client: &Client, node: &str, root_dir: &Path) -> anyhow::Result<Vec<String>> {
    let d = dir(root_dir);
    let entries: Vec<String> = match std::fs::read_dir(&d) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    if !entries.iter().any(|e| parse_entry(e).is_some()) {
        return Ok(vec![]);
    }
    let pv_kind = Kind::of("v1", "PersistentVolume").expect("PersistentVolume is served");
    let pod_kind = Kind::of("v1", "Pod").expect("Pod is served");
    let volumes: BTreeSet<String> = client
        .list(&pv_kind, None, "", "")
        .await?
        .items
        .iter()
        .map(|v| skiff_api::object::name(v).to_string())
        .collect();
    let pods = client
        .list(&pod_kind, None, "", &format!("spec.nodeName={node}"))
        .await?
        .items;
    let mut removed = Vec::new();
    for name in stale(&entries, &volumes, &claims_of(&pods)) {
        let path = d.join(name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the directory of a deleted volume");
                removed.push(name.to_string());
            }
            Err(e) => tracing::warn!(path = %path.display(), %e, "volume directory not removed"),
        }
    }
    Ok(removed)
}

/// Sweeps whenever a PersistentVolume is deleted and every `SWEEP_EVERY`, until the process
/// ends.
pub async fn run(client: Client, node: String, root_dir: PathBuf) {
    let mut watcher = match Watcher::<PersistentVolume>::new(client.clone(), Config::default()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(%e, "not following persistent volumes; sweeping every minute");
            None
        }
    };
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            ev = async {
                match watcher.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match ev {
                    Ok(Event::Deleted(_)) | Ok(Event::Restarted(_)) => {}
                    Ok(Event::Applied(_)) => continue,
                    Err(e) => {
                        tracing::debug!(%e, "persistent volume watch");
                        continue;
                    }
                }
            }
        }
        if let Err(e) = sweep(&client, &node, &root_dir).await {
            tracing::warn!("sweeping local volumes: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provisioned_volume_directories_are_read() {
        assert_eq!(
            parse_entry("pvc-1234_shop_data_web-0"),
            Some(("pvc-1234", "shop", "data_web-0"))
        );
        for other in ["pvc-_a_b", "pvc-1_a", "other_a_b", "pvc-1__b", "lost+found"] {
            assert_eq!(parse_entry(other), None, "{other}");
        }
    }

    #[test]
    fn directories_go_only_when_their_volume_is_gone_and_no_pod_names_the_claim() {
        let entries: Vec<String> = [
            "pvc-1_default_kept",
            "pvc-2_default_gone",
            "pvc-3_default_in-use",
            "not-a-volume",
        ]
        .map(String::from)
        .to_vec();
        let volumes: BTreeSet<String> = ["pvc-1".to_string()].into();
        let in_use: BTreeSet<(String, String)> =
            [("default".to_string(), "in-use".to_string())].into();
        assert_eq!(stale(&entries, &volumes, &in_use), ["pvc-2_default_gone"]);
    }

    #[test]
    fn pods_name_their_claims_and_ephemeral_ones() {
        let pods = [serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "tmp", "emptyDir": {}}
            ]}
        })];
        let got: Vec<(String, String)> = claims_of(&pods).into_iter().collect();
        assert_eq!(
            got,
            [
                ("shop".to_string(), "data-web-0".to_string()),
                ("shop".to_string(), "web-0-scratch".to_string())
            ]
        );
    }

    #[test]
    fn the_directory_is_made_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let d = ensure_dir(root.path()).unwrap();
        assert_eq!(d, root.path().canonicalize().unwrap().join("storage"));
        assert!(d.is_dir());
    }
}
