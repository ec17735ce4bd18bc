//! Garbage collection through ownerReferences, as Kubernetes does it: an object whose owners
//! are all gone is deleted; references to owners that are gone are dropped; dependents of an
//! owner deleted in the foreground are deleted (and the owner's `foregroundDeletion` finalizer
//! removed once none remain); dependents of an owner deleted with the orphan policy lose their
//! reference to it (and the owner's `orphan` finalizer is removed).
//!
//! `plan` is pure; `run` plans over the whole cache after each change (and at least every
//! 10 s) and carries the plan out with the election's fence, ignoring conflicts (the next pass
//! decides again).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use skiff_api::{object, Kind};

use super::cache::Cache;
use super::runner::Pass;
use super::Context;
use crate::apiserver::deletion::{finalizers, FOREGROUND, ORPHAN};

/// One change the collector makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete a dependent (with this propagation policy).
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        propagation: &'static str,
    },
    /// Remove the ownerReferences with these uids.
    DropOwners {
        kind: Kind,
        namespace: String,
        name: String,
        uids: BTreeSet<String>,
    },
    /// Remove one finalizer.
    DropFinalizer {
        kind: Kind,
        namespace: String,
        name: String,
        finalizer: &'static str,
    },
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn terminating_with(obj: &Value, finalizer: &str) -> bool {
    !object::meta_str(obj, "deletionTimestamp").is_empty()
        && finalizers(obj).iter().any(|f| f == finalizer)
}

/// What to change, given every object.
pub fn plan(objects: &[(Kind, Value)]) -> Vec<Action> {
    let by_uid: BTreeMap<&str, &Value> = objects
        .iter()
        .map(|(_, o)| (object::meta_str(o, "uid"), o))
        .filter(|(uid, _)| !uid.is_empty())
        .collect();
    let referenced: BTreeSet<String> = objects.iter().flat_map(|(_, o)| owner_uids(o)).collect();
    let mut actions = Vec::new();
    for (kind, obj) in objects {
        let id = || {
            (
                *kind,
                object::namespace(obj).to_string(),
                object::name(obj).to_string(),
            )
        };
        let uids = owner_uids(obj);
        if !uids.is_empty() {
            let alive: Vec<&Value> = uids
                .iter()
                .filter_map(|u| by_uid.get(u.as_str()).copied())
                .collect();
            let missing: BTreeSet<String> = uids
                .iter()
                .filter(|u| !by_uid.contains_key(u.as_str()))
                .cloned()
                .collect();
            let orphaned: BTreeSet<String> = alive
                .iter()
                .filter(|o| terminating_with(o, ORPHAN))
                .map(|o| object::meta_str(o, "uid").to_string())
                .collect();
            let (kind, namespace, name) = id();
            if alive.iter().any(|o| terminating_with(o, FOREGROUND)) {
                if object::meta_str(obj, "deletionTimestamp").is_empty() {
                    actions.push(Action::Delete {
                        kind,
                        namespace,
                        name,
                        propagation: "Foreground",
                    });
                }
            } else if alive.is_empty() {
                if object::meta_str(obj, "deletionTimestamp").is_empty() {
                    actions.push(Action::Delete {
                        kind,
                        namespace,
                        name,
                        propagation: "Background",
                    });
                }
            } else if !missing.is_empty() || !orphaned.is_empty() {
                actions.push(Action::DropOwners {
                    kind,
                    namespace,
                    name,
                    uids: missing.union(&orphaned).cloned().collect(),
                });
            }
        }
        let uid = object::meta_str(obj, "uid");
        if !referenced.contains(uid) {
            for finalizer in [FOREGROUND, ORPHAN] {
                if terminating_with(obj, finalizer) {
                    let (kind, namespace, name) = id();
                    actions.push(Action::DropFinalizer {
                        kind,
                        namespace,
                        name,
                        finalizer,
                    });
                }
            }
        }
    }
    actions
}

/// Every stored object with its kind.
fn everything(cache: &Cache) -> Vec<(Kind, Value)> {
    cache
        .under(skiff_api::kinds::REGISTRY)
        .iter()
        .filter_map(|s| {
            let kind = Kind::of(object::api_version(&s.object), object::kind(&s.object))?;
            Some((kind, s.object.clone()))
        })
        .collect()
}

async fn carry_out(pass: &Pass, action: Action) {
    let result = match &action {
        Action::Delete {
            kind,
            namespace,
            name,
            propagation,
        } => {
            pass.delete_with(kind, namespace, name, -1, propagation)
                .await
        }
        Action::DropOwners {
            kind,
            namespace,
            name,
            ..
        }
        | Action::DropFinalizer {
            kind,
            namespace,
            name,
            ..
        } => {
            let Some(live) = pass.cache.get(kind, namespace, name) else {
                return;
            };
            let mut next = live.object.clone();
            if let Some(meta) = object::metadata_mut(&mut next) {
                match &action {
                    Action::DropOwners { uids, .. } => {
                        if let Some(refs) = meta
                            .get_mut("ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| {
                                !r.get("uid")
                                    .and_then(Value::as_str)
                                    .is_some_and(|u| uids.contains(u))
                            });
                        }
                    }
                    Action::DropFinalizer { finalizer, .. } => {
                        if let Some(f) = meta.get_mut("finalizers").and_then(Value::as_array_mut) {
                            f.retain(|x| x.as_str() != Some(finalizer));
                        }
                    }
                    Action::Delete { .. } => {}
                }
            }
            pass.update(&next).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => tracing::info!(?action, "garbage collector"),
        Err(e) => tracing::debug!(?action, %e, "garbage collector action not done"),
    }
}

/// Runs the collector whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    // Node leases and events change all the time and own nothing worth a pass of their own.
    let watched: Vec<String> = skiff_api::kinds::KINDS
        .iter()
        .filter(|k| !matches!(k.kind, "Lease" | "Event"))
        .map(|k| k.prefix(None))
        .collect();
    super::runner::run(ctx, &watched, Duration::from_secs(10), |pass| async move {
        for action in plan(&everything(&pass.cache)) {
            carry_out(&pass, action).await;
        }
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, uid: &str, owners: &[&str]) -> (Kind, Value) {
        let refs: Vec<Value> = owners
            .iter()
            .map(|u| json!({"uid": u, "name": "x"}))
            .collect();
        (
            Kind::named(kind).unwrap(),
            json!({"metadata": {"name": name, "namespace": "default", "uid": uid, "ownerReferences": refs}}),
        )
    }

    #[test]
    fn dependents_of_missing_owners_are_deleted_or_unlinked() {
        let objects = vec![
            obj("rs", "rs", "u-rs", &["u-deploy-gone"]),
            obj("pod", "p1", "u-p1", &["u-rs"]),
            obj("pod", "p2", "u-p2", &["u-rs", "u-gone"]),
            obj("pod", "free", "u-free", &[]),
        ];
        let actions = plan(&objects);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::Delete { name, propagation: "Background", .. } if name == "rs")
        );
        assert!(
            matches!(&actions[1], Action::DropOwners { name, uids, .. } if name == "p2" && uids.contains("u-gone"))
        );
    }

    #[test]
    fn foreground_and_orphan_deletion() {
        let mut owner = obj("rs", "rs", "u-rs", &[]);
        owner.1["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        owner.1["metadata"]["finalizers"] = json!([FOREGROUND]);
        let pod = obj("pod", "p", "u-p", &["u-rs"]);
        let actions = plan(&[owner.clone(), pod.clone()]);
        assert!(
            matches!(&actions[..], [Action::Delete { name, propagation: "Foreground", .. }] if name == "p")
        );
        // No dependents left: the finalizer goes.
        let actions = plan(&[owner.clone()]);
        assert!(matches!(
            &actions[..],
            [Action::DropFinalizer {
                finalizer: FOREGROUND,
                ..
            }]
        ));

        owner.1["metadata"]["finalizers"] = json!([ORPHAN]);
        let actions = plan(&[owner.clone(), pod]);
        assert!(matches!(&actions[..], [Action::DropOwners { name, .. }] if name == "p"));
    }
}
