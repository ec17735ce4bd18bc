//! The kinds Skiff serves: their apiVersion, REST resource name, short names and scope, and the
//! store keys their objects live under. The server, the CLI and the tests all resolve kinds here.

/// One kind of object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The lowercase plural, as in `/registry/<plural>/...` and `skiff get <plural>`.
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
}

const fn kind(
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> Kind {
    Kind {
        api_version,
        kind,
        plural,
        short_names,
        namespaced,
    }
}

/// Every kind served, in the order `skiff api-resources` would list them.
pub const KINDS: &[Kind] = &[
    kind("v1", "Namespace", "namespaces", &["ns"], false),
    kind("v1", "Node", "nodes", &["no"], false),
    kind("v1", "Pod", "pods", &["po"], true),
    kind("v1", "Service", "services", &["svc"], true),
    kind("v1", "Endpoints", "endpoints", &["ep"], true),
    kind("v1", "ConfigMap", "configmaps", &["cm"], true),
    kind("v1", "Secret", "secrets", &[], true),
    kind(
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        &["pv"],
        false,
    ),
    kind(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        &["pvc"],
        true,
    ),
    kind("v1", "Event", "events", &["ev"], true),
    kind(
        "storage.k8s.io/v1",
        "StorageClass",
        "storageclasses",
        &["sc"],
        false,
    ),
    kind("apps/v1", "ReplicaSet", "replicasets", &["rs"], true),
    kind("apps/v1", "Deployment", "deployments", &["deploy"], true),
    kind("apps/v1", "DaemonSet", "daemonsets", &["ds"], true),
    kind("apps/v1", "StatefulSet", "statefulsets", &["sts"], true),
    kind("batch/v1", "Job", "jobs", &[], true),
    kind("batch/v1", "CronJob", "cronjobs", &["cj"], true),
    kind("coordination.k8s.io/v1", "Lease", "leases", &[], true),
];

/// Every object key starts with this.
pub const REGISTRY: &str = "/registry/";

impl Kind {
    /// The kind an object's `apiVersion` and `kind` name, if Skiff serves it.
    pub fn of(api_version: &str, kind: &str) -> Option<Kind> {
        KINDS
            .iter()
            .copied()
            .find(|k| k.api_version == api_version && k.kind == kind)
    }

    /// The kind a user means by `name`: its plural, its singular, a short name or the kind
    /// itself, in any case, optionally qualified by group (`deployments.apps`).
    pub fn named(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (lower, None),
        };
        KINDS.iter().copied().find(|k| {
            let matches_name = k.plural == base
                || k.kind.to_ascii_lowercase() == base
                || k.short_names.contains(&base.as_str());
            let matches_group = match &group {
                None => true,
                Some(g) => k.group() == g,
            };
            matches_name && matches_group
        })
    }

    /// The API group ("" for the core group).
    pub fn group(&self) -> &'static str {
        match self.api_version.rsplit_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// The store key of the object `name` in `namespace` (ignored for cluster-scoped kinds).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{REGISTRY}{}/{namespace}/{name}", self.plural)
        } else {
            format!("{REGISTRY}{}/{name}", self.plural)
        }
    }

    /// The key prefix of every object of this kind in `namespace`, or in all namespaces.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{REGISTRY}{}/{ns}/", self.plural),
            _ => format!("{REGISTRY}{}/", self.plural),
        }
    }

    /// `pods` or `deployments.apps`, as kubectl names a resource in messages.
    pub fn resource(&self) -> String {
        match self.group() {
            "" => self.plural.to_string(),
            g => format!("{}.{g}", self.plural),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_name_kinds_by_plural_singular_short_name_or_kind() {
        for name in ["pods", "pod", "po", "Pod", "PODS"] {
            assert_eq!(Kind::named(name).unwrap().kind, "Pod", "{name}");
        }
        assert_eq!(Kind::named("deploy").unwrap().kind, "Deployment");
        assert_eq!(Kind::named("deployments.apps").unwrap().kind, "Deployment");
        assert!(Kind::named("deployments.batch").is_none());
        assert!(Kind::named("widgets").is_none());
    }

    #[test]
    fn keys_follow_the_registry_layout() {
        let pod = Kind::of("v1", "Pod").unwrap();
        assert_eq!(pod.key("default", "web"), "/registry/pods/default/web");
        assert_eq!(pod.prefix(Some("default")), "/registry/pods/default/");
        assert_eq!(pod.prefix(None), "/registry/pods/");
        let node = Kind::of("v1", "Node").unwrap();
        assert_eq!(node.key("ignored", "n1"), "/registry/nodes/n1");
        assert_eq!(
            Kind::of("apps/v1", "Deployment").unwrap().resource(),
            "deployments.apps"
        );
        assert!(Kind::of("apps/v1", "Pod").is_none());
        let sc = Kind::named("sc").unwrap();
        assert_eq!(sc.kind, "StorageClass");
        assert_eq!(
            sc.key("ignored", "local-path"),
            "/registry/storageclasses/local-path"
        );
        assert_eq!(sc.resource(), "storageclasses.storage.k8s.io");
    }
}
