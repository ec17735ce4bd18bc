//! Type checking against Kubernetes' schemas: an object is decoded into its k8s-openapi type, and
//! the first mismatch is reported with its field path (`spec.replicas: invalid type: string
//! "three", expected i32`). Nothing of the typed value is kept; the JSON is what is stored.

use k8s_openapi::api::{apps, batch, coordination, core, storage};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn check<T: DeserializeOwned>(obj: &Value) -> Result<(), String> {
    match serde_path_to_error::deserialize::<_, T>(obj) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            Err(if path == "." || path.is_empty() {
                inner
            } else {
                format!("{path}: {inner}")
            })
        }
    }
}

/// Checks `obj` against the schema of `kind`.
pub fn check_kind(kind: &str, obj: &Value) -> Result<(), String> {
    match kind {
        "Namespace" => check::<core::v1::Namespace>(obj),
        "Node" => check::<core::v1::Node>(obj),
        "Pod" => check::<core::v1::Pod>(obj),
        "Service" => check::<core::v1::Service>(obj),
        "Endpoints" => check::<core::v1::Endpoints>(obj),
        "ConfigMap" => check::<core::v1::ConfigMap>(obj),
        "Secret" => check::<core::v1::Secret>(obj),
        "PersistentVolume" => check::<core::v1::PersistentVolume>(obj),
        "PersistentVolumeClaim" => check::<core::v1::PersistentVolumeClaim>(obj),
        "Event" => check::<core::v1::Event>(obj),
        "ReplicaSet" => check::<apps::v1::ReplicaSet>(obj),
        "Deployment" => check::<apps::v1::Deployment>(obj),
        "DaemonSet" => check::<apps::v1::DaemonSet>(obj),
        "StatefulSet" => check::<apps::v1::StatefulSet>(obj),
        "Job" => check::<batch::v1::Job>(obj),
        "CronJob" => check::<batch::v1::CronJob>(obj),
        "Lease" => check::<coordination::v1::Lease>(obj),
        "StorageClass" => check::<storage::v1::StorageClass>(obj),
        other => Err(format!("no schema for kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_is_reported_with_its_path() {
        let obj = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": "three", "selector": {}, "template": {}}
        });
        let e = check_kind("Deployment", &obj).unwrap_err();
        assert!(
            e.starts_with("spec.replicas: invalid type: string \"three\""),
            "{e}"
        );
    }

    #[test]
    fn a_nested_wrong_type_names_the_list_index() {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": "80"}]}]}
        });
        let e = check_kind("Pod", &obj).unwrap_err();
        assert!(
            e.starts_with("spec.containers[0].ports[0].containerPort:"),
            "{e}"
        );
    }

    #[test]
    fn a_valid_manifest_passes() {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        });
        check_kind("Service", &obj).unwrap();
    }
}
