//! Limits measured from what the kernel counts, not from the files written: a busy loop under
//! a CPU limit of 200m gets about a fifth of a core, and a pids limit stops a fork bomb, on
//! whichever cgroup version the host has (this machine: v1 controllers).

mod runtime_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use runtime_support::{root_or_skip, Fixture};

/// CPU time the container's cgroup has used, from cpuacct (v1) or cpu.stat (v2).
fn cpu_used(f: &Fixture, id: &str) -> Option<Duration> {
    let v1: PathBuf = ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct"]
        .iter()
        .map(|b| {
            PathBuf::from(b)
                .join(&f.cgroup_root)
                .join(id)
                .join("cpuacct.usage")
        })
        .find(|p| p.exists())?;
    if let Ok(ns) = std::fs::read_to_string(&v1) {
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
    let start_cpu = loop {
        if let Some(c) = cpu_used(&f, "busy") {
            break c;
        }
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
