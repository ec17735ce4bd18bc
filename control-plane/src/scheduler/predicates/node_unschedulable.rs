//! Cordoned nodes (Kubernetes' NodeUnschedulable filter): a node with `spec.unschedulable`
//! takes only pods that tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint it
//! stands for (DaemonSet pods do).

use super::taints::{toleration, Taint, Toleration};
use super::NodeInfo;

/// The taint a cordoned node stands for.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node fails this predicate, as the scheduler reports it.
pub const REASON: &str = "node(s) were unschedulable";

pub fn fits(node: &NodeInfo, tolerations: &[Toleration]) -> bool {
    !node.unschedulable
        || toleration(tolerations, &Taint::new(UNSCHEDULABLE, "", "NoSchedule")).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cordoned_nodes_take_only_tolerant_pods() {
        let cordoned = NodeInfo {
            unschedulable: true,
            ..NodeInfo::default()
        };
        let open = NodeInfo::default();
        let tolerant = Toleration::of_spec(
            &json!({"tolerations": [{"key": UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        let other =
            Toleration::of_spec(&json!({"tolerations": [{"key": "x", "operator": "Exists"}]}));
        // (node, tolerations, fits)
        let cases = [
            (&open, &[][..], true),
            (&cordoned, &[][..], false),
            (&cordoned, &other[..], false),
            (&cordoned, &tolerant[..], true),
        ];
        for (i, (node, tolerations, want)) in cases.into_iter().enumerate() {
            assert_eq!(fits(node, tolerations), want, "case {i}");
        }
    }
}
