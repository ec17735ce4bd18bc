//! Objects in the replicated store: one JSON document per key under `/registry/`, whose
//! mod_revision is the object's resourceVersion. Reads are linearizable (read index, also on
//! followers); writes are transactions that compare revisions, forwarded to the Raft leader by
//! the store, so concurrent writers cannot overwrite each other.

use std::sync::Arc;

use raft_store::error::StoreError;
use raft_store::machine::command::{Command, CommandResult};
use raft_store::mvcc::key_range::prefix_end;
use raft_store::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use raft_store::replica::Replica;
use serde_json::Value;
use skiff_api::{ApiError, Reason};

/// The most an encoded object may take (Kubernetes: 1.5 MiB per etcd request).
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024 + 512 * 1024;

/// A stored object and its revision.
#[derive(Clone, Debug)]
pub struct Stored {
    pub object: Value,
    pub revision: i64,
}

/// What a conditional write found instead of what it expected.
#[derive(Debug)]
pub enum WriteError {
    /// Create: the key exists. Update/delete: the key is gone.
    Exists,
    Missing,
    /// The key's revision is not the expected one.
    Stale,
    /// The object was as expected, but a key claimed alongside it was taken meanwhile.
    Taken,
    /// The store lease the object was to be written with no longer exists.
    LeaseGone,
    Store(ApiError),
}

/// Keys written in the same transaction as an object: claims (created only if absent, such
/// as a Service's ClusterIP) and releases (deleted).
#[derive(Clone, Debug, Default)]
pub struct Also {
    compares: Vec<Compare>,
    ops: Vec<RequestOp>,
    /// The store lease the object itself is written with (0: none), so that it expires.
    lease: i64,
}

impl Also {
    /// Writes the object with store lease `id`: the store deletes it when the lease expires.
    pub fn expire_with(&mut self, id: i64) {
        self.lease = id;
    }

    /// The store lease the object is written with (0: none).
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Creates `key` with `value`; the whole write fails with `Taken` if `key` exists.
    pub fn claim(&mut self, key: &str, value: &str) {
        self.compares
            .push(cmp_key(key, compare::CompareTarget::Create, 0));
        self.ops.push(put_op(key, value.as_bytes().to_vec()));
    }

    /// Deletes `key`.
    pub fn release(&mut self, key: &str) {
        self.ops.push(delete_op(key, Vec::new()));
    }

    /// Requires `key`'s mod_revision to be `revision` (a fence: the write fails with `Taken` if
    /// the key changed, as when the writer lost an election it won at that revision).
    pub fn require(&mut self, key: &str, revision: i64) {
        self.compares
            .push(cmp_key(key, compare::CompareTarget::Mod, revision));
    }

    /// Adds `other`'s compares and writes to these.
    pub fn extend(&mut self, other: &Also) {
        self.compares.extend(other.compares.iter().cloned());
        self.ops.extend(other.ops.iter().cloned());
        if other.lease != 0 {
            self.lease = other.lease;
        }
    }

    /// Deletes every key under `prefix`.
    pub fn release_prefix(&mut self, prefix: &str) {
        self.ops
            .push(delete_op(prefix, prefix_end(prefix.as_bytes())));
    }
}

/// A DeleteRange of `key` (or of `[key, range_end)` when `range_end` is not empty).
fn delete_op(key: &str, range_end: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end,
                ..Default::default()
            },
        )),
    }
}

/// A store failure as the API reports it: no leader is worth another replica (Unavailable,
/// which clients retry); a write the store did not confirm in time may have been applied, so it
/// is a Timeout the caller decides about (a create retried blindly could meet itself as
/// AlreadyExists).
pub fn unavailable(e: StoreError) -> ApiError {
    let (reason, message) = match e {
        StoreError::NoLeader => (Reason::Unavailable, format!("storage: {e}")),
        StoreError::Timeout => (
            Reason::Timeout,
            format!("Timeout: request did not complete within the allowed duration (storage: {e})"),
        ),
        StoreError::RequestTooLarge => (Reason::BadRequest, format!("storage: {e}")),
        _ => (Reason::Internal, format!("storage: {e}")),
    };
    ApiError::new(reason, message)
}

pub struct Registry {
    replica: Arc<Replica>,
}

/// Why a write conditional on the key being at revision `expected` was refused, given the
/// key's revision read back (`current`): gone, changed, or unchanged (then a key claimed or
/// required alongside it was the cause).
fn refused(current: Option<i64>, expected: i64) -> WriteError {
    match current {
        None => WriteError::Missing,
        Some(r) if r == expected => WriteError::Taken,
        Some(_) => WriteError::Stale,
    }
}

/// The object with resourceVersion set from its revision.
fn with_version(mut object: Value, revision: i64) -> Value {
    skiff_api::object::set_meta(&mut object, "resourceVersion", revision.to_string().into());
    object
}

/// A stored object's JSON with `metadata.resourceVersion` set to `revision`, without decoding
/// it: the field is inserted at the start of the top-level `metadata` object (stored objects
/// never carry it). `None` when the bytes have no top-level `metadata` object.
pub fn with_version_bytes(value: &[u8], revision: i64) -> Option<Vec<u8>> {
    let at = metadata_object_start(value)?;
    let field = format!("\"resourceVersion\":\"{revision}\"");
    let empty = value[at..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'}');
    let mut out = Vec::with_capacity(value.len() + field.len() + 1);
    out.extend_from_slice(&value[..at]);
    out.extend_from_slice(field.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&value[at..]);
    Some(out)
}

/// The index just after the `{` of the top-level `"metadata"` object's value.
fn metadata_object_start(json: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    // The last string closed at depth 1, and where it ended (a candidate key).
    let mut last_key: Option<(usize, usize)> = None;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 {
                    last_key = Some((start, i));
                }
            }
            b'{' | b'[' => {
                if depth == 1 && json[i] == b'{' {
                    if let Some((s, e)) = last_key.take() {
                        let between = &json[e + 1..i];
                        let is_value_of_key = between
                            .iter()
                            .filter(|b| !b.is_ascii_whitespace())
                            .eq(std::iter::once(&b':'));
                        if is_value_of_key && &json[s..e] == b"metadata" {
                            return Some(i + 1);
                        }
                    }
                }
                depth += 1;
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 1 => last_key = None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The bytes stored for `object`: resourceVersion is not stored (the revision is).
fn encode(object: &Value) -> Result<Vec<u8>, ApiError> {
    let mut object = object.clone();
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&object)
        .map_err(|e| ApiError::new(Reason::Internal, format!("cannot encode object: {e}")))?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            Reason::BadRequest,
            format!(
                "object is too large: {} bytes, the limit is {MAX_OBJECT_BYTES}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// A stored value read back as an object at `revision`.
pub fn decode(value: &[u8], revision: i64) -> Result<Stored, ApiError> {
    let object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::new(Reason::Internal, format!("stored object unreadable: {e}")))?;
    Ok(Stored {
        object: with_version(object, revision),
        revision,
    })
}

/// A compare of `key`'s create or mod revision with `value`.
pub fn cmp_key(key: &str, target: compare::CompareTarget, value: i64) -> Compare {
    let target_union = match target {
        compare::CompareTarget::Mod => compare::TargetUnion::ModRevision(value),
        _ => compare::TargetUnion::CreateRevision(value),
    };
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(target_union),
    }
}

/// A Put of `key`.
pub fn put_op(key: &str, value: Vec<u8>) -> RequestOp {
    leased_put_op(key, value, 0)
}

/// A Put of `key` attached to store lease `lease` (0: none).
fn leased_put_op(key: &str, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

impl Registry {
    pub fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    fn range(
        &self,
        req: &RangeRequest,
    ) -> Result<raft_store::pb::etcdserverpb::RangeResponse, ApiError> {
        self.replica.sm.read().range(req).map_err(unavailable)
    }

    /// The object at `key` as this replica has it (the caller linearizes first).
    fn read_local(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        let resp = self.range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })?;
        resp.kvs
            .first()
            .map(|kv| decode(&kv.value, kv.mod_revision))
            .transpose()
    }

    /// The object at `key`, read linearizably.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        self.replica.linearize().await.map_err(unavailable)?;
        self.read_local(key)
    }

    /// The objects at `keys` (None where there is none), after one linearization.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Stored>>, ApiError> {
        self.replica.linearize().await.map_err(unavailable)?;
        keys.iter().map(|key| self.read_local(key)).collect()
    }

    /// Every object under `prefix`, in key order, and the store revision they were read at.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Stored>, i64), ApiError> {
        self.replica.linearize().await.map_err(unavailable)?;
        self.list_local(prefix)
    }

    /// Every object under each prefix, after one linearization.
    pub async fn list_many(&self, prefixes: &[String]) -> Result<Vec<Stored>, ApiError> {
        self.replica.linearize().await.map_err(unavailable)?;
        let mut all = Vec::new();
        for p in prefixes {
            all.extend(self.list_local(p)?.0);
        }
        Ok(all)
    }

    fn list_local(&self, prefix: &str) -> Result<(Vec<Stored>, i64), ApiError> {
        let resp = self.range(&RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })?;
        let revision = resp.header.map(|h| h.revision).unwrap_or_default();
        let items = resp
            .kvs
            .iter()
            .map(|kv| decode(&kv.value, kv.mod_revision))
            .collect::<Result<_, _>>()?;
        Ok((items, revision))
    }

    /// Up to `batch` objects under `prefix` from key `start` on (inclusive), at `revision`
    /// (None: now), with their keys; also the revision read at and whether more follow. A
    /// compacted revision is `Expired`. Reads this replica as it is: call `linearize` first.
    pub async fn list_from(
        &self,
        prefix: &str,
        start: &str,
        revision: Option<i64>,
        batch: usize,
    ) -> Result<(Vec<(String, Stored)>, i64, bool), ApiError> {
        let (raw, read_at, more) = self.list_raw_from(prefix, start, revision, batch).await?;
        let items = raw
            .iter()
            .map(|(key, value, rev)| Ok((key.clone(), decode(value, *rev)?)))
            .collect::<Result<_, ApiError>>()?;
        Ok((items, read_at, more))
    }

    /// As `list_from`, the stored bytes undecoded: (key, value, mod_revision) each.
    pub async fn list_raw_from(
        &self,
        prefix: &str,
        start: &str,
        revision: Option<i64>,
        batch: usize,
    ) -> Result<(Vec<(String, Vec<u8>, i64)>, i64, bool), ApiError> {
        let resp = self
            .replica
            .sm
            .read()
            .range(&RangeRequest {
                key: start.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                revision: revision.unwrap_or(0),
                limit: batch as i64,
                ..Default::default()
            })
            .map_err(|e| match e {
                StoreError::Compacted => ApiError::new(
                    Reason::Expired,
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => unavailable(other),
            })?;
        let read_at = match revision {
            Some(r) => r,
            None => resp.header.map(|h| h.revision).unwrap_or_default(),
        };
        let items = resp
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.value,
                    kv.mod_revision,
                )
            })
            .collect();
        Ok((items, read_at, resp.more))
    }

    /// Waits until this replica holds every write acknowledged before the call.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        self.replica.linearize().await.map_err(unavailable)
    }

    /// The keys under `prefix` (linearizable).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .entries(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The keys under `prefix` with their values as text (linearizable).
    pub async fn entries(&self, prefix: &str) -> Result<Vec<(String, String)>, ApiError> {
        self.replica.linearize().await.map_err(unavailable)?;
        let resp = self.range(&RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect())
    }

    /// Runs a transaction: `success` (and `also`'s writes) if every compare holds; otherwise
    /// reads `key` back.
    async fn txn(
        &self,
        key: &str,
        mut compare: Vec<Compare>,
        mut success: Vec<RequestOp>,
        also: &Also,
    ) -> Result<(bool, Option<i64>, i64), WriteError> {
        compare.extend(also.compares.iter().cloned());
        success.extend(also.ops.iter().cloned());
        let req = TxnRequest {
            compare,
            success,
            failure: vec![get_op(key)],
        };
        let result = self
            .replica
            .write(Command::Txn(req))
            .await
            .map_err(|e| match e {
                StoreError::LeaseNotFound => WriteError::LeaseGone,
                e => WriteError::Store(unavailable(e)),
            })?;
        let CommandResult::Txn(resp) = result else {
            return Err(WriteError::Store(ApiError::new(
                Reason::Internal,
                "unexpected storage answer",
            )));
        };
        let revision = resp.header.map(|h| h.revision).unwrap_or_default();
        if resp.succeeded {
            return Ok((true, None, revision));
        }
        let current = resp.responses.first().and_then(|r| match &r.response {
            Some(response_op::Response::ResponseRange(range)) => {
                range.kvs.first().map(|kv| kv.mod_revision)
            }
            _ => None,
        });
        Ok((false, current, revision))
    }

    /// Stores a new object at `key`; fails with `Exists` if there is one.
    pub async fn create(
        &self,
        key: &str,
        object: &Value,
        also: &Also,
    ) -> Result<Stored, WriteError> {
        let value = encode(object).map_err(WriteError::Store)?;
        let (ok, current, revision) = self
            .txn(
                key,
                vec![cmp_key(key, compare::CompareTarget::Create, 0)],
                vec![leased_put_op(key, value, also.lease)],
                also,
            )
            .await?;
        if !ok {
            return Err(if current.is_some() {
                WriteError::Exists
            } else {
                WriteError::Taken
            });
        }
        Ok(Stored {
            object: with_version(object.clone(), revision),
            revision,
        })
    }

    /// Replaces the object at `key` if its revision is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        object: &Value,
        expected: i64,
        also: &Also,
    ) -> Result<Stored, WriteError> {
        let value = encode(object).map_err(WriteError::Store)?;
        let (ok, current, revision) = self
            .txn(
                key,
                vec![cmp_key(key, compare::CompareTarget::Mod, expected)],
                vec![leased_put_op(key, value, also.lease)],
                also,
            )
            .await?;
        if !ok {
            return Err(refused(current, expected));
        }
        Ok(Stored {
            object: with_version(object.clone(), revision),
            revision,
        })
    }

    /// Replaces several objects in one transaction, each only if its revision is still the
    /// expected one; all or nothing (`Stale` if any changed or `also` failed). Callers go
    /// through `ApiService::update_many_fenced`, which admits each object first.
    pub(super) async fn update_many(
        &self,
        items: &[(String, Value, i64)],
        also: &Also,
    ) -> Result<Vec<Stored>, WriteError> {
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for (key, object, expected) in items {
            compares.push(cmp_key(key, compare::CompareTarget::Mod, *expected));
            ops.push(put_op(key, encode(object).map_err(WriteError::Store)?));
        }
        let Some((first, _, _)) = items.first() else {
            return Ok(Vec::new());
        };
        let (ok, _, revision) = self.txn(first, compares, ops, also).await?;
        if !ok {
            return Err(WriteError::Stale);
        }
        Ok(items
            .iter()
            .map(|(_, object, _)| Stored {
                object: with_version(object.clone(), revision),
                revision,
            })
            .collect())
    }

    /// Deletes the object at `key` if its revision is still `expected`.
    pub async fn delete(&self, key: &str, expected: i64, also: &Also) -> Result<i64, WriteError> {
        let del = delete_op(key, Vec::new());
        let (ok, current, revision) = self
            .txn(
                key,
                vec![cmp_key(key, compare::CompareTarget::Mod, expected)],
                vec![del],
                also,
            )
            .await?;
        if !ok {
            return Err(refused(current, expected));
        }
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_write_is_a_timeout_not_an_unavailable_store() {
        let timeout = unavailable(StoreError::Timeout);
        assert_eq!(timeout.reason, Reason::Timeout);
        assert!(timeout.message.starts_with("Timeout: "), "{timeout}");
        assert_eq!(
            timeout.to_status().code(),
            tonic::Code::DeadlineExceeded,
            "clients retry only Unavailable"
        );
        assert_eq!(
            unavailable(StoreError::NoLeader).reason,
            Reason::Unavailable
        );
    }

    #[test]
    fn the_version_goes_into_the_top_level_metadata_without_decoding() {
        for (json, revision) in [
            (
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"},"data":{"metadata":{"x":"y"}}}"#,
                7,
            ),
            (r#"{"data":{"metadata":"{"},"kind":"X","metadata":{}}"#, 42),
            (
                r#"{ "spec" : {"a":[1,{"metadata":{}}]}, "metadata" : { "name" : "q\"metadata\":{" } }"#,
                3,
            ),
        ] {
            let out = with_version_bytes(json.as_bytes(), revision).expect("has metadata");
            let mut want: Value = serde_json::from_str(json).unwrap();
            want["metadata"]["resourceVersion"] = revision.to_string().into();
            let got: Value = serde_json::from_slice(&out).expect("still JSON");
            assert_eq!(got, want, "{json}");
        }
        assert_eq!(with_version_bytes(br#"{"kind":"X"}"#, 1), None);
        assert_eq!(
            with_version_bytes(br#"{"kind":"X","metadata":"no"}"#, 1),
            None
        );
    }
}
