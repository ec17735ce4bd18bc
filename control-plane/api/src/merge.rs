//! The three-way merge behind `apply`, as kubectl does it for JSON merge patches: the patch is
//! what changed between the manifest applied last time and the new one (fields it no longer
//! names are removed), and it is merged into the live object, so fields that neither manifest
//! names (status, replicas set by `scale`, defaults) are kept. Lists are replaced whole.

use serde_json::{Map, Value};

/// The JSON merge patch (RFC 7386) that turns `last` into `new`: changed and added fields,
/// and null for fields `new` dropped.
pub fn diff(last: &Value, new: &Value) -> Value {
    match (last, new) {
        (Value::Object(l), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match l.get(k) {
                    Some(lv) if lv == nv => {}
                    Some(lv) if lv.is_object() && nv.is_object() => {
                        patch.insert(k.clone(), diff(lv, nv));
                    }
                    _ => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in l.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, pv) in p {
            if pv.is_null() {
                t.remove(k);
            } else if pv.is_object() {
                merge(t.entry(k.clone()).or_insert(Value::Null), pv);
            } else {
                t.insert(k.clone(), pv.clone());
            }
        }
    }
}

/// The live object after applying `new`, given the manifest applied `last` time.
pub fn three_way(last: &Value, new: &Value, live: &Value) -> Value {
    let mut out = live.clone();
    merge(&mut out, &diff(last, new));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_others_own_are_kept_and_dropped_fields_removed() {
        let last = json!({"spec": {"replicas": 2, "paused": false, "template": {"image": "a"}}});
        let new = json!({"spec": {"template": {"image": "b"}}});
        let live = json!({
            "spec": {"replicas": 5, "paused": false, "strategy": "RollingUpdate", "template": {"image": "a"}},
            "status": {"ready": 5}
        });
        let out = three_way(&last, &new, &live);
        assert_eq!(
            out,
            json!({"spec": {"strategy": "RollingUpdate", "template": {"image": "b"}}, "status": {"ready": 5}})
        );
    }

    #[test]
    fn a_field_only_the_live_object_has_survives_reapplying() {
        let manifest = json!({"spec": {"template": {"image": "a"}}});
        let live = json!({"spec": {"replicas": 7, "template": {"image": "a"}}});
        assert_eq!(three_way(&manifest, &manifest, &live), live);
    }

    #[test]
    fn lists_are_replaced_whole() {
        let last = json!({"ports": [{"port": 80}]});
        let new = json!({"ports": [{"port": 81}]});
        let live = json!({"ports": [{"port": 80, "protocol": "TCP"}]});
        assert_eq!(
            three_way(&last, &new, &live),
            json!({"ports": [{"port": 81}]})
        );
    }
}
