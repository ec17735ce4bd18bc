//! Rendered rules before they become text, and what one sync can write from them: a full text
//! (every chain, stale chains of Skiff's deleted), a partial one (only the chains whose rules
//! changed since the last good sync — kube-proxy's MinimizeIPTablesRestore, which goes further
//! here: the shared chains too are left alone when they did not change), and the fingerprint
//! of what was written ([`Written`]) that the next partial sync compares against and that a
//! read-back (`iptables-save`) is checked against to find rules someone else changed. Pure.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use crate::chains::{
    self, EXTERNAL_SERVICES, FORWARD, MARK_MASQ, NODEPORTS, POSTROUTING, SERVICES,
};

/// The shared chains, declared first in every rendering.
pub const FIXED_NAT: [&str; 4] = [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ];
pub const FIXED_FILTER: [&str; 3] = [SERVICES, EXTERNAL_SERVICES, FORWARD];

/// One table being rendered: its chains in declaration order and its rules in the order
/// they were made, each with (the index of) the chain it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    chains: Vec<String>,
    index: HashMap<String, usize>,
    rules: Vec<(usize, String)>,
}

impl Table {
    /// Declares `name` (restore flushes a declared chain); once, however often asked.
    pub fn chain(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.chains.push(name.to_string());
        self.index.insert(name.to_string(), self.chains.len() - 1);
        self.chains.len() - 1
    }

    /// Appends `spec` to `chain` (declared first if it was not).
    pub fn rule(&mut self, chain: &str, spec: &str) {
        let i = self.chain(chain);
        self.rules.push((i, spec.to_string()));
    }

    /// How many rules the table holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Each chain's fingerprint: a hash of its rules in order, and their number.
    fn fingerprints(&self) -> HashMap<String, Fingerprint> {
        let mut hashers: Vec<(DefaultHasher, usize)> =
            vec![(DefaultHasher::new(), 0); self.chains.len()];
        for (chain, spec) in &self.rules {
            let (h, n) = &mut hashers[*chain];
            spec.hash(h);
            *n += 1;
        }
        self.chains
            .iter()
            .zip(hashers)
            .map(|(c, (h, rules))| {
                (
                    c.clone(),
                    Fingerprint {
                        hash: h.finish(),
                        rules,
                    },
                )
            })
            .collect()
    }

    /// `*name`, the declarations of the chains `keep` marks plus `deleted`, their rules, `-X`
    /// for each of `deleted`, `COMMIT`.
    fn write(&self, name: &str, keep: &[bool], deleted: &[&str], out: &mut String) {
        let _ = writeln!(out, "*{name}");
        for (c, _) in self.chains.iter().zip(keep).filter(|(_, k)| **k) {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for c in deleted {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for (chain, spec) in self.rules.iter().filter(|(c, _)| keep[*c]) {
            let _ = writeln!(out, "-A {} {spec}", self.chains[*chain]);
        }
        for c in deleted {
            let _ = writeln!(out, "-X {c}");
        }
        let _ = writeln!(out, "COMMIT");
    }

    /// Which chains differ between `now` and `last` (by index), and how many.
    fn changed(
        &self,
        now: &HashMap<String, Fingerprint>,
        last: &HashMap<String, Fingerprint>,
    ) -> (Vec<bool>, usize) {
        let keep: Vec<bool> = self
            .chains
            .iter()
            .map(|c| last.get(c) != now.get(c))
            .collect();
        let n = keep.iter().filter(|k| **k).count();
        (keep, n)
    }
}

/// What a chain held when it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    hash: u64,
    rules: usize,
}

/// What the last good sync wrote: every chain of Skiff's in both tables, fingerprinted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    filter: HashMap<String, Fingerprint>,
    nat: HashMap<String, Fingerprint>,
}

impl Written {
    /// How the rules in an `iptables-save` of the filter and nat tables differ from what was
    /// written, one line per chain missing or holding a different number of rules (sorted);
    /// empty when they agree. (Rule text is not compared: `iptables-save` prints rules in its own
    /// canonical form, not as they were written.)
    pub fn drift(&self, filter_save: &str, nat_save: &str) -> Vec<String> {
        let mut found = vec![];
        for (table, written, save) in [
            ("filter", &self.filter, filter_save),
            ("nat", &self.nat, nat_save),
        ] {
            let counts = chains::rules_per_chain(save);
            for (chain, print) in written {
                match counts.get(chain.as_str()) {
                    None => found.push(format!("{table} {chain}: missing")),
                    Some(n) if *n != print.rules => found.push(format!(
                        "{table} {chain}: {n} rules, {} written",
                        print.rules
                    )),
                    Some(_) => {}
                }
            }
        }
        found.sort();
        found
    }

    /// How many chains it names.
    pub fn chains(&self) -> usize {
        self.filter.len() + self.nat.len()
    }
}

/// Every rule one sync wants, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub filter: Table,
    pub nat: Table,
}

impl Ruleset {
    /// How many rules both tables hold.
    pub fn rules(&self) -> usize {
        self.filter.len() + self.nat.len()
    }

    /// The fingerprint of this ruleset once written.
    pub fn written(&self) -> Written {
        Written {
            filter: self.filter.fingerprints(),
            nat: self.nat.fingerprints(),
        }
    }

    /// Every chain and rule; chains of Skiff's in `existing_nat` (from `iptables-save`) that
    /// are not rendered any more are flushed and deleted.
    pub fn full_text(&self, existing_nat: &BTreeSet<String>) -> String {
        let stale: Vec<&str> = existing_nat
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(chains::CHAIN_PREFIX) && !self.nat.index.contains_key(*c))
            .collect();
        let mut text = String::new();
        self.filter.write(
            "filter",
            &vec![true; self.filter.chains.len()],
            &[],
            &mut text,
        );
        self.nat
            .write("nat", &vec![true; self.nat.chains.len()], &stale, &mut text);
        text
    }

    /// Only the chains that are new or whose rules differ from `last` (what the last good
    /// sync wrote), and the deletion of the chains `last` wrote that are not rendered any
    /// more; with the number of chains written or deleted (0: nothing to restore) and what
    /// is written once it is restored. A chain that refers to a deleted one always changed
    /// too (the reference went), so it is rewritten in the same restore.
    pub fn partial_text(&self, last: &Written) -> (String, usize, Written) {
        let now = self.written();
        let mut stale: Vec<&str> = last
            .nat
            .keys()
            .map(String::as_str)
            .filter(|c| !now.nat.contains_key(*c))
            .collect();
        stale.sort_unstable();
        let (keep_filter, in_filter) = self.filter.changed(&now.filter, &last.filter);
        let (keep_nat, in_nat) = self.nat.changed(&now.nat, &last.nat);
        let mut text = String::new();
        self.filter.write("filter", &keep_filter, &[], &mut text);
        self.nat.write("nat", &keep_nat, &stale, &mut text);
        (text, in_filter + in_nat + stale.len(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(services: &[(&str, &[&str])]) -> Ruleset {
        let mut r = Ruleset::default();
        for c in FIXED_FILTER {
            r.filter.chain(c);
        }
        for c in FIXED_NAT {
            r.nat.chain(c);
        }
        r.filter.rule(FORWARD, "-j ACCEPT");
        for (svc, rules) in services {
            r.nat.chain(svc);
            r.nat.rule(SERVICES, &format!("-j {svc}"));
            for rule in *rules {
                r.nat.rule(svc, rule);
            }
        }
        r
    }

    #[test]
    fn a_partial_text_rewrites_only_changed_chains_and_deletes_gone_ones() {
        let before = ruleset(&[
            ("SKIFF-SVC-A", &["-j DNAT --to-destination 10.244.0.1:80"]),
            ("SKIFF-SVC-B", &["-j DNAT --to-destination 10.244.0.2:80"]),
            ("SKIFF-SVC-C", &["-j DNAT --to-destination 10.244.0.3:80"]),
        ]);
        let last = before.written();
        let after = ruleset(&[
            ("SKIFF-SVC-A", &["-j DNAT --to-destination 10.244.0.1:80"]),
            ("SKIFF-SVC-B", &["-j DNAT --to-destination 10.244.0.9:80"]),
            ("SKIFF-SVC-D", &["-j DNAT --to-destination 10.244.0.4:80"]),
        ]);
        let (text, written, _) = after.partial_text(&last);
        assert_eq!(
            text,
            "*filter\n\
             COMMIT\n\
             *nat\n\
             :SKIFF-SERVICES - [0:0]\n\
             :SKIFF-SVC-B - [0:0]\n\
             :SKIFF-SVC-D - [0:0]\n\
             :SKIFF-SVC-C - [0:0]\n\
             -A SKIFF-SERVICES -j SKIFF-SVC-A\n\
             -A SKIFF-SERVICES -j SKIFF-SVC-B\n\
             -A SKIFF-SVC-B -j DNAT --to-destination 10.244.0.9:80\n\
             -A SKIFF-SERVICES -j SKIFF-SVC-D\n\
             -A SKIFF-SVC-D -j DNAT --to-destination 10.244.0.4:80\n\
             -X SKIFF-SVC-C\n\
             COMMIT\n"
        );
        assert_eq!(written, 4);

        // Nothing changed: nothing written.
        let (text, written, _) = before.partial_text(&last);
        assert_eq!(text, "*filter\nCOMMIT\n*nat\nCOMMIT\n");
        assert_eq!(written, 0);

        // The full text has every chain.
        let full = after.full_text(&["SKIFF-SVC-C".to_string()].into());
        assert!(full.contains("-A SKIFF-SVC-A -j DNAT"));
        assert!(full.contains("-X SKIFF-SVC-C\n"));
    }

    #[test]
    fn drift_is_found_by_chain_and_rule_count() {
        let r = ruleset(&[("SKIFF-SVC-A", &["-j DNAT --to-destination 10.244.0.1:80"])]);
        let written = r.written();
        let filter = "*filter\n:INPUT ACCEPT [0:0]\n:SKIFF-SERVICES - [0:0]\n\
                      :SKIFF-EXTERNAL-SERVICES - [0:0]\n:SKIFF-FORWARD - [0:0]\n\
                      -A SKIFF-FORWARD -j ACCEPT\nCOMMIT\n";
        let nat = "*nat\n:SKIFF-SERVICES - [0:0]\n:SKIFF-NODEPORTS - [0:0]\n\
                   :SKIFF-POSTROUTING - [0:0]\n:SKIFF-MARK-MASQ - [0:0]\n:SKIFF-SVC-A - [0:0]\n\
                   -A SKIFF-SERVICES -j SKIFF-SVC-A\n\
                   -A SKIFF-SVC-A -p tcp -j DNAT --to-destination 10.244.0.1:80\nCOMMIT\n";
        assert_eq!(written.drift(filter, nat), Vec::<String>::new());
        // The nat table flushed by hand: chains left empty.
        let flushed = "*nat\n:SKIFF-SERVICES - [0:0]\n:SKIFF-NODEPORTS - [0:0]\n\
                       :SKIFF-POSTROUTING - [0:0]\n:SKIFF-MARK-MASQ - [0:0]\n\
                       :SKIFF-SVC-A - [0:0]\nCOMMIT\n";
        assert_eq!(
            written.drift(filter, flushed),
            [
                "nat SKIFF-SERVICES: 0 rules, 1 written",
                "nat SKIFF-SVC-A: 0 rules, 1 written"
            ]
        );
        // A chain deleted.
        assert_eq!(
            written.drift(filter, "*nat\nCOMMIT\n").len(),
            written.nat.len()
        );
    }
}
