//! Containers run through the real `skiff-shim` and libcontainer: exit codes and CRI logs,
//! isolation as seen from inside, privileged containers, start failures, removal.

mod runtime_support;

use std::path::Path;

use node_agent::runtime::capabilities::status_mask;
use node_agent::runtime::cri_log::Stream;
use node_agent::runtime::rootfs::{file_mounts, is_mounted, PodFile};
use node_agent::runtime::{ContainerState, RuntimeError};
use runtime_support::{root_or_skip, Fixture};

#[tokio::test]
async fn exit_code_and_both_streams_reach_the_cri_log() {
    if !root_or_skip("exit_code_and_both_streams_reach_the_cri_log") {
        return;
    }
    let mut f = Fixture::new();
    let config = f.config("exit3", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let info = f.start(&config).await;
    assert!(info.pid > 0);
    let exit = f.exited("exit3").await;
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert_eq!(exit.reason, "Error");
    assert!(exit.started_at.is_some() && exit.finished_at >= exit.started_at);

    let records = f.log("exit3");
    let seen: Vec<(Stream, &str)> = records
        .iter()
        .map(|r| (r.stream, r.content.as_str()))
        .collect();
    assert!(seen.contains(&(Stream::Stdout, "out")), "{seen:?}");
    assert!(seen.contains(&(Stream::Stderr, "err")), "{seen:?}");
    assert_eq!(records.len(), 2, "{seen:?}");

    // The shim deleted the cgroup before it recorded the exit.
    assert!(!f.v1_memory_cgroup("exit3").exists() || !Path::new("/sys/fs/cgroup/memory").exists());
    let dir = f.containers.container_dir("exit3");
    assert!(is_mounted(&dir.join("rootfs")));
    f.containers.remove("exit3").await.unwrap();
    assert!(!dir.exists());
    assert!(!is_mounted(&dir.join("rootfs")));
    assert_eq!(f.containers.state("exit3"), ContainerState::Unknown);
    // Removing again is nothing.
    f.containers.remove("exit3").await.unwrap();
}

#[tokio::test]
async fn isolation_seen_from_inside() {
    if !root_or_skip("isolation_seen_from_inside") {
        return;
    }
    let mut f = Fixture::new();
    let hosts = f.tmp.path().join("etc-hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.244.0.5 web-0\n").unwrap();
    let mut config = f.config(
        "iso",
        &[
            "sh",
            "-c",
            "echo pid=$$; echo host=$(hostname); ls /dev; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
             cat /etc/hosts; touch /rootfs-is-writable 2>/dev/null && echo wrote || echo readonly; \
             echo nofile=$(ulimit -n)",
        ],
    );
    config.readonly_rootfs = true;
    config.allow_privilege_escalation = false;
    config.mounts = file_mounts(&[PodFile {
        host_path: hosts,
        container_path: "/etc/hosts".into(),
        readonly: true,
    }]);
    f.start(&config).await;
    let exit = f.exited("iso").await;
    let out = f.stdout("iso");
    assert_eq!(exit.exit_code, 0, "{out:?} {:?}", f.log("iso"));

    assert!(out.contains(&"pid=1".to_string()), "{out:?}");
    assert!(out.contains(&"host=host-iso".to_string()), "{out:?}");
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
    ] {
        assert!(
            out.contains(&dev.to_string()),
            "/dev/{dev} missing: {out:?}"
        );
    }
    for host_dev in ["vda", "kvm", "loop0", "kmsg"] {
        assert!(
            !out.contains(&host_dev.to_string()),
            "host's /dev/{host_dev} visible: {out:?}"
        );
    }
    let status = out.join("\n");
    assert_eq!(status_mask(&status, "CapEff"), Some(0xa80425fb), "{out:?}");
    assert!(out.contains(&"NoNewPrivs:\t1".to_string()), "{out:?}");
    assert!(out.contains(&"Seccomp:\t2".to_string()), "{out:?}");
    assert!(out.contains(&"10.244.0.5 web-0".to_string()), "{out:?}");
    assert!(out.contains(&"readonly".to_string()), "{out:?}");
    let nofile = out.iter().find_map(|l| l.strip_prefix("nofile=")).unwrap();
    let host_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    assert_eq!(nofile, host_hard.min(1_048_576).to_string());
}

#[tokio::test]
async fn privileged_gets_the_bounding_set_and_devices() {
    if !root_or_skip("privileged_gets_the_bounding_set_and_devices") {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config(
        "priv",
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|Seccomp):' /proc/self/status; ls /dev",
        ],
    );
    config.privileged = true;
    f.start(&config).await;
    let exit = f.exited("priv").await;
    let out = f.stdout("priv");
    assert_eq!(exit.exit_code, 0, "{:?}", f.log("priv"));
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status_mask(&host, "CapBnd").unwrap();
    assert_eq!(
        status_mask(&out.join("\n"), "CapEff"),
        Some(bounding),
        "{out:?}"
    );
    assert!(out.contains(&"Seccomp:\t0".to_string()), "{out:?}");
    if Path::new("/dev/vda").exists() {
        assert!(out.contains(&"vda".to_string()), "{out:?}");
    }
}

#[tokio::test]
async fn start_failures_carry_libcontainers_message() {
    if !root_or_skip("start_failures_carry_libcontainers_message") {
        return;
    }
    let mut f = Fixture::new();
    let cases = [
        (
            "noexec",
            f.config("noexec", &["/no/such/program"]),
            "/no/such/program",
        ),
        (
            "badcwd",
            {
                let mut c = f.config("badcwd", &["true"]);
                c.cwd = "/no/such/dir".into();
                c
            },
            "",
        ),
    ];
    for (id, config, needle) in cases {
        let err = f.try_start(&config).await.expect_err(id);
        println!("{id}: {err}");
        assert!(matches!(err, RuntimeError::Start { .. }), "{id}: {err}");
        assert_eq!(err.reason(), Some("StartError"));
        assert!(err.to_string().contains(needle), "{id}: {err}");
        match f.containers.state(id) {
            ContainerState::Exited(e) => {
                assert_eq!((e.exit_code, e.reason.as_str()), (128, "StartError"));
                assert!(!e.message.is_empty());
                assert_eq!(e.started_at, None);
            }
            other => panic!("{id}: {other:?}"),
        }
        f.containers.remove(id).await.unwrap();
        assert!(!f.containers.container_dir(id).exists());
    }

    // A spec the agent cannot build never reaches a shim.
    let mut bad = f.config("badcap", &["true"]);
    bad.capabilities.add = vec!["NO_SUCH_CAP".into()];
    let err = f.try_start(&bad).await.expect_err("bad capability");
    assert_eq!(err.reason(), Some("CreateContainerError"), "{err}");
    assert!(err.to_string().contains("NO_SUCH_CAP"), "{err}");
    assert!(!f.containers.container_dir("badcap").exists());
}

#[tokio::test]
async fn cgroup_limits_are_applied() {
    if !root_or_skip("cgroup_limits_are_applied") {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config("limited", &["sleep", "1000"]);
    config.resources = node_agent::runtime::Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(25_000),
        cpu_period: Some(100_000),
        memory_limit_bytes: Some(64 << 20),
        pids_limit: Some(32),
    };
    let info = f.start(&config).await;
    let v1 = Path::new("/sys/fs/cgroup/memory").exists();
    let cgroup = format!("{}/limited", f.cgroup_root);
    // (file, expected content) on this host's layout.
    let files: Vec<(String, String)> = if v1 {
        vec![
            (format!("cpu/{cgroup}/cpu.shares"), "512".into()),
            (format!("cpu/{cgroup}/cpu.cfs_quota_us"), "25000".into()),
            (format!("cpu/{cgroup}/cpu.cfs_period_us"), "100000".into()),
            (
                format!("memory/{cgroup}/memory.limit_in_bytes"),
                (64u64 << 20).to_string(),
            ),
            (format!("pids/{cgroup}/pids.max"), "32".into()),
            (format!("pids/{cgroup}/cgroup.procs"), info.pid.to_string()),
        ]
    } else {
        vec![
            // libcgroups' mapping of 512 shares to a weight (runc's since 1.3.2).
            (format!("{cgroup}/cpu.weight"), "59".into()),
            (format!("{cgroup}/cpu.max"), "25000 100000".into()),
            (format!("{cgroup}/memory.max"), (64u64 << 20).to_string()),
            (format!("{cgroup}/pids.max"), "32".into()),
            (format!("{cgroup}/cgroup.procs"), info.pid.to_string()),
        ]
    };
    for (file, want) in files {
        let path = Path::new("/sys/fs/cgroup").join(&file);
        let got = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(got.trim(), want, "{file}");
    }
    f.containers
        .signal("limited", nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    assert_eq!(f.exited("limited").await.exit_code, 137);
    f.containers.remove("limited").await.unwrap();
}

/// A block device of this host (`major:minor`): the root filesystem's, else the first listed.
fn a_block_device() -> (u64, u64) {
    use nix::sys::stat::{major, minor, stat};
    let dev = stat("/").expect("stat /").st_dev;
    if major(dev) != 0 {
        return (major(dev), minor(dev));
    }
    let first = std::fs::read_dir("/sys/dev/block")
        .expect("/sys/dev/block")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| {
            let (a, b) = n.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
    first.expect("a block device in /sys/dev/block")
}

#[tokio::test]
async fn devices_outside_the_default_rules_cannot_be_opened() {
    if !root_or_skip("devices_outside_the_default_rules_cannot_be_opened") {
        return;
    }
    let mut f = Fixture::new();
    // CAP_MKNOD is in the default set, so the node can be made; the device cgroup (v1) or its
    // eBPF program (v2) must refuse opening it.
    let (maj, min) = a_block_device();
    let script = format!(
        "mknod /disk b {maj} {min} && echo made; head -c 1 /disk >/dev/null && echo opened"
    );
    f.start(&f.config("mknod", &["sh", "-c", &script])).await;
    f.exited("mknod").await;
    let log: Vec<String> = f.log("mknod").into_iter().map(|r| r.content).collect();
    assert!(log.contains(&"made".to_string()), "{log:?}");
    assert!(
        !log.contains(&"opened".to_string()),
        "block device {maj}:{min} opened: {log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("Operation not permitted")),
        "{log:?}"
    );
    f.containers.remove("mknod").await.unwrap();
}

#[tokio::test]
async fn joins_the_given_network_namespace() {
    if !root_or_skip("joins_the_given_network_namespace") {
        return;
    }
    let mut f = Fixture::new();
    let name = format!("skiff-rt-{}", std::process::id());
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip netns add (install iproute2)");
    assert!(status.success());
    let mut config = f.config("netns", &["cat", "/proc/net/dev"]);
    config.network_namespace = Some(format!("/run/netns/{name}").into());
    let started = f.try_start(&config).await;
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", &name])
        .status();
    started.unwrap();
    let exit = f.exited("netns").await;
    assert_eq!(exit.exit_code, 0, "{:?}", f.log("netns"));
    let interfaces: Vec<String> = f
        .stdout("netns")
        .iter()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .filter(|n| !n.contains('|'))
        .collect();
    assert_eq!(interfaces, ["lo"]);
    f.containers.remove("netns").await.unwrap();
}

#[tokio::test]
async fn runtime_default_seccomp_lets_busybox_serve_http() {
    if !root_or_skip("runtime_default_seccomp_lets_busybox_serve_http") {
        return;
    }
    let mut f = Fixture::new();
    // A port free on the host (the container shares the host's network here).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Serving, fetching, writing a file and sleeping (nanosleep) all pass the profile.
    let script = format!(
        "httpd -p 127.0.0.1:{port} -h /etc && wget -q -O - http://127.0.0.1:{port}/passwd && \
         echo t > /tmp/f && sleep 0.01 && echo ok"
    );
    let mut config = f.config("httpd", &["sh", "-c", &script]);
    config.allow_privilege_escalation = false;
    f.start(&config).await;
    let exit = f.exited("httpd").await;
    let out = f.stdout("httpd");
    assert_eq!(exit.exit_code, 0, "{:?}", f.log("httpd"));
    assert!(
        out.contains(&"root:x:0:0:root:/root:/bin/sh".to_string()),
        "{out:?}"
    );
    assert_eq!(out.last().map(String::as_str), Some("ok"));
    f.containers.remove("httpd").await.unwrap();
}
