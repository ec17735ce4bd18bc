//! A container's life through the real shim: stopped by signals, OOM-killed under a memory
//! limit, held by a shim that outlives the handle that started it, and timed end to end.

mod runtime_support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use node_agent::runtime::shim_state::{is_alive, parse_stat, read_json, ShimRecord, SHIM};
use node_agent::runtime::{ContainerState, Containers, RuntimeError};
use runtime_support::{root_or_skip, Fixture};

#[tokio::test]
async fn signals_stop_containers() {
    if !root_or_skip("signals_stop_containers") {
        return;
    }
    let mut f = Fixture::new();

    // `sleep` as the namespace's PID 1 has no SIGTERM handler, so the kernel does not deliver
    // SIGTERM to it (pid_namespaces(7)), as under runc; SIGKILL always ends it.
    f.start(&f.config("sleeper", &["sleep", "1000"])).await;
    f.containers.signal("sleeper", Signal::SIGTERM).unwrap();
    let state = f
        .containers
        .wait_exited("sleeper", Duration::from_millis(300))
        .await;
    assert!(state.is_running(), "{state:?}");
    f.containers.signal("sleeper", Signal::SIGKILL).unwrap();
    let exit = f.exited("sleeper").await;
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert_eq!(exit.reason, "Error");
    // Once it ended, signals are refused rather than sent to whatever has the pid now.
    assert!(matches!(
        f.containers.signal("sleeper", Signal::SIGKILL),
        Err(RuntimeError::NotRunning(_))
    ));

    // A `sleep 1000` that is not PID 1 (its init forwards SIGTERM, as tini does) dies of it.
    // The signal goes only once the trap is set (it says so in its log).
    let forwarder = "trap 'kill -TERM $child' TERM; sleep 1000 & child=$!; echo trapped; \
                     wait $child; wait $child; exit $?";
    f.start(&f.config("forwarder", &["sh", "-c", forwarder]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f.log("forwarder").iter().any(|r| r.content == "trapped") {
        assert!(
            Instant::now() < deadline,
            "the forwarder never set its trap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.containers.signal("forwarder", Signal::SIGTERM).unwrap();
    let exit = f.exited("forwarder").await;
    assert_eq!(exit.exit_code, 143, "{exit:?} {:?}", f.log("forwarder"));

    for id in ["sleeper", "forwarder"] {
        f.containers.remove(id).await.unwrap();
    }
}

#[tokio::test]
async fn memory_limit_is_enforced_and_reported_as_oom_killed() {
    if !root_or_skip("memory_limit_is_enforced_and_reported_as_oom_killed") {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config(
        "oom",
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null",
        ],
    );
    config.resources.memory_limit_bytes = Some(32 << 20);
    f.start(&config).await;
    // The limit is in the container's cgroup (v1 here, v2 in the VM of tests/tests/cgroup_v2),
    // unless the container already ended and its cgroup with it.
    let v2 = std::path::Path::new("/sys/fs/cgroup")
        .join(&f.cgroup_root)
        .join("oom/memory.max");
    let limit_file = f.v1_memory_cgroup("oom").join("memory.limit_in_bytes");
    for file in [limit_file, v2] {
        if let Ok(limit) = std::fs::read_to_string(&file) {
            assert_eq!(limit.trim(), (32u64 << 20).to_string(), "{file:?}");
        }
    }
    let exit = f.exited("oom").await;
    assert_eq!(exit.reason, "OOMKilled", "{exit:?}");
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    f.containers.remove("oom").await.unwrap();
}

#[tokio::test]
async fn the_shim_holds_the_container_without_its_starter() {
    if !root_or_skip("the_shim_holds_the_container_without_its_starter") {
        return;
    }
    let mut f = Fixture::new();
    let info = f.start(&f.config("held", &["sleep", "1000"])).await;
    let root = f.containers.root().to_path_buf();

    // The shim is not our child and leads its own session.
    let shim: ShimRecord = read_json(&info.dir.join("state").join(SHIM))
        .unwrap()
        .unwrap();
    assert!(is_alive(&shim.shim));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", shim.shim.pid)).unwrap();
    let after_name: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (ppid, sid): (u32, i32) = (
        after_name[1].parse().unwrap(),
        after_name[3].parse().unwrap(),
    );
    assert_ne!(ppid, std::process::id());
    assert_eq!(sid, shim.shim.pid);
    assert!(parse_stat(&stat).is_some());
    // And the container init is the shim's child.
    let init_stat = std::fs::read_to_string(format!("/proc/{}/stat", info.pid)).unwrap();
    let init_ppid: i32 = init_stat[init_stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(init_ppid, shim.shim.pid);
    // Soon after the start, the shim's process runs the small monitor program instead: the
    // statically linked one the runtime installed under its root, when this build has it.
    let exe = || std::fs::read_link(format!("/proc/{}/exe", shim.shim.pid)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !exe().ends_with("skiff-shim-monitor") {
        assert!(std::time::Instant::now() < deadline, "{:?}", exe());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if node_agent::runtime::monitor_program::embedded() {
        assert_eq!(
            exe(),
            root.join(".monitor").join("skiff-shim-monitor"),
            "the installed static monitor"
        );
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", shim.shim.pid)).unwrap();
        assert!(
            !maps.contains("libc.so"),
            "a static monitor maps no shared C library:\n{maps}"
        );
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI builds the static monitor"
        );
    }
    assert!(
        is_alive(&shim.shim),
        "the same process, by pid and start time"
    );

    // A new handle, as a restarted agent opens it, finds the container running.
    let reopened = Containers::open(&root, env!("CARGO_BIN_EXE_skiff-shim")).unwrap();
    let list = reopened.list().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].0, "held");
    match &list[0].1 {
        ContainerState::Running { pid, started_at } => {
            assert_eq!((*pid, *started_at), (info.pid, info.started_at));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reopened.record("held").unwrap().config.args,
        ["sleep", "1000"]
    );
    assert!(matches!(
        reopened.remove("held").await,
        Err(RuntimeError::StillRunning(_))
    ));
    reopened.signal("held", Signal::SIGKILL).unwrap();
    let state = reopened.wait_exited("held", Duration::from_secs(20)).await;
    match state {
        ContainerState::Exited(e) => assert_eq!(e.exit_code, 137),
        other => panic!("{other:?}"),
    }
    reopened.remove("held").await.unwrap();
}

#[tokio::test]
async fn time_to_run_true() {
    if !root_or_skip("time_to_run_true") {
        return;
    }
    let mut f = Fixture::new();
    // One warm-up, then the measured runs: (total, start, wait, remove).
    let mut runs = Vec::new();
    for i in 0..8 {
        let id = format!("true{i}");
        let config = f.config(&id, &["true"]);
        let t0 = Instant::now();
        f.start(&config).await;
        let t1 = Instant::now();
        let exit = f.exited(&id).await;
        let t2 = Instant::now();
        f.containers.remove(&id).await.unwrap();
        let t3 = Instant::now();
        assert_eq!(exit.exit_code, 0);
        if i > 0 {
            runs.push((t3 - t0, t1 - t0, t2 - t1, t3 - t2));
        }
    }
    runs.sort();
    let (total, start, wait, remove) = runs[runs.len() / 2];
    println!(
        "create+start+wait+delete of `true` through skiff-shim: median {total:?} \
         (start {start:?}, until exit recorded {wait:?}, remove {remove:?}); min {:?}, max {:?}",
        runs[0].0,
        runs[runs.len() - 1].0
    );
}
