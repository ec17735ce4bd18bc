//! Volume binding (Kubernetes' VolumeBinding filter): what a pod's PersistentVolumeClaims ask
//! of a node. Read once per pod (`VolumeNeeds::of`), which may already rule the pod out
//! everywhere: a claim that does not exist (`persistentvolumeclaim "x" not found`), is being
//! deleted, names a class that does not exist, or is unbound in an Immediate class (`pod has
//! unbound immediate PersistentVolumeClaims`: the binder will bind it, or not). Then per node:
//! a bound claim's volume must admit the node by its node affinity (`node(s) had volume node
//! affinity conflict`); an unbound WaitForFirstConsumer claim already given a node goes only
//! there (unless that node is gone); one of the local-path class can be provisioned on any node; one of another
//! provisioner's class needs a volume that fits on that node (`node(s) didn't find available
//! persistent volumes to bind`, found by the binder's own `matching`). The scheduler marks the
//! unbound WaitForFirstConsumer claims of a pod with the node it chose before binding the pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::node_affinity::RequiredAffinity;
use super::NodeInfo;
use crate::controllers::persistentvolume::local_path::PROVISIONER;
use crate::controllers::persistentvolume::matching::{claim_class, find_match, volume_affinity};
use crate::controllers::persistentvolume::ANN_SELECTED_NODE;

/// Why a node fails because of a bound claim's volume.
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Why a node fails for a claim only an existing volume can satisfy.
pub const NO_VOLUME: &str = "node(s) didn't find available persistent volumes to bind";
/// Why no node can take a pod whose Immediate claim is not bound yet.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// The claims, volumes and classes the predicate reads, decoded once per pass.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    claims: BTreeMap<(String, String), PersistentVolumeClaim>,
    volumes: BTreeMap<String, PersistentVolume>,
    classes: BTreeMap<String, StorageClass>,
}

fn decode<T: DeserializeOwned>(items: &[Value]) -> Vec<T> {
    items
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

impl Storage {
    pub fn new(claims: &[Value], volumes: &[Value], classes: &[Value]) -> Storage {
        Storage {
            claims: decode::<PersistentVolumeClaim>(claims)
                .into_iter()
                .map(|c| {
                    let key = (
                        c.metadata.namespace.clone().unwrap_or_default(),
                        c.metadata.name.clone().unwrap_or_default(),
                    );
                    (key, c)
                })
                .collect(),
            volumes: decode::<PersistentVolume>(volumes)
                .into_iter()
                .map(|v| (v.metadata.name.clone().unwrap_or_default(), v))
                .collect(),
            classes: decode::<StorageClass>(classes)
                .into_iter()
                .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
                .collect(),
        }
    }
}

/// The claims a pod spec's volumes name (generic ephemeral volumes: `<pod>-<volume>`).
pub fn claim_names(pod: &Value) -> Vec<String> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            if let Some(c) = v
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            {
                Some(c.to_string())
            } else if v.get("ephemeral").is_some() {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                Some(format!("{pod_name}-{name}"))
            } else {
                None
            }
        })
        .collect()
}

/// What a pod's claims ask of a node.
#[derive(Clone, Debug, Default)]
pub struct VolumeNeeds {
    /// The node affinity of each bound claim's volume.
    bound: Vec<RequiredAffinity>,
    /// Nodes already chosen for unbound WaitForFirstConsumer claims.
    pinned: Vec<String>,
    /// Unbound WaitForFirstConsumer claims only an existing volume can serve.
    existing_only: Vec<PersistentVolumeClaim>,
    /// Unbound WaitForFirstConsumer claims, to be marked with the node chosen.
    pub to_select: Vec<String>,
}

impl VolumeNeeds {
    /// The needs of `pod` (in `namespace`), or why no node can take it. `chosen` holds the nodes
    /// chosen earlier in this pass for claims (namespace, name), not written yet.
    pub fn of(
        pod: &Value,
        namespace: &str,
        storage: &Storage,
        chosen: &BTreeMap<(String, String), String>,
    ) -> Result<VolumeNeeds, String> {
        let mut needs = VolumeNeeds::default();
        let mut unbound_immediate = false;
        for name in claim_names(pod) {
            let key = (namespace.to_string(), name.clone());
            let Some(claim) = storage.claims.get(&key) else {
                return Err(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let volume_name = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            if !volume_name.is_empty() {
                let Some(volume) = storage.volumes.get(&volume_name) else {
                    return Err(format!(
                        "persistentvolume \"{volume_name}\" not found (bound to claim \"{name}\")"
                    ));
                };
                if let Some(affinity) = volume_affinity(volume) {
                    needs.bound.push(affinity);
                }
                continue;
            }
            let class_name = claim_class(claim);
            let class = if class_name.is_empty() {
                None
            } else {
                Some(storage.classes.get(class_name).ok_or_else(|| {
                    format!("storageclass.storage.k8s.io \"{class_name}\" not found")
                })?)
            };
            let delayed = class
                .and_then(|c| c.volume_binding_mode.as_deref())
                .is_some_and(|m| m == "WaitForFirstConsumer");
            if !delayed {
                unbound_immediate = true;
                continue;
            }
            let selected = chosen.get(&key).cloned().or_else(|| {
                claim
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANN_SELECTED_NODE).cloned())
            });
            if let Some(node) = selected {
                needs.pinned.push(node);
            }
            if class.is_none_or(|c| c.provisioner != PROVISIONER) {
                needs.existing_only.push(claim.clone());
            }
            needs.to_select.push(name);
        }
        if unbound_immediate {
            return Err(UNBOUND_IMMEDIATE.into());
        }
        Ok(needs)
    }

    /// Forgets the nodes chosen for claims that are not among the nodes there are (`known`),
    /// so that the claim is given a node again rather than waiting for ever on a node gone.
    pub fn forget_unknown_nodes(&mut self, known: impl Fn(&str) -> bool) {
        self.pinned.retain(|n| known(n));
    }

    /// Why `node` cannot serve these claims, or None.
    pub fn misfit(&self, node: &NodeInfo, storage: &Storage) -> Option<&'static str> {
        if self.bound.iter().any(|a| !a.matches(node))
            || self.pinned.iter().any(|n| *n != node.name)
        {
            return Some(CONFLICT);
        }
        let fits = self
            .existing_only
            .iter()
            .all(|c| find_match(c, storage.volumes.values(), Some(node), true).is_some());
        (!fits).then_some(NO_VOLUME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(
        name: &str,
        class: Option<&str>,
        volume: Option<&str>,
        selected: Option<&str>,
    ) -> Value {
        let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(k) = class {
            c["spec"]["storageClassName"] = json!(k);
        }
        if let Some(v) = volume {
            c["spec"]["volumeName"] = json!(v);
        }
        if let Some(n) = selected {
            c["metadata"]["annotations"] = json!({ANN_SELECTED_NODE: n});
        }
        c
    }

    fn local_volume(name: &str, class: &str, host: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": class, "hostPath": {"path": "/x"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}},
            "status": {"phase": "Available"}})
    }

    fn class(name: &str, provisioner: &str, mode: &str) -> Value {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode})
    }

    fn storage() -> Storage {
        Storage::new(
            &[
                claim("bound", Some("local-path"), Some("pv-n1"), None),
                claim("wffc", Some("local-path"), None, None),
                claim("wffc-picked", Some("local-path"), None, Some("n2")),
                claim("immediate", Some(""), None, None),
                claim("external", Some("cloud"), None, None),
                claim("lost-class", Some("gone"), None, None),
            ],
            &[
                local_volume("pv-n1", "local-path", "n1"),
                local_volume("cloud-n2", "cloud", "n2"),
            ],
            &[
                class("local-path", PROVISIONER, "WaitForFirstConsumer"),
                class("cloud", "ebs.csi.aws.com", "WaitForFirstConsumer"),
            ],
        )
    }

    fn pod(claims: &[&str]) -> Value {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"volumes": volumes}})
    }

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn claims_that_rule_a_pod_out_everywhere() {
        let s = storage();
        let none = BTreeMap::new();
        let cases = [
            (
                vec!["missing"],
                "persistentvolumeclaim \"missing\" not found",
            ),
            (vec!["wffc", "immediate"], UNBOUND_IMMEDIATE),
            (
                vec!["lost-class"],
                "storageclass.storage.k8s.io \"gone\" not found",
            ),
        ];
        for (claims, want) in cases {
            let got = VolumeNeeds::of(&pod(&claims), "default", &s, &none).unwrap_err();
            assert_eq!(got, want, "{claims:?}");
        }
    }

    #[test]
    fn each_kind_of_claim_limits_nodes_its_own_way() {
        let s = storage();
        let none = BTreeMap::new();
        // (claims, [n1, n2, n3] misfit)
        let cases = [
            (vec!["bound"], [None, Some(CONFLICT), Some(CONFLICT)]),
            (vec!["wffc"], [None, None, None]),
            (vec!["wffc-picked"], [Some(CONFLICT), None, Some(CONFLICT)]),
            (vec!["external"], [Some(NO_VOLUME), None, Some(NO_VOLUME)]),
            (
                vec!["bound", "external"],
                [Some(NO_VOLUME), Some(CONFLICT), Some(CONFLICT)],
            ),
        ];
        for (claims, want) in cases {
            let needs = VolumeNeeds::of(&pod(&claims), "default", &s, &none).unwrap();
            let got = ["n1", "n2", "n3"].map(|n| needs.misfit(&node(n), &s));
            assert_eq!(got, want, "{claims:?}");
        }
        let needs =
            VolumeNeeds::of(&pod(&["bound", "wffc", "external"]), "default", &s, &none).unwrap();
        assert_eq!(needs.to_select, ["wffc", "external"]);
    }

    #[test]
    fn a_node_chosen_earlier_in_the_pass_pins_the_claim() {
        let s = storage();
        let chosen = [(
            ("default".to_string(), "wffc".to_string()),
            "n3".to_string(),
        )]
        .into();
        let needs = VolumeNeeds::of(&pod(&["wffc"]), "default", &s, &chosen).unwrap();
        assert_eq!(needs.misfit(&node("n1"), &s), Some(CONFLICT));
        assert_eq!(needs.misfit(&node("n3"), &s), None);
        // A node chosen that no longer exists pins nothing.
        let mut needs =
            VolumeNeeds::of(&pod(&["wffc-picked"]), "default", &s, &BTreeMap::new()).unwrap();
        needs.forget_unknown_nodes(|n| n != "n2");
        assert_eq!(needs.misfit(&node("n1"), &s), None);
    }
}
