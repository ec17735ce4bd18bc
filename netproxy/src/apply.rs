//! The thin layer that puts rendered rules into the kernel: which iptables the host's rules
//! live in (nft or legacy, detected as kube-proxy's wrapper does: the one holding more rules;
//! nft when both are empty, as Debian's default), the jumps from the built-in chains to
//! Skiff's (through the `iptables` crate, each added only when missing, so restarts never pile
//! up duplicates), and one `iptables-restore --noflush` per sync of [`crate::render`]'s rules:
//! a full sync (jumps checked, tables read back and checked for drift, every chain written)
//! or a partial one (only what changed since the last good sync, nothing read).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::chains::{self, EXTERNAL_SERVICES, FORWARD, POSTROUTING, SERVICES};
use crate::model::ServicePort;
use crate::render::{render_rules, NodeContext};
use crate::ruleset::Written;

/// Why applying rules failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("running {command}: {message}")]
    Command { command: String, message: String },
    #[error("{what}: {message}")]
    Iptables { what: String, message: String },
}

/// One iptables implementation's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub iptables: &'static str,
    pub save: &'static str,
    pub restore: &'static str,
}

pub const NFT: Backend = Backend {
    iptables: "iptables-nft",
    save: "iptables-nft-save",
    restore: "iptables-nft-restore",
};
pub const LEGACY: Backend = Backend {
    iptables: "iptables-legacy",
    save: "iptables-legacy-save",
    restore: "iptables-legacy-restore",
};

/// The backend whose tables hold more rules (`-A` lines) — where the host's firewall, and
/// any earlier Skiff rules, live; nft when neither answers or both are empty. Pure.
pub fn choose_backend(nft_save: Option<&str>, legacy_save: Option<&str>) -> Backend {
    let rules =
        |save: Option<&str>| save.map_or(0, |s| s.lines().filter(|l| l.starts_with("-A")).count());
    if rules(legacy_save) > rules(nft_save) {
        LEGACY
    } else {
        NFT
    }
}

/// The jumps from the built-in chains into Skiff's: (table, chain, rule). Each is inserted
/// at the top of its chain when missing.
pub const JUMPS: &[(&str, &str, &str)] = &[
    (
        "nat",
        "PREROUTING",
        "-m comment --comment \"skiff service portals\" -j SKIFF-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment \"skiff service portals\" -j SKIFF-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment \"skiff postrouting rules\" -j SKIFF-POSTROUTING",
    ),
    (
        "filter",
        "FORWARD",
        "-m comment --comment \"skiff forwarding rules\" -j SKIFF-FORWARD",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"skiff service portals\" -j SKIFF-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"skiff service portals\" -j SKIFF-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"skiff service portals\" -j SKIFF-SERVICES",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"skiff externally-visible service portals\" -j SKIFF-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"skiff externally-visible service portals\" -j SKIFF-EXTERNAL-SERVICES",
    ),
];

/// The chains the jumps lead to, per table.
const JUMP_TARGETS: &[(&str, &str)] = &[
    ("nat", SERVICES),
    ("nat", POSTROUTING),
    ("filter", SERVICES),
    ("filter", EXTERNAL_SERVICES),
    ("filter", FORWARD),
];

/// What one sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// Rules rendered (all of them, also when a partial sync wrote fewer).
    pub rules: usize,
    pub render: Duration,
    pub restore: Duration,
    /// Only the chains that changed were written.
    pub partial: bool,
    /// Chains written (a partial sync: or deleted).
    pub chains_written: usize,
    /// A full sync's read-back: how the kernel's rules differed from what the last sync
    /// wrote (someone changed them). This sync repaired it.
    pub drift: Vec<String>,
}

/// The host's iptables, as Skiff drives it.
pub struct Iptables {
    pub backend: Backend,
    ipt: iptables::IPTables,
}

fn run(command: &str, args: &[&str], input: Option<&str>) -> Result<String, ApplyError> {
    let failed = |message: String| ApplyError::Command {
        command: format!("{command} {}", args.join(" ")),
        message,
    };
    let mut child = Command::new(command)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Iptables {
    /// Detects the backend the host uses.
    pub fn detect() -> Result<Iptables, ApplyError> {
        let nft = run(NFT.save, &[], None).ok();
        let legacy = run(LEGACY.save, &[], None).ok();
        if nft.is_none() && legacy.is_none() {
            return Err(ApplyError::Command {
                command: format!("{} / {}", NFT.save, LEGACY.save),
                message: "neither runs: install iptables (Debian's package)".into(),
            });
        }
        Ok(Iptables::with(choose_backend(
            nft.as_deref(),
            legacy.as_deref(),
        )))
    }

    /// Drives `backend`.
    pub fn with(backend: Backend) -> Iptables {
        Iptables {
            backend,
            ipt: iptables::IPTables {
                cmd: backend.iptables,
                has_check: true,
                has_wait: true,
                // Listing a chain without -n looks up a name for every address in it: with a
                // slow or unreachable DNS server that took seconds per chain.
                is_numeric: true,
            },
        }
    }

    fn iptables_error(what: String) -> impl Fn(Box<dyn std::error::Error>) -> ApplyError {
        move |e| ApplyError::Iptables {
            what: what.clone(),
            message: e.to_string(),
        }
    }

    /// Makes Skiff's jump targets and the jumps to them, each only when missing.
    pub fn ensure_jumps(&self) -> Result<(), ApplyError> {
        for (table, chain) in JUMP_TARGETS {
            let exists = self
                .ipt
                .chain_exists(table, chain)
                .map_err(Self::iptables_error(format!("looking for {table} {chain}")))?;
            if !exists {
                self.ipt
                    .new_chain(table, chain)
                    .map_err(Self::iptables_error(format!("creating {table} {chain}")))?;
            }
        }
        for (table, chain, rule) in JUMPS {
            let exists = self
                .ipt
                .exists(table, chain, rule)
                .map_err(Self::iptables_error(format!(
                    "checking {table} {chain} {rule}"
                )))?;
            if !exists {
                self.ipt
                    .insert(table, chain, rule, 1)
                    .map_err(Self::iptables_error(format!(
                        "inserting {table} {chain} {rule}"
                    )))?;
            }
        }
        Ok(())
    }

    /// One table as `iptables-save` prints it.
    pub fn save(&self, table: &str) -> Result<String, ApplyError> {
        run(self.backend.save, &["-t", table], None)
    }

    /// Restores `text` without flushing anything it does not name.
    pub fn restore(&self, text: &str) -> Result<(), ApplyError> {
        run(self.backend.restore, &["--noflush"], Some(text)).map(|_| ())
    }

    /// One full sync with nothing to compare against (see [`Iptables::sync_full`]).
    pub fn sync(
        &self,
        ports: &[ServicePort],
        node: &NodeContext,
    ) -> Result<SyncReport, ApplyError> {
        self.sync_full(ports, node, None).map(|(report, _)| report)
    }

    /// A full sync: the jumps checked, both tables read back (and, given what the last sync
    /// wrote, checked against it: the report names what drifted), then every rule for
    /// `ports` written in one restore, stale chains removed. Returns what was written, for
    /// the next partial sync.
    pub fn sync_full(
        &self,
        ports: &[ServicePort],
        node: &NodeContext,
        last: Option<&Written>,
    ) -> Result<(SyncReport, Written), ApplyError> {
        self.ensure_jumps()?;
        let nat = self.save("nat")?;
        let drift = match last {
            Some(last) => last.drift(&self.save("filter")?, &nat),
            None => vec![],
        };
        let existing = chains::ours_in_save(&nat);
        let started = Instant::now();
        let rules = render_rules(ports, node);
        let text = rules.full_text(&existing);
        let render_time = started.elapsed();
        let started = Instant::now();
        self.restore(&text)?;
        let written = rules.written();
        Ok((
            SyncReport {
                rules: rules.rules(),
                render: render_time,
                restore: started.elapsed(),
                partial: false,
                chains_written: written.chains(),
                drift,
            },
            written,
        ))
    }

    /// A partial sync: only the chains that changed since `last` (what the last good sync
    /// wrote) in one restore (none when nothing changed), with no read-back, so its cost
    /// follows the change, not the cluster. Returns what is written now.
    pub fn sync_partial(
        &self,
        ports: &[ServicePort],
        node: &NodeContext,
        last: &Written,
    ) -> Result<(SyncReport, Written), ApplyError> {
        let started = Instant::now();
        let rules = render_rules(ports, node);
        let (text, chains_written, written) = rules.partial_text(last);
        let render_time = started.elapsed();
        let started = Instant::now();
        if chains_written > 0 {
            self.restore(&text)?;
        }
        Ok((
            SyncReport {
                rules: rules.rules(),
                render: render_time,
                restore: started.elapsed(),
                partial: true,
                chains_written,
                drift: vec![],
            },
            written,
        ))
    }

    /// Removes every jump to Skiff's chains and every chain of Skiff's (`skiff-agent
    /// --cleanup`).
    pub fn clean_up(&self) -> Result<(), ApplyError> {
        for (table, chain, rule) in JUMPS {
            while self.ipt.exists(table, chain, rule).unwrap_or(false) {
                self.ipt
                    .delete(table, chain, rule)
                    .map_err(Self::iptables_error(format!(
                        "deleting {table} {chain} {rule}"
                    )))?;
            }
        }
        for table in ["nat", "filter"] {
            let ours = chains::ours_in_save(&self.save(table)?);
            if ours.is_empty() {
                continue;
            }
            let mut text = format!("*{table}\n");
            for c in &ours {
                text.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &ours {
                text.push_str(&format!("-X {c}\n"));
            }
            text.push_str("COMMIT\n");
            self.restore(&text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_holding_more_rules_is_chosen() {
        let some = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n";
        let one = "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n";
        assert_eq!(choose_backend(Some(one), Some(some)), LEGACY);
        assert_eq!(choose_backend(Some(some), Some(one)), NFT);
        assert_eq!(choose_backend(Some(""), Some("")), NFT);
        assert_eq!(choose_backend(None, Some(one)), LEGACY);
        assert_eq!(choose_backend(Some(one), None), NFT);
    }
}
