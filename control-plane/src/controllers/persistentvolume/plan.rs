//! The binder's and provisioner's pure core: from every claim, volume, class and node (and
//! which claims running pods use), what each claim and volume should look like next, which
//! volumes to provision or delete, and what to tell. Kubernetes' PersistentVolume controller
//! decides the same things in the same words:
//!
//! - A volume with no claimRef is Available. One whose claim is gone (by uid) is Released and
//!   reclaimed: Retain keeps it; Delete deletes it when this cluster's provisioner made it, and
//!   otherwise warns once that nothing can delete it (it stays Released); Recycle is not done.
//! - A claim naming a volume (`spec.volumeName`) is bound to it if the volume fits; a claim
//!   naming none is bound to the volume `matching::find_match` picks (a pre-bound one first,
//!   then the smallest that fits). Binding sets the volume's claimRef and phase Bound, then
//!   the claim's volumeName, its `pv.kubernetes.io/bind-completed` (and `bound-by-controller`
//!   when the binder chose) annotations, phase Bound, capacity and access modes. The claim's
//!   write is made only if the volume's succeeded.
//! - WaitForFirstConsumer claims wait for the scheduler's `volume.kubernetes.io/selected-node`
//!   before anything but a pre-bound volume is taken, then only volumes that node can use.
//! - A claim nothing matches is provisioned when its class's provisioner is the local-path one
//!   (`local_path::provision` on the selected node; an Immediate class is refused, as k3s's
//!   provisioner refuses a claim with no node); another provisioner's claims wait for it.
//! - Protection: claims carry `kubernetes.io/pvc-protection` until they are being deleted and
//!   no unfinished pod uses them; volumes `kubernetes.io/pv-protection` until they are being
//!   deleted and not Bound.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use skiff_api::object;

use super::local_path::{self, PROVISIONER};
use super::matching::{claim_class, find_match, is_bound_to, satisfies, to_json};
use super::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, PVC_PROTECTION, PV_PROTECTION,
};
use crate::scheduler::predicates::NodeInfo;

/// Who tells the binder's Events.
pub const BINDER: &str = "persistentvolume-controller";

/// Everything one pass decides from.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
    pub classes: Vec<StorageClass>,
    /// Node objects by name.
    pub nodes: BTreeMap<String, Value>,
    /// Claims (namespace, name) used by a pod that has not finished.
    pub in_use: BTreeSet<(String, String)>,
}

/// An object as it is and as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Change<T> {
    pub before: T,
    pub next: T,
}

/// A claim's change, and the volume whose write it waits for (a binding).
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimChange {
    pub change: Change<PersistentVolumeClaim>,
    pub needs_volume: Option<String>,
}

/// An Event to tell (the caller folds repeats).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub involved: Value,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    pub component: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Written first: spec and metadata (Update), then status (UpdateStatus).
    pub volumes: Vec<Change<PersistentVolume>>,
    /// Written after the volumes.
    pub claims: Vec<ClaimChange>,
    /// Volumes to create, each for its claim.
    pub create: Vec<(PersistentVolume, PersistentVolumeClaim)>,
    /// Volumes to delete (reclaimed).
    pub delete: Vec<String>,
    pub events: Vec<Event>,
    /// Something failed that time may mend (a node without its directory, a class missing):
    /// run again soon even if nothing changes.
    pub retry: bool,
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn annotated(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
}

fn annotate(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value.to_string());
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

fn add_finalizer(meta: &mut ObjectMeta, f: &str) {
    if !has_finalizer(meta, f) {
        meta.finalizers
            .get_or_insert_with(Default::default)
            .push(f.to_string());
    }
}

fn remove_finalizer(meta: &mut ObjectMeta, f: &str) {
    if let Some(list) = meta.finalizers.as_mut() {
        list.retain(|x| x != f);
    }
}

pub fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn set_volume_phase(v: &mut PersistentVolume, phase: &str) {
    if volume_phase(v) != phase {
        v.status
            .get_or_insert_with(PersistentVolumeStatus::default)
            .phase = Some(phase.into());
    }
}

pub fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn set_claim_phase(c: &mut PersistentVolumeClaim, phase: &str) {
    if claim_phase(c) != phase {
        c.status
            .get_or_insert_with(PersistentVolumeClaimStatus::default)
            .phase = Some(phase.into());
    }
}

fn claim_key(c: &PersistentVolumeClaim) -> (String, String) {
    (
        c.metadata.namespace.clone().unwrap_or_default(),
        name_of(&c.metadata),
    )
}

fn volume_name_of(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default()
}

fn event(involved: Value, warning: bool, reason: &'static str, message: String) -> Event {
    Event {
        involved,
        warning,
        reason,
        message,
        component: BINDER,
    }
}

/// The claims the pods use (namespace, claim), counting pods that have not finished: a claim
/// they hold keeps its protection finalizer.
pub fn claims_in_use<'a>(pods: impl IntoIterator<Item = &'a Value>) -> BTreeSet<(String, String)> {
    let mut used = BTreeSet::new();
    for pod in pods {
        if matches!(
            object::field_string(pod, "status.phase").as_str(),
            "Succeeded" | "Failed"
        ) {
            continue;
        }
        let ns = object::namespace(pod);
        let volumes = object::field(pod, "spec.volumes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for v in volumes {
            if let Some(claim) = v
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            {
                used.insert((ns.to_string(), claim.to_string()));
            } else if v.get("ephemeral").is_some() {
                // A generic ephemeral volume's claim is named `<pod>-<volume>`.
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                used.insert((ns.to_string(), format!("{}-{name}", object::name(pod))));
            }
        }
    }
    used
}

/// Decides one pass.
pub fn plan(world: &World) -> Plan {
    let mut out = Plan::default();
    let claims: BTreeMap<(String, String), &PersistentVolumeClaim> =
        world.claims.iter().map(|c| (claim_key(c), c)).collect();
    let classes: BTreeMap<String, &StorageClass> = world
        .classes
        .iter()
        .map(|c| (name_of(&c.metadata), c))
        .collect();
    let mut volumes: BTreeMap<String, PersistentVolume> = world
        .volumes
        .iter()
        .map(|v| (name_of(&v.metadata), v.clone()))
        .collect();
    for v in volumes.values_mut() {
        sync_volume(v, &claims, &mut out);
    }
    let mut order: Vec<&PersistentVolumeClaim> = world.claims.iter().collect();
    order.sort_by_key(|c| {
        (
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            claim_key(c),
        )
    });
    for c in order {
        let mut next = c.clone();
        protect_claim(&mut next, &world.in_use);
        let needs_volume = if next.metadata.deletion_timestamp.is_none() {
            sync_claim(&mut next, &mut volumes, &classes, world, &mut out)
        } else {
            None
        };
        if next != *c {
            out.claims.push(ClaimChange {
                change: Change {
                    before: c.clone(),
                    next,
                },
                needs_volume,
            });
        }
    }
    for before in &world.volumes {
        let Some(mut next) = volumes.remove(&name_of(&before.metadata)) else {
            continue;
        };
        protect_volume(&mut next);
        if next != *before {
            out.volumes.push(Change {
                before: before.clone(),
                next,
            });
        }
    }
    out
}

fn protect_claim(c: &mut PersistentVolumeClaim, in_use: &BTreeSet<(String, String)>) {
    if c.metadata.deletion_timestamp.is_none() {
        add_finalizer(&mut c.metadata, PVC_PROTECTION);
    } else if !in_use.contains(&claim_key(c)) {
        remove_finalizer(&mut c.metadata, PVC_PROTECTION);
    }
}

fn protect_volume(v: &mut PersistentVolume) {
    if v.metadata.deletion_timestamp.is_none() {
        add_finalizer(&mut v.metadata, PV_PROTECTION);
    } else if volume_phase(v) != "Bound" {
        remove_finalizer(&mut v.metadata, PV_PROTECTION);
    }
}

/// A volume's phase from its claimRef and the claim it names; Released volumes reclaimed.
fn sync_volume(
    v: &mut PersistentVolume,
    claims: &BTreeMap<(String, String), &PersistentVolumeClaim>,
    out: &mut Plan,
) {
    let phase = volume_phase(v).to_string();
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        set_volume_phase(v, "Available");
        return;
    };
    let ref_uid = r.uid.clone().unwrap_or_default();
    let key = (
        r.namespace.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
    );
    let claim = claims
        .get(&key)
        .filter(|c| ref_uid.is_empty() || c.metadata.uid.as_deref() == Some(ref_uid.as_str()));
    match claim {
        // Pre-bound to a claim that does not exist yet.
        None if ref_uid.is_empty() => set_volume_phase(v, "Available"),
        None => {
            let newly = !matches!(phase.as_str(), "Released" | "Failed");
            if newly {
                set_volume_phase(v, "Released");
            }
            if volume_phase(v) == "Released" {
                reclaim(v, newly, out);
            }
        }
        Some(c) => {
            let bound = volume_name_of(c);
            let name = name_of(&v.metadata);
            if bound.is_empty() {
                // Pre-bound, the claim not bound yet: the claim's sync binds it.
                if matches!(phase.as_str(), "" | "Pending") {
                    set_volume_phase(v, "Available");
                }
            } else if bound == name {
                set_volume_phase(v, "Bound");
            } else if annotated(&v.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
                // The binder bound it, but the claim went to another volume: free it.
                if let Some(spec) = v.spec.as_mut() {
                    spec.claim_ref = None;
                }
                if let Some(a) = v.metadata.annotations.as_mut() {
                    a.remove(ANN_BOUND_BY_CONTROLLER);
                }
                set_volume_phase(v, "Available");
            }
        }
    }
}

/// What a Released volume's reclaim policy does; `newly` when it was released this pass
/// (failures are told once).
fn reclaim(v: &PersistentVolume, newly: bool, out: &mut Plan) {
    let name = name_of(&v.metadata);
    let policy = v
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    match policy {
        "Delete" => {
            let ours = annotated(&v.metadata, ANN_PROVISIONED_BY).as_deref() == Some(PROVISIONER);
            if ours {
                if v.metadata.deletion_timestamp.is_none() {
                    out.delete.push(name);
                }
            } else if newly {
                out.events.push(event(
                    to_json(v),
                    true,
                    "VolumeFailedDelete",
                    format!(
                        "error getting deleter volume plugin for volume \"{name}\": no deletable \
                         volume plugin matched"
                    ),
                ));
            }
        }
        "Recycle" if newly => out.events.push(event(
            to_json(v),
            true,
            "VolumeFailedRecycle",
            "No recycler plugin found for the volume!".into(),
        )),
        _ => {}
    }
}

/// Binds `v` and `c` to each other; `c` gets the volume's name when it had none.
fn bind(v: &mut PersistentVolume, c: &mut PersistentVolumeClaim) {
    let spec = v.spec.get_or_insert_with(Default::default);
    if spec.claim_ref.is_none() {
        annotate(&mut v.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
    }
    let reference = spec.claim_ref.get_or_insert_with(ObjectReference::default);
    reference.api_version = Some("v1".into());
    reference.kind = Some("PersistentVolumeClaim".into());
    reference.namespace = c.metadata.namespace.clone();
    reference.name = c.metadata.name.clone();
    reference.uid = c.metadata.uid.clone();
    let capacity = spec.capacity.clone();
    let modes = spec.access_modes.clone();
    set_volume_phase(v, "Bound");
    let cspec = c.spec.get_or_insert_with(Default::default);
    if cspec.volume_name.as_deref().unwrap_or_default().is_empty() {
        cspec.volume_name = v.metadata.name.clone();
        annotate(&mut c.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
    }
    annotate(&mut c.metadata, ANN_BIND_COMPLETED, "yes");
    let status = c
        .status
        .get_or_insert_with(PersistentVolumeClaimStatus::default);
    status.phase = Some("Bound".into());
    status.capacity = capacity;
    status.access_modes = modes;
}

/// A claim not being deleted: bound, provisioned, or told why it waits. Returns the volume its
/// write depends on, when it binds.
fn sync_claim(
    c: &mut PersistentVolumeClaim,
    volumes: &mut BTreeMap<String, PersistentVolume>,
    classes: &BTreeMap<String, &StorageClass>,
    world: &World,
    out: &mut Plan,
) -> Option<String> {
    let involved = to_json(&*c);
    let named = volume_name_of(c);
    if !named.is_empty() {
        let bind_completed = annotated(&c.metadata, ANN_BIND_COMPLETED).is_some();
        let Some(v) = volumes.get_mut(&named) else {
            if bind_completed {
                if claim_phase(c) != "Lost" {
                    set_claim_phase(c, "Lost");
                    out.events.push(event(
                        involved,
                        true,
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
                            .into(),
                    ));
                }
            } else {
                // Named by the user: it may yet be made.
                set_claim_phase(c, "Pending");
            }
            return None;
        };
        let claimed = v.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
        if !claimed {
            // The user named a free volume: it must fit.
            if let Err(why) = satisfies(v, c) {
                set_claim_phase(c, "Pending");
                out.events.push(event(
                    involved,
                    true,
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume \"{named}\": {why}"),
                ));
                return None;
            }
            bind(v, c);
            return Some(named);
        }
        if is_bound_to(v, c) {
            // Both name each other: finish (or keep) the binding.
            bind(v, c);
            return Some(named);
        }
        if bind_completed {
            if claim_phase(c) != "Lost" {
                set_claim_phase(c, "Lost");
                out.events.push(event(
                    involved,
                    true,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly".into(),
                ));
            }
        } else {
            set_claim_phase(c, "Pending");
        }
        return None;
    }
    if claim_phase(c).is_empty() {
        set_claim_phase(c, "Pending");
    }
    let class_name = claim_class(c).to_string();
    let class = classes.get(&class_name).copied();
    let delayed = class
        .and_then(|k| k.volume_binding_mode.as_deref())
        .is_some_and(|m| m == "WaitForFirstConsumer");
    let selected = annotated(&c.metadata, ANN_SELECTED_NODE);
    let node = selected
        .as_ref()
        .and_then(|n| world.nodes.get(n))
        .map(NodeInfo::of);
    let found = find_match(c, volumes.values(), node.as_ref(), delayed)
        .and_then(|v| v.metadata.name.clone());
    if let Some(v) = found.as_ref().and_then(|n| volumes.get_mut(n)) {
        bind(v, c);
        return found;
    }
    if class_name.is_empty() {
        out.events.push(event(
            involved,
            false,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        ));
        return None;
    }
    let Some(class) = class else {
        out.retry = true;
        out.events.push(event(
            involved,
            true,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        ));
        return None;
    };
    if delayed && selected.is_none() {
        out.events.push(event(
            involved,
            false,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        ));
        return None;
    }
    annotate(&mut c.metadata, ANN_STORAGE_PROVISIONER, &class.provisioner);
    annotate(
        &mut c.metadata,
        ANN_BETA_STORAGE_PROVISIONER,
        &class.provisioner,
    );
    let waiting = format!(
        "Waiting for a volume to be created either by the external provisioner '{}' or \
         manually by the system administrator. If volume creation is delayed, please verify \
         that the provisioner is running and correctly registered.",
        class.provisioner
    );
    if class.provisioner != PROVISIONER {
        out.events
            .push(event(involved, false, "ExternalProvisioning", waiting));
        return None;
    }
    let failed = |message: String| Event {
        involved: involved.clone(),
        warning: true,
        reason: "ProvisioningFailed",
        message,
        component: PROVISIONER,
    };
    if !delayed {
        out.events.push(failed(format!(
            "failed to provision volume with StorageClass \"{class_name}\": configuration error, \
             no node was specified ({PROVISIONER} needs volumeBindingMode WaitForFirstConsumer)"
        )));
        return None;
    }
    let selected = selected.unwrap_or_default();
    if volumes.contains_key(&local_path::volume_name(c)) {
        // Made already (it binds once it is seen), or an old one on its way out.
        return None;
    }
    let Some(node) = world.nodes.get(&selected) else {
        out.retry = true;
        out.events.push(failed(format!(
            "failed to provision volume with StorageClass \"{class_name}\": node \"{selected}\" \
             not found"
        )));
        return None;
    };
    match local_path::provision(c, class, node) {
        Ok(pv) => {
            out.events.push(event(
                involved.clone(),
                false,
                "ExternalProvisioning",
                waiting,
            ));
            let (ns, name) = claim_key(c);
            out.events.push(Event {
                involved,
                warning: false,
                reason: "Provisioning",
                message: format!(
                    "External provisioner is provisioning volume for claim \"{ns}/{name}\""
                ),
                component: PROVISIONER,
            });
            out.create.push((pv, c.clone()));
        }
        Err(why) => {
            out.retry = true;
            out.events.push(failed(why));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, extra: Value) -> PersistentVolumeClaim {
        let mut c = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "finalizers": [PVC_PROTECTION],
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}
        });
        merge(&mut c, extra);
        serde_json::from_value(c).unwrap()
    }

    fn volume(name: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "finalizers": [PV_PROTECTION]},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": format!("/srv/{name}")}},
            "status": {"phase": "Available"}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    /// Deep merge of `extra` into `into` (objects merged, anything else replaced).
    fn merge(into: &mut Value, extra: Value) {
        match (into, extra) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
        serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": provisioner,
            "reclaimPolicy": "Delete", "volumeBindingMode": mode
        }))
        .unwrap()
    }

    fn node(name: &str, dir: Option<&str>) -> (String, Value) {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
        if let Some(d) = dir {
            n["metadata"]["annotations"] = json!({local_path::DIR_ANNOTATION: d});
        }
        (name.to_string(), n)
    }

    fn world() -> World {
        World {
            classes: vec![
                class("local-path", PROVISIONER, "WaitForFirstConsumer"),
                class("now", PROVISIONER, "Immediate"),
                class("cloud", "ebs.csi.aws.com", "WaitForFirstConsumer"),
            ],
            nodes: [
                node("n1", Some("/var/lib/skiff-agent/storage")),
                node("bare", None),
            ]
            .into_iter()
            .collect(),
            ..World::default()
        }
    }

    fn reasons(p: &Plan) -> Vec<(&str, &str)> {
        p.events
            .iter()
            .map(|e| (e.reason, e.message.as_str()))
            .collect()
    }

    fn next_claim<'a>(p: &'a Plan, name: &str) -> &'a PersistentVolumeClaim {
        &p.claims
            .iter()
            .find(|c| c.change.next.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no change to claim {name}: {p:#?}"))
            .change
            .next
    }

    fn next_volume<'a>(p: &'a Plan, name: &str) -> &'a PersistentVolume {
        &p.volumes
            .iter()
            .find(|c| c.next.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no change to volume {name}: {p:#?}"))
            .next
    }

    fn annotations(meta: &ObjectMeta) -> BTreeMap<String, String> {
        meta.annotations.clone().unwrap_or_default()
    }

    #[test]
    fn an_immediate_claim_binds_to_the_smallest_fitting_volume() {
        let mut w = world();
        w.claims = vec![claim("data", json!({"spec": {"storageClassName": ""}}))];
        w.volumes = vec![
            volume("big", json!({"spec": {"capacity": {"storage": "5Gi"}}})),
            volume("right", json!({})),
            volume("other-class", json!({"spec": {"storageClassName": "x"}})),
        ];
        let p = plan(&w);
        let pv = next_volume(&p, "right");
        assert_eq!(volume_phase(pv), "Bound");
        let r = pv.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("default"), Some("data"), Some("uid-data"))
        );
        assert_eq!(annotations(&pv.metadata)[ANN_BOUND_BY_CONTROLLER], "yes");
        let c = &p.claims[0];
        assert_eq!(c.needs_volume.as_deref(), Some("right"));
        let c = &c.change.next;
        assert_eq!(volume_name_of(c), "right");
        assert_eq!(claim_phase(c), "Bound");
        let status = c.status.as_ref().unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["storage"].0, "1Gi");
        assert_eq!(
            status.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_string()][..])
        );
        let a = annotations(&c.metadata);
        assert_eq!(
            (
                a[ANN_BIND_COMPLETED].as_str(),
                a[ANN_BOUND_BY_CONTROLLER].as_str()
            ),
            ("yes", "yes")
        );
        assert!(p
            .volumes
            .iter()
            .all(|v| v.next.metadata.name.as_deref() == Some("right")));
    }

    #[test]
    fn a_claim_naming_its_volume_is_bound_to_it_or_told_why_not() {
        let mut w = world();
        w.claims = vec![
            claim(
                "named",
                json!({"spec": {"storageClassName": "", "volumeName": "pv1"}}),
            ),
            claim("mismatch", json!({"spec": {"volumeName": "pv2"}})),
        ];
        w.volumes = vec![volume("pv1", json!({})), volume("pv2", json!({}))];
        let p = plan(&w);
        let named = next_claim(&p, "named");
        assert_eq!(claim_phase(named), "Bound");
        // The user chose the volume: the claim is not marked as the binder's choice.
        assert!(!annotations(&named.metadata).contains_key(ANN_BOUND_BY_CONTROLLER));
        assert_eq!(
            reasons(&p),
            [(
                "VolumeMismatch",
                "Cannot bind to requested volume \"pv2\": storageClassName does not match"
            )]
        );
        assert_eq!(volume_phase(next_volume(&p, "pv1")), "Bound");
    }

    #[test]
    fn wait_for_first_consumer_claims_wait_for_the_scheduler() {
        let mut w = world();
        w.claims = vec![claim("data", json!({}))];
        // A free volume of the class does not bind before a node is chosen.
        w.volumes = vec![volume(
            "free",
            json!({"spec": {"storageClassName": "local-path"}}),
        )];
        let p = plan(&w);
        assert!(p.claims.is_empty() && p.create.is_empty(), "{p:#?}");
        assert_eq!(
            reasons(&p),
            [(
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding"
            )]
        );
    }

    #[test]
    fn a_claim_with_a_selected_node_is_provisioned_there() {
        let mut w = world();
        w.claims = vec![claim(
            "data",
            json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n1"}}}),
        )];
        let p = plan(&w);
        assert_eq!(p.create.len(), 1);
        let (pv, for_claim) = &p.create[0];
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-uid-data"));
        assert_eq!(for_claim.metadata.name.as_deref(), Some("data"));
        assert_eq!(
            pv.spec.as_ref().unwrap().host_path.as_ref().unwrap().path,
            "/var/lib/skiff-agent/storage/pvc-uid-data_default_data"
        );
        let c = next_claim(&p, "data");
        assert_eq!(
            annotations(&c.metadata)[ANN_STORAGE_PROVISIONER],
            PROVISIONER
        );
        let told: Vec<&str> = p.events.iter().map(|e| e.reason).collect();
        assert_eq!(told, ["ExternalProvisioning", "Provisioning"]);
        assert_eq!(
            p.events[1].message,
            "External provisioner is provisioning volume for claim \"default/data\""
        );

        // The next pass sees the volume, pre-bound to the claim, and binds them.
        w.volumes = vec![serde_json::from_value(to_json(pv)).unwrap()];
        w.claims = vec![c.clone()];
        let p = plan(&w);
        assert_eq!(volume_phase(next_volume(&p, "pvc-uid-data")), "Bound");
        let bound = next_claim(&p, "data");
        assert_eq!(volume_name_of(bound), "pvc-uid-data");
        assert_eq!(claim_phase(bound), "Bound");
        assert!(p.create.is_empty());
        // The provisioned volume was pre-bound, so it is not marked as the binder's choice;
        // the claim is.
        let pv = next_volume(&p, "pvc-uid-data");
        assert!(!annotations(&pv.metadata).contains_key(ANN_BOUND_BY_CONTROLLER));
        assert_eq!(annotations(&bound.metadata)[ANN_BOUND_BY_CONTROLLER], "yes");
    }

    #[test]
    fn provisioning_failures_are_told_and_retried() {
        let mut w = world();
        w.claims = vec![
            claim(
                "on-bare",
                json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "bare"}}}),
            ),
            claim(
                "on-gone",
                json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "gone"}}}),
            ),
            claim("immediate", json!({"spec": {"storageClassName": "now"}})),
            claim("no-class", json!({"spec": {"storageClassName": "missing"}})),
            claim(
                "external",
                json!({"spec": {"storageClassName": "cloud"},
                                     "metadata": {"annotations": {ANN_SELECTED_NODE: "n1"}}}),
            ),
        ];
        let p = plan(&w);
        assert!(p.create.is_empty());
        assert!(p.retry);
        let told = reasons(&p);
        let has =
            |reason: &str, part: &str| told.iter().any(|(r, m)| *r == reason && m.contains(part));
        assert!(
            has(
                "ProvisioningFailed",
                "node \"bare\" has no skiff.io/local-path-dir annotation"
            ),
            "{told:#?}"
        );
        assert!(
            has("ProvisioningFailed", "node \"gone\" not found"),
            "{told:#?}"
        );
        assert!(
            has(
                "ProvisioningFailed",
                "configuration error, no node was specified"
            ),
            "{told:#?}"
        );
        assert!(
            has(
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"missing\" not found"
            ),
            "{told:#?}"
        );
        assert!(
            has(
                "ExternalProvisioning",
                "external provisioner 'ebs.csi.aws.com'"
            ),
            "{told:#?}"
        );
    }

    #[test]
    fn released_volumes_are_reclaimed_by_their_policy() {
        let gone_claim = |name: &str, policy: &str, ours: bool| {
            let mut extra = json!({"spec": {"persistentVolumeReclaimPolicy": policy,
                "claimRef": {"namespace": "default", "name": "gone", "uid": "old"}},
                "status": {"phase": "Bound"}});
            if ours {
                extra["metadata"] = json!({"annotations": {ANN_PROVISIONED_BY: PROVISIONER}});
            }
            volume(name, extra)
        };
        let mut w = world();
        w.volumes = vec![
            gone_claim("ours-delete", "Delete", true),
            gone_claim("theirs-delete", "Delete", false),
            gone_claim("kept", "Retain", true),
        ];
        let p = plan(&w);
        for name in ["ours-delete", "theirs-delete", "kept"] {
            assert_eq!(volume_phase(next_volume(&p, name)), "Released", "{name}");
        }
        assert_eq!(p.delete, ["ours-delete"]);
        assert_eq!(
            reasons(&p),
            [(
                "VolumeFailedDelete",
                "error getting deleter volume plugin for volume \"theirs-delete\": no deletable \
                 volume plugin matched"
            )]
        );
        // Already Released: deleted again if still there, the warning not repeated.
        w.volumes = p.volumes.iter().map(|c| c.next.clone()).collect();
        let p = plan(&w);
        assert_eq!(p.delete, ["ours-delete"]);
        assert!(p.events.is_empty(), "{:?}", reasons(&p));
    }

    #[test]
    fn a_volume_pre_bound_to_a_claim_not_made_yet_is_available() {
        let mut w = world();
        w.volumes = vec![
            volume(
                "waiting",
                json!({"spec": {"claimRef": {"namespace": "default", "name": "later"}},
                                     "status": {"phase": "Pending"}}),
            ),
            volume("fresh", json!({"status": {"phase": "Pending"}})),
        ];
        let p = plan(&w);
        assert_eq!(volume_phase(next_volume(&p, "waiting")), "Available");
        assert_eq!(volume_phase(next_volume(&p, "fresh")), "Available");
    }

    #[test]
    fn protection_finalizers_hold_claims_in_use_and_bound_volumes() {
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}});
        let mut w = world();
        w.claims = vec![
            claim("used", deleting.clone()),
            claim("unused", deleting.clone()),
            claim(
                "new",
                json!({"metadata": {"finalizers": []}, "spec": {"storageClassName": "", "volumeName": "missing"}}),
            ),
        ];
        w.in_use = [("default".to_string(), "used".to_string())].into();
        let mut bound = volume(
            "bound",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"claimRef": {"namespace": "default", "name": "used", "uid": "uid-used"}},
            "status": {"phase": "Bound"}}),
        );
        bound.spec.as_mut().unwrap().storage_class_name = Some("local-path".into());
        let released = volume(
            "released",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"claimRef": {"namespace": "default", "name": "gone", "uid": "x"}},
            "status": {"phase": "Released"}}),
        );
        w.volumes = vec![
            bound,
            released,
            volume("plain", json!({"metadata": {"finalizers": []}})),
        ];
        let p = plan(&w);
        let finalizers = |m: &ObjectMeta| m.finalizers.clone().unwrap_or_default();
        assert!(p
            .claims
            .iter()
            .all(|c| c.change.next.metadata.name.as_deref() != Some("used")));
        assert!(finalizers(&next_claim(&p, "unused").metadata).is_empty());
        assert_eq!(
            finalizers(&next_claim(&p, "new").metadata),
            [PVC_PROTECTION]
        );
        assert!(p
            .volumes
            .iter()
            .all(|v| v.next.metadata.name.as_deref() != Some("bound")));
        assert!(finalizers(&next_volume(&p, "released").metadata).is_empty());
        assert_eq!(
            finalizers(&next_volume(&p, "plain").metadata),
            [PV_PROTECTION]
        );
    }

    #[test]
    fn pods_that_have_not_finished_hold_their_claims() {
        let pod = |name: &str, phase: &str, claim: &str| {
            json!({"metadata": {"name": name, "namespace": "default"},
                   "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}},
                                        {"name": "e", "ephemeral": {}}]},
                   "status": {"phase": phase}})
        };
        let pods = [
            pod("a", "Running", "x"),
            pod("b", "Succeeded", "y"),
            pod("c", "Pending", "z"),
        ];
        let used: Vec<String> = claims_in_use(&pods).into_iter().map(|(_, c)| c).collect();
        assert_eq!(used, ["a-e", "c-e", "x", "z"]);
    }

    #[test]
    fn two_claims_never_take_the_same_volume_in_one_pass() {
        let mut w = world();
        let older = claim("older", json!({"spec": {"storageClassName": ""}}));
        let mut newer = claim("newer", json!({"spec": {"storageClassName": ""}}));
        newer.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-02T00:00:00Z".parse().unwrap(),
            ));
        w.claims = vec![newer, older];
        w.volumes = vec![volume("only", json!({}))];
        let p = plan(&w);
        assert_eq!(volume_name_of(next_claim(&p, "older")), "only");
        assert!(p
            .claims
            .iter()
            .all(|c| c.change.next.metadata.name.as_deref() != Some("newer")
                || volume_name_of(&c.change.next).is_empty()));
        assert!(reasons(&p).iter().any(|(r, _)| *r == "FailedBinding"));
    }
}
