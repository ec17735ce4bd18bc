//! Limits measured from what the kernel counts, not from the files written: a busy loop under
//! a CPU limit of 200m gets about a fifth of a core, and a pids limit stops a fork bomb; and a
//! pod's own cgroup, with the pod's limits, holds its containers; and the levels above the
//! pods get the values the QoS classes and the node's allocatable make; on
//! whichever cgroup version the host has (this machine: v1 controllers; the VM of
//! `tests/tests/cgroup_v2`: v2).

mod runtime_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use node_agent::runtime::cgroups::remove_cgroup;
use node_agent::runtime::cgroups::QosClass;
use node_agent::runtime::qos_cgroups::{self, Allocatable, PodDemand};
use node_agent::runtime::{pod_cgroup, Resources};
use runtime_support::{root_or_skip, Fixture};

/// CPU time the container's cgroup has used, from cpuacct (v1) or cpu.stat (v2).
fn cpu_used(f: &Fixture, id: &str) -> Option<Duration> {
    let v1 = ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct"]
        .iter()
        .map(|b| {
            PathBuf::from(b)
                .join(&f.cgroup_root)
                .join(id)
                .join("cpuacct.usage")
        })
        .find(|p| p.exists());
    if let Some(v1) = v1 {
        let ns = std::fs::read_to_string(&v1).ok()?;
        return ns.trim().parse().ok().map(Duration::from_nanos);
    }
    let v2 = PathBuf::from("/sys/fs/cgroup")
        .join(&f.cgroup_root)
        .join(id)
        .join("cpu.stat");
    let stat = std::fs::read_to_string(v2).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_micros)
}

#[tokio::test]
async fn a_busy_loop_under_200m_gets_a_fifth_of_a_core() {
    if !root_or_skip("a_busy_loop_under_200m_gets_a_fifth_of_a_core") {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config("busy", &["sh", "-c", "while :; do :; done"]);
    config.resources.cpu_quota = Some(20_000);
    config.resources.cpu_period = Some(100_000);
    f.start(&config).await;
    // Measure over two seconds of wall time once the loop runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let start_cpu = loop {
        if let Some(c) = cpu_used(&f, "busy") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no CPU usage readable for the container's cgroup"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_used(&f, "busy").expect("cpu usage") - start_cpu;
    let share = used.as_secs_f64() / t0.elapsed().as_secs_f64();
    println!("busy loop under 200m: {:.1} % of a core", share * 100.0);
    f.containers
        .signal("busy", Signal::SIGKILL)
        .expect("killed");
    f.exited("busy").await;
    f.containers.remove("busy").await.expect("removed");
    // The quota caps it at 20 %; on a loaded 2-core machine it may get less, never more.
    assert!(
        share <= 0.25,
        "{:.1} % of a core under a 200m limit",
        share * 100.0
    );
    assert!(share >= 0.05, "the loop hardly ran: {:.1} %", share * 100.0);
}

#[tokio::test]
async fn a_pids_limit_stops_a_fork_bomb() {
    if !root_or_skip("a_pids_limit_stops_a_fork_bomb") {
        return;
    }
    let mut f = Fixture::new();
    // Twenty background sleeps: fine without a limit, a failed fork under a limit of ten.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
                  sleep 30 & done; echo all started; kill $(jobs -p)";
    for (id, limit) in [("free", None), ("capped", Some(10))] {
        let mut config = f.config(id, &["sh", "-c", script]);
        config.resources.pids_limit = limit;
        f.start(&config).await;
        let exit = f.exited(id).await;
        let log: Vec<String> = f.log(id).into_iter().map(|r| r.content).collect();
        let failed = log.iter().any(|l| l.contains("can't fork"));
        match limit {
            None => assert!(
                !failed && log.contains(&"all started".to_string()),
                "{log:?}"
            ),
            Some(_) => {
                assert!(failed, "a fork failed under the limit: {log:?}");
                assert!(
                    !log.contains(&"all started".to_string()),
                    "{log:?} {exit:?}"
                );
            }
        }
        f.containers.remove(id).await.expect("removed");
    }
}

#[tokio::test]
async fn a_pod_cgroup_holds_its_containers() {
    if !root_or_skip("a_pod_cgroup_holds_its_containers") {
        return;
    }
    let mut f = Fixture::new();
    let pod = PathBuf::from(format!("/{}/burstable/podu1", f.cgroup_root));
    let limits = Resources {
        cpu_shares: Some(204),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit_bytes: Some(96 << 20),
        pids_limit: Some(50),
    };
    pod_cgroup::ensure(&pod, &limits).expect("the pod cgroup");
    let mut config = f.config("inpod", &["sleep", "1000"]);
    config.cgroups_path = pod.join("inpod");
    let info = f.start(&config).await;

    let rel = pod.strip_prefix("/").expect("absolute");
    let rel = rel.display();
    let files: Vec<(String, String)> = if Path::new("/sys/fs/cgroup/memory").exists() {
        vec![
            (format!("cpu/{rel}/cpu.shares"), "204".into()),
            (format!("cpu/{rel}/cpu.cfs_quota_us"), "50000".into()),
            (
                format!("memory/{rel}/memory.limit_in_bytes"),
                (96u64 << 20).to_string(),
            ),
            (format!("pids/{rel}/pids.max"), "50".into()),
            (
                format!("pids/{rel}/inpod/cgroup.procs"),
                info.pid.to_string(),
            ),
        ]
    } else {
        // The levels above the pod give it the controllers its limits need.
        let control = Path::new("/sys/fs/cgroup")
            .join(&f.cgroup_root)
            .join("burstable/cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control).expect("subtree_control");
        for c in ["cpu", "memory", "pids"] {
            assert!(
                enabled.split_whitespace().any(|e| e == c),
                "{control:?}: {enabled}"
            );
        }
        vec![
            (format!("{rel}/cpu.max"), "50000 100000".into()),
            (format!("{rel}/memory.max"), (96u64 << 20).to_string()),
            (format!("{rel}/pids.max"), "50".into()),
            (format!("{rel}/inpod/cgroup.procs"), info.pid.to_string()),
        ]
    };
    for (file, want) in files {
        let path = Path::new("/sys/fs/cgroup").join(&file);
        let got = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(got.trim(), want, "{file}");
    }

    f.containers
        .signal("inpod", Signal::SIGKILL)
        .expect("killed");
    f.exited("inpod").await;
    f.containers.remove("inpod").await.expect("removed");
    remove_cgroup(&pod).expect("pod cgroup removed");
    remove_cgroup(pod.parent().expect("the QoS level")).expect("QoS level removed");
}

/// The cgroup v2 `cpu.weight` for v1 `cpu.shares`: the mapping runc and libcgroups use
/// (shares 2 are weight 1, 1024 about 100, 262144 are 10000, a quadratic in log2 between).
fn weight_of_shares(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    let l = (shares as f64).log2();
    let weight = 10f64.powf((l * l + 125.0 * l) / 612.0 - 7.0 / 34.0).ceil() as u64;
    weight.clamp(1, 10_000)
}

/// Each level's CPU shares and memory limit as the host's files hold them; `None` for a memory
/// limit of none.
fn level_values(root: &str, level: &str) -> (u64, Option<u64>) {
    let read = |path: PathBuf| {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        text.trim().to_string()
    };
    let rel = Path::new(root).join(level);
    let sys = Path::new("/sys/fs/cgroup");
    if sys.join("memory").exists() {
        let shares = read(sys.join("cpu").join(&rel).join("cpu.shares"));
        let memory = read(sys.join("memory").join(&rel).join("memory.limit_in_bytes"));
        let memory: u64 = memory.parse().expect("memory.limit_in_bytes");
        // v1 writes "no limit" as the largest page-aligned count.
        let memory = (memory < 1 << 62).then_some(memory);
        (shares.parse().expect("cpu.shares"), memory)
    } else {
        let weight = read(sys.join(&rel).join("cpu.weight"));
        let memory = read(sys.join(&rel).join("memory.max"));
        (
            weight.parse().expect("cpu.weight"),
            (memory != "max").then(|| memory.parse().expect("memory.max")),
        )
    }
}

#[test]
fn qos_levels_get_the_node_and_class_values() {
    if !root_or_skip("qos_levels_get_the_node_and_class_values") {
        return;
    }
    let f = Fixture::new();
    let root = f.cgroup_root.clone();
    let v1 = Path::new("/sys/fs/cgroup/memory").exists();
    let cpu = |shares: u64| if v1 { shares } else { weight_of_shares(shares) };
    let pod = |qos, cpu_request_milli| PodDemand {
        qos,
        cpu_request_milli,
    };
    let allocatable = Allocatable::new(3, 1536 << 20, 1000, 1024 << 20);
    let mut pods = vec![
        pod(QosClass::Burstable, 250),
        pod(QosClass::Burstable, 250),
        pod(QosClass::Guaranteed, 1000),
        pod(QosClass::BestEffort, 0),
    ];
    qos_cgroups::write(&qos_cgroups::levels(&root, &pods, allocatable)).expect("levels written");
    assert_eq!(level_values(&root, ""), (cpu(2048), Some(512 << 20)));
    assert_eq!(level_values(&root, "burstable"), (cpu(512), None));
    assert_eq!(level_values(&root, "besteffort"), (cpu(2), None));

    // With a pod's cgroup below it, a level takes new values: one Burstable pod fewer.
    let pod_path = PathBuf::from(format!("/{root}/burstable/podu1"));
    pod_cgroup::ensure(&pod_path, &Resources::default()).expect("the pod cgroup");
    pods.remove(0);
    qos_cgroups::write(&qos_cgroups::levels(&root, &pods, allocatable)).expect("rewritten");
    assert_eq!(level_values(&root, ""), (cpu(2048), Some(512 << 20)));
    assert_eq!(level_values(&root, "burstable"), (cpu(256), None));
    assert_eq!(level_values(&root, "besteffort"), (cpu(2), None));

    remove_cgroup(&pod_path).expect("pod cgroup removed");
    for level in ["burstable", "besteffort"] {
        remove_cgroup(Path::new(&format!("/{root}/{level}"))).expect("QoS level removed");
    }
}
