//! Namespaces: the built-in ones (default, kube-system, kube-public) exist from the start and
//! cannot be deleted; an object is created only in a namespace that exists; deleting a namespace
//! deletes everything in it in the same transaction.

use std::time::Duration;

use raft_store::machine::command::{Command, CommandResult};
use raft_store::pb::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, RequestOp, TxnRequest,
};
use skiff_api::kinds::KINDS;
use skiff_api::{ApiError, Kind, Reason};

use super::registry::{unavailable, Registry, WriteError};

/// Namespaces every cluster has.
pub const BUILT_IN: &[&str] = &["default", "kube-system", "kube-public"];

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

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Deletes namespace `name` (if its revision is still `expected`) and every object in it, in
/// one transaction, releasing the addresses and ports its Services held.
pub async fn delete_with_contents(
    registry: &Registry,
    name: &str,
    expected: i64,
) -> Result<i64, WriteError> {
    let key = namespace_kind().key("", name);
    let owned_prefix = format!("{name}/");
    let allocations = registry
        .entries("/registry/ranges/")
        .await
        .map_err(WriteError::Store)?;
    let mut ops: Vec<RequestOp> = allocations
        .into_iter()
        .filter(|(_, owner)| owner.starts_with(&owned_prefix))
        .map(|(k, _)| RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: k.into_bytes(),
                    ..Default::default()
                },
            )),
        })
        .collect();
    ops.push(RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    });
    for kind in KINDS.iter().filter(|k| k.namespaced) {
        let prefix = kind.prefix(Some(name));
        ops.push(RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(&prefix),
                    ..Default::default()
                },
            )),
        });
    }
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::ModRevision(expected)),
        }],
        success: ops,
        failure: Vec::new(),
    };
    match registry.replica().write(Command::Txn(txn)).await {
        Ok(CommandResult::Txn(resp)) if resp.succeeded => {
            Ok(resp.header.map(|h| h.revision).unwrap_or_default())
        }
        Ok(CommandResult::Txn(_)) => Err(WriteError::Stale),
        Ok(_) => Err(WriteError::Store(ApiError::new(
            Reason::Internal,
            "unexpected storage answer",
        ))),
        Err(e) => Err(WriteError::Store(unavailable(e))),
    }
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
