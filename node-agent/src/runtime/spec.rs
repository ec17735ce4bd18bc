//! A container as the agent describes it ([`ContainerConfig`]), and the OCI runtime spec
//! (config.json) it becomes, with the defaults Docker and containerd apply: new pid, mount, uts
//! and ipc namespaces (the pod's network namespace joined); /proc, a tmpfs /dev with the minimal
//! devices, /dev/pts, /dev/shm, /dev/mqueue, read-only /sys and cgroup mounts; Docker's masked
//! and read-only paths and device cgroup rules; the default capability set with the
//! securityContext's additions and drops; no_new_privs; the RuntimeDefault seccomp profile;
//! RLIMIT_NOFILE as containerd sets it. A privileged container gets the host's bounding set and
//! devices, no masked paths, no seccomp. Pure: what the host contributes comes in a [`HostInfo`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

use super::capabilities::{self, CapSet, CapabilityError};
use super::seccomp;

/// What one container is to run, and how confined. Built by the agent from a pod's container
/// and its image; [`build_spec`] turns it into config.json.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Container ID: letters, digits, `_`, `+`, `-`, `.` (libcontainer's rule); also the name of
    /// the container's directory.
    pub id: String,
    /// The process: executable (looked up in the container's `PATH`) and its arguments.
    pub args: Vec<String>,
    /// `NAME=value` entries. A `PATH` is added when none is given, as containerd does.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute); empty means `/`.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Hostname inside the container's UTS namespace (the pod's name); empty leaves it unset.
    pub hostname: String,
    /// The root filesystem directory (the runtime's overlay mount when started through it).
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    /// Mounts beyond the standard ones, in order.
    pub mounts: Vec<MountSpec>,
    /// The network namespace to join (the pod's, e.g. `/run/netns/<pod>`); `None` stays in the
    /// agent's (hostNetwork).
    pub network_namespace: Option<PathBuf>,
    /// The container's cgroup, relative to the cgroup mounts (e.g. `/skiff/burstable/pod<uid>/<id>`).
    pub cgroups_path: PathBuf,
    pub resources: Resources,
    /// oom_score_adj of the container's processes (the kubelet sets it by QoS class).
    pub oom_score_adj: Option<i32>,
    pub privileged: bool,
    pub capabilities: CapabilityChanges,
    /// Kubernetes' `allowPrivilegeEscalation`: when false (and not privileged) the process gets
    /// no_new_privs. The caller applies Kubernetes' default (true).
    pub allow_privilege_escalation: bool,
    pub seccomp: SeccompMode,
}

/// One extra mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MountSpec {
    /// A host file or directory bound into the container.
    Bind {
        source: PathBuf,
        destination: PathBuf,
        readonly: bool,
    },
    /// A fresh tmpfs; `size_bytes` `None` is the kernel's default (half of RAM).
    Tmpfs {
        destination: PathBuf,
        size_bytes: Option<u64>,
    },
}

/// cgroup limits of one container, in the units the cgroup files take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// cgroup v1 `cpu.shares` from the CPU request (v2 converts it to a weight).
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per `cpu_period`, from the CPU limit.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit_bytes: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Kubernetes' `securityContext.capabilities`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityChanges {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompMode {
    #[default]
    RuntimeDefault,
    Unconfined,
}

/// What the host contributes to a spec: read once by [`HostInfo::detect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// The capability bounding set the runtime runs with.
    pub bounding_set: CapSet,
    /// The host's devices, which a privileged container gets.
    pub devices: Vec<LinuxDevice>,
    /// The hard RLIMIT_NOFILE the runtime runs with: without CAP_SYS_RESOURCE it cannot raise it.
    pub nofile_hard_limit: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container id {0:?} is invalid: use letters, digits, '_', '+', '-', '.'")]
    InvalidId(String),
    #[error("container {0}: no command to run (args is empty)")]
    NoArgs(String),
    #[error("container {id}: {what} {path:?} is not an absolute path")]
    NotAbsolute {
        id: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error("container {id}: environment entry {entry:?} has no '='")]
    BadEnv { id: String, entry: String },
    #[error("container {id}: hostname {hostname:?} is longer than 64 bytes")]
    BadHostname { id: String, hostname: String },
    #[error("container {id}: {source}")]
    Capability { id: String, source: CapabilityError },
    #[error("container {id}: building the OCI spec: {message}")]
    Build { id: String, message: String },
}

/// The `PATH` containerd gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's RLIMIT_NOFILE for containers (soft and hard), capped by the host's hard limit.
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// Docker's masked paths: hidden behind /dev/null (files) or an empty read-only tmpfs (dirs).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Checks a container ID against libcontainer's rule.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
}

fn mount(
    destination: &str,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source.into())
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// The standard mounts every container gets, in order.
fn standard_mounts(privileged: bool) -> Result<Vec<Mount>, String> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ])
}

fn extra_mount(spec: &MountSpec) -> Result<Mount, String> {
    match spec {
        MountSpec::Bind {
            source,
            destination,
            readonly,
        } => MountBuilder::default()
            .destination(destination.clone())
            .typ("bind")
            .source(source.clone())
            .options(vec![
                "rbind".to_string(),
                "rprivate".to_string(),
                if *readonly { "ro" } else { "rw" }.to_string(),
            ])
            .build()
            .map_err(|e| e.to_string()),
        MountSpec::Tmpfs {
            destination,
            size_bytes,
        } => {
            let mut options = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "mode=1777".to_string(),
            ];
            if let Some(size) = size_bytes {
                options.push(format!("size={size}"));
            }
            MountBuilder::default()
                .destination(destination.clone())
                .typ("tmpfs")
                .source("tmpfs")
                .options(options)
                .build()
                .map_err(|e| e.to_string())
        }
    }
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, String> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().map_err(|e| e.to_string())
}

/// The cgroup values of `r` (CPU shares and quota, memory and pids limits) as the OCI spec's
/// resources, for a container's config and for its pod's cgroup alike.
pub fn cgroup_limits(r: &Resources) -> Result<LinuxResourcesBuilder, String> {
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(shares) = r.cpu_shares {
        cpu = cpu.shares(shares);
    }
    if let Some(quota) = r.cpu_quota {
        cpu = cpu.quota(quota);
    }
    if let Some(period) = r.cpu_period {
        cpu = cpu.period(period);
    }
    let mut resources =
        LinuxResourcesBuilder::default().cpu(cpu.build().map_err(|e| e.to_string())?);
    if let Some(limit) = r.memory_limit_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(limit) = r.pids_limit {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(resources)
}

/// Docker's device cgroup rules: nothing but mknod in general, and the minimal devices.
fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, String> {
    use LinuxDeviceType::{A, B, C};
    if privileged {
        return Ok(vec![device_rule(true, A, None, None, "rwm")?]);
    }
    let mut rules = vec![
        device_rule(false, A, None, None, "rwm")?,
        device_rule(true, C, None, None, "m")?,
        device_rule(true, B, None, None, "m")?,
    ];
    // null, zero, full, random, urandom, tty, ptmx, then the pty slaves.
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
        rules.push(device_rule(true, C, Some(major), Some(minor), "rwm")?);
    }
    rules.push(device_rule(true, C, Some(136), None, "rwm")?);
    Ok(rules)
}

fn namespaces(config: &ContainerConfig) -> Result<Vec<LinuxNamespace>, String> {
    let mut out = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ] {
        out.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(path) = &config.network_namespace {
        out.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

fn check(config: &ContainerConfig) -> Result<(), SpecError> {
    let id = config.id.clone();
    if !valid_id(&config.id) {
        return Err(SpecError::InvalidId(id));
    }
    if config.args.is_empty() || config.args[0].is_empty() {
        return Err(SpecError::NoArgs(id));
    }
    let absolute = |what: &'static str, path: &Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(SpecError::NotAbsolute {
                id: id.clone(),
                what,
                path: path.to_path_buf(),
            })
        }
    };
    if !config.cwd.as_os_str().is_empty() {
        absolute("working directory", &config.cwd)?;
    }
    absolute("rootfs", &config.rootfs)?;
    if !config.cgroups_path.as_os_str().is_empty() {
        absolute("cgroups path", &config.cgroups_path)?;
    }
    for m in &config.mounts {
        match m {
            MountSpec::Bind {
                source,
                destination,
                ..
            } => {
                absolute("mount source", source)?;
                absolute("mount destination", destination)?;
            }
            MountSpec::Tmpfs { destination, .. } => absolute("mount destination", destination)?,
        }
    }
    if let Some(entry) = config.env.iter().find(|e| !e.contains('=')) {
        return Err(SpecError::BadEnv {
            id,
            entry: entry.clone(),
        });
    }
    if config.hostname.len() > 64 {
        return Err(SpecError::BadHostname {
            id,
            hostname: config.hostname.clone(),
        });
    }
    Ok(())
}

/// The OCI runtime spec of `config` on a host described by `host`.
pub fn build_spec(config: &ContainerConfig, host: &HostInfo) -> Result<Spec, SpecError> {
    check(config)?;
    let id = config.id.clone();
    let build = |message: String| SpecError::Build {
        id: id.clone(),
        message,
    };

    let caps = capabilities::resolve(
        config.privileged,
        &config.capabilities.add,
        &config.capabilities.drop,
        &host.bounding_set,
    )
    .map_err(|source| SpecError::Capability {
        id: id.clone(),
        source,
    })?;
    let cap_set: HashSet<Capability> = caps.iter().filter_map(|c| c.capability()).collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(|e| build(e.to_string()))?;

    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = if config.cwd.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        config.cwd.clone()
    };
    let nofile = NOFILE_LIMIT.min(host.nofile_hard_limit);
    let rlimit = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(nofile)
        .hard(nofile)
        .build()
        .map_err(|e| build(e.to_string()))?;
    let user = UserBuilder::default()
        .uid(config.uid)
        .gid(config.gid)
        .additional_gids(config.additional_gids.clone())
        .build()
        .map_err(|e| build(e.to_string()))?;
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(config.args.clone())
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![rlimit])
        .build()
        .map_err(|e| build(e.to_string()))?;
    process.set_oom_score_adj(config.oom_score_adj);
    // Absent rather than false when not wanted: libcontainer 0.7 takes any value as "set" when
    // it decides whether to load seccomp before dropping capabilities (needed without
    // no_new_privs) or just before exec, and loading it late without no_new_privs fails.
    let no_new_privs = !config.privileged && !config.allow_privilege_escalation;
    process.set_no_new_privileges(no_new_privs.then_some(true));

    let mut mounts = standard_mounts(config.privileged).map_err(&build)?;
    for m in &config.mounts {
        mounts.push(extra_mount(m).map_err(&build)?);
    }

    let resources = cgroup_limits(&config.resources)
        .map_err(&build)?
        .devices(device_rules(config.privileged).map_err(&build)?);

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(config).map_err(&build)?)
        .resources(resources.build().map_err(|e| build(e.to_string()))?)
        .cgroups_path(config.cgroups_path.clone());
    if config.privileged {
        linux = linux
            .devices(host.devices.clone())
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
        if config.seccomp == SeccompMode::RuntimeDefault {
            linux = linux.seccomp(seccomp::runtime_default(&caps));
        }
    }
    let linux = linux.build().map_err(|e| build(e.to_string()))?;

    let root = RootBuilder::default()
        .path(config.rootfs.clone())
        .readonly(config.readonly_rootfs)
        .build()
        .map_err(|e| build(e.to_string()))?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(|e| build(e.to_string()))?;
    spec.set_hostname(if config.hostname.is_empty() {
        None
    } else {
        Some(config.hostname.clone())
    });
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::{from_mask, to_mask, CapNumber};
    use oci_spec::runtime::LinuxSeccompAction;

    fn host() -> HostInfo {
        HostInfo {
            bounding_set: from_mask(0x01ff_feff_ffff),
            devices: vec![oci_spec::runtime::LinuxDeviceBuilder::default()
                .path("/dev/vda")
                .typ(LinuxDeviceType::B)
                .major(254)
                .minor(0)
                .build()
                .unwrap()],
            nofile_hard_limit: 20_000,
        }
    }

    fn base() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into()],
            rootfs: "/var/lib/skiff/c1/rootfs".into(),
            cgroups_path: "/skiff/besteffort/podu/c1".into(),
            hostname: "web-0".into(),
            allow_privilege_escalation: true,
            ..Default::default()
        }
    }

    fn mask(spec: &Spec) -> u64 {
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let set = caps
            .effective()
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| CapNumber::of(*c))
            .collect();
        assert_eq!(caps.bounding(), caps.effective());
        assert_eq!(caps.permitted(), caps.effective());
        assert!(caps.ambient().as_ref().unwrap().is_empty());
        to_mask(&set)
    }

    #[test]
    fn defaults() {
        let spec = build_spec(&base(), &host()).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap()[0], "sh");
        assert_eq!(
            process.env().as_ref().unwrap(),
            &vec![DEFAULT_PATH.to_string(), "A=1".to_string()]
        );
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(process.no_new_privileges(), None);
        let rlimits = process.rlimits().as_ref().unwrap();
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!(rlimits[0].hard(), 20_000, "capped by the host's hard limit");
        assert_eq!(mask(&spec), 0xa80425fb);
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));

        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            ns,
            vec![
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Ipc
            ]
        );
        assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 12);
        assert_eq!(linux.readonly_paths().as_ref().unwrap().len(), 5);
        assert!(linux.devices().is_none());
        let seccomp = linux.seccomp().as_ref().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/skiff/besteffort/podu/c1"))
        );
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!devices[0].allow(), "deny all first");
        assert_eq!(devices.len(), 11);

        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        let sys = &spec.mounts().as_ref().unwrap()[5];
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    }

    /// (name, change to the base config, check on the spec)
    type Case = (&'static str, fn(&mut ContainerConfig), fn(&Spec));

    #[test]
    fn variations() {
        let cases: Vec<Case> = vec![
            (
                "privileged",
                |c| c.privileged = true,
                |s| {
                    assert_eq!(mask(s), 0x01ff_feff_ffff);
                    let linux = s.linux().as_ref().unwrap();
                    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
                    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
                    assert!(linux.seccomp().is_none());
                    assert_eq!(linux.devices().as_ref().unwrap().len(), 1);
                    let rules = linux
                        .resources()
                        .as_ref()
                        .unwrap()
                        .devices()
                        .as_ref()
                        .unwrap();
                    assert_eq!(rules.len(), 1);
                    assert!(rules[0].allow());
                    let sys = &s.mounts().as_ref().unwrap()[5];
                    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
                    assert_eq!(s.process().as_ref().unwrap().no_new_privileges(), None);
                },
            ),
            (
                "no privilege escalation",
                |c| c.allow_privilege_escalation = false,
                |s| {
                    assert_eq!(
                        s.process().as_ref().unwrap().no_new_privileges(),
                        Some(true)
                    )
                },
            ),
            (
                "privileged beats no escalation",
                |c| {
                    c.allow_privilege_escalation = false;
                    c.privileged = true
                },
                |s| assert_eq!(s.process().as_ref().unwrap().no_new_privileges(), None),
            ),
            (
                "capabilities",
                |c| {
                    c.capabilities.add = vec!["NET_ADMIN".into()];
                    c.capabilities.drop = vec!["KILL".into(), "CAP_CHOWN".into()];
                },
                |s| assert_eq!(mask(s), (0xa80425fb | 1 << 12) & !(1 << 5) & !1),
            ),
            (
                "unconfined seccomp",
                |c| c.seccomp = SeccompMode::Unconfined,
                |s| assert!(s.linux().as_ref().unwrap().seccomp().is_none()),
            ),
            (
                "user, cwd, readonly root, own PATH",
                |c| {
                    c.uid = 1000;
                    c.gid = 2000;
                    c.additional_gids = vec![3000];
                    c.cwd = "/work".into();
                    c.readonly_rootfs = true;
                    c.env = vec!["PATH=/bin".into()];
                },
                |s| {
                    let p = s.process().as_ref().unwrap();
                    assert_eq!((p.user().uid(), p.user().gid()), (1000, 2000));
                    assert_eq!(p.user().additional_gids().as_deref(), Some(&[3000u32][..]));
                    assert_eq!(p.cwd(), Path::new("/work"));
                    assert_eq!(p.env().as_deref(), Some(&["PATH=/bin".to_string()][..]));
                    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
                },
            ),
            (
                "network namespace joined",
                |c| c.network_namespace = Some("/run/netns/pod".into()),
                |s| {
                    let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
                    let net = ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network);
                    assert_eq!(
                        net.and_then(|n| n.path().clone()),
                        Some(PathBuf::from("/run/netns/pod"))
                    );
                },
            ),
            (
                "resources",
                |c| {
                    c.resources = Resources {
                        cpu_shares: Some(512),
                        cpu_quota: Some(50_000),
                        cpu_period: Some(100_000),
                        memory_limit_bytes: Some(64 << 20),
                        pids_limit: Some(100),
                    }
                },
                |s| {
                    let r = s.linux().as_ref().unwrap().resources().clone().unwrap();
                    let cpu = r.cpu().clone().unwrap();
                    assert_eq!(
                        (cpu.shares(), cpu.quota(), cpu.period()),
                        (Some(512), Some(50_000), Some(100_000))
                    );
                    assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
                    assert_eq!(r.pids().unwrap().limit(), 100);
                },
            ),
            (
                "extra mounts",
                |c| {
                    c.mounts = vec![
                        MountSpec::Bind {
                            source: "/var/lib/pod/hosts".into(),
                            destination: "/etc/hosts".into(),
                            readonly: true,
                        },
                        MountSpec::Tmpfs {
                            destination: "/cache".into(),
                            size_bytes: Some(1 << 20),
                        },
                    ]
                },
                |s| {
                    let mounts = s.mounts().as_ref().unwrap();
                    let hosts = &mounts[7];
                    assert_eq!(hosts.destination(), Path::new("/etc/hosts"));
                    assert_eq!(
                        hosts.options().as_deref(),
                        Some(&["rbind".to_string(), "rprivate".into(), "ro".into()][..])
                    );
                    let cache = &mounts[8];
                    assert_eq!(cache.typ().as_deref(), Some("tmpfs"));
                    assert!(cache
                        .options()
                        .as_ref()
                        .unwrap()
                        .contains(&"size=1048576".to_string()));
                },
            ),
        ];
        for (name, change, check) in cases {
            let mut config = base();
            change(&mut config);
            let spec = build_spec(&config, &host()).unwrap_or_else(|e| panic!("{name}: {e}"));
            check(&spec);
        }
    }

    /// (name, change to the base config, part of the error)
    type BadCase = (&'static str, fn(&mut ContainerConfig), &'static str);

    #[test]
    fn rejects_bad_input() {
        let cases: Vec<BadCase> = vec![
            (
                "bad id",
                |c| c.id = "a/b".into(),
                "container id \"a/b\" is invalid",
            ),
            ("no args", |c| c.args.clear(), "no command to run"),
            (
                "relative cwd",
                |c| c.cwd = "work".into(),
                "working directory \"work\"",
            ),
            (
                "env",
                |c| c.env = vec!["NOEQUALS".into()],
                "\"NOEQUALS\" has no '='",
            ),
            (
                "capability",
                |c| c.capabilities.add = vec!["SYS_RESOURCE".into()],
                "SYS_RESOURCE is not in this host's bounding set",
            ),
            (
                "mount",
                |c| {
                    c.mounts = vec![MountSpec::Tmpfs {
                        destination: "tmp".into(),
                        size_bytes: None,
                    }]
                },
                "mount destination \"tmp\"",
            ),
        ];
        for (name, change, want) in cases {
            let mut config = base();
            change(&mut config);
            let err = build_spec(&config, &host()).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
