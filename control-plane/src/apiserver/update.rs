//! What an update stores, decided before any write: the object sent, checked against the
//! resourceVersion it was read at, with the parts it may not change taken from the live object
//! (the status for Update, everything else for UpdateStatus), the server's metadata kept, and
//! admitted (defaults, schema, validation) as a whole. Every update goes through here: a
//! client's, a controller's and the scheduler's bindings, one at a time or in batches.

use serde_json::Value;
use skiff_api::ApiError;

use super::admission::{self, conflict, Incoming};
use super::registry::Stored;

/// Which parts of the live object an update replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Everything but the status (Update).
    Main,
    /// Only the status (UpdateStatus).
    Status,
    /// Both: a binding sets a pod's node and its PodScheduled condition in one write, as
    /// Kubernetes' `pods/binding` does.
    All,
}

/// `field` of `to` set to `from`'s (removed if `from` has none).
fn carry(from: &Value, to: &mut Value, field: &str) {
    match from.get(field) {
        Some(v) => to[field] = v.clone(),
        None => {
            if let Some(m) = to.as_object_mut() {
                m.remove(field);
            }
        }
    }
}

/// The object to store for `inc`, an update of `live`; a stale resourceVersion is a conflict,
/// an object admission refuses is refused.
pub fn prepare(inc: &Incoming, live: &Stored, part: Part) -> Result<Value, ApiError> {
    let sent_version = skiff_api::object::resource_version(&inc.object);
    if !sent_version.is_empty() && sent_version != live.revision.to_string() {
        return Err(conflict(&inc.kind, inc.name()));
    }
    let mut next = match part {
        Part::Main => {
            let mut next = inc.object.clone();
            carry(&live.object, &mut next, "status");
            next
        }
        Part::Status => {
            let mut next = live.object.clone();
            carry(&inc.object, &mut next, "status");
            next
        }
        Part::All => inc.object.clone(),
    };
    admission::keep_server_metadata(&live.object, &mut next);
    admission::admit(&inc.kind, &mut next)?;
    admission::check_update(&inc.kind, &live.object, &next)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_api::Reason;

    fn incoming(object: Value) -> Incoming {
        admission::decode(&serde_json::to_vec(&object).unwrap(), "default").unwrap()
    }

    fn pod(node: &str, cpu: &str, phase: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default", "uid": "u1", "generation": 1},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                        "resources": {"requests": {"cpu": cpu}}}]},
               "status": {"phase": phase}})
    }

    #[test]
    fn each_part_takes_the_rest_from_the_live_object() {
        let live = Stored {
            object: pod("", "1", "Pending"),
            revision: 7,
        };
        let sent = incoming(pod("n1", "1", "Running"));
        // (part, nodeName stored, phase stored)
        let cases = [
            (Part::Main, "n1", "Pending"),
            (Part::Status, "", "Running"),
            (Part::All, "n1", "Running"),
        ];
        for (part, node, phase) in cases {
            let next = prepare(&sent, &live, part).unwrap();
            assert_eq!(
                (
                    next["spec"]["nodeName"].as_str(),
                    next["status"]["phase"].as_str()
                ),
                (Some(node), Some(phase)),
                "{part:?}"
            );
            // Defaults applied, server metadata kept, generation following the spec.
            assert_eq!(next["spec"]["restartPolicy"], "Always", "{part:?}");
            assert_eq!(next["metadata"]["uid"], "u1");
            assert_eq!(
                next["metadata"]["generation"],
                if node.is_empty() { 1 } else { 2 }
            );
        }
    }

    #[test]
    fn stale_versions_and_invalid_objects_are_refused() {
        let live = Stored {
            object: pod("", "abc", "Pending"),
            revision: 7,
        };
        let mut stale = pod("n1", "1", "Pending");
        stale["metadata"]["resourceVersion"] = json!("6");
        let e = prepare(&incoming(stale), &live, Part::All).unwrap_err();
        assert_eq!(e.reason, Reason::Conflict);
        // A binding of a pod stored before its request was checked: refused like any update.
        let mut binding = live.object.clone();
        binding["metadata"]["resourceVersion"] = json!("7");
        binding["spec"]["nodeName"] = json!("n1");
        let e = prepare(&incoming(binding), &live, Part::All).unwrap_err();
        assert_eq!(e.reason, Reason::Invalid);
        assert!(
            e.message.starts_with(
                "Pod \"p\" is invalid: spec.containers[0].resources.requests.cpu: Invalid value: \"abc\""
            ),
            "{}",
            e.message
        );
    }
}
