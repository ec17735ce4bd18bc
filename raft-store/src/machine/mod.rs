//! The deterministic state machine: the MVCC key space, the lease table and member attributes,
//! all in one backend tree. Raft-agnostic: `raft::state_machine` feeds it log entries in order.
//!
//! Backend layout: `r…` key revisions (see `mvcc::kvstore`), `l…` leases, `p…` member
//! attributes, `m/…` meta values. Every applied command becomes one atomic batch.

pub mod command;
pub mod kv_ops;
pub mod lease;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::StoreError;
use crate::mvcc::backend::{Backend, Batch};
use crate::mvcc::key_range::KeyRange;
use crate::mvcc::kvstore::{Event, KvStore};
use crate::pb::etcdserverpb as pb;
use command::{Command, CommandOutcome, CommandResult};
use lease::LeaseTable;

const MEMBER_PREFIX: u8 = b'p';
const META_CLUSTER_ID: &[u8] = b"m/cluster_id";

/// What a member announced about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttrs {
    pub name: String,
    pub client_urls: Vec<String>,
}

fn member_key(id: u64) -> Vec<u8> {
    let mut k = vec![MEMBER_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Keys that describe a cluster rather than its data (dropped when a backup starts a new cluster).
pub fn cluster_scoped(key: &[u8]) -> bool {
    key.first() == Some(&MEMBER_PREFIX) || key == META_CLUSTER_ID
}

pub struct Machine {
    backend: Arc<dyn Backend>,
    pub kv: KvStore,
    pub leases: LeaseTable,
    members: BTreeMap<u64, MemberAttrs>,
    cluster_id: u64,
}

impl Machine {
    pub fn open(backend: Arc<dyn Backend>) -> Result<Self, StoreError> {
        let kv = KvStore::open(backend.clone())?;
        let mut leases = LeaseTable::open(&*backend)?;
        let attached = kv.range(&KeyRange::new(b"\0", b"\0"), 0, 0, false)?;
        for rec in attached.kvs.iter().filter(|r| r.lease != 0) {
            leases.attach(rec.lease, &rec.key);
        }
        let mut members = BTreeMap::new();
        let mut bad = None;
        backend.scan(&[MEMBER_PREFIX], &[MEMBER_PREFIX + 1], &mut |k, v| {
            let id = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            match (id, codec::decode::<MemberAttrs>(v)) {
                (Some(id), Ok(attrs)) => {
                    members.insert(id, attrs);
                    true
                }
                _ => {
                    bad = Some(StoreError::Internal(format!("corrupt member record {k:?}")));
                    false
                }
            }
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        let cluster_id = match backend.get(META_CLUSTER_ID)? {
            Some(v) => codec::decode(&v).map_err(|e| StoreError::Internal(e.to_string()))?,
            None => 0,
        };
        Ok(Self {
            backend,
            kv,
            leases,
            members,
            cluster_id,
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn member_attrs(&self, id: u64) -> Option<&MemberAttrs> {
        self.members.get(&id)
    }

    /// Serves a read from the committed state.
    pub fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, StoreError> {
        kv_ops::range(&self.kv, r)
    }

    /// Applies one command. Its writes go into `batch`; the events are what watchers see.
    pub fn apply(&mut self, cmd: &Command, batch: &mut Batch) -> (CommandOutcome, Vec<Event>) {
        let mut events = Vec::new();
        let outcome = self.apply_inner(cmd, batch, &mut events);
        (outcome, events)
    }

    fn apply_inner(
        &mut self,
        cmd: &Command,
        batch: &mut Batch,
        events: &mut Vec<Event>,
    ) -> CommandOutcome {
        match cmd {
            Command::Put(p) => {
                let mut txn = self.kv.write();
                let mut resp = kv_ops::put(&mut txn, &mut self.leases, p)?;
                events.extend(txn.finish(batch));
                resp.header = self.header();
                Ok(CommandResult::Put(resp))
            }
            Command::DeleteRange(d) => {
                let mut txn = self.kv.write();
                let mut resp = kv_ops::delete_range(&mut txn, &mut self.leases, d)?;
                events.extend(txn.finish(batch));
                resp.header = self.header();
                Ok(CommandResult::DeleteRange(resp))
            }
            Command::Txn(t) => {
                kv_ops::check_txn(t)?;
                let mut txn = self.kv.write();
                let mut resp = kv_ops::txn(&mut txn, &mut self.leases, t)?;
                events.extend(txn.finish(batch));
                resp.header = self.header();
                Ok(CommandResult::Txn(resp))
            }
            Command::Compact(c) => {
                self.kv.compact(c.revision, batch)?;
                Ok(CommandResult::Compact(pb::CompactionResponse {
                    header: self.header(),
                }))
            }
            Command::LeaseGrant { id, ttl } => {
                let granted = self.leases.grant(*id, *ttl, batch)?;
                Ok(CommandResult::LeaseGrant(pb::LeaseGrantResponse {
                    header: self.header(),
                    id: *id,
                    ttl: granted,
                    error: String::new(),
                }))
            }
            Command::LeaseRevoke { id } => {
                let keys = self.leases.revoke(*id, batch)?;
                let mut txn = self.kv.write();
                for key in keys {
                    txn.delete_range(&KeyRange::new(&key, b""))?;
                }
                events.extend(txn.finish(batch));
                Ok(CommandResult::LeaseRevoke(pb::LeaseRevokeResponse {
                    header: self.header(),
                }))
            }
            Command::PublishMember {
                id,
                name,
                client_urls,
            } => {
                let attrs = MemberAttrs {
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                };
                batch.put(member_key(*id), codec::encode(&attrs));
                self.members.insert(*id, attrs);
                Ok(CommandResult::Done)
            }
            Command::SetClusterId(id) => {
                if self.cluster_id == 0 {
                    self.cluster_id = *id;
                    batch.put(META_CLUSTER_ID, codec::encode(id));
                }
                Ok(CommandResult::Done)
            }
        }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision: self.kv.current_rev(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::backend::MemBackend;
    use crate::pb::etcdserverpb::{compare, request_op, response_op};

    /// A machine whose history starts at revision 0, so that the first write is revision 1.
    fn machine() -> (Machine, Arc<MemBackend>) {
        let b = Arc::new(MemBackend::default());
        b.write(crate::mvcc::kvstore::tests::zero_based()).unwrap();
        (Machine::open(b.clone()).unwrap(), b)
    }

    fn run(m: &mut Machine, b: &MemBackend, cmd: Command) -> (CommandOutcome, Vec<Event>) {
        let mut batch = Batch::default();
        let out = m.apply(&cmd, &mut batch);
        b.write(batch).unwrap();
        out
    }

    fn put(k: &str, v: &str, lease: i64) -> Command {
        Command::Put(pb::PutRequest {
            key: k.into(),
            value: v.into(),
            lease,
            prev_kv: true,
            ..Default::default()
        })
    }

    fn get(m: &Machine, k: &str) -> Option<String> {
        let r = m
            .range(&pb::RangeRequest {
                key: k.into(),
                ..Default::default()
            })
            .unwrap();
        r.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    #[test]
    fn put_errors_change_nothing() {
        let (mut m, b) = machine();
        let (out, ev) = run(&mut m, &b, put("a", "1", 42));
        assert_eq!(out, Err(StoreError::LeaseNotFound));
        assert!(ev.is_empty());
        assert_eq!(m.kv.current_rev(), 0);
        let (out, _) = run(&mut m, &b, put("", "1", 0));
        assert_eq!(out, Err(StoreError::EmptyKey));
        let ignore = Command::Put(pb::PutRequest {
            key: "a".into(),
            ignore_value: true,
            ..Default::default()
        });
        assert_eq!(run(&mut m, &b, ignore).0, Err(StoreError::KeyNotFound));
        assert_eq!(get(&m, "a"), None);
    }

    #[test]
    fn txn_compares_and_branches() {
        let (mut m, b) = machine();
        run(&mut m, &b, put("k", "v1", 0)).0.unwrap();
        let txn = |expect: &str| {
            Command::Txn(pb::TxnRequest {
                compare: vec![pb::Compare {
                    key: "k".into(),
                    target: compare::CompareTarget::Value as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Value(expect.into())),
                    range_end: vec![],
                }],
                success: vec![pb::RequestOp {
                    request: Some(request_op::Request::RequestPut(pb::PutRequest {
                        key: "k".into(),
                        value: "v2".into(),
                        ..Default::default()
                    })),
                }],
                failure: vec![pb::RequestOp {
                    request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                        key: "k".into(),
                        ..Default::default()
                    })),
                }],
            })
        };
        let Ok(CommandResult::Txn(miss)) = run(&mut m, &b, txn("nope")).0 else {
            panic!("txn failed")
        };
        assert!(!miss.succeeded);
        assert_eq!(miss.header.unwrap().revision, 1);
        assert!(matches!(
            &miss.responses[0].response,
            Some(response_op::Response::ResponseRange(r)) if r.kvs[0].value == b"v1"
        ));
        let Ok(CommandResult::Txn(hit)) = run(&mut m, &b, txn("v1")).0 else {
            panic!("txn failed")
        };
        assert!(hit.succeeded);
        assert_eq!(hit.header.unwrap().revision, 2);
        assert_eq!(get(&m, "k").as_deref(), Some("v2"));

        let dup = Command::Txn(pb::TxnRequest {
            success: vec![
                pb::RequestOp {
                    request: Some(request_op::Request::RequestPut(pb::PutRequest {
                        key: "x".into(),
                        ..Default::default()
                    })),
                },
                pb::RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        pb::DeleteRangeRequest {
                            key: "a".into(),
                            range_end: "z".into(),
                            ..Default::default()
                        },
                    )),
                },
            ],
            ..Default::default()
        });
        assert_eq!(run(&mut m, &b, dup).0, Err(StoreError::DuplicateKey));
    }

    #[test]
    fn txn_with_a_bad_range_fails_before_writing_anything() {
        let (mut m, b) = machine();
        run(&mut m, &b, put("k", "v1", 0)).0.unwrap();
        for revision in [99, 0] {
            let bad = Command::Txn(pb::TxnRequest {
                success: vec![
                    pb::RequestOp {
                        request: Some(request_op::Request::RequestPut(pb::PutRequest {
                            key: "k".into(),
                            value: "v2".into(),
                            ..Default::default()
                        })),
                    },
                    pb::RequestOp {
                        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                            key: "k".into(),
                            revision,
                            ..Default::default()
                        })),
                    },
                ],
                ..Default::default()
            });
            let (out, events) = run(&mut m, &b, bad);
            if revision == 99 {
                assert_eq!(out, Err(StoreError::FutureRev));
                assert!(events.is_empty());
                assert_eq!(m.kv.current_rev(), 1);
                assert_eq!(get(&m, "k").as_deref(), Some("v1"));
                // The key index was not touched: the store reopens to the same state.
                let reopened = Machine::open(b.clone()).unwrap();
                assert_eq!(get(&reopened, "k").as_deref(), Some("v1"));
            } else {
                out.unwrap();
                assert_eq!(get(&m, "k").as_deref(), Some("v2"));
            }
        }
    }

    #[test]
    fn lease_revoke_deletes_attached_keys_in_one_revision_and_survives_reopen() {
        let (mut m, b) = machine();
        let Ok(CommandResult::LeaseGrant(g)) =
            run(&mut m, &b, Command::LeaseGrant { id: 7, ttl: 1 }).0
        else {
            panic!("grant failed")
        };
        assert_eq!(g.ttl, lease::MIN_LEASE_TTL);
        assert_eq!(
            run(&mut m, &b, Command::LeaseGrant { id: 7, ttl: 5 }).0,
            Err(StoreError::LeaseExists)
        );
        run(&mut m, &b, put("a", "1", 7)).0.unwrap();
        run(&mut m, &b, put("b", "1", 7)).0.unwrap();
        run(&mut m, &b, put("b", "2", 0)).0.unwrap();
        let m2 = Machine::open(b.clone()).unwrap();
        assert_eq!(
            m2.leases.get(7).unwrap().keys.len(),
            1,
            "b moved off the lease"
        );
        let (out, events) = run(&mut m, &b, Command::LeaseRevoke { id: 7 });
        out.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kv.mod_revision, 4);
        assert_eq!(get(&m, "a"), None);
        assert_eq!(get(&m, "b").as_deref(), Some("2"));
        assert_eq!(
            run(&mut m, &b, Command::LeaseRevoke { id: 7 }).0,
            Err(StoreError::LeaseNotFound)
        );
    }
}
