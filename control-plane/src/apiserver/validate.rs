//! Validation after defaulting, with Kubernetes' messages: each problem names its field path
//! (`spec.containers[0].image: Required value`), and an invalid object is refused whole as
//! `Pod "web" is invalid: ...`. Pod specs are checked wherever they are (Pods and the templates
//! of every workload kind), containers and init containers alike, resource quantities included.

use std::collections::BTreeSet;

use serde_json::Value;
use skiff_api::object::string_map;
use skiff_api::selector::{check_label_key, check_label_value, LabelSelector};

use crate::quantity::{self, Quantity, QuantityError};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub detail: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

/// Kubernetes' message for an invalid object: one error inline, several in brackets.
pub fn invalid_message(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    if list.len() == 1 {
        format!("{kind} \"{name}\" is invalid: {}", list[0])
    } else {
        format!("{kind} \"{name}\" is invalid: [{}]", list.join(", "))
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn required(&mut self, path: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            detail: "Required value".into(),
        });
    }

    fn invalid(&mut self, path: impl Into<String>, value: &Value, why: impl AsRef<str>) {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        self.0.push(FieldError {
            path: path.into(),
            detail: format!("Invalid value: {shown}: {}", why.as_ref()),
        });
    }

    fn unsupported(&mut self, path: impl Into<String>, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.0.push(FieldError {
            path: path.into(),
            detail: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        });
    }
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and ending alphanumeric.
pub fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name', or \
             '123-abc'), at most 63 characters"
                .into(),
        )
    }
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns_label(l).is_ok());
    if ok {
        Ok(())
    } else {
        Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com'), at most 253 characters"
                .into(),
        )
    }
}

/// Kinds whose names must be DNS labels (they become DNS names or label values themselves).
fn name_is_label(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Service")
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn metadata(kind: &str, obj: &Value, errs: &mut Errors) {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    match str_at(&meta, "name") {
        None | Some("") => errs.required("metadata.name"),
        Some(name) => {
            let check = if name_is_label(kind) {
                dns_label(name)
            } else {
                dns_subdomain(name)
            };
            if let Err(why) = check {
                errs.invalid("metadata.name", &name.into(), why);
            }
        }
    }
    for (k, v) in string_map(meta.get("labels")) {
        if let Err(why) = check_label_key(&k) {
            errs.invalid("metadata.labels", &k.clone().into(), why);
        }
        if let Err(why) = check_label_value(&v) {
            errs.invalid(format!("metadata.labels.{k}"), &v.into(), why);
        }
    }
}

fn port_number(errs: &mut Errors, path: String, v: Option<&Value>, required: bool) {
    match v.and_then(Value::as_i64) {
        None if required => errs.required(path),
        None => {}
        Some(p) if !(1..=65535).contains(&p) => {
            errs.invalid(path, &p.into(), "must be between 1 and 65535, inclusive")
        }
        Some(_) => {}
    }
}

fn containers(spec: &Value, path: &str, key: &str, required: bool, errs: &mut Errors) {
    let list = spec.get(key).and_then(Value::as_array);
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        if required {
            errs.required(format!("{path}.{key}"));
        }
        return;
    };
    let mut names = BTreeSet::new();
    for (i, c) in list.iter().enumerate() {
        let cp = format!("{path}.{key}[{i}]");
        match str_at(c, "name") {
            None | Some("") => errs.required(format!("{cp}.name")),
            Some(name) => {
                if let Err(why) = dns_label(name) {
                    errs.invalid(format!("{cp}.name"), &name.into(), why);
                }
                if !names.insert(name.to_string()) {
                    errs.0.push(FieldError {
                        path: format!("{cp}.name"),
                        detail: format!("Duplicate value: {name:?}"),
                    });
                }
            }
        }
        match str_at(c, "image") {
            None => errs.required(format!("{cp}.image")),
            Some(s) if s.trim().is_empty() => errs.required(format!("{cp}.image")),
            Some(_) => {}
        }
        if let Some(policy) = str_at(c, "imagePullPolicy") {
            if !["Always", "IfNotPresent", "Never"].contains(&policy) {
                errs.unsupported(
                    format!("{cp}.imagePullPolicy"),
                    policy,
                    &["Always", "IfNotPresent", "Never"],
                );
            }
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, p) in ports.iter().enumerate() {
                let pp = format!("{cp}.ports[{j}]");
                port_number(
                    errs,
                    format!("{pp}.containerPort"),
                    p.get("containerPort"),
                    true,
                );
                port_number(errs, format!("{pp}.hostPort"), p.get("hostPort"), false);
                protocol(errs, &pp, p);
            }
        }
        resources(errs, &cp, c.get("resources"));
    }
}

/// A container's requests and limits: each a quantity (`crate::quantity`), none below zero.
fn resources(errs: &mut Errors, path: &str, resources: Option<&Value>) {
    for part in ["requests", "limits"] {
        let Some(amounts) = resources
            .and_then(|r| r.get(part))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (name, v) in amounts {
            let path = format!("{path}.resources.{part}.{name}");
            let text = quantity::text(v).unwrap_or_else(|| v.to_string().into());
            let shown = Value::String(text.to_string());
            match Quantity::parse(&text) {
                Err(QuantityError::Format) => errs.invalid(
                    path,
                    &shown,
                    format!("must match the regex {}", quantity::PATTERN),
                ),
                Err(e) => errs.invalid(path, &shown, e.to_string()),
                Ok(q) if q.is_negative() => {
                    errs.invalid(path, &shown, "must be greater than or equal to 0")
                }
                Ok(_) => {}
            }
        }
    }
}

fn protocol(errs: &mut Errors, path: &str, port: &Value) {
    if let Some(proto) = str_at(port, "protocol") {
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            errs.unsupported(format!("{path}.protocol"), proto, &["TCP", "UDP", "SCTP"]);
        }
    }
}

/// A pod spec at `path`; `restart` lists the restart policies allowed there.
fn pod_spec(spec: Option<&Value>, path: &str, restart: &[&str], errs: &mut Errors) {
    let Some(spec) = spec else {
        errs.required(path.to_string());
        return;
    };
    containers(spec, path, "containers", true, errs);
    containers(spec, path, "initContainers", false, errs);
    match str_at(spec, "restartPolicy") {
        Some(p) if !restart.contains(&p) => {
            errs.unsupported(format!("{path}.restartPolicy"), p, restart)
        }
        None if !restart.contains(&"Always") => errs.required(format!("{path}.restartPolicy")),
        _ => {}
    }
}

/// `spec.selector` must be present and select the template's labels.
fn selector_and_template(spec: &Value, restart: &[&str], errs: &mut Errors) {
    let selector = spec.get("selector");
    let template_labels = string_map(
        spec.get("template")
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("labels")),
    );
    match selector {
        None => errs.required("spec.selector"),
        Some(sel) => match LabelSelector::from_spec(sel) {
            Err(e) => errs.invalid("spec.selector", sel, &e),
            Ok(parsed) if parsed.is_empty() => errs.invalid(
                "spec.selector",
                sel,
                "empty selector is invalid for deployment",
            ),
            Ok(parsed) if !parsed.matches(&template_labels) => errs.invalid(
                "spec.template.metadata.labels",
                &serde_json::to_value(&template_labels).unwrap_or_default(),
                "`selector` does not match template `labels`",
            ),
            Ok(_) => {}
        },
    }
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64) {
        if r < 0 {
            errs.invalid(
                "spec.replicas",
                &r.into(),
                "must be greater than or equal to 0",
            );
        }
    }
    pod_spec(
        spec.get("template").and_then(|t| t.get("spec")),
        "spec.template.spec",
        restart,
        errs,
    );
}

fn service(spec: &Value, errs: &mut Errors) {
    const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    let ty = str_at(spec, "type").unwrap_or("ClusterIP");
    if !TYPES.contains(&ty) {
        errs.unsupported("spec.type", ty, TYPES);
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let headless = str_at(spec, "clusterIP") == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.required("spec.ports");
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        port_number(errs, format!("{pp}.port"), p.get("port"), true);
        protocol(errs, &pp, p);
        let name = str_at(p, "name").unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.required(format!("{pp}.name"));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            errs.0.push(FieldError {
                path: format!("{pp}.name"),
                detail: format!("Duplicate value: {name:?}"),
            });
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if ty != "NodePort" && ty != "LoadBalancer" {
                errs.invalid(
                    format!("{pp}.nodePort"),
                    &np.into(),
                    "may not be used when `type` is 'ClusterIP'",
                );
            }
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => port_number(
                errs,
                format!("{pp}.targetPort"),
                Some(&Value::Number(n.clone())),
                true,
            ),
            Some(Value::String(s)) if s.is_empty() || s.len() > 15 => {
                errs.invalid(
                    format!("{pp}.targetPort"),
                    &s.clone().into(),
                    "must contain at most 15 characters",
                );
            }
            _ => {}
        }
    }
}

/// A Job spec's counts are not negative, and its completion mode is known (Indexed with a
/// count of completions).
fn job_counts(spec: &Value, path: &str, errs: &mut Errors) {
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        if let Some(v) = spec.get(field).and_then(Value::as_i64) {
            let positive = field == "activeDeadlineSeconds";
            if v < 0 || (positive && v == 0) {
                let why = if positive {
                    "must be greater than 0"
                } else {
                    "must be greater than or equal to 0"
                };
                errs.invalid(format!("{path}.{field}"), &v.into(), why);
            }
        }
    }
    match str_at(spec, "completionMode") {
        None | Some("NonIndexed") => {}
        Some("Indexed") => match spec.get("completions").and_then(Value::as_i64) {
            None => errs.0.push(FieldError {
                path: format!("{path}.completions"),
                detail: "Required value: when completion mode is Indexed".into(),
            }),
            Some(c) if c > 100_000 => errs.invalid(
                format!("{path}.completions"),
                &c.into(),
                "must be less than or equal to 100000 when completion mode is Indexed",
            ),
            Some(_) => {}
        },
        Some(mode) => errs.unsupported(
            format!("{path}.completionMode"),
            mode,
            &["Indexed", "NonIndexed"],
        ),
    }
}

/// A StatefulSet's own fields: its policies, counts, service name and claim templates.
fn stateful_set(spec: &Value, errs: &mut Errors) {
    let one_of = |errs: &mut Errors, path: &str, value: Option<&str>, supported: &[&str]| {
        if let Some(v) = value.filter(|v| !supported.contains(v)) {
            errs.unsupported(path, v, supported);
        }
    };
    one_of(
        errs,
        "spec.podManagementPolicy",
        str_at(spec, "podManagementPolicy"),
        &["OrderedReady", "Parallel"],
    );
    let strategy = spec.get("updateStrategy");
    let strategy_type = strategy.and_then(|s| str_at(s, "type"));
    one_of(
        errs,
        "spec.updateStrategy.type",
        strategy_type,
        &["RollingUpdate", "OnDelete"],
    );
    if let Some(ru) = strategy.and_then(|s| s.get("rollingUpdate")) {
        if strategy_type != Some("RollingUpdate") {
            errs.invalid(
                "spec.updateStrategy.rollingUpdate",
                ru,
                "only allowed for updateStrategy 'RollingUpdate'",
            );
        }
    }
    let policy = spec.get("persistentVolumeClaimRetentionPolicy");
    for when in ["whenDeleted", "whenScaled"] {
        one_of(
            errs,
            &format!("spec.persistentVolumeClaimRetentionPolicy.{when}"),
            policy.and_then(|p| str_at(p, when)),
            &["Retain", "Delete"],
        );
    }
    let counts = [
        ("spec.minReadySeconds", spec.get("minReadySeconds")),
        (
            "spec.updateStrategy.rollingUpdate.partition",
            strategy
                .and_then(|s| s.get("rollingUpdate"))
                .and_then(|r| r.get("partition")),
        ),
        (
            "spec.ordinals.start",
            spec.get("ordinals").and_then(|o| o.get("start")),
        ),
    ];
    for (path, v) in counts {
        if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n < 0) {
            errs.invalid(path, &n.into(), "must be greater than or equal to 0");
        }
    }
    if let Some(service) = str_at(spec, "serviceName").filter(|s| !s.is_empty()) {
        if let Err(why) = dns_label(service) {
            errs.invalid("spec.serviceName", &service.into(), why);
        }
    }
    let templates = spec
        .get("volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for (i, t) in templates.iter().enumerate() {
        let path = format!("spec.volumeClaimTemplates[{i}].metadata.name");
        match t.get("metadata").and_then(|m| str_at(m, "name")) {
            None | Some("") => errs.required(path),
            Some(name) => {
                if let Err(why) = dns_label(name) {
                    errs.invalid(path, &name.into(), why);
                } else if !names.insert(name) {
                    errs.0.push(FieldError {
                        path,
                        detail: format!("Duplicate value: {name:?}"),
                    });
                }
            }
        }
    }
}

/// Access modes a claim or volume may name.
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// A claim's or volume's access modes: at least one, each known.
fn access_modes(spec: &Value, path: &str, errs: &mut Errors) {
    let modes = spec
        .get("accessModes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if modes.is_empty() {
        errs.0.push(FieldError {
            path: format!("{path}.accessModes"),
            detail: "Required value: at least 1 access mode is required".into(),
        });
    }
    for m in modes.iter().filter_map(Value::as_str) {
        if !ACCESS_MODES.contains(&m) {
            errs.unsupported(format!("{path}.accessModes"), m, ACCESS_MODES);
        }
    }
}

/// A storage quantity (`spec.resources.requests.storage`, `spec.capacity.storage`): present,
/// a quantity, not negative.
fn storage_quantity(errs: &mut Errors, path: &str, v: Option<&Value>) {
    let Some(v) = v else {
        errs.required(path.to_string());
        return;
    };
    let text = quantity::text(v).unwrap_or_else(|| v.to_string().into());
    let shown = Value::String(text.to_string());
    match Quantity::parse(&text) {
        Err(QuantityError::Format) => errs.invalid(
            path,
            &shown,
            format!("must match the regex {}", quantity::PATTERN),
        ),
        Err(e) => errs.invalid(path, &shown, e.to_string()),
        Ok(q) if q.is_negative() => {
            errs.invalid(path, &shown, "must be greater than or equal to 0")
        }
        Ok(_) => {}
    }
}

/// A StorageClass: its provisioner named, a reclaim policy and binding mode Kubernetes knows.
fn storage_class(obj: &Value, errs: &mut Errors) {
    if str_at(obj, "provisioner").unwrap_or_default().is_empty() {
        errs.required("provisioner");
    }
    if let Some(p) = str_at(obj, "reclaimPolicy") {
        if !["Delete", "Retain"].contains(&p) {
            errs.unsupported("reclaimPolicy", p, &["Delete", "Retain"]);
        }
    }
    if let Some(m) = str_at(obj, "volumeBindingMode") {
        let modes = ["Immediate", "WaitForFirstConsumer"];
        if !modes.contains(&m) {
            errs.unsupported("volumeBindingMode", m, &modes);
        }
    }
}

/// A PersistentVolumeClaim's spec: access modes and a storage request.
fn claim_spec(spec: Option<&Value>, errs: &mut Errors) {
    let Some(spec) = spec else {
        errs.required("spec");
        return;
    };
    access_modes(spec, "spec", errs);
    storage_quantity(
        errs,
        "spec.resources[storage]",
        spec.pointer("/resources/requests/storage"),
    );
}

/// A PersistentVolume's spec: access modes, a storage capacity, a known reclaim policy.
fn volume_spec(spec: Option<&Value>, errs: &mut Errors) {
    let Some(spec) = spec else {
        errs.required("spec");
        return;
    };
    access_modes(spec, "spec", errs);
    storage_quantity(
        errs,
        "spec.capacity[storage]",
        spec.pointer("/capacity/storage"),
    );
    if let Some(p) = str_at(spec, "persistentVolumeReclaimPolicy") {
        let policies = ["Delete", "Recycle", "Retain"];
        if !policies.contains(&p) {
            errs.unsupported("spec.persistentVolumeReclaimPolicy", p, &policies);
        }
    }
}

/// Every problem with `obj` of `kind` (already defaulted); empty if valid.
pub fn validate(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Errors::default();
    metadata(kind, obj, &mut errs);
    let spec = obj.get("spec");
    match kind {
        "Pod" => pod_spec(spec, "spec", &["Always", "OnFailure", "Never"], &mut errs),
        "StorageClass" => storage_class(obj, &mut errs),
        "PersistentVolumeClaim" => claim_spec(spec, &mut errs),
        "PersistentVolume" => volume_spec(spec, &mut errs),
        "Service" => match spec {
            Some(s) => service(s, &mut errs),
            None => errs.required("spec"),
        },
        "ReplicaSet" | "Deployment" | "DaemonSet" | "StatefulSet" => match spec {
            Some(s) => selector_and_template(s, &["Always"], &mut errs),
            None => errs.required("spec"),
        },
        "Job" => match spec {
            Some(s) => {
                job_counts(s, "spec", &mut errs);
                pod_spec(
                    s.get("template").and_then(|t| t.get("spec")),
                    "spec.template.spec",
                    &["OnFailure", "Never"],
                    &mut errs,
                )
            }
            None => errs.required("spec"),
        },
        "CronJob" => match spec {
            Some(s) => {
                match str_at(s, "schedule") {
                    None | Some("") => errs.required("spec.schedule"),
                    Some(sched) => {
                        if let Err(why) = crate::cron::parse(sched) {
                            errs.invalid("spec.schedule", &sched.into(), why.to_string());
                        }
                    }
                }
                if let Some(zone) = str_at(s, "timeZone") {
                    if let Err(why) = crate::cron::parse_time_zone(zone) {
                        errs.invalid("spec.timeZone", &zone.into(), why.to_string());
                    }
                }
                if let Some(job_spec) = s.get("jobTemplate").and_then(|j| j.get("spec")) {
                    job_counts(job_spec, "spec.jobTemplate.spec", &mut errs);
                }
                pod_spec(
                    s.get("jobTemplate")
                        .and_then(|j| j.get("spec"))
                        .and_then(|j| j.get("template"))
                        .and_then(|t| t.get("spec")),
                    "spec.jobTemplate.spec.template.spec",
                    &["OnFailure", "Never"],
                    &mut errs,
                );
            }
            None => errs.required("spec"),
        },
        _ => {}
    }
    if let (Some(s), "StatefulSet") = (spec, kind) {
        stateful_set(s, &mut errs);
    }
    errs.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_volumes_and_classes_need_what_kubernetes_needs() {
        let claim = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "1Gi"}}}});
        assert!(validate("PersistentVolumeClaim", &claim).is_empty());
        let bare = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["Sideways"]}});
        assert_eq!(
            invalid_message("PersistentVolumeClaim", "data", &validate("PersistentVolumeClaim", &bare)),
            "PersistentVolumeClaim \"data\" is invalid: [spec.accessModes: Unsupported value: \
             \"Sideways\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \
             \"ReadWriteOncePod\", spec.resources[storage]: Required value]"
        );
        let none = json!({"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "x1"}}}});
        let errs: Vec<String> = validate("PersistentVolumeClaim", &none)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs[0],
            "spec.accessModes: Required value: at least 1 access mode is required"
        );
        assert!(
            errs[1].starts_with("spec.resources[storage]: Invalid value: \"x1\""),
            "{errs:?}"
        );
        let pv = json!({"metadata": {"name": "pv"}, "spec": {"accessModes": ["ReadWriteOnce"],
                        "capacity": {"storage": "1Gi"}, "persistentVolumeReclaimPolicy": "Keep"}});
        assert_eq!(
            validate("PersistentVolume", &pv)[0].to_string(),
            "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": supported values: \
             \"Delete\", \"Recycle\", \"Retain\""
        );
        let sc = json!({"metadata": {"name": "fast"}, "provisioner": "x",
                        "reclaimPolicy": "Delete", "volumeBindingMode": "Later"});
        assert_eq!(
            validate("StorageClass", &sc)[0].to_string(),
            "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \
             \"WaitForFirstConsumer\""
        );
    }

    #[test]
    fn a_missing_image_is_named_by_its_path() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}]}});
        let errs = validate("Pod", &pod);
        assert_eq!(
            invalid_message("Pod", "web", &errs),
            "Pod \"web\" is invalid: spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn names_must_be_dns_names() {
        let pod = json!({"metadata": {"name": "Web_1"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let errs = validate("Pod", &pod);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .to_string()
            .starts_with("metadata.name: Invalid value: \"Web_1\""));
        let ns = json!({"metadata": {"name": "a.b"}});
        assert_eq!(validate("Namespace", &ns).len(), 1);
    }

    #[test]
    fn a_deployment_selector_must_match_its_template() {
        let d = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}
        }});
        let errs = validate("Deployment", &d);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0]
            .to_string()
            .contains("`selector` does not match template `labels`"));
    }

    #[test]
    fn stateful_sets_need_known_policies_and_dns_label_claim_names() {
        let sts = |extra: Value| {
            let mut s = json!({"metadata": {"name": "web"}, "spec": {
                "selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]
            }});
            for (k, v) in extra.as_object().into_iter().flatten() {
                s["spec"][k] = v.clone();
            }
            validate("StatefulSet", &s)
        };
        assert!(sts(json!({})).is_empty(), "{:?}", sts(json!({})));
        let text = |errs: Vec<FieldError>| -> Vec<String> {
            errs.iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            text(sts(json!({"podManagementPolicy": "Random", "replicas": -1}))),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.podManagementPolicy: Unsupported value: \"Random\": supported values: \"OrderedReady\", \"Parallel\""
            ]
        );
        assert_eq!(
            text(sts(json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -2}}}))),
            ["spec.updateStrategy.rollingUpdate.partition: Invalid value: -2: must be greater than or equal to 0"]
        );
        assert_eq!(
            sts(json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {}}})).len(),
            1
        );
        assert_eq!(
            sts(json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep"}}))[0].path,
            "spec.persistentVolumeClaimRetentionPolicy.whenDeleted"
        );
        assert_eq!(
            sts(json!({"serviceName": "Web.Svc"}))[0].path,
            "spec.serviceName"
        );
        assert!(sts(json!({"serviceName": ""})).is_empty());
        let claims = sts(json!({"volumeClaimTemplates": [
            {"metadata": {"name": "data"}}, {"metadata": {"name": "data"}},
            {"metadata": {"name": "Logs"}}, {"spec": {}}
        ]}));
        assert_eq!(
            text(claims)
                .iter()
                .map(|e| e.split(": ").take(2).collect::<Vec<_>>().join(": "))
                .collect::<Vec<_>>(),
            [
                "spec.volumeClaimTemplates[1].metadata.name: Duplicate value",
                "spec.volumeClaimTemplates[2].metadata.name: Invalid value",
                "spec.volumeClaimTemplates[3].metadata.name: Required value"
            ]
        );
    }

    #[test]
    fn job_pods_must_not_restart_always() {
        let j = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}});
        let errs = validate("Job", &j);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .to_string()
            .starts_with("spec.template.spec.restartPolicy: Unsupported value: \"Always\""));
    }

    #[test]
    fn indexed_jobs_need_a_count_of_completions() {
        let job = |spec: Value| {
            let mut j = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
            for (k, v) in spec.as_object().into_iter().flatten() {
                j["spec"][k] = v.clone();
            }
            validate("Job", &j)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert!(job(json!({"completionMode": "Indexed", "completions": 3})).is_empty());
        assert_eq!(
            job(json!({"completionMode": "Indexed"})),
            ["spec.completions: Required value: when completion mode is Indexed"]
        );
        assert_eq!(
            job(json!({"completionMode": "Indexed", "completions": 100001})),
            ["spec.completions: Invalid value: 100001: must be less than or equal to 100000 when completion mode is Indexed"]
        );
        assert_eq!(
            job(json!({"completionMode": "Sometimes"})),
            ["spec.completionMode: Unsupported value: \"Sometimes\": supported values: \"Indexed\", \"NonIndexed\""]
        );
    }

    #[test]
    fn services_need_ports_in_range_and_names_when_several() {
        let s =
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 70000}, {"port": 80}]}});
        let errs = validate("Service", &s);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
                    .to_string()
            ),
            "{text:?}"
        );
        assert!(
            text.contains(&"spec.ports[0].name: Required value".to_string()),
            "{text:?}"
        );
    }

    #[test]
    fn cron_jobs_need_a_schedule_and_zone_that_parse() {
        let cj = |schedule: &str, zone: &str| {
            json!({"metadata": {"name": "c"}, "spec": {"schedule": schedule, "timeZone": zone,
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "x"}]}}}}}})
        };
        assert!(validate("CronJob", &cj("*/5 * * * *", "UTC")).is_empty());
        let errs = invalid_message(
            "CronJob",
            "c",
            &validate("CronJob", &cj("61 * * * *", "UTC")),
        );
        assert!(
            errs.contains("spec.schedule: Invalid value: \"61 * * * *\": minute field \"61\""),
            "{errs}"
        );
        let errs = invalid_message(
            "CronJob",
            "c",
            &validate("CronJob", &cj("@hourly", "Mars/Base")),
        );
        assert!(
            errs.contains("spec.timeZone: Invalid value: \"Mars/Base\""),
            "{errs}"
        );
    }

    #[test]
    fn resource_quantities_must_parse_and_not_be_negative() {
        let pod = |resources: Value| {
            json!({"metadata": {"name": "x"}, "spec": {"containers": [
                {"name": "c", "image": "i", "resources": resources}
            ]}})
        };
        let accepted = [
            "1e3", "0.5", "500m", "1Ki", "1k", "1M", "1Gi", ".5", "+1", "1E2", "100n", "100u", "0",
        ];
        for q in accepted {
            let errs = validate(
                "Pod",
                &pod(
                    json!({"requests": {"cpu": q, "memory": q}, "limits": {"cpu": q, "memory": q}}),
                ),
            );
            assert!(errs.is_empty(), "{q}: {errs:?}");
        }
        // Numbers, as YAML's `cpu: 2` arrives.
        assert!(validate("Pod", &pod(json!({"requests": {"cpu": 2, "memory": 0.5}}))).is_empty());
        let message =
            |resources: Value| invalid_message("Pod", "x", &validate("Pod", &pod(resources)));
        assert_eq!(
            message(json!({"requests": {"cpu": "abc"}})),
            "Pod \"x\" is invalid: spec.containers[0].resources.requests.cpu: Invalid value: \"abc\": must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
        );
        // (requests.memory, the error)
        let refused = [
            ("1.2.3", "Invalid value: \"1.2.3\": must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"),
            ("1KiB", "Invalid value: \"1KiB\": must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"),
            ("--1", "Invalid value: \"--1\": must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"),
            ("", "Invalid value: \"\": must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"),
            ("1K", "Invalid value: \"1K\": unable to parse quantity's suffix"),
            ("-1", "Invalid value: \"-1\": must be greater than or equal to 0"),
            ("-500m", "Invalid value: \"-500m\": must be greater than or equal to 0"),
        ];
        for (q, detail) in refused {
            let errs = validate("Pod", &pod(json!({"requests": {"memory": q}})));
            assert_eq!(
                errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                [format!(
                    "spec.containers[0].resources.requests.memory: {detail}"
                )],
                "{q}"
            );
        }
        assert_eq!(
            validate("Pod", &pod(json!({"limits": {"cpu": -2}})))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["spec.containers[0].resources.limits.cpu: Invalid value: \"-2\": must be greater than or equal to 0"]
        );
        // Init containers and the pod templates of every workload kind.
        let bad = json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": "abc"}}});
        let good = json!({"name": "ok", "image": "i"});
        let mut with_init = pod(json!({}));
        with_init["spec"]["initContainers"] = json!([good, bad]);
        assert_eq!(
            validate("Pod", &with_init)[0].path,
            "spec.initContainers[1].resources.requests.cpu"
        );
        let template = json!({"metadata": {"labels": {"app": "a"}},
                              "spec": {"restartPolicy": "Always", "containers": [bad]}});
        let mut job_template = template.clone();
        job_template["spec"]["restartPolicy"] = json!("Never");
        let selector = json!({"matchLabels": {"app": "a"}});
        let workloads = [
            (
                "ReplicaSet",
                json!({"selector": selector, "template": template}),
                "spec.template.spec",
            ),
            (
                "Deployment",
                json!({"selector": selector, "template": template}),
                "spec.template.spec",
            ),
            (
                "DaemonSet",
                json!({"selector": selector, "template": template}),
                "spec.template.spec",
            ),
            (
                "StatefulSet",
                json!({"selector": selector, "template": template}),
                "spec.template.spec",
            ),
            (
                "Job",
                json!({"template": job_template}),
                "spec.template.spec",
            ),
            (
                "CronJob",
                json!({"schedule": "@hourly", "jobTemplate": {"spec": {"template": job_template}}}),
                "spec.jobTemplate.spec.template.spec",
            ),
        ];
        for (kind, spec, path) in workloads {
            let obj = json!({"metadata": {"name": "w"}, "spec": spec});
            let paths: Vec<String> = validate(kind, &obj).into_iter().map(|e| e.path).collect();
            assert_eq!(
                paths,
                [format!("{path}.containers[0].resources.requests.cpu")],
                "{kind}"
            );
        }
    }
}
