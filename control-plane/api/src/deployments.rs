//! What the Deployment controller and `skiff rollout` both read and write on Deployments and
//! their ReplicaSets, in Kubernetes' names: the revision annotation, the change cause, the
//! template-hash label.

use serde_json::Value;

/// A ReplicaSet's revision (and, on the Deployment, its current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Why a revision was made, copied from the Deployment to its ReplicaSet.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label that tells the ReplicaSets (and pods) of one Deployment's templates apart.
pub const HASH_LABEL: &str = "pod-template-hash";

/// A pod template without the `pod-template-hash` label, for comparing and copying templates.
pub fn unhashed(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_label_is_dropped_and_nothing_else() {
        let t = json!({"metadata": {"labels": {"app": "a", HASH_LABEL: "x"}}, "spec": {}});
        assert_eq!(
            unhashed(&t),
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {}})
        );
    }
}
