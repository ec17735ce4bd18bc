//! What the workload controllers read off pods and owner references: who controls an object,
//! whether a pod is active, ready or available, and a new pod from a template.

use serde_json::{json, Value};
use skiff_api::object;

/// The uid in `obj`'s controller ownerReference.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    object::field(obj, "metadata.ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

/// The objects among `items` that `owner` controls (same namespace, controller reference).
pub fn owned_by<'a>(owner: &Value, items: impl IntoIterator<Item = &'a Value>) -> Vec<&'a Value> {
    let uid = object::meta_str(owner, "uid");
    items
        .into_iter()
        .filter(|p| {
            object::namespace(p) == object::namespace(owner) && controller_uid(p) == Some(uid)
        })
        .collect()
}

/// A controller ownerReference to `owner`.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": object::api_version(owner), "kind": object::kind(owner),
        "name": object::name(owner), "uid": object::meta_str(owner, "uid"),
        "controller": true, "blockOwnerDeletion": true
    })
}

/// The pod's condition of `kind`, if any.
pub fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    object::field(pod, "status.conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

pub fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// Ready for at least `min_ready_seconds` at `now` (RFC 3339 strings compare as times).
pub fn is_available(pod: &Value, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = condition(pod, "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match since {
        Some(t) => now.as_second() - t.as_second() >= min_ready_seconds,
        None => false,
    }
}

pub fn phase(pod: &Value) -> String {
    object::field_string(pod, "status.phase")
}

pub fn is_terminating(obj: &Value) -> bool {
    !object::meta_str(obj, "deletionTimestamp").is_empty()
}

/// Not being deleted and not finished.
pub fn is_active(pod: &Value) -> bool {
    !is_terminating(pod) && !matches!(phase(pod).as_str(), "Succeeded" | "Failed")
}

/// A pod from `template` (a PodTemplateSpec), controlled by `owner`, named `name` or, when
/// `name` is empty, generated from `owner`'s name.
pub fn from_template(owner: &Value, template: &Value, name: &str) -> Value {
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    if name.is_empty() {
        metadata["generateName"] = json!(format!("{}-", object::name(owner)));
    } else {
        metadata["name"] = json!(name);
    }
    metadata["namespace"] = json!(object::namespace(owner));
    metadata["ownerReferences"] = json!([owner_ref(owner)]);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// `spec.<field>` as an integer, or `default`.
pub fn spec_int(obj: &Value, field: &str, default: i64) -> i64 {
    object::field(obj, &format!("spec.{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// Objects indexed by the uid of their controller, built once per pass so that each owner
/// finds its dependents without scanning them all.
#[derive(Default)]
pub struct Dependents<'a> {
    by_uid: std::collections::BTreeMap<&'a str, Vec<&'a Value>>,
    /// Objects with no controller (candidates for adoption).
    pub orphans: Vec<&'a Value>,
}

impl<'a> Dependents<'a> {
    pub fn index(items: &[&'a Value]) -> Dependents<'a> {
        let mut d = Dependents::default();
        for item in items {
            match controller_uid(item) {
                Some(uid) => d.by_uid.entry(uid).or_default().push(item),
                None => d.orphans.push(item),
            }
        }
        d
    }

    /// The objects `owner` controls (same namespace, controller reference to its uid).
    pub fn of(&self, owner: &Value) -> Vec<&'a Value> {
        self.by_uid
            .get(object::meta_str(owner, "uid"))
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|o| object::namespace(o) == object::namespace(owner))
                    .collect()
            })
            .unwrap_or_default()
    }
}
