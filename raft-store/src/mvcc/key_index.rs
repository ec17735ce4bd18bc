//! The history of one key: its generations of revisions, with no I/O.
//!
//! A generation runs from the put that creates a key to the delete (tombstone) that ends it. For
//! example `put(1) put(2) tombstone(3) put(4)` gives the generations `{1,2,3(t)}` and `{4}`: a read
//! at revision 2 sees the value written at 2 with version 2; a read at 3 finds nothing; a read at 4
//! sees version 1 again with create revision 4.
//!
//! Compacting at revision `r` keeps, per generation, the newest revision `<= r` (so reads at `r`
//! still work) and drops everything older; a generation whose tombstone is `<= r` is dropped whole.

use super::revision::Revision;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Generation {
    /// Version of the key after the newest change in `revs`.
    ver: i64,
    /// Main revision of the put that created this generation.
    created: i64,
    /// Changes in this generation, oldest first; possibly compacted away at the front.
    revs: Vec<Revision>,
    /// Whether the last entry of `revs` is the tombstone that ended the generation.
    tombstoned: bool,
}

/// What a key looked like at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// Revision of the change that produced the value visible at the asked revision.
    pub modified: Revision,
    /// Main revision of the put that created the key's generation.
    pub created: i64,
    /// Version of the key as of `modified`.
    pub version: i64,
}

/// The history of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// Generations, oldest first. Every generation but the last is tombstoned.
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// Records a put at `rev`; `created`/`version` of a new generation are derived.
    pub fn put(&mut self, rev: Revision) {
        match self.generations.last_mut() {
            Some(g) if !g.tombstoned => {
                g.revs.push(rev);
                g.ver += 1;
            }
            _ => self.generations.push(Generation {
                ver: 1,
                created: rev.main,
                revs: vec![rev],
                tombstoned: false,
            }),
        }
    }

    /// Rebuilds history from a stored record whose generation started before what is stored
    /// (compaction removed its older revisions): `created` and `version` come from the record.
    pub fn restore(&mut self, rev: Revision, created: i64, version: i64) {
        match self.generations.last_mut() {
            Some(g) if !g.tombstoned => {
                g.revs.push(rev);
                g.ver = version;
            }
            _ => self.generations.push(Generation {
                ver: version,
                created,
                revs: vec![rev],
                tombstoned: false,
            }),
        }
    }

    /// Records a delete at `rev`. Returns false (and records nothing) if the key is not alive.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        match self.generations.last_mut() {
            Some(g) if !g.tombstoned => {
                g.revs.push(rev);
                g.ver += 1;
                g.tombstoned = true;
                true
            }
            _ => false,
        }
    }

    /// The key as seen at main revision `at`, or `None` if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.generations.iter().rev().find(|g| g.created <= at)?;
        let pos = g.revs.iter().rposition(|r| r.main <= at)?;
        if g.tombstoned && pos == g.revs.len() - 1 {
            return None;
        }
        let newer = (g.revs.len() - 1 - pos) as i64;
        Some(KeyAt {
            modified: g.revs[pos],
            created: g.created,
            version: g.ver - newer,
        })
    }

    /// Whether the key is alive at the newest revision.
    pub fn is_alive(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.tombstoned)
    }

    /// Drops history older than `at`; returns how many revisions were dropped (their records may
    /// be removed from the backend). Afterwards the key reads the same at every revision `>= at`.
    /// An emptied index reports [`KeyIndex::is_empty`]. Compacting again at the same revision
    /// drops nothing more.
    pub fn compact(&mut self, at: i64) -> usize {
        let mut removed = 0;
        self.generations.retain_mut(|g| {
            let Some(newest_at) = g.revs.iter().rposition(|r| r.main <= at) else {
                return true;
            };
            if g.tombstoned && newest_at == g.revs.len() - 1 {
                removed += g.revs.len();
                return false;
            }
            removed += newest_at;
            g.revs.drain(..newest_at);
            true
        });
        removed
    }

    /// The revisions at or below main revision `at` that this index still holds (after
    /// compacting at `at`: the ones whose records must stay).
    pub fn kept_upto(&self, at: i64) -> impl Iterator<Item = Revision> + '_ {
        self.generations
            .iter()
            .flat_map(move |g| g.revs.iter().copied().take_while(move |r| r.main <= at))
    }

    /// True when no revision of this key remains.
    pub fn is_empty(&self) -> bool {
        self.generations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put(2) put(4) tombstone(6) put(8) put(10)
    fn sample() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.put(r(4));
        assert!(ki.tombstone(r(6)));
        ki.put(r(8));
        ki.put(r(10));
        ki
    }

    #[test]
    fn reads_follow_generations() {
        let ki = sample();
        // (read at, Some((modified, created, version)))
        type Case = (i64, Option<(i64, i64, i64)>);
        let cases: &[Case] = &[
            (1, None),
            (2, Some((2, 2, 1))),
            (3, Some((2, 2, 1))),
            (4, Some((4, 2, 2))),
            (5, Some((4, 2, 2))),
            (6, None),
            (7, None),
            (8, Some((8, 8, 1))),
            (10, Some((10, 8, 2))),
            (99, Some((10, 8, 2))),
        ];
        for &(at, want) in cases {
            let got = ki.get(at).map(|k| (k.modified.main, k.created, k.version));
            assert_eq!(got, want, "read at {at}");
        }
        assert!(ki.is_alive());
    }

    #[test]
    fn tombstone_of_dead_key_is_refused() {
        let mut ki = KeyIndex::default();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert!(!ki.is_alive());
    }

    #[test]
    fn compaction_keeps_reads_at_and_after_the_compact_revision() {
        for at in 1..=12 {
            let full = sample();
            let mut compacted = sample();
            let before: Vec<Revision> = full.kept_upto(i64::MAX).collect();
            let removed = compacted.compact(at);
            for read in at..=12 {
                assert_eq!(
                    compacted.get(read),
                    full.get(read),
                    "compact {at}, read {read}"
                );
            }
            let after: Vec<Revision> = compacted.kept_upto(i64::MAX).collect();
            assert_eq!(before.len() - after.len(), removed, "compact {at}");
            // What went is all at or below the compact revision.
            assert!(before
                .iter()
                .filter(|rev| !after.contains(rev))
                .all(|rev| rev.main <= at));
            assert_eq!(compacted.compact(at), 0, "compacting twice at {at}");
        }
    }

    #[test]
    fn compaction_drops_finished_generations_and_old_revisions() {
        let mut ki = sample();
        let kept = |ki: &KeyIndex, at| ki.kept_upto(at).map(|r| r.main).collect::<Vec<_>>();
        assert_eq!(ki.compact(5), 1);
        assert_eq!(kept(&ki, 5), vec![4]);
        assert_eq!(ki.compact(7), 2);
        assert_eq!(kept(&ki, 7), Vec::<i64>::new());
        assert_eq!(ki.compact(9), 0);
        assert_eq!(kept(&ki, 9), vec![8]);
        assert_eq!(ki.compact(10), 1);
        assert_eq!(kept(&ki, 12), vec![10]);
        assert!(!ki.is_empty());

        let mut dead = KeyIndex::default();
        dead.put(r(1));
        dead.tombstone(r(2));
        assert_eq!(dead.compact(2), 2);
        assert!(dead.is_empty());
    }

    #[test]
    fn restore_continues_version_from_the_record() {
        let mut ki = KeyIndex::default();
        ki.restore(r(7), 3, 4);
        ki.put(r(9));
        assert_eq!(ki.get(9).map(|k| (k.created, k.version)), Some((3, 5)));
        assert_eq!(ki.get(7).map(|k| (k.created, k.version)), Some((3, 4)));
    }
}
