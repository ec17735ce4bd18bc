//! What every write goes through before it is stored: decoding the JSON, finding the kind,
//! settling the namespace, the server-set metadata (uid, creationTimestamp, generation,
//! generateName), defaults, the schema check and validation. Nothing is stored on an error.
//! Storage admission as kube-apiserver's plugins do it: DefaultStorageClass and the protection
//! finalizers on create (`admit_storage`), a claim's immutable spec on update (`check_update`).

use rand::Rng;
use serde_json::Value;
use skiff_api::{object, ApiError, Kind, Reason};

use super::{defaults, schema, validate};

/// Characters of generated name suffixes (Kubernetes' alphabet: no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// An object decoded from a request, with its kind and final namespace.
pub struct Incoming {
    pub kind: Kind,
    pub object: Value,
}

impl Incoming {
    pub fn name(&self) -> &str {
        object::name(&self.object)
    }

    pub fn namespace(&self) -> &str {
        object::namespace(&self.object)
    }

    pub fn key(&self) -> String {
        self.kind.key(self.namespace(), self.name())
    }
}

/// Decodes `bytes`, finds the kind, and settles the namespace: the object's own, else
/// `default_namespace`, else "default"; cluster-scoped kinds have none.
pub fn decode(bytes: &[u8], default_namespace: &str) -> Result<Incoming, ApiError> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("error decoding object: {e}")))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "error decoding object: not a JSON object",
        ));
    }
    let api_version = object::api_version(&obj).to_string();
    let kind_name = object::kind(&obj).to_string();
    if kind_name.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the object",
        ));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in the {kind_name} object"
        )));
    }
    let kind = Kind::of(&api_version, &kind_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no matches for kind \"{kind_name}\" in version \"{api_version}\""
        ))
    })?;
    if obj.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request(format!(
            "{kind_name} in version \"{api_version}\" cannot be handled as a {kind_name}: \
             metadata: expected an object"
        )));
    }
    if kind.namespaced {
        if object::namespace(&obj).is_empty() {
            let ns = if default_namespace.is_empty() {
                "default"
            } else {
                default_namespace
            };
            object::set_meta(&mut obj, "namespace", ns.into());
        }
    } else if let Some(m) = object::metadata_mut(&mut obj) {
        m.remove("namespace");
    }
    Ok(Incoming { kind, object: obj })
}

/// A random suffix for `generateName`.
fn name_suffix() -> String {
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| SUFFIX_ALPHABET[rng.gen_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// RFC 3339 UTC time, second precision, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// Server-set metadata of a new object: a name from generateName if it has none, uid,
/// creationTimestamp and generation; any client-sent resourceVersion is dropped.
pub fn set_create_metadata(obj: &mut Value) {
    if object::name(obj).is_empty() {
        let prefix = object::meta_str(obj, "generateName").to_string();
        if !prefix.is_empty() {
            object::set_meta(obj, "name", format!("{prefix}{}", name_suffix()).into());
        }
    }
    object::set_meta(obj, "uid", uuid::Uuid::new_v4().to_string().into());
    object::set_meta(obj, "creationTimestamp", now().into());
    if obj.get("spec").is_some() {
        object::set_meta(obj, "generation", 1.into());
    }
    if let Some(m) = object::metadata_mut(obj) {
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
}

/// Carries the server-owned metadata of `live` over to `next` (an update of it), and bumps
/// generation when the spec changed.
pub fn keep_server_metadata(live: &Value, next: &mut Value) {
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match live.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => object::set_meta(next, field, v.clone()),
            None => {
                if let Some(m) = object::metadata_mut(next) {
                    m.remove(field);
                }
            }
        }
    }
    let generation = live
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let changed = live.get("spec") != next.get("spec");
    if next.get("spec").is_some() {
        object::set_meta(
            next,
            "generation",
            (if changed { generation + 1 } else { generation }).into(),
        );
    }
}

/// Defaults, then the schema check, then validation.
pub fn admit(kind: &Kind, obj: &mut Value) -> Result<(), ApiError> {
    defaults::apply(kind.kind, obj);
    if let Err(e) = schema::check_kind(kind.kind, obj) {
        return Err(ApiError::bad_request(format!(
            "{k} in version \"{v}\" cannot be handled as a {k}: {e}",
            k = kind.kind,
            v = kind.api_version
        )));
    }
    let errors = validate::validate(kind.kind, obj);
    if !errors.is_empty() {
        let name = object::name(obj);
        return Err(ApiError::new(
            Reason::Invalid,
            validate::invalid_message(kind.kind, name, &errors),
        ));
    }
    Ok(())
}

/// Kubernetes' StorageObjectInUseProtection and DefaultStorageClass admission, on create (pure
/// part): a claim without a class (neither `spec.storageClassName`, even "", nor the beta
/// annotation) gets `default_class` when there is one; claims and volumes get their protection
/// finalizers.
pub fn storage_on_create(kind: &Kind, obj: &mut Value, default_class: Option<&str>) {
    use crate::controllers::persistentvolume::{PVC_PROTECTION, PV_PROTECTION};
    let finalizer = match kind.kind {
        "PersistentVolumeClaim" => PVC_PROTECTION,
        "PersistentVolume" => PV_PROTECTION,
        _ => return,
    };
    if kind.kind == "PersistentVolumeClaim" && !claim_has_class(obj) {
        if let Some(class) = default_class {
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = serde_json::json!({});
            }
            obj["spec"]["storageClassName"] = class.into();
        }
    }
    let mut finalizers = super::deletion::finalizers(obj);
    if !finalizers.iter().any(|f| f == finalizer) {
        finalizers.push(finalizer.to_string());
        object::set_meta(obj, "finalizers", finalizers.into());
    }
}

/// Whether a claim (JSON) names a class, "" included.
fn claim_has_class(obj: &Value) -> bool {
    obj.pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
        || object::annotations(obj).contains_key("volume.beta.kubernetes.io/storage-class")
}

/// `storage_on_create` for an incoming object, reading the StorageClasses when a claim needs
/// the default one.
pub async fn admit_storage(
    registry: &super::registry::Registry,
    inc: &mut Incoming,
) -> Result<(), ApiError> {
    let default_class = if inc.kind.kind == "PersistentVolumeClaim" && !claim_has_class(&inc.object)
    {
        let classes = Kind::named("storageclasses").expect("StorageClass is served");
        let (items, _) = registry.list(&classes.prefix(None)).await?;
        let values: Vec<&Value> = items.iter().map(|s| &s.object).collect();
        crate::controllers::persistentvolume::default_class(&values)
    } else {
        None
    };
    storage_on_create(&inc.kind, &mut inc.object, default_class.as_deref());
    Ok(())
}

/// What an update may not change, checked against the live object: a PersistentVolumeClaim's
/// spec is immutable, as in Kubernetes, but for setting `volumeName` once (binding), a class
/// on a claim that had none, `volumeAttributesClassName`, and the requests of a bound claim.
pub fn check_update(kind: &Kind, live: &Value, next: &Value) -> Result<(), ApiError> {
    if kind.kind != "PersistentVolumeClaim" {
        return Ok(());
    }
    let old = live.get("spec").cloned().unwrap_or(Value::Null);
    let mut new = next.get("spec").cloned().unwrap_or(Value::Null);
    let same_as_old = |new: &mut Value, field: &str| match old.get(field) {
        Some(v) => new[field] = v.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove(field);
            }
        }
    };
    if new.is_object() {
        if old
            .get("volumeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            same_as_old(&mut new, "volumeName");
        }
        if old.get("storageClassName").is_none_or(Value::is_null) {
            same_as_old(&mut new, "storageClassName");
        }
        same_as_old(&mut new, "volumeAttributesClassName");
        if object::field_string(live, "status.phase") == "Bound" {
            same_as_old(&mut new, "resources");
        }
    }
    if new == old {
        return Ok(());
    }
    let error = validate::FieldError {
        path: "spec".into(),
        detail: "Forbidden: spec is immutable after creation except resources.requests and \
                 volumeAttributesClassName for bound claims"
            .into(),
    };
    Err(ApiError::new(
        Reason::Invalid,
        validate::invalid_message(kind.kind, object::name(next), &[error]),
    ))
}

/// `pods "web" not found`.
pub fn not_found(kind: &Kind, name: &str) -> ApiError {
    ApiError::new(
        Reason::NotFound,
        format!("{} \"{name}\" not found", kind.resource()),
    )
}

/// `pods "web" already exists`.
pub fn already_exists(kind: &Kind, name: &str) -> ApiError {
    ApiError::new(
        Reason::AlreadyExists,
        format!("{} \"{name}\" already exists", kind.resource()),
    )
}

/// Kubernetes' optimistic-concurrency conflict message.
pub fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::new(
        Reason::Conflict,
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.resource()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_settled_by_scope() {
        let pod = decode(
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
            "",
        )
        .unwrap();
        assert_eq!(pod.namespace(), "default");
        assert_eq!(pod.key(), "/registry/pods/default/a");
        let pod = decode(
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
            "dev",
        )
        .unwrap();
        assert_eq!(pod.namespace(), "dev");
        let node = decode(
            br#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n","namespace":"x"}}"#,
            "dev",
        )
        .unwrap();
        assert_eq!(node.namespace(), "");
        assert_eq!(node.key(), "/registry/nodes/n");
    }

    #[test]
    fn unknown_kinds_and_versions_are_named() {
        let e = decode(br#"{"apiVersion":"v2","kind":"Pod"}"#, "")
            .err()
            .unwrap();
        assert_eq!(e.message, "no matches for kind \"Pod\" in version \"v2\"");
        let e = decode(br#"{"apiVersion":"v1"}"#, "").err().unwrap();
        assert_eq!(e.message, "Object 'Kind' is missing in the object");
    }

    #[test]
    fn claims_without_a_class_get_the_default_one_and_protection() {
        let pvc = Kind::named("pvc").unwrap();
        let mut claim = serde_json::json!({"metadata": {"name": "c"}, "spec": {}});
        storage_on_create(&pvc, &mut claim, Some("local-path"));
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
        assert_eq!(
            claim["metadata"]["finalizers"],
            serde_json::json!(["kubernetes.io/pvc-protection"])
        );
        // "" asks for no class: kept; no default class: nothing set.
        let mut none =
            serde_json::json!({"metadata": {"name": "c"}, "spec": {"storageClassName": ""}});
        storage_on_create(&pvc, &mut none, Some("local-path"));
        assert_eq!(none["spec"]["storageClassName"], "");
        let mut no_default = serde_json::json!({"metadata": {"name": "c"}, "spec": {}});
        storage_on_create(&pvc, &mut no_default, None);
        assert!(no_default["spec"].get("storageClassName").is_none());
        let pv = Kind::named("pv").unwrap();
        let mut volume = serde_json::json!({"metadata": {"name": "v", "finalizers": ["x"]}});
        storage_on_create(&pv, &mut volume, Some("local-path"));
        assert_eq!(
            volume["metadata"]["finalizers"],
            serde_json::json!(["x", "kubernetes.io/pv-protection"])
        );
        assert!(volume.get("spec").is_none());
    }

    #[test]
    fn a_claims_spec_is_immutable_but_for_binding_and_expansion() {
        let pvc = Kind::named("pvc").unwrap();
        let live = serde_json::json!({"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut next = live.clone();
            f(&mut next);
            next
        };
        let bound = with(&|n| {
            n["spec"]["volumeName"] = "pv1".into();
            n["spec"]["storageClassName"] = "local-path".into();
        });
        assert!(check_update(&pvc, &live, &bound).is_ok());
        let rebound = with(&|n| n["spec"]["volumeName"] = "pv2".into());
        assert!(check_update(&pvc, &bound, &rebound).is_err());
        let modes = with(&|n| n["spec"]["accessModes"] = serde_json::json!(["ReadWriteMany"]));
        let e = check_update(&pvc, &live, &modes).unwrap_err();
        assert_eq!(e.reason, Reason::Invalid);
        assert_eq!(
            e.message,
            "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after \
             creation except resources.requests and volumeAttributesClassName for bound claims"
        );
        let bigger = with(&|n| n["spec"]["resources"]["requests"]["storage"] = "2Gi".into());
        assert!(check_update(&pvc, &live, &bigger).is_err(), "not bound yet");
        let mut live_bound = live.clone();
        live_bound["status"]["phase"] = "Bound".into();
        assert!(check_update(&pvc, &live_bound, &bigger).is_ok());
        let annotated = with(&|n| n["metadata"]["annotations"] = serde_json::json!({"a": "b"}));
        assert!(check_update(&pvc, &live, &annotated).is_ok());
    }

    #[test]
    fn generate_name_gets_a_suffix() {
        let mut obj = serde_json::json!({"metadata": {"generateName": "web-"}, "spec": {}});
        set_create_metadata(&mut obj);
        let name = object::name(&obj);
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert!(!object::meta_str(&obj, "uid").is_empty());
    }
}
