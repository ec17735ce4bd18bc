//! TCP connections made from inside a pod's network namespace, as the kubelet makes its
//! port-forward connections. A socket belongs to the namespace it was created in, whatever
//! thread uses it later; so a thread of its own (never a runtime worker) enters the
//! namespace with setns — which changes only the calling thread — creates the socket, goes
//! back to the namespace it came from and ends. The connection is then made on the async
//! runtime like any other.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
use tokio::net::{TcpSocket, TcpStream};

/// How long connecting to a port inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A system error in the words the C library uses, lower-cased as Go prints them
/// (`connection refused`).
pub fn describe(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Creates an unconnected, non-blocking TCP socket of `family` in the network namespace
/// pinned at `netns`, on a thread of its own.
async fn socket_in(netns: &Path, family: AddressFamily) -> io::Result<OwnedFd> {
    let target = File::open(netns)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pod-netns".into())
        .spawn(move || {
            let _ = tx.send(create_in(&target, family));
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread ended early")))
}

/// On the calling thread, which must be one of its own: enters `target`, creates the socket,
/// and comes back.
fn create_in(target: &File, family: AddressFamily) -> io::Result<OwnedFd> {
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let made = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::Tcp,
    )
    .map_err(io::Error::from);
    if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
        // The thread ends now, and with it the namespace it is stuck in; the socket is good.
        tracing::warn!("returning from a pod's network namespace: {e}");
    }
    made
}

/// Connects to `addr` from inside the namespace at `netns`.
async fn connect_one(netns: &Path, addr: SocketAddr) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket_in(netns, family).await?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
    }
}

/// Why localhost:port could not be reached inside a pod.
#[derive(Debug, thiserror::Error)]
#[error("failed to connect to localhost:{port} inside the pod's network namespace {netns}: IPv4: {v4}; IPv6: {v6}")]
pub struct ConnectError {
    pub port: u16,
    pub netns: PathBuf,
    pub v4: String,
    pub v6: String,
}

/// Connects to localhost:`port` inside the namespace at `netns`, as the kubelet does:
/// 127.0.0.1 first, then ::1.
pub async fn connect_localhost(netns: &Path, port: u16) -> Result<TcpStream, ConnectError> {
    let attempt = |ip: IpAddr| async move {
        let addr = SocketAddr::new(ip, port);
        connect_one(netns, addr)
            .await
            .map_err(|e| format!("connect {addr}: {}", describe(&e)))
    };
    let v4 = match attempt(Ipv4Addr::LOCALHOST.into()).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let v6 = match attempt(Ipv6Addr::LOCALHOST.into()).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    Err(ConnectError {
        port,
        netns: netns.to_path_buf(),
        v4,
        v6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_go_prints_them() {
        let refused = io::Error::from_raw_os_error(nix::libc::ECONNREFUSED);
        assert_eq!(describe(&refused), "connection refused");
        assert_eq!(describe(&io::Error::other("Odd")), "odd");
    }

    /// Root only: a connection made from inside a namespace of its own reaches that
    /// namespace's listener, not the test's.
    #[tokio::test]
    async fn connections_are_made_inside_the_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { nix::libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI runs as root and must run this test"
            );
            eprintln!("skipped: needs root for network namespaces");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = dir.path().join("ns");
        crate::network::netns::create(&ns).expect("namespace");
        // A listener inside it, made the same way; lo is down in a new namespace.
        let target = File::open(&ns).expect("open");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let made = (|| -> io::Result<std::net::TcpListener> {
                setns(&target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let up = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()?;
                assert!(up.success(), "ip link set lo up");
                std::net::TcpListener::bind("127.0.0.1:0")
            })();
            let _ = tx.send(made);
        });
        let listener = rx.await.expect("thread").expect("listener");
        let port = listener.local_addr().expect("addr").port();
        let accepted = std::thread::spawn(move || listener.accept().map(|_| ()));
        let stream = connect_localhost(&ns, port).await.expect("connected");
        assert!(stream.peer_addr().expect("peer").ip().is_loopback());
        accepted.join().expect("accept thread").expect("accepted");
        // A port nothing listens on is refused, in the system's words.
        let refused = connect_localhost(&ns, port.wrapping_add(1).max(1))
            .await
            .expect_err("nothing listens");
        assert!(refused.v4.ends_with("connection refused"), "{refused}");
        crate::network::netns::remove(&ns).expect("removed");
    }
}
