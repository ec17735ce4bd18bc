//! Rendered rules before they become text, and the three texts one sync can write from them:
//! a full one (every chain, stale chains of Skiff's deleted), a partial one (only the chains
//! whose rules changed since the last good sync — kube-proxy's MinimizeIPTablesRestore, which
//! goes further here: the shared chains too are left alone when they did not change), and the fingerprint of what was written
//! ([`Written`]) that the next partial sync compares against and that a read-back
//! (`iptables-save`) is checked against to find rules someone else changed. Pure.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use crate::chains::{
    self, EXTERNAL_SERVICES, FORWARD, MARK_MASQ, NODEPORTS, POSTROUTING, SERVICES,
};

/// The shared chains, declared first in every rendering.
pub const FIXED_NAT: [&str; 4] = [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ];
pub const FIXED_FILTER: [&str; 3] = [SERVICES, EXTERNAL_SERVICES, FORWARD];

/// One table being rendered: its chains in declaration order and its rules in the order
/// they were made, each with the chain it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    chains: Vec<String>,
    rules: Vec<(String, String)>,
}

impl Table {
    /// Declares `name` (restore flushes a declared chain).
    pub fn chain(&mut self, name: &str) {
        self.chains.push(name.to_string());
    }

    /// Appends `spec` to `chain`.
    pub fn rule(&mut self, chain: &str, spec: &str) {
        self.rules.push((chain.to_string(), spec.to_string()));
    }

    /// How many rules the table holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Each chain's fingerprint: a hash of its rules in order, and their number.
    fn fingerprints(&self) -> BTreeMap<String, Fingerprint> {
        let mut hashers: BTreeMap<&str, (DefaultHasher, usize)> = self
            .chains
            .iter()
            .map(|c| (c.as_str(), (DefaultHasher::new(), 0)))
            .collect();
        for (chain, spec) in &self.rules {
            if let Some((h, n)) = hashers.get_mut(chain.as_str()) {
                spec.hash(h);
                *n += 1;
            }
        }
        hashers
            .into_iter()
            .map(|(c, (h, rules))| {
                (
                    c.to_string(),
                    Fingerprint {
                        hash: h.finish(),
                        rules,
                    },
                )
            })
            .collect()
    }

    /// `*name`, the declarations of the chains `keep` accepts plus `deleted`, their rules,
    /// `-X` for each of `deleted`, `COMMIT`.
    fn write(&self, name: &str, keep: impl Fn(&str) -> bool, deleted: &[&str], out: &mut String) {
        let _ = writeln!(out, "*{name}");
        for c in self.chains.iter().filter(|c| keep(c)) {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for c in deleted {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for (chain, spec) in self.rules.iter().filter(|(c, _)| keep(c)) {
            let _ = writeln!(out, "-A {chain} {spec}");
        }
        for c in deleted {
            let _ = writeln!(out, "-X {c}");
        }
        let _ = writeln!(out, "COMMIT");
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
    filter: BTreeMap<String, Fingerprint>,
    nat: BTreeMap<String, Fingerprint>,
}

impl Written {
    /// How the rules in an `iptables-save` of the filter and nat tables differ from what was
    /// written, one line per chain missing or holding a different number of rules; empty when
    /// they agree. (Rule text is not compared: `iptables-save` prints rules in its own
    /// canonical form, not as they were written.)
    pub fn drift(&self, filter_save: &str, nat_save: &str) -> Vec<String> {
        let mut found = vec![];
        for (table, written, save) in [
            ("filter", &self.filter, filter_save),
            ("nat", &self.nat, nat_save),
        ] {
            let counts = rule_counts(save);
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
        found
    }

    /// How many chains it names.
    pub fn chains(&self) -> usize {
        self.filter.len() + self.nat.len()
    }
}

/// Rules per chain of Skiff's in an `iptables-save` text (declared chains with none: 0).
fn rule_counts(save: &str) -> BTreeMap<&str, usize> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in save.lines() {
        let name = if let Some(decl) = line.strip_prefix(':') {
            decl.split_whitespace().next()
        } else if let Some(rule) = line.strip_prefix("-A ") {
            rule.split_whitespace().next()
        } else {
            None
        };
        let Some(name) = name.filter(|n| n.starts_with(chains::CHAIN_PREFIX)) else {
            continue;
        };
        let n = counts.entry(name).or_default();
        if line.starts_with("-A ") {
            *n += 1;
        }
    }
    counts
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
        let rendered: BTreeSet<&str> = self.nat.chains.iter().map(String::as_str).collect();
        let stale: Vec<&str> = existing_nat
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(chains::CHAIN_PREFIX) && !rendered.contains(c))
            .collect();
        let mut text = String::new();
        self.filter.write("filter", |_| true, &[], &mut text);
        self.nat.write("nat", |_| true, &stale, &mut text);
        text
    }

    /// Only the chains that are new or whose rules differ from `last` (what the last good
    /// sync wrote), and the deletion of the chains `last` wrote that are not rendered any
    /// more; with the number of chains written or deleted (0: nothing to restore). A chain that refers to a deleted one always
    /// changed too (the reference went), so it is rewritten in the same restore.
    pub fn partial_text(&self, last: &Written) -> (String, usize) {
        let now = self.written();
        let stale: Vec<&str> = last
            .nat
            .keys()
            .map(String::as_str)
            .filter(|c| !now.nat.contains_key(*c))
            .collect();
        let keep_filter = |c: &str| last.filter.get(c) != now.filter.get(c);
        let keep_nat = |c: &str| last.nat.get(c) != now.nat.get(c);
        let written = self.filter.chains.iter().filter(|c| keep_filter(c)).count()
            + self.nat.chains.iter().filter(|c| keep_nat(c)).count()
            + stale.len();
        let mut text = String::new();
        self.filter.write("filter", keep_filter, &[], &mut text);
        self.nat.write("nat", keep_nat, &stale, &mut text);
        (text, written)
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
        let (text, written) = after.partial_text(&last);
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
        let (text, written) = before.partial_text(&last);
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
