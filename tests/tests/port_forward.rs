//! `skiff port-forward` end to end, on a test host of its own: the real CLI forwards local
//! ports through the replica to the agent, which connects inside the pod's network namespace
//! to the example image's web server. Fetching through the local port gives the pod's
//! hostname; two connections are served at once; a client's end of writing reaches the pod,
//! which still answers; a port nothing listens on gives kubectl's error line while the good
//! one goes on; a Pending pod, a bad port spec and a local port in use are refused with
//! kubectl's messages; through a Service (`svc/NAME`) a service port reaches its named target
//! port, and a Service without pods times out after `--pod-running-timeout`; SIGTERM ends the
//! forwarder and closes its ports, and so does the pod's going away (kubectl's `lost
//! connection to pod`).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{json, Value};
use tests::agent::TestNode;
use tests::cli::skiff;
use tests::netns;
use tests::wait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);
const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// A running `skiff port-forward`, its stdout and stderr lines as they come.
struct Forwarder {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines(from: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Forwarder {
    fn start(endpoints: &str, args: &[&str]) -> Forwarder {
        let mut child = Command::new(tests::bins::bin("skiff"))
            .args(["--endpoints", endpoints])
            .args(["--config", "/nonexistent/skiff-test-config"])
            .arg("port-forward")
            .args(args)
            .env_remove("SKIFF_ENDPOINTS")
            .env_remove("SKIFF_CONTEXT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skiff starts");
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        Forwarder { child, out, err }
    }

    /// The next line of `from` that `wanted` accepts, within `LIMIT`.
    fn line(from: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match from.recv_timeout(left) {
                Ok(l) if wanted(&l) => return l,
                Ok(l) => seen.push(l),
                Err(e) => panic!("no line {what} within {LIMIT:?} ({e}); saw {seen:?}"),
            }
        }
    }

    /// The local port of `Forwarding from 127.0.0.1:LOCAL -> remote`.
    fn local_port(&self, remote: u16) -> u16 {
        let suffix = format!(" -> {remote}");
        let line = Self::line(&self.out, "forwarding to the port", |l| {
            l.starts_with("Forwarding from 127.0.0.1:") && l.ends_with(&suffix)
        });
        line["Forwarding from 127.0.0.1:".len()..line.len() - suffix.len()]
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of an HTTP response.
fn body(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1") => body.trim().to_string(),
        _ => panic!("not an HTTP response: {text:?}"),
    }
}

/// Reads to the end, within `LIMIT`.
async fn read_all(conn: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, conn.read_to_end(&mut out))
        .await
        .expect("the answer ends in time")
        .expect("read");
    out
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

#[test]
fn port_forward_reaches_the_pods_port_as_kubectl_does() {
    netns::on_one_host(move |host_ip| async move {
        let node = TestNode::start(&host_ip).await;
        let eps = node.cluster.endpoints();
        // The example image (as busybox): its web server answers with the pod's hostname.
        node.create_pod(
            "web",
            json!({"app": "web"}),
            json!({"terminationGracePeriodSeconds": 1,
                   "containers": [{"name": "app", "image": "busybox",
                                   "ports": [{"name": "http", "containerPort": 8080}]}]}),
        )
        .await;
        node.until_pod("web", "running", running).await;

        // A random local port for the web server (by its name), another for a port nothing
        // listens on.
        let mut fwd = Forwarder::start(&eps, &["pod/web", ":http", ":9999"]);
        let good = fwd.local_port(8080);
        let bad = fwd.local_port(9999);
        assert_ne!(good, 0);
        let good_addr = format!("127.0.0.1:{good}");
        let served = wait::try_until(LIMIT, || tests::http::get(&good_addr)).await;
        assert_eq!(served.as_deref().map(str::trim), Some("web"));
        Forwarder::line(&fwd.out, "about the connection", |l| {
            l == format!("Handling connection for {good}")
        });

        // Two connections at once: the first stays open while the second is served.
        let mut first = TcpStream::connect(&good_addr).await.expect("first");
        let mut second = TcpStream::connect(&good_addr).await.expect("second");
        second.write_all(REQUEST).await.expect("second request");
        assert_eq!(body(&read_all(&mut second).await), "web");
        first.write_all(REQUEST).await.expect("first request");
        assert_eq!(body(&read_all(&mut first).await), "web");

        // The client's end of writing reaches the pod, which still answers.
        let mut half = TcpStream::connect(&good_addr).await.expect("connect");
        half.write_all(REQUEST).await.expect("request");
        half.shutdown().await.expect("shutdown(write)");
        assert_eq!(body(&read_all(&mut half).await), "web");

        // Nothing listens on 9999 in the pod: the connection is closed with kubectl's line,
        // and the good port goes on.
        let mut refused = TcpStream::connect(format!("127.0.0.1:{bad}"))
            .await
            .expect("the local side accepts");
        let mut nothing = Vec::new();
        let _ = tokio::time::timeout(LIMIT, refused.read_to_end(&mut nothing))
            .await
            .expect("the connection is closed");
        assert!(nothing.is_empty(), "{nothing:?}");
        let error = Forwarder::line(&fwd.err, "about the refused connection", |l| {
            l.contains("an error occurred forwarding")
        });
        assert!(error.starts_with('E'), "{error}");
        assert!(
            error.contains(&format!("an error occurred forwarding {bad} -> 9999: "))
                && error.ends_with("connection refused"),
            "{error}"
        );
        let again = tests::http::get(&good_addr).await;
        assert_eq!(again.as_deref().map(str::trim), Some("web"));

        // SIGTERM ends the forwarder, and its ports are closed.
        // SAFETY: kill on the child's own pid.
        let rc = unsafe { libc::kill(fwd.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = wait::until_blocking("the forwarder to end", LIMIT, || {
            fwd.child.try_wait().expect("wait")
        });
        assert!(status.success(), "{status:?}");
        assert!(
            TcpStream::connect(&good_addr).await.is_err(),
            "port {good} is still open"
        );

        // Refusals, in kubectl's words.
        let bad_spec = skiff(&eps, &["port-forward", "web", "70000"], None);
        assert!(!bad_spec.ok);
        assert_eq!(
            bad_spec.stderr.trim(),
            "error: error parsing remote port '70000': invalid port"
        );
        let no_name = skiff(&eps, &["port-forward", "web", "8080:grpc"], None);
        assert_eq!(
            no_name.stderr.trim(),
            "error: Pod 'web' does not have a named port 'grpc'"
        );
        node.create_pod(
            "waiting",
            json!({}),
            json!({"nodeSelector": {"no-such": "node"},
                   "containers": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        let pending = skiff(&eps, &["port-forward", "waiting", "8080"], None);
        assert!(!pending.ok);
        assert_eq!(
            pending.stderr.trim(),
            "error: unable to forward port because pod is not running. Current status=Pending"
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let taken_port = taken.local_addr().expect("addr").port();
        let in_use = skiff(
            &eps,
            &[
                "port-forward",
                "web",
                &format!("{taken_port}:8080"),
                "--address",
                "127.0.0.1",
            ],
            None,
        );
        assert!(!in_use.ok);
        assert!(
            in_use.stderr.contains(&format!(
                "Unable to listen on port {taken_port}: Listeners failed to create with the \
                 following errors: [unable to create listener: Error listen tcp4 \
                 127.0.0.1:{taken_port}: bind: address already in use]"
            )) && in_use.stderr.trim_end().ends_with(&format!(
                "error: unable to listen on any of the requested ports: [{{{taken_port} 8080}}]"
            )),
            "{}",
            in_use.stderr
        );
        drop(taken);

        // Through a Service: a pod its selector picks, the service port forwarded to its
        // (named) target port; a Service with no pods is waited for, up to
        // --pod-running-timeout.
        for (name, selector) in [("web-svc", "web"), ("empty-svc", "nothing")] {
            node.client
                .create(
                    &json!({"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"selector": {"app": selector},
                                     "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}),
                    "default",
                )
                .await
                .expect("service created");
        }
        let via = Forwarder::start(&eps, &["svc/web-svc", ":web"]);
        let through = via.local_port(8080);
        let served = tests::http::get(&format!("127.0.0.1:{through}")).await;
        assert_eq!(served.as_deref().map(str::trim), Some("web"));
        drop(via);
        let no_pods = skiff(
            &eps,
            &[
                "port-forward",
                "svc/empty-svc",
                "8080:80",
                "--pod-running-timeout",
                "1s",
            ],
            None,
        );
        assert!(!no_pods.ok);
        assert_eq!(
            no_pods.stderr.trim(),
            "error: timed out waiting for the condition"
        );
        let no_port = skiff(&eps, &["port-forward", "svc/web-svc", "8080:443"], None);
        assert_eq!(
            no_port.stderr.trim(),
            "error: Service web-svc does not have a service port 443"
        );

        // The pod going away ends the forwarder, as kubectl's ends.
        let mut lost = Forwarder::start(&eps, &["web", ":8080"]);
        lost.local_port(8080);
        let pods = skiff_api::Kind::of("v1", "Pod").expect("Pod");
        node.client
            .delete(&pods, "default", "web")
            .await
            .expect("deleted");
        Forwarder::line(&lost.err, "about the lost pod", |l| {
            l == "error: lost connection to pod"
        });
        let status = wait::until_blocking("the forwarder to end", LIMIT, || {
            lost.child.try_wait().expect("wait")
        });
        assert_eq!(status.code(), Some(1));
    });
}
