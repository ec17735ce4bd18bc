//! The replicated lease table: which leases exist, their granted TTLs and the keys attached.
//!
//! Deadlines are not here: when a lease expires is decided by the Raft leader alone (see
//! `lease_clock`), which revokes it through the log like any other write.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec;
use crate::error::StoreError;
use crate::mvcc::backend::{Backend, Batch};

const LEASE_PREFIX: u8 = b'l';
/// Shortest TTL the state machine grants, in seconds. The replica that receives a grant raises
/// the TTL to its own minimum (from the election timeout, as etcd) before proposing, so that
/// every replica applies the same TTL.
pub const MIN_LEASE_TTL: i64 = 1;

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = vec![LEASE_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: BTreeMap<i64, Lease>,
}

impl LeaseTable {
    /// Loads granted leases from the backend; the caller re-attaches keys.
    pub fn open(backend: &dyn Backend) -> Result<Self, StoreError> {
        let mut leases = BTreeMap::new();
        let mut bad = None;
        backend.scan(&[LEASE_PREFIX], &[LEASE_PREFIX + 1], &mut |k, v| {
            let id = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes);
            match (id, codec::decode::<i64>(v)) {
                (Some(id), Ok(ttl)) => {
                    leases.insert(
                        id,
                        Lease {
                            ttl,
                            keys: BTreeSet::new(),
                        },
                    );
                    true
                }
                _ => {
                    bad = Some(StoreError::Internal(format!("corrupt lease record {k:?}")));
                    false
                }
            }
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(Self { leases }),
        }
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l.ttl))
    }

    /// Grants a lease; returns the TTL actually granted.
    pub fn grant(&mut self, id: i64, ttl: i64, batch: &mut Batch) -> Result<i64, StoreError> {
        if ttl > crate::error::MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if id == 0 || self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        batch.put(lease_key(id), codec::encode(&ttl));
        Ok(ttl)
    }

    /// Removes a lease; returns the keys that were attached to it.
    pub fn revoke(&mut self, id: i64, batch: &mut Batch) -> Result<BTreeSet<Vec<u8>>, StoreError> {
        let lease = self.leases.remove(&id).ok_or(StoreError::LeaseNotFound)?;
        batch.delete(lease_key(id));
        Ok(lease.keys)
    }

    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }
}
