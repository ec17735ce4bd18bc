//! Which PersistentVolume a claim may bind to, as Kubernetes' binder decides it (pure, shared
//! by the binder and the scheduler's volume binding predicate): the storage class equal (""
//! meaning none on both sides), the volume's access modes containing the claim's, its
//! capacity at least the request, the claim's selector matching its labels, the same
//! volumeMode, and, when a node is given, its node affinity admitting that node. Among the
//! volumes that fit, one already pre-bound to the claim (its claimRef names it) comes first,
//! then the smallest.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::Value;
use skiff_api::quantity::Quantity;
use skiff_api::selector::LabelSelector;

use crate::scheduler::predicates::node_affinity::RequiredAffinity;
use crate::scheduler::predicates::NodeInfo;

/// The annotation older manifests name a claim's class with.
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The class a claim asks for ("" for none): `spec.storageClassName`, else the beta
/// annotation, as Kubernetes reads it.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(class) = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BETA_CLASS))
    {
        return class;
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

/// Whether the claim names a class at all (an explicit "" counts: it asks for none).
pub fn claim_has_class(claim: &PersistentVolumeClaim) -> bool {
    claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(BETA_CLASS))
        || claim
            .spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// The class a volume belongs to ("" for none).
pub fn volume_class(volume: &PersistentVolume) -> &str {
    if let Some(class) = volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BETA_CLASS))
    {
        return class;
    }
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| Quantity::parse(&q.0).ok())
        .map(|q| q.value())
        .unwrap_or(0)
}

/// The storage the claim requests, in bytes (0 when it names none).
pub fn requested_bytes(claim: &PersistentVolumeClaim) -> i64 {
    bytes(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )
}

/// The volume's capacity, in bytes.
pub fn capacity_bytes(volume: &PersistentVolume) -> i64 {
    bytes(
        volume
            .spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )
}

fn claim_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

fn volume_modes(volume: &PersistentVolume) -> &[String] {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

/// `Filesystem` unless the object says `Block`.
fn claim_volume_mode(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

fn volume_volume_mode(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

/// Whether the volume's claimRef names this claim (by namespace and name, and by uid when
/// the reference has one).
pub fn is_bound_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && r.name.as_deref() == claim.metadata.name.as_deref()
        && match r.uid.as_deref() {
            None | Some("") => true,
            Some(uid) => claim.metadata.uid.as_deref() == Some(uid),
        }
}

/// Kubernetes' `checkVolumeSatisfyClaim`: why a volume the claim names cannot serve it.
pub fn satisfies(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> Result<(), String> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "the volume is marked for deletion {:?}",
            volume.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    if capacity_bytes(volume) < requested_bytes(claim) {
        return Err("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_volume_mode(volume) != claim_volume_mode(claim) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_fit(volume, claim) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// The volume offers every access mode the claim asks for.
fn access_modes_fit(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let offered = volume_modes(volume);
    claim_modes(claim).iter().all(|m| offered.contains(m))
}

/// The node affinity a volume requires (none: every node).
pub fn volume_affinity(volume: &PersistentVolume) -> Option<RequiredAffinity> {
    let required = volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?;
    let value = serde_json::to_value(required).ok()?;
    Some(RequiredAffinity::of_node_selector(&value))
}

/// Whether the volume may be used on `node`.
pub fn admits_node(volume: &PersistentVolume, node: &NodeInfo) -> bool {
    volume_affinity(volume).is_none_or(|a| a.matches(node))
}

fn selector_matches(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(selector) = claim.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return true;
    };
    let Ok(value) = serde_json::to_value(selector) else {
        return false;
    };
    match LabelSelector::from_spec(&value) {
        Ok(s) => s.matches(&volume.metadata.labels.clone().unwrap_or_default()),
        // A selector that does not parse selects nothing.
        Err(_) => false,
    }
}

/// Whether the volume is free to be bound: no claimRef, not released or failed, not going.
fn is_free(volume: &PersistentVolume) -> bool {
    let phase = volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    volume.metadata.deletion_timestamp.is_none()
        && volume.spec.as_ref().is_none_or(|s| s.claim_ref.is_none())
        && !matches!(phase, "Released" | "Failed")
}

/// The volume `claim` should bind to, among `volumes`: one pre-bound to it first, else the
/// smallest free one that fits. `node`, when given, must be admitted by the volume's node
/// affinity. With `delayed` (a WaitForFirstConsumer class) and no node, only a pre-bound volume
/// is taken: which node the claim's pod goes to decides the rest.
pub fn find_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    node: Option<&NodeInfo>,
    delayed: bool,
) -> Option<&'a PersistentVolume> {
    let requested = requested_bytes(claim);
    let mut best: Option<(&PersistentVolume, i64)> = None;
    for volume in volumes {
        if volume.metadata.deletion_timestamp.is_some()
            || volume_volume_mode(volume) != claim_volume_mode(claim)
        {
            continue;
        }
        if node.is_some_and(|n| !admits_node(volume, n)) {
            continue;
        }
        let capacity = capacity_bytes(volume);
        if is_bound_to(volume, claim) {
            if capacity >= requested {
                return Some(volume);
            }
            continue;
        }
        if node.is_none() && delayed {
            continue;
        }
        let fits = is_free(volume)
            && volume_class(volume) == claim_class(claim)
            && access_modes_fit(volume, claim)
            && capacity >= requested
            && selector_matches(volume, claim);
        if fits && best.is_none_or(|(_, c)| capacity < c) {
            best = Some((volume, capacity));
        }
    }
    best.map(|(v, _)| v)
}

/// The JSON of a typed object, for code that reads objects as JSON.
pub fn to_json<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(extra: Value) -> PersistentVolumeClaim {
        let mut c = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default", "uid": "c-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Gi"}}}
        });
        merge(&mut c["spec"], extra);
        serde_json::from_value(c).unwrap()
    }

    fn volume(name: &str, size: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"disk": "ssd"}},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                     "hostPath": {"path": "/tmp/x"}},
            "status": {"phase": "Available"}
        });
        merge(&mut v["spec"], extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(into: &mut Value, extra: Value) {
        if let (Some(m), Value::Object(e)) = (into.as_object_mut(), extra) {
            m.extend(e);
        }
    }

    fn chosen(c: &PersistentVolumeClaim, vs: &[PersistentVolume]) -> Option<String> {
        find_match(c, vs, None, false).and_then(|v| v.metadata.name.clone())
    }

    #[test]
    fn the_smallest_fitting_volume_is_chosen() {
        let vs = [
            volume("big", "10Gi", json!({})),
            volume("small", "500Mi", json!({})),
            volume("fits", "2Gi", json!({})),
            volume("exact", "1Gi", json!({})),
        ];
        assert_eq!(chosen(&claim(json!({})), &vs).as_deref(), Some("exact"));
        let bigger = claim(json!({"resources": {"requests": {"storage": "3Gi"}}}));
        assert_eq!(chosen(&bigger, &vs).as_deref(), Some("big"));
    }

    #[test]
    fn class_modes_selector_and_volume_mode_must_fit() {
        // (case, claim, volume, matches)
        let cases = [
            (
                "same class",
                claim(json!({})),
                volume("v", "1Gi", json!({})),
                true,
            ),
            (
                "another class",
                claim(json!({})),
                volume("v", "1Gi", json!({"storageClassName": "fast"})),
                false,
            ),
            (
                "the claim's class",
                claim(json!({"storageClassName": "fast"})),
                volume("v", "1Gi", json!({"storageClassName": "fast"})),
                true,
            ),
            (
                "a mode the volume lacks",
                claim(json!({"accessModes": ["ReadWriteMany"]})),
                volume("v", "1Gi", json!({})),
                false,
            ),
            (
                "modes contained",
                claim(json!({"accessModes": ["ReadOnlyMany", "ReadWriteOnce"]})),
                volume("v", "1Gi", json!({})),
                true,
            ),
            (
                "selector matching",
                claim(json!({"selector": {"matchLabels": {"disk": "ssd"}}})),
                volume("v", "1Gi", json!({})),
                true,
            ),
            (
                "selector not matching",
                claim(json!({"selector": {"matchLabels": {"disk": "hdd"}}})),
                volume("v", "1Gi", json!({})),
                false,
            ),
            (
                "block against filesystem",
                claim(json!({"volumeMode": "Block"})),
                volume("v", "1Gi", json!({})),
                false,
            ),
            (
                "bound to another claim",
                claim(json!({})),
                volume(
                    "v",
                    "1Gi",
                    json!({"claimRef": {"namespace": "default", "name": "other"}}),
                ),
                false,
            ),
        ];
        for (case, c, v, want) in cases {
            assert_eq!(chosen(&c, &[v]).is_some(), want, "{case}");
        }
    }

    #[test]
    fn a_volume_pre_bound_to_the_claim_comes_first() {
        let pre_bound = volume(
            "mine",
            "5Gi",
            json!({"claimRef": {"namespace": "default", "name": "data", "uid": "c-1"},
                   "storageClassName": "other-class"}),
        );
        let vs = [volume("exact", "1Gi", json!({})), pre_bound];
        assert_eq!(chosen(&claim(json!({})), &vs).as_deref(), Some("mine"));
        // A reference to an earlier claim of that name (another uid) does not count.
        let stale = volume(
            "stale",
            "1Gi",
            json!({"claimRef": {"namespace": "default", "name": "data", "uid": "old"}}),
        );
        assert_eq!(chosen(&claim(json!({})), &[stale]), None);
    }

    #[test]
    fn delayed_claims_without_a_node_take_only_pre_bound_volumes() {
        let c = claim(json!({}));
        let free = volume("free", "1Gi", json!({}));
        assert!(find_match(&c, [&free], None, true).is_none());
        let node = NodeInfo {
            name: "n1".into(),
            ..NodeInfo::default()
        };
        assert!(find_match(&c, [&free], Some(&node), true).is_some());
    }

    #[test]
    fn node_affinity_limits_the_nodes_a_volume_serves() {
        let pinned = volume(
            "local",
            "1Gi",
            json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}),
        );
        let node = |name: &str| NodeInfo {
            name: name.into(),
            labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
            ..NodeInfo::default()
        };
        assert!(admits_node(&pinned, &node("n1")));
        assert!(!admits_node(&pinned, &node("n2")));
        let c = claim(json!({}));
        assert!(find_match(&c, [&pinned], Some(&node("n2")), false).is_none());
        assert!(find_match(&c, [&pinned], Some(&node("n1")), false).is_some());
    }

    #[test]
    fn a_named_volume_that_does_not_fit_says_why() {
        let c = claim(json!({"storageClassName": "local-path"}));
        let v = volume("v", "1Gi", json!({}));
        assert_eq!(
            satisfies(&v, &c).unwrap_err(),
            "storageClassName does not match"
        );
        let small = volume("v", "1Mi", json!({}));
        assert_eq!(
            satisfies(&small, &claim(json!({}))).unwrap_err(),
            "requested PV is too small"
        );
        assert!(satisfies(&volume("v", "1Gi", json!({})), &claim(json!({}))).is_ok());
    }
}
