//! Test hosts as Linux network namespaces: one per host plus one for the test's own clients,
//! joined by a bridge that lives in a hub namespace of its own, so that the test touches nothing
//! outside what it created. Partitions are iptables DROP rules inside a host's namespace. Needs
//! root (CI runs as root).

use std::process::Command;

/// Subnet of the test hosts; it exists only inside the test's namespaces.
const SUBNET: &str = "10.213.0";

pub struct Host {
    pub ns: String,
    pub ip: String,
}

pub struct TestNet {
    prefix: String,
    pub hosts: Vec<Host>,
    pub client: Host,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process may create namespaces; tests that need them must not be skipped in CI.
pub fn available() -> bool {
    crate::root::root_or_skip("a network-namespace test")
}

impl TestNet {
    /// Creates `n` hosts (10.213.0.1 … n) and a client namespace (10.213.0.100).
    pub fn create(n: usize) -> TestNet {
        let prefix = format!("sk{}x{}", std::process::id(), rand::random::<u16>());
        let hub = format!("{prefix}hub");
        let net = TestNet {
            hosts: (0..n)
                .map(|i| Host {
                    ns: format!("{prefix}h{i}"),
                    ip: format!("{SUBNET}.{}", i + 1),
                })
                .collect(),
            client: Host {
                ns: format!("{prefix}c"),
                ip: format!("{SUBNET}.100"),
            },
            prefix,
        };
        run(&["ip", "netns", "add", &hub]);
        run(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for (i, host) in net
            .hosts
            .iter()
            .chain(std::iter::once(&net.client))
            .enumerate()
        {
            let port = format!("p{i}");
            run(&["ip", "netns", "add", &host.ns]);
            run(&["ip", "-n", &host.ns, "link", "set", "lo", "up"]);
            run(&[
                "ip", "-n", &host.ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ]);
            run(&[
                "ip",
                "-n",
                &host.ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &host.ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &hub, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &hub, "link", "set", &port, "up"]);
        }
        net
    }

    /// Gives every host a default route out of its `eth0`, as hosts on a LAN have: traffic to
    /// addresses no other route covers (a Service's cluster IP, before the proxy's DNAT) is
    /// routed instead of refused.
    pub fn add_default_routes(&self) {
        for host in &self.hosts {
            run(&[
                "ip", "-n", &host.ns, "route", "add", "default", "dev", "eth0",
            ]);
        }
    }

    /// Cuts host `i` off from every other host (clients can still reach it).
    pub fn isolate(&self, i: usize) {
        let ns = &self.hosts[i].ns;
        for (j, other) in self.hosts.iter().enumerate() {
            if j != i {
                run(&[
                    "ip", "netns", "exec", ns, "iptables", "-I", "INPUT", "-s", &other.ip, "-j",
                    "DROP",
                ]);
                run(&[
                    "ip", "netns", "exec", ns, "iptables", "-I", "OUTPUT", "-d", &other.ip, "-j",
                    "DROP",
                ]);
            }
        }
    }

    /// Removes every partition rule from host `i`.
    pub fn heal(&self, i: usize) {
        let ns = &self.hosts[i].ns;
        run(&["ip", "netns", "exec", ns, "iptables", "-F", "INPUT"]);
        run(&["ip", "netns", "exec", ns, "iptables", "-F", "OUTPUT"]);
    }

    /// Runs `body` on a thread inside the client namespace, with its own runtime; processes it
    /// starts inherit that namespace unless they enter another.
    pub fn run_as_client<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        run_in(&self.client.ns, body)
    }

    /// Runs `body` on a thread inside host `i`'s namespace, as [`TestNet::run_as_client`] does.
    pub fn run_in_host<F, Fut>(&self, i: usize, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        run_in(&self.hosts[i].ns, body)
    }
}

/// The prologue of a root test on a host of its own: without root it skips (and under
/// CI=true fails, see [`available`]); else it creates a one-host [`TestNet`] and runs
/// `body(host_ip)` inside that host's namespace, removing the network afterwards.
pub fn on_one_host<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !available() {
        return;
    }
    let net = TestNet::create(1);
    let host_ip = net.hosts[0].ip.clone();
    net.run_in_host(0, move || body(host_ip));
}

/// Makes `cmd` enter network namespace `ns` (and nothing else) between fork and exec.
pub fn enter_before_exec(cmd: &mut Command, ns: &str) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("namespace");
    // SAFETY: the closure only calls setns, which is async-signal-safe, on a descriptor that
    // the closure owns and so keeps open until exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The prologue of a root test on `n` hosts of its own, each with a default route (as hosts on
/// a LAN have, so that cluster IPs are routed before the proxy's DNAT): without root it skips
/// (under CI=true it fails, see [`available`]); else it runs `body(net)` inside host 0's
/// namespace, removing the network once the test's last handle on it goes.
pub fn on_hosts<F, Fut>(n: usize, body: F)
where
    F: FnOnce(std::sync::Arc<TestNet>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !available() {
        return;
    }
    let net = std::sync::Arc::new(TestNet::create(n));
    net.add_default_routes();
    let inner = net.clone();
    net.run_in_host(0, move || body(inner));
}

/// Runs `body` on a thread of its own inside namespace `ns`, with its own runtime.
fn run_in<F, Fut>(ns: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    run_in_file(
        std::path::PathBuf::from(format!("/var/run/netns/{ns}")),
        body,
    )
}

/// Runs `body` on a thread of its own inside the network namespace pinned at `path` (a pod's,
/// under its agent's root directory), on a runtime of that thread; returns when it is done.
pub fn run_in_file<F, Fut>(path: std::path::PathBuf, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a valid namespace descriptor.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(body());
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for host in self.hosts.iter().chain(std::iter::once(&self.client)) {
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}hub", self.prefix)])
            .output();
    }
}
