//! Which keys a request names, following etcd's `key`/`range_end` convention.
//!
//! An empty `range_end` names the single `key`; `range_end == "\0"` names every key `>= key`; any
//! other `range_end` names `[key, range_end)`, which is empty when `range_end <= key`.
//! `prefix_end` is the one way the workspace names every key under a prefix.

use std::ops::Bound;

/// Start and end bounds of a non-empty range, for `BTreeMap::range`.
pub type Bounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    Single(Vec<u8>),
    From(Vec<u8>),
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::From(key.to_vec()),
            end => KeyRange::Between(key.to_vec(), end.to_vec()),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => k == key.as_slice(),
            KeyRange::From(key) => k >= key.as_slice(),
            KeyRange::Between(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }

    /// Bounds for a `BTreeMap<Vec<u8>, _>::range`; `None` when the range is empty (inverted).
    pub fn bounds(&self) -> Option<Bounds> {
        match self {
            KeyRange::Single(key) => {
                Some((Bound::Included(key.clone()), Bound::Included(key.clone())))
            }
            KeyRange::From(key) => Some((Bound::Included(key.clone()), Bound::Unbounded)),
            KeyRange::Between(key, end) if end > key => {
                Some((Bound::Included(key.clone()), Bound::Excluded(end.clone())))
            }
            KeyRange::Between(..) => None,
        }
    }

    /// Whether two ranges share a key (for etcd's duplicate-key check in transactions).
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let (Some((a0, a1)), Some((b0, b1))) = (self.bounds(), other.bounds()) else {
            return false;
        };
        starts_before_end(&a0, &b1) && starts_before_end(&b0, &a1)
    }
}

/// The `range_end` that, with `key = prefix`, names every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`): the prefix up to its last byte below 0xff, that byte
/// incremented; `"\0"` (every key from `prefix` on) when there is no such byte, as for an empty
/// or all-0xff prefix, since every key after such a prefix starts with it.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

fn starts_before_end(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    let Bound::Included(s) = start else {
        return true;
    };
    match end {
        Bound::Unbounded => true,
        Bound::Included(e) => s <= e,
        Bound::Excluded(e) => s < e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_range_conventions() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        assert!(KeyRange::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeyRange::new(b"b", b"\0").contains(b"a"));
        let r = KeyRange::new(b"a", b"c");
        assert!(r.contains(b"a") && r.contains(b"bz") && !r.contains(b"c"));
        assert_eq!(KeyRange::new(b"c", b"a").bounds(), None);
    }

    #[test]
    fn prefix_ends_follow_etcd() {
        // (prefix, range end): the last byte below 0xff goes up by one and what follows it
        // goes; with no such byte, "\0" names every key from the prefix on.
        let cases: &[(&[u8], &[u8])] = &[
            (b"/registry/pods/", b"/registry/pods0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"ab\xff\xff", b"ac"),
            (b"\x01\xff\x02", b"\x01\xff\x03"),
            (b"\xfe", b"\xff"),
            (b"\xff", b"\0"),
            (b"\xff\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end.to_vec(), "prefix {prefix:?}");
        }
        // The range holds exactly the keys that start with the prefix.
        // (prefix, keys inside, keys outside)
        type Case<'a> = (&'a [u8], &'a [&'a [u8]], &'a [&'a [u8]]);
        let cases: &[Case] = &[
            (
                b"a\xff",
                &[b"a\xff", b"a\xff\xff\x00"],
                &[b"a", b"a\xfe\xff", b"b"],
            ),
            (
                b"\xff\xff",
                &[b"\xff\xff", b"\xff\xff\xff\xff"],
                &[b"\xff", b"\xfe\xff\xff"],
            ),
        ];
        for (prefix, inside, outside) in cases {
            let range = KeyRange::new(prefix, &prefix_end(prefix));
            for k in *inside {
                assert!(range.contains(k), "{prefix:?} should hold {k:?}");
            }
            for k in *outside {
                assert!(!range.contains(k), "{prefix:?} should not hold {k:?}");
            }
        }
    }

    #[test]
    fn overlap() {
        let single = |k: &[u8]| KeyRange::new(k, b"");
        assert!(single(b"a").overlaps(&single(b"a")));
        assert!(!single(b"a").overlaps(&single(b"b")));
        assert!(KeyRange::new(b"a", b"c").overlaps(&single(b"b")));
        assert!(!KeyRange::new(b"a", b"c").overlaps(&single(b"c")));
        assert!(KeyRange::new(b"x", b"\0").overlaps(&single(b"zz")));
        assert!(!KeyRange::new(b"c", b"a").overlaps(&single(b"b")));
    }
}
