//! Taints and tolerations (Kubernetes' TaintToleration filter): a node's taints, a pod's
//! tolerations, which toleration (if any) tolerates a taint, and the first NoSchedule or
//! NoExecute taint of a node that a pod does not tolerate. Matching is Kubernetes': a
//! toleration's empty effect matches every effect and its empty key every key; `Exists` matches
//! any value, `Equal` (the default) the same value, any other operator nothing.

use serde_json::Value;
use skiff_api::object;

use super::{list, text};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    pub fn new(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        }
    }

    /// The taints in a Node's `spec.taints`.
    pub fn of_node(node: &Value) -> Vec<Taint> {
        object::field(node, "spec.taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| Taint::new(text(t, "key"), text(t, "value"), text(t, "effect")))
            .collect()
    }

    /// Whether the scheduler keeps pods that do not tolerate this taint off the node.
    pub fn repels(&self) -> bool {
        matches!(self.effect.as_str(), "NoSchedule" | "NoExecute")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub operator: String,
    pub value: String,
    pub effect: String,
    /// How long a NoExecute taint is tolerated (None: for ever).
    pub seconds: Option<i64>,
}

impl Toleration {
    /// The tolerations in a pod spec (a Pod's `spec`, or a template's).
    pub fn of_spec(pod_spec: &Value) -> Vec<Toleration> {
        list(pod_spec, "tolerations")
            .iter()
            .map(|t| Toleration {
                key: text(t, "key").into(),
                operator: text(t, "operator").into(),
                value: text(t, "value").into(),
                effect: text(t, "effect").into(),
                seconds: t.get("tolerationSeconds").and_then(Value::as_i64),
            })
            .collect()
    }

    pub fn tolerates(&self, taint: &Taint) -> bool {
        (self.effect.is_empty() || self.effect == taint.effect)
            && (self.key.is_empty() || self.key == taint.key)
            && match self.operator.as_str() {
                "Exists" => true,
                "" | "Equal" => self.value == taint.value,
                _ => false,
            }
    }
}

/// The first of `tolerations` that tolerates `taint`.
pub fn toleration<'a>(tolerations: &'a [Toleration], taint: &Taint) -> Option<&'a Toleration> {
    tolerations.iter().find(|t| t.tolerates(taint))
}

/// The first NoSchedule/NoExecute taint in `taints` that none of `tolerations` tolerates.
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| t.repels() && toleration(tolerations, t).is_none())
}

/// Kubernetes' reason for a node with `taint` untolerated.
pub fn reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key, taint.value
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tolerations(v: Value) -> Vec<Toleration> {
        Toleration::of_spec(&json!({ "tolerations": v }))
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let db = Taint::new("dedicated", "db", "NoSchedule");
        // (case, tolerations, tolerated)
        let cases = [
            ("none", json!([]), false),
            (
                "Equal, same value",
                json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]),
                true,
            ),
            (
                "Equal is the default",
                json!([{"key": "dedicated", "value": "db"}]),
                true,
            ),
            (
                "Equal, other value",
                json!([{"key": "dedicated", "value": "web"}]),
                false,
            ),
            (
                "Exists, any value",
                json!([{"key": "dedicated", "operator": "Exists"}]),
                true,
            ),
            (
                "other key",
                json!([{"key": "gpu", "operator": "Exists"}]),
                false,
            ),
            (
                "other effect",
                json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]),
                false,
            ),
            (
                "empty key and Exists: everything",
                json!([{"operator": "Exists"}]),
                true,
            ),
            (
                "unknown operator",
                json!([{"key": "dedicated", "operator": "Like", "value": "db"}]),
                false,
            ),
            (
                "one of several",
                json!([{"key": "gpu", "operator": "Exists"}, {"key": "dedicated", "value": "db"}]),
                true,
            ),
        ];
        for (case, t, want) in cases {
            assert_eq!(toleration(&tolerations(t), &db).is_some(), want, "{case}");
        }
        let five = tolerations(
            json!([{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        let found = toleration(&five, &Taint::new("k", "", "NoExecute"));
        assert_eq!(found.and_then(|t| t.seconds), Some(5));
    }

    #[test]
    fn only_schedule_and_execute_taints_repel() {
        let node = json!({"spec": {"taints": [
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": "gone", "effect": "NoExecute"}
        ]}});
        let taints = Taint::of_node(&node);
        assert_eq!(taints.len(), 3);
        let first = untolerated(&taints, &[]);
        assert_eq!(first, Some(&taints[1]));
        assert_eq!(
            first.map(reason).as_deref(),
            Some("node(s) had untolerated taint {dedicated: db}")
        );
        let db = tolerations(json!([{"key": "dedicated", "operator": "Exists"}]));
        assert_eq!(untolerated(&taints, &db), Some(&taints[2]));
        let all = tolerations(
            json!([{"key": "dedicated", "operator": "Exists"}, {"key": "gone", "operator": "Exists"}]),
        );
        assert_eq!(untolerated(&taints, &all), None);
        assert_eq!(untolerated(&Taint::of_node(&json!({})), &[]), None);
    }
}
