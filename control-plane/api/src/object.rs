//! Reading and writing the common parts of an object held as JSON: metadata fields, labels and
//! owner references, and dotted field paths.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, or "".
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

pub fn api_version(obj: &Value) -> &str {
    obj.get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn kind(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// The string entries of a JSON map (labels, selectors); empty if `v` is not a map.
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A string map at `metadata.<field>` (labels, annotations).
pub fn meta_map(obj: &Value, field: &str) -> BTreeMap<String, String> {
    string_map(obj.get("metadata").and_then(|m| m.get(field)))
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta_map(obj, "labels")
}

pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    meta_map(obj, "annotations")
}

/// `metadata`, created if missing. Fails only if `obj` or its metadata is not a JSON object.
pub fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

/// Sets `metadata.<field>`.
pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = metadata_mut(obj) {
        m.insert(field.to_string(), value);
    }
}

/// Sets the value at `path` (`["spec", "template", "metadata", "labels", "app"]`), making each
/// missing or non-object step along the way an empty object. Does nothing if `obj` itself is
/// not an object.
pub fn set_in(obj: &mut Value, path: &[&str], value: Value) {
    let Some((last, steps)) = path.split_last() else {
        return;
    };
    let mut at = obj;
    for step in steps {
        let Some(map) = at.as_object_mut() else {
            return;
        };
        let next = map
            .entry(step.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        at = next;
    }
    if let Some(map) = at.as_object_mut() {
        map.insert(last.to_string(), value);
    }
}

/// The value at a dotted path (`spec.nodeName`), if present.
pub fn field<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, part| v.get(part))
}

/// The value at a dotted path rendered as a string ("" when missing; numbers and booleans as
/// their JSON text), for field selectors.
pub fn field_string(obj: &Value, path: &str) -> String {
    match field(obj, path) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_in_makes_the_path() {
        let mut v = json!({"spec": {"template": "junk"}});
        set_in(
            &mut v,
            &["spec", "template", "metadata", "labels", "a"],
            json!("b"),
        );
        assert_eq!(
            v,
            json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}})
        );
        let mut not_object = json!(3);
        set_in(&mut not_object, &["x"], json!(1));
        assert_eq!(not_object, json!(3));
    }

    #[test]
    fn reads_metadata_and_paths() {
        let mut obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"app": "web"}},
            "spec": {"replicas": 3}
        });
        assert_eq!(name(&obj), "a");
        assert_eq!(namespace(&obj), "");
        assert_eq!(labels(&obj)["app"], "web");
        assert_eq!(field_string(&obj, "spec.replicas"), "3");
        assert_eq!(field_string(&obj, "spec.missing"), "");
        set_meta(&mut obj, "namespace", "default".into());
        assert_eq!(namespace(&obj), "default");
    }
}
