//! What a delete does, as in Kubernetes: an object with finalizers (or deleted with the
//! Foreground or Orphan policy, which add the `foregroundDeletion` or `orphan` finalizer) is only
//! marked with a deletionTimestamp, and goes when its last finalizer is removed; a pod bound to a
//! node gets its grace period to stop and goes when the node deletes it again with grace 0;
//! anything else goes at once.

use serde_json::Value;
use skiff_api::{object, ApiError, Kind};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";
/// Kubernetes' default terminationGracePeriodSeconds.
const DEFAULT_GRACE: i64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Remove the object now.
    Now,
    /// Store this version (deletionTimestamp set) instead; it goes later.
    Mark(Value),
    /// It is already being deleted; nothing changes.
    Already,
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn is_terminating(obj: &Value) -> bool {
    !object::meta_str(obj, "deletionTimestamp").is_empty()
}

/// Decides the delete of `live`. `grace` is the requested grace period (-1: the pod's own),
/// `propagation` the policy ("" means Background), `now` the current time.
pub fn decide(
    kind: &Kind,
    live: &Value,
    grace: i64,
    propagation: &str,
    now: jiff::Timestamp,
) -> Result<Decision, ApiError> {
    let extra = match propagation {
        "" | "Background" => None,
        "Foreground" => Some(FOREGROUND),
        "Orphan" => Some(ORPHAN),
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported propagation policy {other:?}: supported values: \"Background\", \
                 \"Foreground\", \"Orphan\""
            )))
        }
    };
    let mut fins = finalizers(live);
    let is_pod = kind.kind == "Pod";
    if is_terminating(live) {
        return Ok(if is_pod && grace == 0 && fins.is_empty() {
            Decision::Now
        } else {
            Decision::Already
        });
    }
    let pod_grace = if is_pod {
        let bound = !object::field_string(live, "spec.nodeName").is_empty();
        let done = matches!(
            object::field_string(live, "status.phase").as_str(),
            "Succeeded" | "Failed"
        );
        let own = live
            .get("spec")
            .and_then(|s| s.get("terminationGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_GRACE);
        let g = if grace < 0 { own } else { grace };
        (bound && !done && g > 0).then_some(g)
    } else {
        None
    };
    if let Some(f) = extra {
        if !fins.iter().any(|x| x == f) {
            fins.push(f.to_string());
        }
    }
    if fins.is_empty() && pod_grace.is_none() {
        return Ok(Decision::Now);
    }
    let mut marked = live.clone();
    let grace = pod_grace.unwrap_or(0);
    let at = now
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or(now);
    object::set_meta(&mut marked, "deletionTimestamp", at.to_string().into());
    object::set_meta(&mut marked, "deletionGracePeriodSeconds", grace.into());
    object::set_meta(&mut marked, "finalizers", fins.into());
    Ok(Decision::Mark(marked))
}

/// Whether `next`, about to be stored, should instead be removed: it is being deleted, only
/// finalizers held it, and the last one is gone.
pub fn finished(next: &Value) -> bool {
    is_terminating(next)
        && finalizers(next).is_empty()
        && next
            .get("metadata")
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn plain_objects_go_at_once_and_finalizers_hold_them() {
        let cm = Kind::named("cm").unwrap();
        let plain = json!({"metadata": {"name": "a"}});
        assert_eq!(decide(&cm, &plain, -1, "", now()).unwrap(), Decision::Now);
        let held = json!({"metadata": {"name": "a", "finalizers": ["example.com/x"]}});
        let Decision::Mark(m) = decide(&cm, &held, -1, "", now()).unwrap() else {
            panic!("marked")
        };
        assert_eq!(m["metadata"]["deletionTimestamp"], "2026-01-01T00:00:00Z");
        assert!(!finished(&m));
        let mut released = m.clone();
        released["metadata"]["finalizers"] = json!([]);
        assert!(finished(&released));
    }

    #[test]
    fn propagation_policies_add_their_finalizer() {
        let rs = Kind::named("rs").unwrap();
        let obj = json!({"metadata": {"name": "a"}});
        let Decision::Mark(m) = decide(&rs, &obj, -1, "Foreground", now()).unwrap() else {
            panic!("marked")
        };
        assert_eq!(finalizers(&m), [FOREGROUND]);
        let Decision::Mark(m) = decide(&rs, &obj, -1, "Orphan", now()).unwrap() else {
            panic!("marked")
        };
        assert_eq!(finalizers(&m), [ORPHAN]);
        assert!(decide(&rs, &obj, -1, "Sideways", now()).is_err());
    }

    #[test]
    fn bound_pods_get_their_grace_period() {
        let pod = Kind::named("pod").unwrap();
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(
            decide(&pod, &unbound, -1, "", now()).unwrap(),
            Decision::Now
        );
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        let Decision::Mark(m) = decide(&pod, &bound, -1, "", now()).unwrap() else {
            panic!("marked")
        };
        assert_eq!(m["metadata"]["deletionTimestamp"], "2026-01-01T00:00:10Z");
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 10);
        assert_eq!(decide(&pod, &m, -1, "", now()).unwrap(), Decision::Already);
        assert_eq!(decide(&pod, &m, 0, "", now()).unwrap(), Decision::Now);
        assert_eq!(decide(&pod, &bound, 0, "", now()).unwrap(), Decision::Now);
    }
}
