//! Kubernetes' defaults for the fields a manifest may leave out (restartPolicy, imagePullPolicy,
//! protocol TCP, targetPort = port, replicas 1, rolling-update strategy, a StorageClass's
//! reclaimPolicy and binding mode, volumes' reclaim policy, volumeMode and phase...), applied to
//! the JSON before validation so that what is stored and shown is complete.

use serde_json::{json, Map, Value};

/// The object at `key` in `obj`, created empty if missing (None if `obj` is not an object).
fn child<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = obj.as_object_mut()?;
    Some(map.entry(key).or_insert_with(|| Value::Object(Map::new())))
}

/// Sets `obj[key] = value` unless present (and not null).
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        match map.get(key) {
            Some(v) if !v.is_null() => {}
            _ => {
                map.insert(key.to_string(), value);
            }
        }
    }
}

fn each(obj: &mut Value, key: &str, f: impl Fn(&mut Value)) {
    if let Some(items) = obj.get_mut(key).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(f);
    }
}

/// Always for `:latest` or untagged images, IfNotPresent otherwise (as Kubernetes).
fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let name_and_tag = last.split('@').next().unwrap_or(last);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name_and_tag.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Value) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    default(c, "imagePullPolicy", pull_policy(&image).into());
    default(c, "terminationMessagePath", "/dev/termination-log".into());
    default(c, "terminationMessagePolicy", "File".into());
    each(c, "ports", |p| default(p, "protocol", "TCP".into()));
}

/// Defaults of a pod spec (also inside templates). Job templates get no restartPolicy default:
/// Kubernetes requires Never or OnFailure there.
pub fn pod_spec(spec: &mut Value, in_job: bool) {
    if !in_job {
        default(spec, "restartPolicy", "Always".into());
    }
    default(spec, "dnsPolicy", "ClusterFirst".into());
    default(spec, "schedulerName", "default-scheduler".into());
    default(spec, "terminationGracePeriodSeconds", 30.into());
    default(spec, "securityContext", json!({}));
    each(spec, "containers", container);
    each(spec, "initContainers", container);
}

fn template(spec: &mut Value, in_job: bool) {
    if let Some(t) = spec.get_mut("template") {
        if let Some(ps) = child(t, "spec") {
            pod_spec(ps, in_job);
        }
    }
}

/// Applies the defaults of `kind` to `obj`.
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Namespace" => {
            if let Some(status) = child(obj, "status") {
                default(status, "phase", "Active".into());
            }
        }
        "Secret" => default(obj, "type", "Opaque".into()),
        "StorageClass" => {
            default(obj, "reclaimPolicy", "Delete".into());
            default(obj, "volumeBindingMode", "Immediate".into());
        }
        "PersistentVolume" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "persistentVolumeReclaimPolicy", "Retain".into());
                default(spec, "volumeMode", "Filesystem".into());
            }
            if let Some(status) = child(obj, "status") {
                default(status, "phase", "Pending".into());
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "volumeMode", "Filesystem".into());
            }
            if let Some(status) = child(obj, "status") {
                default(status, "phase", "Pending".into());
            }
        }
        "Pod" => {
            if let Some(spec) = child(obj, "spec") {
                pod_spec(spec, false);
            }
            if let Some(status) = child(obj, "status") {
                default(status, "phase", "Pending".into());
            }
        }
        "Service" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "type", "ClusterIP".into());
                default(spec, "sessionAffinity", "None".into());
                each(spec, "ports", |p| {
                    default(p, "protocol", "TCP".into());
                    if let Some(port) = p.get("port").cloned() {
                        default(p, "targetPort", port);
                    }
                });
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", 1.into());
                template(spec, false);
            }
        }
        "Deployment" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", 1.into());
                default(spec, "revisionHistoryLimit", 10.into());
                default(spec, "progressDeadlineSeconds", 600.into());
                if let Some(strategy) = child(spec, "strategy") {
                    default(strategy, "type", "RollingUpdate".into());
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            default(ru, "maxSurge", "25%".into());
                            default(ru, "maxUnavailable", "25%".into());
                        }
                    }
                }
                template(spec, false);
            }
        }
        "DaemonSet" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "revisionHistoryLimit", 10.into());
                if let Some(strategy) = child(spec, "updateStrategy") {
                    default(strategy, "type", "RollingUpdate".into());
                }
                template(spec, false);
            }
        }
        "StatefulSet" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", 1.into());
                default(spec, "podManagementPolicy", "OrderedReady".into());
                default(spec, "revisionHistoryLimit", 10.into());
                if let Some(strategy) = child(spec, "updateStrategy") {
                    default(strategy, "type", "RollingUpdate".into());
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            default(ru, "partition", 0.into());
                        }
                    }
                }
                if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
                    default(policy, "whenDeleted", "Retain".into());
                    default(policy, "whenScaled", "Retain".into());
                }
                template(spec, false);
            }
        }
        "Job" => {
            if let Some(spec) = child(obj, "spec") {
                // Neither count given: one pod to completion. Parallelism alone: a work queue
                // (no completions), as in Kubernetes.
                if spec.get("parallelism").is_none() {
                    default(spec, "completions", 1.into());
                }
                default(spec, "parallelism", 1.into());
                default(spec, "backoffLimit", 6.into());
                default(spec, "completionMode", "NonIndexed".into());
                default(spec, "suspend", false.into());
                template(spec, true);
            }
        }
        "CronJob" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "concurrencyPolicy", "Allow".into());
                default(spec, "suspend", false.into());
                default(spec, "successfulJobsHistoryLimit", 3.into());
                default(spec, "failedJobsHistoryLimit", 1.into());
                if let Some(job_spec) = spec.get_mut("jobTemplate").and_then(|t| child(t, "spec")) {
                    default(job_spec, "backoffLimit", 6.into());
                    template(job_spec, true);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/app"), "Always");
        assert_eq!(pull_policy("registry:5000/app:v2"), "IfNotPresent");
        assert_eq!(pull_policy("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn services_get_tcp_and_target_port() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply("Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        assert_eq!(svc["spec"]["ports"][1]["targetPort"], "dns");
    }

    #[test]
    fn deployments_get_replicas_strategy_and_pod_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn stateful_sets_get_ordered_rolling_updates_and_retained_claims() {
        let mut s = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("StatefulSet", &mut s);
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        let mut on_delete = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        apply("StatefulSet", &mut on_delete);
        assert!(on_delete["spec"]["updateStrategy"]
            .get("rollingUpdate")
            .is_none());
    }

    #[test]
    fn storage_objects_get_kubernetes_defaults() {
        let mut sc = json!({"provisioner": "x"});
        apply("StorageClass", &mut sc);
        assert_eq!(
            (&sc["reclaimPolicy"], &sc["volumeBindingMode"]),
            (&json!("Delete"), &json!("Immediate"))
        );
        let mut pv = json!({"spec": {"capacity": {"storage": "1Gi"}}});
        apply("PersistentVolume", &mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["status"]["phase"], "Pending");
        let mut pvc = json!({"spec": {}});
        apply("PersistentVolumeClaim", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        // A class the user chose (none, here) is kept.
        let mut none = json!({"spec": {"storageClassName": ""}});
        apply("PersistentVolumeClaim", &mut none);
        assert_eq!(none["spec"]["storageClassName"], "");
    }

    #[test]
    fn job_templates_keep_their_restart_policy_unset() {
        let mut j = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("Job", &mut j);
        assert!(j["spec"]["template"]["spec"].get("restartPolicy").is_none());
        assert_eq!(j["spec"]["backoffLimit"], 6);
    }
}
