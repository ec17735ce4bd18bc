//! PersistentVolumes and their claims, as Kubernetes' PersistentVolume controller (binder),
//! its protection controllers and k3s's local-path provisioner keep them: claims bound to
//! matching volumes, volumes provisioned on the node the scheduler chose for
//! WaitForFirstConsumer claims of the `local-path` class, released volumes reclaimed, and the
//! `kubernetes.io/pvc-protection` and `kubernetes.io/pv-protection` finalizers held while a
//! claim is used or a volume bound. `matching` decides which volume fits a claim (shared with
//! the scheduler), `local_path` owns the provisioner and the default StorageClass, `plan` is
//! the pure pass; this module reads the cache, writes the plan (each volume before the claims
//! bound to it) and tells Events, each repeat folded for a minute.

pub mod local_path;
pub mod matching;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use skiff_api::{object, ApiError, Kind, Reason};

use super::runner::{Again, Pass};
use super::Context;
use crate::apiserver::registry::Stored;
use matching::to_json;
use plan::{Change, Plan, World};

/// The node the scheduler chose for a WaitForFirstConsumer claim's first pod.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The binding of a claim is complete (the binder set everything it sets).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The binder chose this binding (rather than the user naming it).
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Which provisioner made a volume.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Which provisioner a claim waits for.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Marks the default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The same, as older clusters spell it.
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// Holds a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Holds a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// How often a pass runs with nothing changing.
const RESYNC: Duration = Duration::from_secs(15);
/// How soon a pass runs again after a failure time may mend.
const RETRY: Duration = Duration::from_secs(5);
/// An Event repeated with the same message is told again after this long.
const RETELL: Duration = Duration::from_secs(60);

/// An Event told: (object uid, reason) → (message, when).
type ToldEvents = HashMap<(String, &'static str), (String, Instant)>;

/// Events told recently, folded for `RETELL`.
#[derive(Clone, Default)]
struct Told(Arc<Mutex<ToldEvents>>);

impl Told {
    /// Whether this Event is due: new, changed, or last told a while ago.
    fn due(&self, e: &plan::Event) -> bool {
        let uid = object::meta_str(&e.involved, "uid").to_string();
        let now = Instant::now();
        let mut told = self.0.lock().unwrap_or_else(|p| p.into_inner());
        told.retain(|_, (_, at)| now.duration_since(*at) < RETELL * 10);
        match told.get(&(uid.clone(), e.reason)) {
            Some((message, at)) if *message == e.message && now.duration_since(*at) < RETELL => {
                false
            }
            _ => {
                told.insert((uid, e.reason), (e.message.clone(), now));
                true
            }
        }
    }
}

fn kind(name: &str) -> Kind {
    Kind::named(name).expect("a served kind")
}

fn typed<T: DeserializeOwned>(items: &[Arc<Stored>]) -> Vec<T> {
    items
        .iter()
        .filter_map(|s| match serde_json::from_value(s.object.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(name = object::name(&s.object), %e, "unreadable storage object");
                None
            }
        })
        .collect()
}

/// What the cache holds now, typed.
fn world(p: &Pass) -> World {
    let pods = p.cache.list(&kind("pods"), None);
    World {
        claims: typed(&p.cache.list(&kind("persistentvolumeclaims"), None)),
        volumes: typed(&p.cache.list(&kind("persistentvolumes"), None)),
        classes: typed(&p.cache.list(&kind("storageclasses"), None)),
        nodes: p
            .cache
            .list(&kind("nodes"), None)
            .iter()
            .map(|s| (object::name(&s.object).to_string(), s.object.clone()))
            .collect(),
        in_use: plan::claims_in_use(pods.iter().map(|s| &s.object)),
    }
}

/// Stores `change.next` over `change.before`: its spec and metadata if they changed (Update),
/// then its status if that changed (UpdateStatus, over what the first write stored).
async fn write<T: serde::Serialize>(p: &Pass, change: &Change<T>) -> Result<(), ApiError> {
    let (before, next) = (to_json(&change.before), to_json(&change.next));
    let mut stored = next.clone();
    if before.get("metadata") != next.get("metadata") || before.get("spec") != next.get("spec") {
        stored = p.update(&next).await?.object;
    }
    if before.get("status") != next.get("status") {
        match next.get("status") {
            Some(status) => stored["status"] = status.clone(),
            None => {
                if let Some(m) = stored.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        p.update_status(&stored).await?;
    }
    Ok(())
}

async fn execute(p: &Pass, plan: Plan, told: &Told) {
    let mut failed = std::collections::BTreeSet::new();
    for change in &plan.volumes {
        if let Err(e) = write(p, change).await {
            let name = change.next.metadata.name.clone().unwrap_or_default();
            tracing::debug!(volume = %name, %e, "persistent volume not written");
            failed.insert(name);
        }
    }
    for claim in &plan.claims {
        if claim
            .needs_volume
            .as_ref()
            .is_some_and(|v| failed.contains(v))
        {
            continue;
        }
        if let Err(e) = write(p, &claim.change).await {
            let name = claim.change.next.metadata.name.clone().unwrap_or_default();
            tracing::debug!(claim = %name, %e, "claim not written");
        }
    }
    let volumes = kind("persistentvolumes");
    for (pv, claim) in &plan.create {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let involved = to_json(claim);
        match p.create(&to_json(pv)).await {
            Ok(_) => {
                let message = format!("Successfully provisioned volume {name}");
                p.event(
                    &involved,
                    false,
                    "ProvisioningSucceeded",
                    &message,
                    local_path::PROVISIONER,
                )
                .await;
            }
            Err(e) if e.reason == Reason::AlreadyExists => {}
            Err(e) => {
                let message = format!(
                    "failed to provision volume with StorageClass \"{}\": {}",
                    matching::claim_class(claim),
                    e.message
                );
                p.event(
                    &involved,
                    true,
                    "ProvisioningFailed",
                    &message,
                    local_path::PROVISIONER,
                )
                .await;
            }
        }
    }
    for name in &plan.delete {
        match p.delete(&volumes, "", name).await {
            Ok(()) => tracing::info!(volume = %name, "released volume deleted"),
            Err(e) => tracing::debug!(volume = %name, %e, "released volume not deleted"),
        }
    }
    for e in &plan.events {
        if told.due(e) {
            p.event(&e.involved, e.warning, e.reason, &e.message, e.component)
                .await;
        }
    }
}

async fn pass(p: Pass, told: Told) -> Again {
    let w = world(&p);
    let plan = plan::plan(&w);
    let retry = plan.retry;
    execute(&p, plan, &told).await;
    retry.then_some(RETRY)
}

/// The default StorageClass among `classes` (JSON objects): the one annotated default, the
/// newest if several are (as Kubernetes since 1.26), none if none is.
pub fn default_class(classes: &[&Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            let a = object::annotations(c);
            [DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION]
                .iter()
                .any(|k| a.get(*k).map(String::as_str) == Some("true"))
        })
        .max_by(|a, b| {
            (object::meta_str(a, "creationTimestamp"), object::name(b))
                .cmp(&(object::meta_str(b, "creationTimestamp"), object::name(a)))
        })
        .map(|c| object::name(c).to_string())
}

/// Binds, provisions, reclaims and protects whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let watched = [
        "persistentvolumeclaims",
        "persistentvolumes",
        "storageclasses",
        "pods",
        "nodes",
    ]
    .map(|k| kind(k).prefix(None));
    let told = Told::default();
    super::runner::run(ctx, &watched, RESYNC, |p| pass(p, told.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, created: &str, default: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if let Some(d) = default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: d});
        }
        c
    }

    #[test]
    fn the_default_class_is_the_newest_annotated_one() {
        let a = class("a", "2026-01-01T00:00:00Z", Some("true"));
        let b = class("b", "2026-01-02T00:00:00Z", Some("true"));
        let c = class("c", "2026-01-03T00:00:00Z", Some("false"));
        let d = class("d", "2026-01-04T00:00:00Z", None);
        assert_eq!(default_class(&[&a, &b, &c, &d]).as_deref(), Some("b"));
        assert_eq!(default_class(&[&a]).as_deref(), Some("a"));
        assert_eq!(default_class(&[&c, &d]), None);
        // Same time: the first by name, as Kubernetes sorts them.
        let e = class("e", "2026-01-02T00:00:00Z", Some("true"));
        assert_eq!(default_class(&[&e, &b]).as_deref(), Some("b"));
        let beta = json!({"metadata": {"name": "old", "annotations": {BETA_DEFAULT_CLASS_ANNOTATION: "true"}}});
        assert_eq!(default_class(&[&beta]).as_deref(), Some("old"));
    }

    #[test]
    fn repeats_of_an_event_are_folded() {
        let told = Told::default();
        let e = plan::Event {
            involved: json!({"metadata": {"uid": "u1"}}),
            warning: true,
            reason: "ProvisioningFailed",
            message: "no".into(),
            component: plan::BINDER,
        };
        assert!(told.due(&e));
        assert!(!told.due(&e));
        let changed = plan::Event {
            message: "still no".into(),
            ..e.clone()
        };
        assert!(told.due(&changed));
    }
}
