//! A pod's container as the runtime's `ContainerConfig`: the process (argv, environment,
//! working directory, user), the security context (user and group, runAsNonRoot, privileged,
//! capabilities, read-only root, privilege escalation, seccomp), cgroup limits from requests
//! and limits (CPU shares and CFS quota, memory, the pod's pids limit), the OOM score the
//! kubelet gives each QoS class, and the pod's files and volumes bound in. Pure.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SecurityContext};
use skiff_api::quantity::Quantity;

use crate::pods::status::qos_class;
use crate::runtime::cgroups::{cpu_quota, cpu_shares, CFS_PERIOD_US};
use crate::runtime::spec::{CapabilityChanges, ContainerConfig, MountSpec, Resources, SeccompMode};

/// The CFS period the kubelet uses (100 ms).
pub const CPU_PERIOD: u64 = CFS_PERIOD_US;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("container has runAsNonRoot and image will run as root")]
    RunsAsRoot,
    #[error("container has runAsNonRoot and image has non-numeric user ({0}), cannot verify user is non-root")]
    NonNumeric(String),
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

/// Everything about the pod and node a container's config needs besides the container.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub netns: Option<PathBuf>,
    /// The pod's cgroup (`/skiff/burstable/pod<uid>`); containers go below it.
    pub pod_cgroup: PathBuf,
    /// /etc/hosts, /etc/hostname, /etc/resolv.conf written for the pod.
    pub etc_dir: PathBuf,
    pub hostname: String,
    pub node_memory_bytes: u64,
}

fn quantity(c: &Container, which: &str, name: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let m = if which == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    Quantity::parse(&m.get(name)?.0).ok()
}

/// The pod's CPU request in millicores, as the kubelet sums it: its app containers' together,
/// or an init container's if larger (a container's limit stands for a missing request).
pub fn pod_cpu_request_milli(spec: &PodSpec) -> i64 {
    let cpu = |c: &Container| {
        quantity(c, "requests", "cpu")
            .or_else(|| quantity(c, "limits", "cpu"))
            .map(|q| q.milli_value())
            .unwrap_or(0)
    };
    let apps: i64 = spec.containers.iter().map(cpu).sum();
    let inits = spec.init_containers.iter().flatten().map(cpu);
    inits.fold(apps, i64::max)
}

/// The pod's cgroup limits, as the kubelet's pod-level cgroup: what the pod needs is the larger
/// of its app containers' sum and its largest init container (init containers run one at a
/// time, before the others); CPU shares from the requests; a CPU quota and a memory limit only
/// when every container has that limit; `pids_limit` for the whole pod.
pub fn pod_resources(spec: &PodSpec, pids_limit: Option<i64>) -> Resources {
    let apps = &spec.containers;
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    // The pod's total of one amount, or None when a container lacks it.
    let total = |amount: &dyn Fn(&Container) -> Option<i64>| -> Option<i64> {
        let sum = apps.iter().map(amount).sum::<Option<i64>>()?;
        let init = inits.iter().map(amount).collect::<Option<Vec<i64>>>()?;
        Some(init.into_iter().fold(sum, i64::max))
    };
    let cpu_request = pod_cpu_request_milli(spec);
    let cpu_limit = total(&|c| quantity(c, "limits", "cpu").map(|q| q.milli_value()));
    let memory = total(&|c| quantity(c, "limits", "memory").map(|q| q.value()));
    Resources {
        cpu_shares: Some(cpu_shares(cpu_request)),
        cpu_quota: cpu_limit.map(|l| cpu_quota(l, CPU_PERIOD)),
        cpu_period: cpu_limit.map(|_| CPU_PERIOD),
        memory_limit_bytes: memory,
        pids_limit,
    }
}

/// cgroup limits from the container's requests and limits (a missing request takes the limit,
/// as the API server defaults it). The pids limit is the pod's (see [`pod_resources`]).
pub fn resources(c: &Container) -> Resources {
    let cpu_request = quantity(c, "requests", "cpu").or_else(|| quantity(c, "limits", "cpu"));
    let cpu_limit = quantity(c, "limits", "cpu");
    let memory = quantity(c, "limits", "memory");
    Resources {
        cpu_shares: Some(cpu_shares(
            cpu_request.map(|q| q.milli_value()).unwrap_or(0),
        )),
        cpu_quota: cpu_limit
            .as_ref()
            .map(|q| cpu_quota(q.milli_value(), CPU_PERIOD)),
        cpu_period: cpu_limit.map(|_| CPU_PERIOD),
        memory_limit_bytes: memory.map(|q| q.value()),
        pids_limit: None,
    }
}

/// The kubelet's oom_score_adj: Guaranteed −997, BestEffort 1000, Burstable between by how
/// much of the node's memory the container requests.
pub fn oom_score_adj(pod: &Pod, c: &Container, node_memory_bytes: u64) -> i32 {
    match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = quantity(c, "requests", "memory")
                .or_else(|| quantity(c, "limits", "memory"))
                .map(|q| q.value().max(0) as u64)
                .unwrap_or(0);
            let adj = 1000 - (1000 * request / node_memory_bytes.max(1)) as i64;
            adj.clamp(2, 999) as i32
        }
    }
}

/// The effective security context: the container's fields over the pod's.
fn effective(pod: &Pod, c: &Container) -> SecurityContext {
    let mut s = c.security_context.clone().unwrap_or_default();
    if let Some(p) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        s.run_as_user = s.run_as_user.or(p.run_as_user);
        s.run_as_group = s.run_as_group.or(p.run_as_group);
        s.run_as_non_root = s.run_as_non_root.or(p.run_as_non_root);
        if s.seccomp_profile.is_none() {
            s.seccomp_profile = p.seccomp_profile.clone();
        }
    }
    s
}

/// Finds `name` in a passwd- or group-shaped file of the image: (id, primary gid).
fn lookup_id(layers: &[PathBuf], file: &str, name: &str) -> Option<(u32, u32)> {
    for layer in layers.iter().rev() {
        let Ok(text) = std::fs::read_to_string(layer.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.first() == Some(&name) && f.len() > 2 {
                let id = f[2].parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                return Some((id, gid));
            }
        }
        return None;
    }
    None
}

/// The user and group the process runs as: runAsUser/runAsGroup, else the image's USER
/// (`uid`, `uid:gid`, `name`, `name:group`), else root; runAsNonRoot checked.
pub fn user(
    pod: &Pod,
    c: &Container,
    image_user: &str,
    layers: &[PathBuf],
) -> Result<(u32, u32), UserError> {
    let sc = effective(pod, c);
    let (image_u, image_g) = image_user.split_once(':').unwrap_or((image_user, ""));
    let (mut uid, mut gid) = (0u32, 0u32);
    let mut numeric = true;
    if let Some(u) = sc.run_as_user {
        uid = u as u32;
    } else if !image_u.is_empty() {
        match image_u.parse::<u32>() {
            Ok(u) => uid = u,
            Err(_) => {
                numeric = false;
                let (u, g) = lookup_id(layers, "etc/passwd", image_u)
                    .ok_or_else(|| UserError::UnknownUser(image_u.into()))?;
                uid = u;
                gid = g;
            }
        }
    }
    if let Some(g) = sc.run_as_group {
        gid = g as u32;
    } else if !image_g.is_empty() {
        gid = match image_g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => {
                lookup_id(layers, "etc/group", image_g)
                    .ok_or_else(|| UserError::UnknownGroup(image_g.into()))?
                    .0
            }
        };
    }
    if sc.run_as_non_root == Some(true) && sc.run_as_user.is_none() {
        if !numeric {
            return Err(UserError::NonNumeric(image_u.into()));
        }
        if uid == 0 {
            return Err(UserError::RunsAsRoot);
        }
    }
    if sc.run_as_non_root == Some(true) && uid == 0 {
        return Err(UserError::RunsAsRoot);
    }
    Ok((uid, gid))
}

/// The container's mounts: its volumes (`volumes::container_mounts`) and the pod's /etc files,
/// except where a volume is mounted on the same path; parents before children, as containerd
/// orders mounts.
pub fn mounts(etc_dir: &Path, volumes: Vec<MountSpec>) -> Vec<MountSpec> {
    let destination = |m: &MountSpec| match m {
        MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. } => {
            destination.clone()
        }
    };
    let mut out = volumes;
    for name in ["hosts", "hostname", "resolv.conf"] {
        let at = PathBuf::from("/etc").join(name);
        if !out.iter().any(|m| destination(m) == at) {
            out.push(MountSpec::Bind {
                source: etc_dir.join(name),
                destination: at,
                readonly: false,
            });
        }
    }
    out.sort_by_key(|m| destination(m).components().count());
    out
}

/// The runtime's config for one container.
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    ctx: &PodContext<'_>,
    c: &Container,
    id: &str,
    rootfs: &Path,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    (uid, gid): (u32, u32),
    volume_mounts: Vec<MountSpec>,
) -> ContainerConfig {
    let sc = effective(ctx.pod, c);
    let privileged = sc.privileged == Some(true);
    let seccomp = match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        Some("Unconfined") => SeccompMode::Unconfined,
        _ if privileged => SeccompMode::Unconfined,
        _ => SeccompMode::RuntimeDefault,
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    ContainerConfig {
        id: id.into(),
        args: argv,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: cwd.into(),
        uid,
        gid,
        additional_gids: ctx
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|g| g as u32)
            .collect(),
        hostname: ctx.hostname.clone(),
        rootfs: rootfs.into(),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        mounts: mounts(&ctx.etc_dir, volume_mounts),
        network_namespace: ctx.netns.clone(),
        cgroups_path: ctx.pod_cgroup.join(id),
        resources: resources(c),
        oom_score_adj: Some(oom_score_adj(ctx.pod, c, ctx.node_memory_bytes)),
        privileged,
        capabilities: CapabilityChanges {
            add: caps.add.unwrap_or_default(),
            drop: caps.drop.unwrap_or_default(),
        },
        allow_privilege_escalation: sc.allow_privilege_escalation.unwrap_or(true),
        seccomp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let m = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Q(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: m(requests),
                limits: m(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod_with(c: &Container) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![c.clone()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn limits_become_cgroup_values() {
        let c = container(&[("cpu", "250m")], &[("cpu", "200m"), ("memory", "64Mi")]);
        let r = resources(&c);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(20_000));
        assert_eq!(r.cpu_period, Some(CPU_PERIOD));
        assert_eq!(r.memory_limit_bytes, Some(64 << 20));
        assert_eq!(r.pids_limit, None);
        let none = resources(&container(&[], &[]));
        assert_eq!(none.cpu_shares, Some(2));
        assert_eq!(none.cpu_quota, None);
        assert_eq!(
            resources(&container(&[], &[("cpu", "1")])).cpu_shares,
            Some(1024)
        );
    }

    #[test]
    fn a_pod_gets_its_containers_total_or_its_largest_init_container() {
        let app1 = container(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")]);
        let app2 = container(&[("cpu", "100m")], &[("cpu", "200m"), ("memory", "32Mi")]);
        let big_init = container(&[("cpu", "2")], &[("cpu", "2"), ("memory", "16Mi")]);
        let spec = |apps: Vec<Container>, inits: Vec<Container>| PodSpec {
            containers: apps,
            init_containers: Some(inits),
            ..Default::default()
        };
        let r = pod_resources(&spec(vec![app1.clone(), app2.clone()], vec![]), Some(64));
        assert_eq!(r.cpu_shares, Some(cpu_shares(350)));
        assert_eq!(r.cpu_quota, Some(70_000));
        assert_eq!(r.memory_limit_bytes, Some(96 << 20));
        assert_eq!(r.pids_limit, Some(64));
        // A larger init container raises what the pod may use while it runs.
        let r = pod_resources(
            &spec(vec![app1.clone(), app2.clone()], vec![big_init]),
            None,
        );
        assert_eq!(r.cpu_shares, Some(2048));
        assert_eq!(r.cpu_quota, Some(200_000));
        assert_eq!(r.memory_limit_bytes, Some(96 << 20));
        // One container without a limit: no pod limit for that resource.
        let unlimited = container(&[("cpu", "100m")], &[]);
        let r = pod_resources(&spec(vec![app1, unlimited], vec![]), None);
        assert_eq!((r.cpu_quota, r.memory_limit_bytes), (None, None));
        assert_eq!(r.cpu_shares, Some(cpu_shares(350)));
    }

    #[test]
    fn volumes_mount_beside_the_pod_files_parents_first() {
        let bind = |source: &str, destination: &str| MountSpec::Bind {
            source: source.into(),
            destination: destination.into(),
            readonly: false,
        };
        let got = mounts(
            Path::new("/pod/etc"),
            vec![
                bind("/v/conf", "/etc/app/conf"),
                bind("/v/hosts", "/etc/hosts"),
                bind("/v/data", "/data"),
            ],
        );
        assert_eq!(
            got,
            [
                bind("/v/data", "/data"),
                bind("/v/hosts", "/etc/hosts"),
                bind("/pod/etc/hostname", "/etc/hostname"),
                bind("/pod/etc/resolv.conf", "/etc/resolv.conf"),
                bind("/v/conf", "/etc/app/conf"),
            ]
        );
    }

    #[test]
    fn oom_scores_follow_qos() {
        let g = container(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        assert_eq!(oom_score_adj(&pod_with(&g), &g, 4 << 30), -997);
        let b = container(&[("memory", "1Gi")], &[]);
        assert_eq!(oom_score_adj(&pod_with(&b), &b, 4 << 30), 750);
        let e = container(&[], &[]);
        assert_eq!(oom_score_adj(&pod_with(&e), &e, 4 << 30), 1000);
    }

    #[test]
    fn users_come_from_the_context_or_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:101:102::/:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        let layers = vec![dir.path().to_path_buf()];
        let c = Container::default();
        let mut pod = pod_with(&c);
        assert_eq!(user(&pod, &c, "", &layers), Ok((0, 0)));
        assert_eq!(user(&pod, &c, "1000", &layers), Ok((1000, 0)));
        assert_eq!(user(&pod, &c, "1000:7", &layers), Ok((1000, 7)));
        assert_eq!(user(&pod, &c, "web", &layers), Ok((101, 102)));
        assert_eq!(user(&pod, &c, "web:staff", &layers), Ok((101, 50)));
        assert_eq!(
            user(&pod, &c, "nobody", &layers),
            Err(UserError::UnknownUser("nobody".into()))
        );
        if let Some(s) = pod.spec.as_mut() {
            s.security_context = Some(PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            });
        }
        assert_eq!(user(&pod, &c, "", &layers), Err(UserError::RunsAsRoot));
        assert_eq!(
            user(&pod, &c, "web", &layers),
            Err(UserError::NonNumeric("web".into()))
        );
        assert_eq!(user(&pod, &c, "1000", &layers), Ok((1000, 0)));
        if let Some(s) = pod.spec.as_mut().and_then(|s| s.security_context.as_mut()) {
            s.run_as_user = Some(2000);
            s.run_as_group = Some(3000);
        }
        assert_eq!(user(&pod, &c, "web", &layers), Ok((2000, 3000)));
    }
}
