//! The built-in local-path provisioner, as k3s ships Rancher's: the default StorageClass
//! `local-path` (provisioner `skiff.io/local-path`, reclaimPolicy Delete, WaitForFirstConsumer)
//! and the PersistentVolume made for a claim once the scheduler has chosen its node: a
//! hostPath directory `<dir>/pvc-<claim uid>_<namespace>_<name>` (DirectoryOrCreate: the node's
//! agent makes it when the pod mounts it) on that node only, `<dir>` being what the node's agent
//! publishes in its `skiff.io/local-path-dir` annotation. Pure, but for `ensure_default_class`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::{ANN_PROVISIONED_BY, DEFAULT_CLASS_ANNOTATION};
use crate::apiserver::namespaces;
use crate::apiserver::registry::Registry;

/// The provisioner's name, as StorageClasses name it.
pub const PROVISIONER: &str = "skiff.io/local-path";
/// The default StorageClass's name.
pub const CLASS: &str = "local-path";
/// The Node annotation naming the directory volumes are made in on that node.
pub const DIR_ANNOTATION: &str = "skiff.io/local-path-dir";
/// The label naming a node's host (its name unless the agent says otherwise).
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The default StorageClass every cluster starts with.
pub fn default_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": CLASS,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer"
    })
}

/// Creates the default StorageClass if there is none of its name (at every start of a
/// replica; one a user changed is left as it is, one a user deleted comes back at the next
/// start, as Kubernetes' addon manager treats `EnsureExists` addons).
pub async fn ensure_default_class(registry: &Registry) {
    let kind = Kind::named("storageclasses").expect("StorageClass is served");
    namespaces::ensure_exists(registry, &kind, default_class()).await;
}

/// The name of the volume provisioned for `claim`.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// The PersistentVolume for `claim` of `class` on `node` (the Node object the scheduler chose),
/// or why it cannot be made (to be told on the claim and tried again).
pub fn provision(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &Value,
) -> Result<PersistentVolume, String> {
    let node_name = object::name(node);
    let dir = object::annotations(node)
        .get(DIR_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    if dir.is_empty() {
        return Err(format!(
            "failed to provision volume with StorageClass \"{}\": node \"{node_name}\" has no \
             {DIR_ANNOTATION} annotation (its agent publishes where local volumes go)",
            class.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        return Err("the claim has no uid yet".into());
    }
    let hostname = object::labels(node)
        .get(HOSTNAME_LABEL)
        .cloned()
        .unwrap_or_else(|| node_name.to_string());
    let spec = claim.spec.clone().unwrap_or_default();
    let requests = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    let Some(storage) = requests.get("storage").cloned() else {
        return Err("the claim requests no storage".into());
    };
    let path = format!(
        "{}/{}_{namespace}_{name}",
        dir.trim_end_matches('/'),
        volume_name(claim)
    );
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name(claim)),
            annotations: Some(BTreeMap::from([(
                ANN_PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some(BTreeMap::from([("storage".to_string(), storage)])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace),
                name: Some(name),
                uid: Some(uid),
                ..Default::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path,
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![hostname]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: spec.volume_mode.clone(),
            mount_options: class.mount_options.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data-web-0", "namespace": "shop", "uid": "1234"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                     "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "2Gi"}}}
        }))
        .unwrap()
    }

    fn class() -> StorageClass {
        serde_json::from_value(default_class()).unwrap()
    }

    #[test]
    fn the_volume_lives_under_the_nodes_directory_on_that_node_only() {
        let node = json!({"metadata": {"name": "n1",
            "labels": {"kubernetes.io/hostname": "host-1"},
            "annotations": {DIR_ANNOTATION: "/var/lib/skiff-agent/storage/"}}});
        let pv = provision(&claim(), &class(), &node).unwrap();
        let got = serde_json::to_value(&pv).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": "pvc-1234",
                             "annotations": {"pv.kubernetes.io/provisioned-by": "skiff.io/local-path"}},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "capacity": {"storage": "2Gi"},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                 "namespace": "shop", "name": "data-web-0", "uid": "1234"},
                    "hostPath": {"path": "/var/lib/skiff-agent/storage/pvc-1234_shop_data-web-0",
                                 "type": "DirectoryOrCreate"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["host-1"]}
                    ]}]}},
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": "local-path",
                    "volumeMode": "Filesystem"
                }
            })
        );
    }

    #[test]
    fn a_node_without_the_annotation_is_named_in_the_refusal() {
        let node = json!({"metadata": {"name": "hollow-0"}});
        let e = provision(&claim(), &class(), &node).unwrap_err();
        assert!(
            e.contains("node \"hollow-0\" has no skiff.io/local-path-dir annotation"),
            "{e}"
        );
    }

    #[test]
    fn the_default_class_is_the_one_k3s_ships() {
        let c = class();
        assert_eq!(c.provisioner, PROVISIONER);
        assert_eq!(c.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            c.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(
            c.metadata.annotations.unwrap()[DEFAULT_CLASS_ANNOTATION],
            "true"
        );
    }
}
