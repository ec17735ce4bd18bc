//! etcd's KV request semantics over the MVCC store: Range options, Put flags, DeleteRange, Txn
//! compares and branches, with etcd's validation and error choices.

use std::collections::BTreeSet;

use super::lease::LeaseTable;
use crate::error::{StoreError, MAX_TXN_OPS};
use crate::mvcc::key_range::KeyRange;
use crate::mvcc::kvstore::{Event, ReadView, Record, WriteTxn};
use crate::pb::etcdserverpb::{self as pb, compare, range_request, request_op, response_op};
use crate::pb::mvccpb::KeyValue;

pub fn to_kv(r: &Record) -> KeyValue {
    KeyValue {
        key: r.key.clone(),
        create_revision: r.create_revision,
        mod_revision: r.mod_revision,
        version: r.version,
        value: r.value.clone(),
        lease: r.lease,
    }
}

fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Serves a Range request from any view, following etcd's option handling.
pub fn range(view: &dyn ReadView, r: &pb::RangeRequest) -> Result<pb::RangeResponse, StoreError> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    let order = range_request::SortOrder::try_from(r.sort_order).unwrap_or_default();
    let target = range_request::SortTarget::try_from(r.sort_target).unwrap_or_default();
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    // Sorting or filtering needs every match; otherwise fetch one more than asked for `more`.
    let fetch = if order != range_request::SortOrder::None || filtered || r.limit <= 0 {
        0
    } else {
        r.limit as usize + 1
    };
    let res = view.range(
        &KeyRange::new(&r.key, &r.range_end),
        r.revision,
        fetch,
        r.count_only,
    )?;
    let mut kvs = res.kvs;
    kvs.retain(|kv| {
        (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
    });
    let order =
        if target != range_request::SortTarget::Key && order == range_request::SortOrder::None {
            range_request::SortOrder::Ascend
        } else {
            order
        };
    if order != range_request::SortOrder::None {
        use range_request::SortTarget as T;
        let by = |a: &Record, b: &Record| match target {
            T::Key => a.key.cmp(&b.key),
            T::Version => a.version.cmp(&b.version),
            T::Create => a.create_revision.cmp(&b.create_revision),
            T::Mod => a.mod_revision.cmp(&b.mod_revision),
            T::Value => a.value.cmp(&b.value),
        };
        // Stable in both directions: ties stay in key order, as etcd returns them.
        if order == range_request::SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    Ok(pb::RangeResponse {
        header: header(res.rev),
        kvs: kvs
            .iter()
            .map(|k| {
                let mut kv = to_kv(k);
                if r.keys_only {
                    kv.value.clear();
                }
                kv
            })
            .collect(),
        more,
        count: res.count as i64,
    })
}

/// Checks a Put against the current state before anything is written.
fn check_put(
    view: &dyn ReadView,
    leases: &LeaseTable,
    p: &pb::PutRequest,
) -> Result<(), StoreError> {
    if p.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    if p.ignore_value || p.ignore_lease {
        let prev = view.range(&KeyRange::new(&p.key, b""), 0, 1, false)?;
        if prev.kvs.is_empty() {
            return Err(StoreError::KeyNotFound);
        }
    }
    if p.lease != 0 && !leases.contains(p.lease) {
        return Err(StoreError::LeaseNotFound);
    }
    Ok(())
}

pub fn put(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTable,
    p: &pb::PutRequest,
) -> Result<pb::PutResponse, StoreError> {
    check_put(txn, leases, p)?;
    put_checked(txn, leases, p)
}

fn put_checked(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTable,
    p: &pb::PutRequest,
) -> Result<pb::PutResponse, StoreError> {
    let existing = txn
        .range(&KeyRange::new(&p.key, b""), 0, 1, false)?
        .kvs
        .pop();
    let value = match (&existing, p.ignore_value) {
        (Some(e), true) => e.value.clone(),
        _ => p.value.clone(),
    };
    let lease = match (&existing, p.ignore_lease) {
        (Some(e), true) => e.lease,
        _ => p.lease,
    };
    let prev = txn.put(&p.key, value, lease)?;
    if let Some(old) = &prev {
        if old.lease != 0 && old.lease != lease {
            leases.detach(old.lease, &p.key);
        }
    }
    if lease != 0 {
        leases.attach(lease, &p.key);
    }
    Ok(pb::PutResponse {
        header: None,
        prev_kv: if p.prev_kv {
            prev.as_ref().map(to_kv)
        } else {
            None
        },
    })
}

pub fn delete_range(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTable,
    d: &pb::DeleteRangeRequest,
) -> Result<pb::DeleteRangeResponse, StoreError> {
    if d.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    let deleted = txn.delete_range(&KeyRange::new(&d.key, &d.range_end))?;
    for rec in &deleted {
        if rec.lease != 0 {
            leases.detach(rec.lease, &rec.key);
        }
    }
    Ok(pb::DeleteRangeResponse {
        header: None,
        deleted: deleted.len() as i64,
        prev_kvs: if d.prev_kv {
            deleted.iter().map(to_kv).collect()
        } else {
            Vec::new()
        },
    })
}

/// Structural checks etcd makes before a Txn touches anything: sizes, empty keys, and no key
/// written twice (puts may not repeat or fall inside a delete of the same branch).
pub fn check_txn(t: &pb::TxnRequest) -> Result<(), StoreError> {
    validate_ops(t)?;
    collect_writes(&t.success)?;
    collect_writes(&t.failure)?;
    Ok(())
}

fn validate_ops(t: &pb::TxnRequest) -> Result<(), StoreError> {
    if t.compare.len() > MAX_TXN_OPS
        || t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
    {
        return Err(StoreError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(StoreError::EmptyKey)
            }
            Some(request_op::Request::RequestPut(p)) if p.key.is_empty() => {
                return Err(StoreError::EmptyKey)
            }
            Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(StoreError::EmptyKey)
            }
            Some(request_op::Request::RequestTxn(inner)) => validate_ops(inner)?,
            _ => {}
        }
    }
    Ok(())
}

type Writes = (BTreeSet<Vec<u8>>, Vec<KeyRange>);

/// etcd's duplicate-key rule for one list of operations; returns the keys it puts and the ranges
/// it deletes. This level's deletes are gathered first. Each nested transaction's puts must not
/// repeat a put or fall in a delete gathered so far (its two branches may share keys, as only one
/// runs); then its deletes join the gathered ones. This level's own puts are checked last.
fn collect_writes(ops: &[pb::RequestOp]) -> Result<Writes, StoreError> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(KeyRange::new(&d.key, &d.range_end))
            }
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(inner)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = collect_writes(&inner.success)?;
        let (puts_else, dels_else) = collect_writes(&inner.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        if let Some(request_op::Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || deleted(&dels, &p.key) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

fn compare_holds(view: &dyn ReadView, c: &pb::Compare) -> Result<bool, StoreError> {
    let found = view
        .range(&KeyRange::new(&c.key, &c.range_end), 0, 0, false)?
        .kvs;
    let target = compare::CompareTarget::try_from(c.target).unwrap_or_default();
    if found.is_empty() {
        if target == compare::CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_one(c, target, &Record::default()));
    }
    Ok(found.iter().all(|kv| compare_one(c, target, kv)))
}

fn compare_one(c: &pb::Compare, target: compare::CompareTarget, kv: &Record) -> bool {
    use compare::{CompareTarget as T, TargetUnion as U};
    let ord = match (target, &c.target_union) {
        (T::Value, Some(U::Value(v))) => kv.value.as_slice().cmp(v.as_slice()),
        (T::Value, _) => kv.value.as_slice().cmp(&[][..]),
        (T::Version, u) => kv.version.cmp(&int_of(u)),
        (T::Create, u) => kv.create_revision.cmp(&int_of(u)),
        (T::Mod, u) => kv.mod_revision.cmp(&int_of(u)),
        (T::Lease, u) => kv.lease.cmp(&int_of(u)),
    };
    match compare::CompareResult::try_from(c.result).unwrap_or_default() {
        compare::CompareResult::Equal => ord.is_eq(),
        compare::CompareResult::NotEqual => ord.is_ne(),
        compare::CompareResult::Greater => ord.is_gt(),
        compare::CompareResult::Less => ord.is_lt(),
    }
}

fn int_of(u: &Option<compare::TargetUnion>) -> i64 {
    use compare::TargetUnion as U;
    match u {
        Some(U::Version(v) | U::CreateRevision(v) | U::ModRevision(v) | U::Lease(v)) => *v,
        _ => 0,
    }
}

/// Which branch each (nested) transaction takes, decided on the state before any write, in
/// depth-first order.
fn branch_path(
    view: &dyn ReadView,
    t: &pb::TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), StoreError> {
    let mut ok = true;
    for c in &t.compare {
        if !compare_holds(view, c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    let ops = if ok { &t.success } else { &t.failure };
    for op in ops {
        if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
            branch_path(view, inner, path)?;
        }
    }
    Ok(())
}

/// etcd's revision checks for a range inside a transaction, made before anything is written.
fn check_range(view: &dyn ReadView, r: &pb::RangeRequest) -> Result<(), StoreError> {
    if r.revision == 0 {
        return Ok(());
    }
    let (current, compacted) = view.revisions();
    if r.revision > current {
        return Err(StoreError::FutureRev);
    }
    if r.revision < compacted {
        return Err(StoreError::Compacted);
    }
    Ok(())
}

/// Checks the operations of the branches the path takes (put leases and flags, range revisions),
/// so that executing them cannot fail halfway.
fn check_branch(
    view: &dyn ReadView,
    leases: &LeaseTable,
    t: &pb::TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<(), StoreError> {
    let ok = path[*at];
    *at += 1;
    for op in if ok { &t.success } else { &t.failure } {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => check_put(view, leases, p)?,
            Some(request_op::Request::RequestRange(r)) => check_range(view, r)?,
            Some(request_op::Request::RequestTxn(inner)) => {
                check_branch(view, leases, inner, path, at)?
            }
            _ => {}
        }
    }
    Ok(())
}

/// Executes a checked transaction; the caller has run [`check_txn`].
pub fn txn(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTable,
    t: &pb::TxnRequest,
) -> Result<pb::TxnResponse, StoreError> {
    let mut path = Vec::new();
    branch_path(txn, t, &mut path)?;
    check_branch(txn, leases, t, &path, &mut 0)?;
    execute(txn, leases, t, &path, &mut 0)
}

fn execute(
    txn: &mut WriteTxn<'_>,
    leases: &mut LeaseTable,
    t: &pb::TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<pb::TxnResponse, StoreError> {
    let ok = path[*at];
    *at += 1;
    let mut responses = Vec::new();
    for op in if ok { &t.success } else { &t.failure } {
        let mut response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                response_op::Response::ResponseRange(range(txn, r)?)
            }
            Some(request_op::Request::RequestPut(p)) => {
                response_op::Response::ResponsePut(put_checked(txn, leases, p)?)
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(delete_range(txn, leases, d)?)
            }
            Some(request_op::Request::RequestTxn(inner)) => {
                response_op::Response::ResponseTxn(execute(txn, leases, inner, path, at)?)
            }
            None => continue,
        };
        // Like etcd, each operation reports the revision as of its own completion, except a
        // nested transaction, whose own header etcd leaves empty.
        let now = header(txn.revisions().0);
        match &mut response {
            response_op::Response::ResponsePut(p) => p.header = now,
            response_op::Response::ResponseDeleteRange(d) => d.header = now,
            response_op::Response::ResponseTxn(t) => t.header = Some(pb::ResponseHeader::default()),
            response_op::Response::ResponseRange(_) => {}
        }
        responses.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    Ok(pb::TxnResponse {
        header: None,
        succeeded: ok,
        responses,
    })
}

/// Converts stored events to etcd watch events.
pub fn to_event(e: &Event, with_prev: bool) -> crate::pb::mvccpb::Event {
    use crate::pb::mvccpb::event::EventType;
    crate::pb::mvccpb::Event {
        r#type: match e.kind {
            crate::mvcc::kvstore::EventKind::Put => EventType::Put as i32,
            crate::mvcc::kvstore::EventKind::Delete => EventType::Delete as i32,
        },
        kv: Some(to_kv(&e.kv)),
        prev_kv: if with_prev {
            e.prev.as_ref().map(to_kv)
        } else {
            None
        },
    }
}
