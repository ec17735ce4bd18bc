//! How objects are shown: kubectl-like tables per kind (with `-o wide` columns and a NAMESPACE
//! column across namespaces), `-o yaml|json|name`, ages, and `kind/name` references.

use serde_json::Value;
use skiff_api::{object, Kind};

/// `pod`, `deployment.apps`: kubectl's lowercase kind for `kind/name` references.
pub fn kind_ref(kind: &Kind) -> String {
    let lower = kind.kind.to_ascii_lowercase();
    match kind.group() {
        "" => lower,
        g => format!("{lower}.{g}"),
    }
}

pub fn name_ref(kind: &Kind, obj: &Value) -> String {
    format!("{}/{}", kind_ref(kind), object::name(obj))
}

/// Age like kubectl: 45s, 3m12s, 25m, 5h, 3d.
pub fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    object::field(v, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn n(v: &Value, path: &str) -> i64 {
    object::field(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn count(v: &Value, path: &str) -> usize {
    match object::field(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn selector_text(v: Option<&Value>) -> String {
    let map = v.and_then(Value::as_object);
    or_none(
        map.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default(),
    )
}

fn containers_and_images(template_spec: Option<&Value>) -> (String, String) {
    let list = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names = list
        .iter()
        .map(|c| s(c, "name").to_string())
        .collect::<Vec<_>>();
    let images = list
        .iter()
        .map(|c| s(c, "image").to_string())
        .collect::<Vec<_>>();
    (names.join(","), images.join(","))
}

fn service_ports(v: &Value) -> String {
    let ports = object::field(v, "spec.ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    or_none(
        ports
            .iter()
            .map(|p| {
                let port = n(p, "port");
                let proto = s(p, "protocol");
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(np) => format!("{port}:{np}/{proto}"),
                    None => format!("{port}/{proto}"),
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn pod_status(v: &Value) -> String {
    if !s(v, "metadata.deletionTimestamp").is_empty() {
        return "Terminating".into();
    }
    let statuses = object::field(v, "status.containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &statuses {
        let waiting = s(c, "state.waiting.reason");
        if !waiting.is_empty() {
            return waiting.into();
        }
        let terminated = s(c, "state.terminated.reason");
        if !terminated.is_empty() && s(v, "status.phase") != "Succeeded" {
            return terminated.into();
        }
    }
    let reason = s(v, "status.reason");
    if !reason.is_empty() {
        return reason.into();
    }
    let phase = s(v, "status.phase");
    if phase.is_empty() {
        "Pending".into()
    } else if phase == "Succeeded" {
        "Completed".into()
    } else {
        phase.into()
    }
}

/// Column headers and one row per object, for `kind`.
fn columns(kind: &str, wide: bool) -> Vec<&'static str> {
    let mut cols: Vec<&'static str> = match kind {
        "Pod" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "Service" => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "Deployment" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "ReplicaSet" => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "DaemonSet" => vec![
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        "StatefulSet" => vec!["NAME", "READY", "AGE"],
        "Job" => vec!["NAME", "STATUS", "COMPLETIONS", "AGE"],
        "CronJob" => vec![
            "NAME",
            "SCHEDULE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
        "Node" => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "Namespace" => vec!["NAME", "STATUS", "AGE"],
        "ConfigMap" => vec!["NAME", "DATA", "AGE"],
        "Secret" => vec!["NAME", "TYPE", "DATA", "AGE"],
        "Endpoints" => vec!["NAME", "ENDPOINTS", "AGE"],
        "PersistentVolume" => vec![
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE",
        ],
        "PersistentVolumeClaim" => vec![
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE",
        ],
        "StorageClass" => vec![
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE",
        ],
        "Event" => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "Lease" => vec!["NAME", "HOLDER", "AGE"],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        match kind {
            "Pod" => cols.extend(["IP", "NODE"]),
            "Service" => cols.push("SELECTOR"),
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                cols.extend(["CONTAINERS", "IMAGES", "SELECTOR"])
            }
            "Node" => cols.push("INTERNAL-IP"),
            _ => {}
        }
    }
    cols
}

fn row(kind: &str, v: &Value, wide: bool) -> Vec<String> {
    let name = object::name(v).to_string();
    let age = age(object::meta_str(v, "creationTimestamp"));
    let mut r: Vec<String> = match kind {
        "Pod" => {
            let total = count(v, "spec.containers");
            let statuses = object::field(v, "status.containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| n(c, "restartCount")).sum();
            vec![
                name,
                format!("{ready}/{total}"),
                pod_status(v),
                restarts.to_string(),
                age,
            ]
        }
        "Service" => {
            let ext = object::field(v, "spec.externalIPs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                s(v, "spec.type").to_string(),
                or_none(s(v, "spec.clusterIP").to_string()),
                or_none(ext),
                service_ports(v),
                age,
            ]
        }
        "Deployment" => vec![
            name,
            format!("{}/{}", n(v, "status.readyReplicas"), n(v, "spec.replicas")),
            n(v, "status.updatedReplicas").to_string(),
            n(v, "status.availableReplicas").to_string(),
            age,
        ],
        "ReplicaSet" => vec![
            name,
            n(v, "spec.replicas").to_string(),
            n(v, "status.replicas").to_string(),
            n(v, "status.readyReplicas").to_string(),
            age,
        ],
        "DaemonSet" => vec![
            name,
            n(v, "status.desiredNumberScheduled").to_string(),
            n(v, "status.currentNumberScheduled").to_string(),
            n(v, "status.numberReady").to_string(),
            n(v, "status.updatedNumberScheduled").to_string(),
            n(v, "status.numberAvailable").to_string(),
            selector_text(object::field(v, "spec.template.spec.nodeSelector")),
            age,
        ],
        "StatefulSet" => vec![
            name,
            format!("{}/{}", n(v, "status.readyReplicas"), n(v, "spec.replicas")),
            age,
        ],
        "Job" => {
            let completions = object::field(v, "spec.completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let succeeded = n(v, "status.succeeded");
            let conditions = object::field(v, "status.conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let status = conditions
                .iter()
                .find(|c| s(c, "status") == "True" && matches!(s(c, "type"), "Complete" | "Failed"))
                .map(|c| s(c, "type").to_string())
                .unwrap_or_else(|| "Running".into());
            vec![name, status, format!("{succeeded}/{completions}"), age]
        }
        "CronJob" => vec![
            name,
            s(v, "spec.schedule").to_string(),
            object::field_string(v, "spec.suspend"),
            count(v, "status.active").to_string(),
            match s(v, "status.lastScheduleTime") {
                "" => "<none>".into(),
                t => self::age(t),
            },
            age,
        ],
        "Node" => {
            let ready = object::field(v, "status.conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| s(c, "type") == "Ready"))
                .map(|c| s(c, "status") == "True")
                .unwrap_or(false);
            let mut status = if ready { "Ready" } else { "NotReady" }.to_string();
            if object::field(v, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = object::labels(v)
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect();
            vec![
                name,
                status,
                or_none(roles.join(",")),
                age,
                s(v, "status.nodeInfo.kubeletVersion").to_string(),
            ]
        }
        "Namespace" => vec![name, s(v, "status.phase").to_string(), age],
        "ConfigMap" => vec![
            name,
            (count(v, "data") + count(v, "binaryData")).to_string(),
            age,
        ],
        "Secret" => vec![
            name,
            s(v, "type").to_string(),
            (count(v, "data") + count(v, "stringData")).to_string(),
            age,
        ],
        "Endpoints" => {
            let mut eps = Vec::new();
            for subset in v
                .get("subsets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let ports = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for a in subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    for p in &ports {
                        eps.push(format!("{}:{}", s(&a, "ip"), n(p, "port")));
                    }
                }
            }
            vec![name, or_none(eps.join(",")), age]
        }
        "PersistentVolume" => vec![
            name,
            s(v, "spec.capacity.storage").to_string(),
            access_modes(v),
            s(v, "spec.persistentVolumeReclaimPolicy").to_string(),
            s(v, "status.phase").to_string(),
            match s(v, "spec.claimRef.name") {
                "" => String::new(),
                c => format!("{}/{c}", s(v, "spec.claimRef.namespace")),
            },
            s(v, "spec.storageClassName").to_string(),
            unset(s(v, "spec.volumeAttributesClassName")),
            s(v, "status.reason").to_string(),
            age,
        ],
        "PersistentVolumeClaim" => vec![
            name,
            s(v, "status.phase").to_string(),
            s(v, "spec.volumeName").to_string(),
            s(v, "status.capacity.storage").to_string(),
            access_modes(v),
            s(v, "spec.storageClassName").to_string(),
            unset(s(v, "spec.volumeAttributesClassName")),
            age,
        ],
        "StorageClass" => {
            let default = ["", "beta."].iter().any(|beta| {
                object::annotations(v)
                    .get(&format!(
                        "storageclass.{beta}kubernetes.io/is-default-class"
                    ))
                    .map(String::as_str)
                    == Some("true")
            });
            vec![
                if default {
                    format!("{name} (default)")
                } else {
                    name
                },
                s(v, "provisioner").to_string(),
                match s(v, "reclaimPolicy") {
                    "" => "Delete".to_string(),
                    p => p.to_string(),
                },
                match s(v, "volumeBindingMode") {
                    "" => "Immediate".to_string(),
                    m => m.to_string(),
                },
                (object::field(v, "allowVolumeExpansion").and_then(Value::as_bool) == Some(true))
                    .to_string(),
                age,
            ]
        }
        "Event" => vec![
            match s(v, "lastTimestamp") {
                "" => self::age(object::meta_str(v, "creationTimestamp")),
                t => self::age(t),
            },
            s(v, "type").to_string(),
            s(v, "reason").to_string(),
            format!(
                "{}/{}",
                s(v, "involvedObject.kind").to_ascii_lowercase(),
                s(v, "involvedObject.name")
            ),
            s(v, "message").to_string(),
        ],
        "Lease" => vec![name, or_none(s(v, "spec.holderIdentity").to_string()), age],
        _ => vec![name, age],
    };
    if wide {
        match kind {
            "Pod" => r.extend([
                or_none(s(v, "status.podIP").to_string()),
                or_none(s(v, "spec.nodeName").to_string()),
            ]),
            "Service" => r.push(selector_text(object::field(v, "spec.selector"))),
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                let (c, i) = containers_and_images(object::field(v, "spec.template.spec"));
                r.extend([
                    c,
                    i,
                    selector_text(object::field(v, "spec.selector.matchLabels")),
                ]);
            }
            "Node" => {
                let ip = object::field(v, "status.addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| s(x, "type") == "InternalIP"))
                    .map(|x| s(x, "address").to_string())
                    .unwrap_or_default();
                r.push(or_none(ip));
            }
            _ => {}
        }
    }
    r
}

/// kubectl's `<unset>` for an empty optional field.
fn unset(s: &str) -> String {
    if s.is_empty() {
        "<unset>".into()
    } else {
        s.into()
    }
}

fn access_modes(v: &Value) -> String {
    object::field(v, "spec.accessModes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A table of `objects` of `kind`, columns padded to their widest cell (3 spaces apart).
pub fn table(kind: &Kind, objects: &[Value], wide: bool, with_namespace: bool) -> String {
    let mut header: Vec<String> = columns(kind.kind, wide)
        .into_iter()
        .map(String::from)
        .collect();
    let mut rows: Vec<Vec<String>> = objects.iter().map(|o| row(kind.kind, o, wide)).collect();
    if with_namespace && kind.namespaced {
        header.insert(0, "NAMESPACE".into());
        for (r, o) in rows.iter_mut().zip(objects) {
            r.insert(0, object::namespace(o).to_string());
        }
    }
    grid(&header, &rows)
}

/// Rows under a header, columns padded to their widest cell (3 spaces apart), as kubectl
/// prints tables.
pub fn grid(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let mut out = String::new();
    for line in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == line.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `-o yaml` of one object, or of a `List` of several.
pub fn yaml(v: &Value) -> anyhow::Result<String> {
    serde_saphyr::to_string(v).map_err(|e| anyhow::anyhow!("cannot render YAML: {e}"))
}

pub fn list_object(items: Vec<Value>, resource_version: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_print_like_kubectl() {
        let kind = Kind::named("pods").unwrap();
        let pods = vec![json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 2}
            ]}
        })];
        let out = table(&kind, &pods, true, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE"
            ]
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[..5], ["default", "web-1", "1/2", "Running", "3"]);
        assert_eq!(cells[6..], ["10.244.0.5", "n1"]);
    }

    #[test]
    fn services_show_ports_with_node_ports() {
        let kind = Kind::named("svc").unwrap();
        let svc = vec![json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}
        })];
        let out = table(&kind, &svc, false, false);
        assert!(
            out.lines().nth(1).unwrap().contains("80:30080/TCP"),
            "{out}"
        );
        assert!(out.lines().nth(1).unwrap().contains("<none>"), "{out}");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let t = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(200);
        assert_eq!(age(&t.to_string()), "3m20s");
        assert_eq!(age("garbage"), "<unknown>");
    }
    #[test]
    fn storage_classes_print_like_kubectl() {
        let kind = Kind::named("sc").unwrap();
        let classes = vec![
            json!({"metadata": {"name": "local-path", "creationTimestamp": "2020-01-01T00:00:00Z",
                                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                   "provisioner": "skiff.io/local-path", "reclaimPolicy": "Delete",
                   "volumeBindingMode": "WaitForFirstConsumer"}),
            json!({"metadata": {"name": "fast", "creationTimestamp": "2020-01-01T00:00:00Z"},
                   "provisioner": "example.com/fast", "allowVolumeExpansion": true}),
        ];
        let out = table(&kind, &classes, false, false);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "NAME",
                "PROVISIONER",
                "RECLAIMPOLICY",
                "VOLUMEBINDINGMODE",
                "ALLOWVOLUMEEXPANSION",
                "AGE"
            ]
        );
        assert_eq!(
            lines[1][..6],
            [
                "local-path",
                "(default)",
                "skiff.io/local-path",
                "Delete",
                "WaitForFirstConsumer",
                "false"
            ]
        );
        assert_eq!(
            lines[2][..5],
            ["fast", "example.com/fast", "Delete", "Immediate", "true"]
        );
    }
}
