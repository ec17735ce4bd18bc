//! What one try of a probe does, as the kubelet's probers do it from the node to the pod's
//! address: httpGet (a status of 200–399 passes), tcpSocket (a connection passes) and grpc
//! (the standard `grpc.health.v1.Health/Check`, SERVING passes), each within the probe's
//! timeout, with the kubelet's messages for failures; and exec, a command in the container
//! (exit 0 passes; its output is the failure's message). Lifecycle hooks use the same HTTP
//! and exec checks.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::runtime::containers::Containers;
use crate::runtime::exec_output::{self, Ran};

/// A gRPC health check of `service` ("" = the server as a whole) at `ip:port`, plain text.
async fn grpc(ip: Ipv4Addr, port: u16, service: &str) -> Result<(), String> {
    let target = format!("{ip}:{port}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service \"{target}\": {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| {
            format!(
                "health rpc probe failed: rpc error: code = {:?} desc = {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "service unhealthy (responded with \"{}\")",
            other.as_str_name()
        )),
        Err(_) => Err(format!(
            "service unhealthy (responded with status {})",
            response.status
        )),
    }
}

/// The port a probe names: a number, or the name of one of the container's ports.
pub fn port(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Whether an HTTP status line (`HTTP/1.1 204 No Content`) is a success (200–399).
pub fn http_success(status_line: &str) -> bool {
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}

/// Where a check runs: the pod's address for the network checks, the container itself for
/// exec.
pub struct Target<'a> {
    pub ip: Ipv4Addr,
    pub container: &'a Container,
    pub containers: &'a Containers,
    /// The running container's ID.
    pub id: &'a str,
}

/// An HTTP GET as the kubelet's prober sends it (to `httpGet.host` or the pod's address):
/// Ok for a status of 200–399.
pub async fn http_get(h: &HTTPGetAction, t: &Target<'_>) -> Result<(), String> {
    let port = port(&h.port, t.container).ok_or("no such port")?;
    let host = h
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| t.ip.to_string());
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for hdr in h.http_headers.iter().flatten() {
        req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 256];
    let n = s.read(&mut head).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&head[..n]);
    let line = text.lines().next().unwrap_or_default().to_string();
    if http_success(&line) {
        Ok(())
    } else {
        Err(format!(
            "HTTP probe failed with statuscode: {}",
            line.split_whitespace().nth(1).unwrap_or("?")
        ))
    }
}

/// A command in the container: Ok when it exits 0; otherwise its output, or what ended it.
pub async fn exec(command: &[String], t: &Target<'_>, timeout: Duration) -> Result<(), String> {
    let shown = format!("{command:?}");
    match exec_output::run(t.containers, t.id, command, timeout).await {
        Ok(Ran::Exited { code: 0, .. }) => Ok(()),
        Ok(Ran::Exited { code, output }) if output.trim().is_empty() => {
            Err(format!("command {shown} exited with {code}"))
        }
        Ok(Ran::Exited { output, .. }) => Err(output.trim_end().to_string()),
        Ok(Ran::TimedOut) => Err(format!("command {shown} timed out after {timeout:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// One try of a probe: Ok, or why it failed.
pub async fn run_once(p: &Probe, t: &Target<'_>, timeout: Duration) -> Result<(), String> {
    if let Some(e) = &p.exec {
        // The exec check keeps its own deadline: it must end the command.
        return exec(e.command.as_deref().unwrap_or_default(), t, timeout).await;
    }
    let ip = t.ip;
    let attempt = async {
        if let Some(h) = &p.http_get {
            http_get(h, t).await
        } else if let Some(s) = &p.tcp_socket {
            let port = port(&s.port, t.container).ok_or("no such port")?;
            tokio::net::TcpStream::connect((ip, port))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {ip}:{port}: {e}"))
        } else if let Some(g) = &p.grpc {
            let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
            grpc(ip, port, g.service.as_deref().unwrap_or_default()).await
        } else {
            Err("the probe names no check".to_string())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;
    use tonic_health::server::health_reporter;

    #[test]
    fn ports_by_number_or_name_and_http_statuses() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(port(&IntOrString::Int(80), &c), Some(80));
        assert_eq!(port(&IntOrString::String("http".into()), &c), Some(8080));
        assert_eq!(port(&IntOrString::String("grpc".into()), &c), None);
        assert!(http_success("HTTP/1.1 200 OK"));
        assert!(http_success("HTTP/1.0 302 Found"));
        assert!(!http_success("HTTP/1.1 404 Not Found"));
        assert!(!http_success("garbage"));
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_standard_health_service() {
        let (reporter, service) = health_reporter();
        reporter
            .set_service_status("db", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let ip = Ipv4Addr::LOCALHOST;
        assert_eq!(grpc(ip, port, "").await, Ok(()));
        assert_eq!(
            grpc(ip, port, "db").await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".to_string())
        );
        reporter
            .set_service_status("db", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(grpc(ip, port, "db").await, Ok(()));
        let unknown = grpc(ip, port, "nope").await.expect_err("unknown service");
        assert!(unknown.contains("NotFound"), "{unknown}");
        server.abort();
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let closed = grpc(ip, free, "").await.expect_err("nothing listens");
        assert!(closed.starts_with("failed to connect service"), "{closed}");
    }
}
