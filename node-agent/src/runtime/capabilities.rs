//! Linux capabilities of a container: Docker's default set, Kubernetes' `capabilities.add/drop`
//! (names without `CAP_`, `ALL` allowed) applied the way containerd's CRI plugin applies them,
//! and the host's bounding set (`CapBnd` of /proc/self/status) that privileged containers get and
//! that limits what may be asked for. Pure, except [`host_bounding_set`].

use std::collections::BTreeSet;

use oci_spec::runtime::Capability;

/// Capability numbers as the kernel numbers them (`include/uapi/linux/capability.h`): the bit
/// of each in a `CapBnd`/`CapEff` mask.
const BY_NUMBER: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Docker's (and containerd's) default capability set for an unprivileged container.
pub const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A set of capabilities, ordered by kernel number for stable output.
pub type CapSet = BTreeSet<CapNumber>;

/// A capability with the kernel's number, so that sets sort and compare as masks do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapNumber(pub u8);

impl CapNumber {
    pub fn of(cap: Capability) -> CapNumber {
        let n = BY_NUMBER.iter().position(|c| *c == cap).unwrap_or_default();
        CapNumber(n as u8)
    }

    pub fn capability(self) -> Option<Capability> {
        BY_NUMBER.get(usize::from(self.0)).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("capability {0} is not in this host's bounding set, so no container can have it")]
    NotInBoundingSet(String),
    #[error("cannot read the host's capability bounding set: {0}")]
    Host(String),
}

/// Parses a Kubernetes capability name: `NET_ADMIN`, `CAP_NET_ADMIN`, any case.
pub fn parse(name: &str) -> Result<Capability, CapabilityError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<Capability>()
        .map_err(|_| CapabilityError::Unknown(name.to_string()))
}

/// The capabilities whose bits are set in `mask`, as `/proc/<pid>/status` prints it (hex).
pub fn from_mask(mask: u64) -> CapSet {
    (0..BY_NUMBER.len() as u8)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(CapNumber)
        .collect()
}

/// The mask of a set, as `/proc/<pid>/status` prints it.
pub fn to_mask(set: &CapSet) -> u64 {
    set.iter().fold(0u64, |m, c| m | (1u64 << c.0))
}

/// Reads one capability line (`CapBnd:\t000001fffeffffff`) out of a `/proc/<pid>/status` text.
pub fn status_mask(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        u64::from_str_radix(rest.trim(), 16).ok()
    })
}

/// The capability bounding set of this process (what a privileged container gets).
pub fn host_bounding_set() -> Result<CapSet, CapabilityError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| CapabilityError::Host(e.to_string()))?;
    let mask = status_mask(&status, "CapBnd")
        .ok_or_else(|| CapabilityError::Host("no CapBnd line in /proc/self/status".into()))?;
    Ok(from_mask(mask))
}

/// The capability set of a container, as containerd's CRI plugin computes it: a privileged
/// container, or one adding `ALL`, starts from the host's bounding set, any other from Docker's
/// default set; dropping `ALL` empties it; then the named additions, then the named drops.
/// Asking for a capability the host's bounding set lacks is an error naming it.
pub fn resolve(
    privileged: bool,
    add: &[String],
    drop: &[String],
    bounding: &CapSet,
) -> Result<CapSet, CapabilityError> {
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    let mut set: CapSet = if privileged || add.iter().any(is_all) {
        bounding.clone()
    } else {
        DEFAULT.iter().map(|c| CapNumber::of(*c)).collect()
    };
    if privileged {
        return Ok(set);
    }
    if drop.iter().any(is_all) {
        set.clear();
    }
    for name in add.iter().filter(|s| !is_all(s)) {
        let cap = CapNumber::of(parse(name)?);
        if !bounding.contains(&cap) {
            return Err(CapabilityError::NotInBoundingSet(name.clone()));
        }
        set.insert(cap);
    }
    for name in drop.iter().filter(|s| !is_all(s)) {
        set.remove(&CapNumber::of(parse(name)?));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's bounding set: everything up to CHECKPOINT_RESTORE but SYS_RESOURCE.
    const HOST: u64 = 0x01ff_feff_ffff;

    fn names(set: &CapSet) -> Vec<String> {
        set.iter()
            .filter_map(|c| c.capability())
            .map(|c| c.to_string())
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_match_the_kernel() {
        for (cap, n) in [
            (Capability::Chown, 0),
            (Capability::NetBindService, 10),
            (Capability::SysAdmin, 21),
            (Capability::SysResource, 24),
            (Capability::AuditWrite, 29),
            (Capability::Setfcap, 31),
            (Capability::CheckpointRestore, 40),
        ] {
            assert_eq!(CapNumber::of(cap), CapNumber(n), "{cap}");
        }
    }

    #[test]
    fn default_set_is_dockers_mask() {
        let set: CapSet = DEFAULT.iter().map(|c| CapNumber::of(*c)).collect();
        assert_eq!(to_mask(&set), 0xa80425fb);
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tsh\nCapPrm:\t0000000000000000\nCapBnd:\t000001fffeffffff\n";
        assert_eq!(status_mask(status, "CapBnd"), Some(HOST));
        assert_eq!(status_mask(status, "CapPrm"), Some(0));
        assert_eq!(status_mask(status, "CapEff"), None);
        assert_eq!(from_mask(HOST).len(), 40);
        assert!(!from_mask(HOST).contains(&CapNumber::of(Capability::SysResource)));
    }

    #[test]
    fn parses_kubernetes_names() {
        for (name, want) in [
            ("NET_ADMIN", Ok(Capability::NetAdmin)),
            ("CAP_NET_ADMIN", Ok(Capability::NetAdmin)),
            ("sys_time", Ok(Capability::SysTime)),
            ("NET_FOO", Err(CapabilityError::Unknown("NET_FOO".into()))),
        ] {
            assert_eq!(parse(name), want, "{name}");
        }
    }

    /// (name, privileged, add, drop, resulting mask)
    type Case = (
        &'static str,
        bool,
        Vec<String>,
        Vec<String>,
        Result<u64, CapabilityError>,
    );

    #[test]
    fn resolves_like_containerd() {
        let host = from_mask(HOST);
        let default_mask = 0xa80425fbu64;
        let net_admin = 1u64 << 12;
        let kill = 1u64 << 5;
        let cases: Vec<Case> = vec![
            ("default", false, vec![], vec![], Ok(default_mask)),
            ("privileged", true, vec![], strings(&["ALL"]), Ok(HOST)),
            (
                "add one",
                false,
                strings(&["NET_ADMIN"]),
                vec![],
                Ok(default_mask | net_admin),
            ),
            (
                "drop one",
                false,
                vec![],
                strings(&["KILL"]),
                Ok(default_mask & !kill),
            ),
            ("drop all", false, vec![], strings(&["ALL"]), Ok(0)),
            (
                "drop all, add one",
                false,
                strings(&["NET_ADMIN"]),
                strings(&["ALL"]),
                Ok(net_admin),
            ),
            ("add all", false, strings(&["ALL"]), vec![], Ok(HOST)),
            (
                "add all, drop one",
                false,
                strings(&["ALL"]),
                strings(&["KILL"]),
                Ok(HOST & !kill),
            ),
            (
                "add and drop the same",
                false,
                strings(&["NET_ADMIN"]),
                strings(&["NET_ADMIN"]),
                Ok(default_mask),
            ),
            (
                "not in the bounding set",
                false,
                strings(&["SYS_RESOURCE"]),
                vec![],
                Err(CapabilityError::NotInBoundingSet("SYS_RESOURCE".into())),
            ),
            (
                "unknown",
                false,
                vec![],
                strings(&["FLY"]),
                Err(CapabilityError::Unknown("FLY".into())),
            ),
        ];
        for (name, privileged, add, drop, want) in cases {
            let got = resolve(privileged, &add, &drop, &host).map(|s| to_mask(&s));
            assert_eq!(
                got,
                want,
                "{name}: {:?}",
                got.as_ref().map(|m| names(&from_mask(*m)))
            );
        }
    }
}
