//! A Skiff store cluster of `skiff-server` processes on loopback, each with its own ports and
//! data directory, that tests can kill (SIGKILL), stop (SIGTERM), restart, wipe and extend.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bins::bin;
use crate::wait;

/// Flags for a cluster whose revisions a test counts: no replica runs the controllers, whose
/// election writes to the store several times a second.
pub const STORE_ONLY: &[&str] = &["--controllers=false"];

/// Picks a free loopback port below the kernel's ephemeral range (32768 and up), so that the
/// outgoing connections of a busy test run cannot take it between now and the member binding
/// it; random, so that concurrent tests rarely pick the same one; and never one that another
/// test of this run picked in the last half hour (a reservation file per port under the temp
/// directory), so that a port a test frees by killing a replica is not handed to another
/// test's cluster while the first still dials it.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(10_000..30_000);
        if reserve(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 10000 and 30000")
}

/// Claims `port` for this test run: false when another test claimed it recently.
fn reserve(port: u16) -> bool {
    const HELD: Duration = Duration::from_secs(30 * 60);
    let dir = std::env::temp_dir().join("skiff-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let file = dir.join(port.to_string());
    let claim = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .is_ok()
    };
    if claim() {
        return true;
    }
    let stale = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > HELD);
    stale && std::fs::remove_file(&file).is_ok() && claim()
}

pub struct Member {
    pub name: String,
    /// The address the member listens on (its own IP when it runs in a test host namespace).
    pub host: String,
    /// The network namespace it runs in, if not this one.
    pub netns: Option<String>,
    pub client_port: u16,
    pub peer_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Which server a cluster runs. Skiff takes etcd's flag names, so one command line starts either;
/// etcd (Debian's etcd-server) is the reference that differential tests and benchmarks compare
/// against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Skiff,
    Etcd,
}

impl Program {
    fn binary(self) -> std::path::PathBuf {
        match self {
            Program::Skiff => bin("skiff-server"),
            Program::Etcd => "etcd".into(),
        }
    }
}

pub struct Cluster {
    pub program: Program,
    pub members: Vec<Member>,
    pub token: String,
    /// Extra flags for every replica (e.g. a small --snapshot-count).
    pub extra_args: Vec<String>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` replicas bootstrapping a new cluster and waits until it has a leader.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    pub async fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        Self::start_program(Program::Skiff, n, extra_args).await
    }

    /// Starts `n` members of `program` on loopback and waits until they agree on a leader.
    pub async fn start_program(program: Program, n: usize, extra_args: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let members = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    dir: root.path().join(&name),
                    name,
                    host: "127.0.0.1".into(),
                    netns: None,
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                }
            })
            .collect();
        Self::launch(program, root, members, extra_args).await
    }

    /// Starts one replica on each host of a [`crate::netns::TestNet`] (call from inside
    /// [`crate::netns::TestNet::run_as_client`] so that the test can reach them).
    pub async fn start_on(net: &crate::netns::TestNet, extra_args: &[&str]) -> Cluster {
        let all: Vec<usize> = (0..net.hosts.len()).collect();
        Self::start_on_hosts(net, &all, extra_args).await
    }

    /// Starts one replica on each of the hosts numbered `hosts` (listening on the host's
    /// address, inside its namespace), whatever namespace the caller is in.
    pub async fn start_on_hosts(
        net: &crate::netns::TestNet,
        hosts: &[usize],
        extra_args: &[&str],
    ) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let members = hosts
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let host = &net.hosts[h];
                let name = format!("m{i}");
                Member {
                    dir: root.path().join(&name),
                    name,
                    host: host.ip.clone(),
                    netns: Some(host.ns.clone()),
                    client_port: 2379,
                    peer_port: 2380,
                    child: None,
                }
            })
            .collect();
        Self::launch(Program::Skiff, root, members, extra_args).await
    }

    async fn launch(
        program: Program,
        root: tempfile::TempDir,
        members: Vec<Member>,
        extra_args: &[&str],
    ) -> Cluster {
        let n = members.len();
        let mut c = Cluster {
            program,
            members,
            token: format!("test-{}", rand::random::<u32>()),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            root,
        };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c.wait_for_leader().await;
        if matches!(c.program, Program::Skiff) {
            c.wait_for_built_in_namespaces().await;
        }
        c
    }

    /// The last key a starting Skiff cluster writes: the API server creates the built-in
    /// namespaces (default, kube-system, kube-public, kube-node-lease, in that order) through the
    /// store.
    pub const LAST_BUILT_IN_KEY: &'static str = "/registry/namespaces/kube-node-lease";

    /// Waits until the API server has created the built-in namespaces, so that tests which
    /// count revisions start from a store nobody else is writing to.
    pub async fn wait_for_built_in_namespaces(&self) {
        let client = connect(&self.running_urls()).await;
        wait::until("the built-in namespaces", Duration::from_secs(30), || {
            let mut c = client.clone();
            async move {
                let r = c.get(Self::LAST_BUILT_IN_KEY, None).await.ok()?;
                (!r.kvs().is_empty()).then_some(())
            }
        })
        .await;
    }

    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Comma-separated client endpoints of every member (for etcdctl / clients).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url()).collect()
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        std::fs::create_dir_all(&m.dir).expect("member dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join(format!("{}.log", m.name)))
            .expect("log file");
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(self.program.binary());
                c
            }
            None => Command::new(self.program.binary()),
        };
        if self.program == Program::Skiff {
            // Tests that want a node start their own agent, with its own root and cgroups.
            cmd.arg("--disable-agent");
        }
        let child = cmd
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(m.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .args(&self.extra_args)
            .env("SKIFF_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} starts: {e}", self.program));
        self.members[i].child = Some(child);
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status code.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut child = self.members[i].child.take()?;
        // SAFETY: sending a signal to a child process we own; no memory is shared.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = wait::until_blocking(
            "skiff-server to exit after SIGTERM",
            Duration::from_secs(20),
            || child.try_wait().ok().flatten(),
        );
        status.code()
    }

    /// Waits for member `i` to exit by itself; returns its exit status code.
    pub fn wait_for_exit(&mut self, i: usize, limit: Duration) -> Option<i32> {
        let mut child = self.members[i].child.take()?;
        let status = wait::until_blocking("the member to exit by itself", limit, || {
            child.try_wait().ok().flatten()
        });
        status.code()
    }

    /// Starts a stopped member again on its existing data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "member {i} is still running"
        );
        self.spawn(i, "new");
    }

    /// Replaces member `i` with a fresh one (new ports, empty data dir) that will join with
    /// `--initial-cluster-state existing`; call [`Cluster::start_joining`] after `member add`.
    pub fn replace_with_new_member(&mut self, i: usize) {
        self.kill(i);
        let m = &mut self.members[i];
        let _ = std::fs::remove_dir_all(&m.dir);
        m.client_port = free_port();
        m.peer_port = free_port();
    }

    pub fn start_joining(&mut self, i: usize) {
        self.spawn(i, "existing");
    }

    /// A client connected to the given members' endpoints.
    pub async fn client_for(&self, members: &[usize]) -> etcd_client::Client {
        let urls: Vec<String> = members
            .iter()
            .map(|&i| self.members[i].client_url())
            .collect();
        connect(&urls).await
    }

    /// The member ID of the current leader as seen by any running member, once all running
    /// members agree on it.
    pub async fn wait_for_leader(&self) -> u64 {
        let urls = self.running_urls();
        match wait::try_until(Duration::from_secs(30), || agreed_leader_now(&urls)).await {
            Some(id) => id,
            None => panic!(
                "timed out after 30s waiting for all running members to agree on a leader\n{}",
                self.all_logs()
            ),
        }
    }

    /// Every member's log, for failure messages.
    pub fn all_logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- {} (last 40 lines)\n{}",
                    self.members[i].name,
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Index of the member whose ID is `id`.
    pub async fn index_of(&self, id: u64) -> usize {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_running())
            .collect();
        match position_of_member(&self.running_urls(), id).await {
            Some(p) => running[p],
            None => panic!("no running member has ID {id:x}"),
        }
    }

    fn running_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.client_url())
            .collect()
    }

    pub async fn leader_index(&self) -> usize {
        let id = self.wait_for_leader().await;
        self.index_of(id).await
    }

    /// The server log of member `i` (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.root
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A client for the etcd API at `urls` (Skiff's or etcd's), retried until it connects.
pub async fn connect(urls: &[String]) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_timeout(Duration::from_secs(10))
        .with_connect_timeout(Duration::from_secs(2));
    wait::until("a client connection", Duration::from_secs(20), || {
        let opts = opts.clone();
        async move { etcd_client::Client::connect(urls, Some(opts)).await.ok() }
    })
    .await
}

/// The member ID of the leader, once every member serving at `urls` reports the same one.
pub async fn agreed_leader(urls: &[String]) -> u64 {
    wait::until(
        "all running members to agree on a leader",
        Duration::from_secs(30),
        || agreed_leader_now(urls),
    )
    .await
}

/// The leader every member serving at `urls` reports right now, if they agree on one.
async fn agreed_leader_now(urls: &[String]) -> Option<u64> {
    let mut leader = None;
    for url in urls {
        let mut c = etcd_client::Client::connect([url], None).await.ok()?;
        let st = c.status().await.ok()?;
        if st.leader() == 0 || leader.is_some_and(|l| l != st.leader()) {
            return None;
        }
        leader = Some(st.leader());
    }
    leader
}

/// Position in `urls` of the member whose ID is `id`, asked through Status.
pub async fn position_of_member(urls: &[String], id: u64) -> Option<usize> {
    for (p, url) in urls.iter().enumerate() {
        if let Ok(mut c) = etcd_client::Client::connect([url], None).await {
            if let Ok(st) = c.status().await {
                if st.header().map(|h| h.member_id()) == Some(id) {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Compacts the store at `revision`, asking again while a loaded machine times the request out
/// (the compaction may land all the same: "already compacted" counts as done).
pub async fn compact(etcd: &etcd_client::Client, revision: i64) {
    crate::wait::until("the compaction", Duration::from_secs(60), || {
        let mut etcd = etcd.clone();
        async move {
            match etcd.compact(revision, None).await {
                Ok(_) => Some(()),
                Err(e) if e.to_string().contains("compacted") => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
}
