//! What every write goes through before it is stored: decoding the JSON, finding the kind,
//! settling the namespace, the server-set metadata (uid, creationTimestamp, generation,
//! generateName), defaults, the schema check and validation. Nothing is stored on an error.

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
    fn generate_name_gets_a_suffix() {
        let mut obj = serde_json::json!({"metadata": {"generateName": "web-"}, "spec": {}});
        set_create_metadata(&mut obj);
        let name = object::name(&obj);
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert!(!object::meta_str(&obj, "uid").is_empty());
    }
}
