//! Namespaces: the built-in ones (default, kube-system, kube-public) exist from the start and
//! cannot be deleted; an object is created only in a namespace that exists; deleting a namespace
//! deletes everything in it in the same transaction. `ensure_exists` is how every built-in
//! object (these namespaces, the default StorageClass) is put in place at start.

use std::time::Duration;

use skiff_api::kinds::KINDS;
use skiff_api::{ApiError, Kind, Reason};

use super::allocate;
use super::registry::{Also, Registry, WriteError};

/// Namespaces every cluster has.
pub const BUILT_IN: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn namespace_kind() -> Kind {
    Kind::named("namespaces").expect("Namespace is a served kind")
}

/// Fails with `namespaces "x" not found` unless namespace `name` exists.
pub async fn require_active(registry: &Registry, name: &str) -> Result<(), ApiError> {
    let kind = namespace_kind();
    match registry.get(&kind.key("", name)).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            Reason::NotFound,
            format!("namespaces \"{name}\" not found"),
        )),
    }
}

pub fn check_deletable(name: &str) -> Result<(), ApiError> {
    if BUILT_IN.contains(&name) {
        return Err(ApiError::new(
            Reason::Forbidden,
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        ));
    }
    Ok(())
}

/// Deletes namespace `name` (if its revision is still `expected`) and every object in it, in
/// one transaction, releasing the addresses and ports its Services held.
pub async fn delete_with_contents(
    registry: &Registry,
    name: &str,
    expected: i64,
    fence: &Also,
) -> Result<i64, WriteError> {
    let owned_prefix = format!("{name}/");
    let allocations = registry
        .entries(allocate::RANGES)
        .await
        .map_err(WriteError::Store)?;
    let mut also = fence.clone();
    for (key, owner) in allocations {
        if owner.starts_with(&owned_prefix) {
            also.release(&key);
        }
    }
    for kind in KINDS.iter().filter(|k| k.namespaced) {
        also.release_prefix(&kind.prefix(Some(name)));
    }
    registry
        .delete(&namespace_kind().key("", name), expected, &also)
        .await
}

/// Creates the built-in namespaces that do not exist yet, retrying until the store has a
/// leader, and runs `in_kube_system` once kube-system exists (the built-in Services), so the
/// last namespace stays the last key a starting cluster writes. Every replica runs this at
/// start; creating is a compare-and-put, so they do not race.
pub async fn ensure_built_in<F, Fut>(registry: &Registry, in_kube_system: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let kind = namespace_kind();
    let mut in_kube_system = Some(in_kube_system);
    for name in BUILT_IN {
        let ns = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        });
        ensure_exists(registry, &kind, ns).await;
        if *name == "kube-system" {
            if let Some(then) = in_kube_system.take() {
                then().await;
            }
        }
    }
}

/// Creates `object` (of `kind`) unless an object of its name exists, retrying until the store
/// has a leader: Kubernetes' addon manager's `EnsureExists` mode. An object that exists is left
/// as it is, whatever it holds; one a user deleted comes back only on the next start of a
/// replica. The object is admitted as any create (defaults, schema, validation); one that
/// admission refuses is a bug, logged and given up. Creating is a compare-and-put, so replicas
/// starting together do not race.
pub async fn ensure_exists(registry: &Registry, kind: &Kind, object: serde_json::Value) {
    let mut object = object;
    super::admission::set_create_metadata(&mut object);
    if let Err(e) = super::admission::admit(kind, &mut object) {
        tracing::error!(%e, kind = kind.kind, "built-in object refused by admission");
        return;
    }
    let name = skiff_api::object::name(&object).to_string();
    let key = kind.key(skiff_api::object::namespace(&object), &name);
    loop {
        match registry.create(&key, &object, &Default::default()).await {
            Ok(_) | Err(WriteError::Exists) => return,
            Err(e) => {
                tracing::debug!(?e, kind = kind.kind, %name, "built-in object not created yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
