//! Namespaces: the built-in ones (default, kube-system, kube-public) exist from the start and
//! cannot be deleted; an object is created only in a namespace that exists; deleting a namespace
//! deletes everything in it in the same transaction.

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
/// leader. Every replica runs this at start; creating is a compare-and-put, so they do not race.
pub async fn ensure_built_in(registry: &Registry) {
    let kind = namespace_kind();
    for name in BUILT_IN {
        loop {
            let mut ns = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            });
            super::admission::set_create_metadata(&mut ns);
            match registry
                .create(&kind.key("", name), &ns, &Default::default())
                .await
            {
                Ok(_) | Err(WriteError::Exists) => break,
                Err(e) => {
                    tracing::debug!(?e, namespace = name, "built-in namespace not created yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
