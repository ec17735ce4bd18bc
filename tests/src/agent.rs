//! Real agents (`skiff-agent` running containers) for end-to-end tests: one agent per test
//! host, everything it writes under a temporary root directory and its cgroups under a cgroup
//! root of its own, and a guard that leaves nothing behind even when the test fails: the agent
//! and every shim it started are killed, mounts under the root unmounted, cgroups removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Agent {
    pub name: String,
    pub root: tempfile::TempDir,
    pub cgroup_root: String,
    child: Option<Child>,
    args: Vec<String>,
    /// The network namespace it runs in (None: the starting thread's).
    netns: Option<String>,
}

impl Agent {
    /// Starts an agent named `name` against `endpoints`, with `extra` flags (e.g. `--node-ip`,
    /// `--registry-config`). It runs in the calling thread's network namespace.
    pub fn start(name: &str, endpoints: &str, extra: &[&str]) -> Agent {
        Self::start_in(None, name, endpoints, extra)
    }

    /// As [`Agent::start`], in network namespace `netns` when given.
    pub fn start_in(netns: Option<&str>, name: &str, endpoints: &str, extra: &[&str]) -> Agent {
        let root = tempfile::Builder::new()
            .prefix("skiff-agent-test")
            .tempdir()
            .expect("temp dir");
        let cgroup_root = format!(
            "skiff-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut args: Vec<String> = [
            "--endpoints",
            endpoints,
            "--node-name",
            name,
            "--root-dir",
            &root.path().join("agent").to_string_lossy(),
            "--cgroup-root",
            &cgroup_root,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut agent = Agent {
            name: name.into(),
            root,
            cgroup_root,
            child: None,
            args,
            netns: netns.map(str::to_string),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log");
        let mut cmd = Command::new(crate::bins::bin("skiff-agent"));
        // Not `ip netns exec`: it would also give the agent a mount namespace of its own with
        // a fresh /sys, hiding the cgroup hierarchies.
        if let Some(ns) = &self.netns {
            crate::netns::enter_before_exec(&mut cmd, ns);
        }
        let child = cmd
            .args(&self.args)
            .env("SKIFF_LOG", "info,node_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("skiff-agent starts");
        self.child = Some(child);
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("agent")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the agent (its pods' shims run on).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again with the same flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// Pids of the processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// Kills every process in a cgroup tree and removes the tree below every hierarchy (deepest
/// directories first).
fn remove_cgroups(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut bases: Vec<PathBuf> = hierarchies
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    bases.push(PathBuf::from("/sys/fs/cgroup"));
    for base in bases {
        let top = base.join(name);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![];
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_dir()),
                );
            }
            dirs.push(d);
        }
        let procs = |d: &Path| std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for d in &dirs {
            for pid in procs(d).lines() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        // Killed processes leave their cgroups a moment later, and a cgroup with processes
        // cannot be removed: wait for each to empty (and be removable), within a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for d in dirs.iter().rev() {
            while std::fs::remove_dir(d).is_err()
                && d.is_dir()
                && std::time::Instant::now() < deadline
            {
                for pid in procs(d).lines() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Removes what a node's agent left under `root` and `cgroup_root` once the agent is gone:
/// shims and containers (the shims name the root in their arguments; containers die with
/// their cgroup's processes), mounts, cgroups.
pub fn clean_up_node(root: &Path, cgroup_root: &str) {
    for pid in processes_mentioning(&root.to_string_lossy()) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
    }
    for m in mounts_below(root) {
        let _ = Command::new("umount").args(["-l", &m]).output();
    }
    remove_cgroups(cgroup_root);
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        clean_up_node(self.root.path(), &self.cgroup_root);
    }
}

/// A directory holding a `registries.yaml` that sends `docker.io` pulls to `registry` over
/// plain HTTP.
pub fn mirror_config(registry: &crate::registry::TestRegistry) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("registries.yaml"),
        format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
            registry.host()
        ),
    )
    .expect("registries.yaml");
    dir
}

/// Waits up to `limit` until Node `name` is Ready.
pub async fn until_ready(client: &skiff_api::Client, name: &str, limit: std::time::Duration) {
    let nodes = skiff_api::Kind::of("v1", "Node").expect("Node");
    crate::wait::until(&format!("node {name} to be Ready"), limit, || {
        let c = client.clone();
        async move {
            let n = c.get(&nodes, "", name).await.ok()?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        }
    })
    .await;
}

/// One test node: a replica, Debian's docker-registry holding the example image as `busybox`,
/// and a real agent pulling through a `docker.io` mirror entry and serving its port on a free
/// one — all in the calling thread's network namespace. Returns once the node is Ready.
pub struct TestNode {
    // Field order is drop order: the agent (and its pods) go before the cluster.
    pub agent: Agent,
    pub registry: crate::registry::TestRegistry,
    pub cluster: crate::cluster::Cluster,
    pub client: skiff_api::Client,
    pub port: u16,
    _config: tempfile::TempDir,
}

impl TestNode {
    pub async fn start(host_ip: &str) -> TestNode {
        Self::start_with(host_ip, &[]).await
    }

    /// A test node whose agent also gets `agent_flags`.
    pub async fn start_with(host_ip: &str, agent_flags: &[&str]) -> TestNode {
        let limit = std::time::Duration::from_secs(60);
        let cluster = crate::cluster::Cluster::start(1).await;
        let registry = crate::registry::TestRegistry::start()
            .await
            .expect("registry starts");
        crate::registry::push_example_image(&registry, "library/busybox", "latest")
            .await
            .expect("image pushed");
        let config_dir = mirror_config(&registry);
        let config = config_dir.path().join("registries.yaml");
        let port = crate::cluster::free_port();
        let port_text = port.to_string();
        let config_text = config.to_string_lossy();
        let mut flags = vec![
            "--node-ip",
            host_ip,
            "--port",
            &port_text,
            "--registry-config",
            &config_text,
            "--disable-default-registry-endpoint",
        ];
        flags.extend_from_slice(agent_flags);
        let agent = Agent::start("node-a", &cluster.endpoints(), &flags);
        let client = skiff_api::Client::new(&[cluster.endpoints()]).expect("client");
        until_ready(&client, "node-a", limit).await;
        TestNode {
            agent,
            registry,
            cluster,
            client,
            port,
            _config: config_dir,
        }
    }
}

impl TestNode {
    /// Creates pod `name` in `default` with `spec` (and `labels`).
    pub async fn create_pod(&self, name: &str, labels: serde_json::Value, spec: serde_json::Value) {
        self.client
            .create(
                &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": "default", "labels": labels},
                        "spec": spec}),
                "default",
            )
            .await
            .expect("pod created");
    }

    /// Waits up to a minute until `check` holds for pod `name` in `default`, printing the
    /// pod's status and the agent's log when it never does.
    pub async fn until_pod(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let pods = skiff_api::Kind::of("v1", "Pod").expect("Pod");
        let limit = std::time::Duration::from_secs(60);
        let found = crate::wait::try_until(limit, || async {
            let p = self.client.get(&pods, "default", name).await.ok()?;
            check(&p).then_some(p)
        })
        .await;
        match found {
            Some(p) => p,
            None => {
                let last = self.client.get(&pods, "default", name).await.ok();
                panic!(
                    "timed out waiting for pod {name} to be {what}; it is {}\nagent log:\n{}",
                    last.map(|p| p["status"].to_string()).unwrap_or_default(),
                    self.agent.log()
                )
            }
        }
    }

    /// The Events about object `name` in `default`, as "reason: message" lines.
    pub async fn events_of(&self, name: &str) -> Vec<String> {
        events_of(&self.client, name).await
    }
}

/// The Events about object `name` in `default`, as "reason: message" lines.
pub async fn events_of(client: &skiff_api::Client, name: &str) -> Vec<String> {
    let kind = skiff_api::Kind::of("v1", "Event").expect("Event");
    let list = client
        .list(&kind, Some("default"), "", "")
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}
