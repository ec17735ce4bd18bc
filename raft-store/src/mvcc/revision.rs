//! Revisions: the (main, sub) pair that orders every change in the key space.
//!
//! `main` is the cluster-wide revision, bumped once per write transaction; `sub` orders the changes
//! inside one transaction. The byte encoding is fixed-width big-endian so that backend keys sort in
//! revision order.

use serde::{Deserialize, Serialize};

/// Length of [`Revision::to_bytes`].
pub const REVISION_BYTES: usize = 16;

/// One change's position in the store's history.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision {
    /// The write transaction's revision (what etcd clients see as mod_revision).
    pub main: i64,
    /// The change's position inside its transaction.
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// Big-endian encoding; byte order equals revision order for non-negative revisions.
    pub fn to_bytes(self) -> [u8; REVISION_BYTES] {
        let mut out = [0u8; REVISION_BYTES];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Decodes [`Revision::to_bytes`]; `None` when the slice has the wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != REVISION_BYTES {
            return None;
        }
        let main = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(bytes[8..].try_into().ok()?);
        Some(Self { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 3),
            Revision::new(i64::MAX, 0),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
        }
        for r in revs {
            assert_eq!(Revision::from_bytes(&r.to_bytes()), Some(r));
        }
        assert_eq!(Revision::from_bytes(&[1, 2, 3]), None);
    }
}
