//! A private containerd for benchmarks: Debian's containerd (1.6) started with a root, state
//! directory and socket of its own under a temporary directory (the CRI plugin off), so it
//! neither sees nor disturbs any other containerd on the machine; the example image imported
//! into it; `ctr` driven against its socket; and everything it started stopped and removed
//! when it is dropped (containers, shims, mounts, and the namespace's cgroup).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The namespace the benchmark's containers live in.
const NAMESPACE: &str = "skiff-bench";

pub struct Containerd {
    dir: PathBuf,
    child: Child,
    /// Containers started with [`Self::run_detached`], killed and removed on drop.
    detached: Vec<String>,
}

impl Containerd {
    /// Starts containerd under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> anyhow::Result<Containerd> {
        std::fs::create_dir_all(dir)?;
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = dir.join("containerd.sock").display(),
        );
        std::fs::write(dir.join("config.toml"), config)?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting containerd (install Debian's containerd)")?;
        let containerd = Containerd {
            dir: dir.to_path_buf(),
            child,
            detached: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"])?.status.success() {
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 30 s: {}",
                    std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(containerd)
    }

    /// `ctr` against this containerd, in the benchmark's namespace.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .output()
            .context("running ctr")
    }

    fn ctr_ok(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = self.ctr(args)?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Imports an image tarball (`ctr images import`, unpacked for the default snapshotter).
    pub fn import(&self, archive: &Path) -> anyhow::Result<()> {
        let path = archive.to_string_lossy();
        self.ctr_ok(&["images", "import", &path])?;
        Ok(())
    }

    /// `ctr run --rm IMAGE ID ARGS…`: create, start, wait, delete; how long it took.
    pub fn run_rm(&self, image: &str, id: &str, args: &[&str]) -> anyhow::Result<Duration> {
        let mut argv = vec!["run", "--rm", image, id];
        argv.extend_from_slice(args);
        let t0 = Instant::now();
        self.ctr_ok(&argv)?;
        Ok(t0.elapsed())
    }

    /// `ctr run -d IMAGE ID ARGS…`: a container left running (until drop).
    pub fn run_detached(&mut self, image: &str, id: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut argv = vec!["run", "-d", image, id];
        argv.extend_from_slice(args);
        self.ctr_ok(&argv)?;
        self.detached.push(id.to_string());
        Ok(())
    }

    /// The pids of the shims (`containerd-shim-runc-v2`) serving this containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        let marker = self.dir.to_string_lossy().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if comm.trim().starts_with("containerd-shim") && cmdline.contains(&marker) {
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.detached) {
            let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", &id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline
                && !self
                    .ctr(&["task", "delete", &id])
                    .is_ok_and(|o| o.status.success())
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.ctr(&["container", "delete", &id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.shim_pids() {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // Snapshots stay mounted only while containers exist; unmount whatever is left.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let marker = self.dir.to_string_lossy().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&marker))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Ok(path) = std::ffi::CString::new(p) {
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
        // containerd leaves the namespace's own cgroup (`/<namespace>`) in every hierarchy.
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten();
        for dir in hierarchies
            .map(|h| h.path().join(NAMESPACE))
            .chain([Path::new("/sys/fs/cgroup").join(NAMESPACE)])
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
