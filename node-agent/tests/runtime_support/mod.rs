//! What the runtime's integration tests share: the root check (these tests need root; under
//! CI=true they must run and fail loudly otherwise), a rootfs layer made of Debian's static
//! busybox, a `Containers` under a temporary directory using the real `skiff-shim`, a unique
//! cgroup root removed afterwards, and readers of CRI logs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use node_agent::runtime::cri_log::{parse_record, Record, Stream};
use node_agent::runtime::{
    ContainerConfig, ContainerInfo, ContainerState, Containers, ExitStatus, StartRequest,
};

/// Whether root-only tests can run. Not root: under CI=true that is a failure, else a skip.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI runs as root: refusing to skip");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// One test's world: a temporary root, a busybox layer, containers, a cgroup root.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub containers: Containers,
    pub layer: PathBuf,
    pub cgroup_root: String,
    started: Vec<String>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("skiff-rt-")
            .tempdir()
            .expect("temp dir");
        let layer = tmp.path().join("layers/busybox");
        busybox_layer(&layer);
        let containers = Containers::open(
            tmp.path().join("containers"),
            env!("CARGO_BIN_EXE_skiff-shim"),
        )
        .expect("open containers")
        .with_start_timeout(Duration::from_secs(20));
        let cgroup_root = format!(
            "skiff-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Fixture {
            tmp,
            containers,
            layer,
            cgroup_root,
            started: Vec::new(),
        }
    }

    /// A container running `args` with the defaults an unprivileged pod gets.
    pub fn config(&self, id: &str, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: id.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["HOME=/root".into()],
            hostname: format!("host-{id}"),
            cgroups_path: PathBuf::from(format!("/{}/{id}", self.cgroup_root)),
            allow_privilege_escalation: true,
            ..Default::default()
        }
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.tmp.path().join("logs").join(format!("{id}.log"))
    }

    pub async fn start(&mut self, config: &ContainerConfig) -> ContainerInfo {
        self.try_start(config)
            .await
            .unwrap_or_else(|e| panic!("starting {}: {e}", config.id))
    }

    pub async fn try_start(
        &mut self,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, node_agent::runtime::RuntimeError> {
        self.started.push(config.id.clone());
        let layers = [self.layer.clone()];
        let log = self.log_path(&config.id);
        self.containers
            .start(StartRequest {
                config,
                layers: &layers,
                log_path: &log,
            })
            .await
    }

    /// Waits (up to 20 s) for the container to exit; its exit status.
    pub async fn exited(&self, id: &str) -> ExitStatus {
        match self
            .containers
            .wait_exited(id, Duration::from_secs(20))
            .await
        {
            ContainerState::Exited(e) => e,
            other => panic!("{id} did not exit: {other:?}"),
        }
    }

    /// The records of a container's CRI log.
    pub fn log(&self, id: &str) -> Vec<Record> {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        text.lines()
            .map(|l| parse_record(l).unwrap_or_else(|| panic!("not a CRI record: {l:?}")))
            .collect()
    }

    /// The stdout lines of a container's log.
    pub fn stdout(&self, id: &str) -> Vec<String> {
        self.log(id)
            .into_iter()
            .filter(|r| r.stream == Stream::Stdout)
            .map(|r| r.content)
            .collect()
    }

    /// The memory cgroup directory of a container, on this host's v1 layout (None on v2).
    pub fn v1_memory_cgroup(&self, id: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup/memory")
            .join(&self.cgroup_root)
            .join(id)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Whatever a failed test left: kill, wait, unmount and delete, then the cgroup root.
        // (Synchronous: this may run inside the test's runtime.)
        for id in &self.started {
            let _ = self
                .containers
                .signal(id, nix::sys::signal::Signal::SIGKILL);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.containers.state(id).is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let dir = self.containers.container_dir(id);
            let _ = node_agent::runtime::rootfs::unmount_rootfs(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = node_agent::runtime::cgroups::remove_cgroup(Path::new(&format!(
            "/{}",
            self.cgroup_root
        )));
    }
}

/// A root filesystem of Debian's static busybox: /bin/busybox and a symlink per applet.
pub fn busybox_layer(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("layer dir");
    for d in ["etc", "tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(dir.join(d)).expect("layer dir");
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (install busybox-static)");
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
}
