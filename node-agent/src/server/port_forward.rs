//! The agent's `PortForward` call (`skiff.agent.v1`): one TCP connection to a port of a pod
//! on this node. The first input names the pod — its record (`real::record`) says it is here
//! — and the port; the connection is made from inside the pod's network namespace
//! (`<root-dir>/netns/<uid>`, as `real` names it) to localhost:port (`pod_socket`). Errors
//! before it is made end the call with a status: NotFound for a pod not on this node,
//! BadRequest for a bad request or a pod without its namespace, Internal with the system's
//! words (`connection refused`) when nothing answers. Then bytes are relayed both ways, each
//! side's end of writing passed on to the other, until both sides are done; a failing
//! connection ends the call with an error status, and the connection is closed when the
//! client goes away.

use std::path::{Path, PathBuf};

use skiff_api::agent_pb::port_forward_input::Input;
use skiff_api::agent_pb::port_forward_output::Output;
use skiff_api::agent_pb::{PortForwardInput, PortForwardOutput, PortForwardRequest};
use skiff_api::{ApiError, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::exec::pod_record;
use super::pod_socket::{self, describe};
use crate::network::netns;

/// The stream a `PortForward` call answers with.
pub type PortForwardStream = ReceiverStream<Result<PortForwardOutput, Status>>;

/// Outputs buffered for a slow client before reading from the pod waits.
const STREAM_BUFFER: usize = 16;
/// Bytes read from the pod at a time.
const READ_SIZE: usize = 32 * 1024;

/// Connects to ports of the pods under the agent's root directory.
#[derive(Clone, Debug)]
pub struct PortForwardService {
    root_dir: PathBuf,
}

/// The network namespace of the pod a request names, from its record. Reads files only.
pub fn locate(root_dir: &Path, req: &PortForwardRequest) -> Result<PathBuf, ApiError> {
    let rec = pod_record(root_dir, &req.namespace, &req.pod, &req.uid)?;
    let path = root_dir.join("netns").join(&rec.uid);
    if !netns::exists(&path) {
        return Err(ApiError::bad_request(format!(
            "pod {}/{} has no network namespace on this node: it is not running",
            req.namespace, req.pod
        )));
    }
    Ok(path)
}

/// The port a request names (1-65535).
fn port(req: &PortForwardRequest) -> Result<u16, ApiError> {
    u16::try_from(req.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid port {}", req.port)))
}

/// The first input: the request.
async fn first(input: &mut Streaming<PortForwardInput>) -> Result<PortForwardRequest, Status> {
    match input.message().await? {
        Some(PortForwardInput {
            input: Some(Input::Start(req)),
        }) => Ok(req),
        _ => Err(ApiError::bad_request(
            "port-forward: the first message must be the request (which pod and port)",
        )
        .to_status()),
    }
}

impl PortForwardService {
    pub fn new(root_dir: PathBuf) -> PortForwardService {
        PortForwardService { root_dir }
    }

    /// Makes the connection the first input asks for and relays both ways.
    pub async fn port_forward(
        &self,
        mut input: Streaming<PortForwardInput>,
    ) -> Result<PortForwardStream, Status> {
        let req = first(&mut input).await?;
        let port = port(&req).map_err(|e| e.to_status())?;
        let netns = {
            let root_dir = self.root_dir.clone();
            let req = req.clone();
            tokio::task::spawn_blocking(move || locate(&root_dir, &req))
                .await
                .map_err(|e| Status::internal(format!("finding the pod: {e}")))?
                .map_err(|e| e.to_status())?
        };
        let conn = pod_socket::connect_localhost(&netns, port)
            .await
            .map_err(|e| {
                ApiError::new(
                    Reason::Internal,
                    format!(
                        "error forwarding port {port} to pod {}/{}, uid {}: {e}",
                        req.namespace, req.pod, req.uid
                    ),
                )
                .to_status()
            })?;
        tracing::debug!(pod = %req.pod, namespace = %req.namespace, port, "port-forward connected");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(relay(conn, input, tx));
        Ok(ReceiverStream::new(rx))
    }
}

type Sender = mpsc::Sender<Result<PortForwardOutput, Status>>;

/// Why a relay stopped before both sides were done.
enum Stop {
    /// The client went away: nobody to tell.
    Gone,
    /// The connection to the pod failed: the client is told.
    Failed(String),
}

/// The client's bytes to the pod until the client has nothing more to send; then the pod
/// side reads end of file.
async fn to_pod(
    mut input: Streaming<PortForwardInput>,
    mut pod: OwnedWriteHalf,
) -> Result<(), Stop> {
    loop {
        match input.message().await {
            Ok(Some(PortForwardInput {
                input: Some(Input::Data(data)),
            })) => pod
                .write_all(&data)
                .await
                .map_err(|e| Stop::Failed(format!("writing to the pod: {}", describe(&e))))?,
            Ok(Some(PortForwardInput {
                input: Some(Input::CloseWrite(_)),
            }))
            | Ok(None) => {
                // The pod may have closed its side already; its answer is what matters.
                let _ = pod.shutdown().await;
                return Ok(());
            }
            Ok(Some(_)) => {}
            Err(status) => {
                tracing::debug!("the port-forward client's input failed: {status}");
                return Err(Stop::Gone);
            }
        }
    }
}

/// The pod's bytes to the client until the pod side has nothing more to send.
async fn from_pod(mut pod: OwnedReadHalf, tx: Sender) -> Result<(), Stop> {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let output = match pod.read(&mut buf).await {
            Ok(0) => Output::CloseWrite(true),
            Ok(n) => Output::Data(buf[..n].to_vec()),
            Err(e) => {
                return Err(Stop::Failed(format!(
                    "reading from the pod: {}",
                    describe(&e)
                )))
            }
        };
        let last = matches!(output, Output::CloseWrite(_));
        let sent = tx.send(Ok(PortForwardOutput {
            output: Some(output),
        }));
        if sent.await.is_err() {
            return Err(Stop::Gone);
        }
        if last {
            return Ok(());
        }
    }
}

/// Relays until both sides are done, the connection fails (the client is told) or the client
/// goes away; the connection is closed then.
async fn relay(conn: TcpStream, input: Streaming<PortForwardInput>, tx: Sender) {
    let (read, write) = conn.into_split();
    let both = async { tokio::try_join!(to_pod(input, write), from_pod(read, tx.clone())) };
    let stopped = tokio::select! {
        done = both => done.err(),
        _ = tx.closed() => Some(Stop::Gone),
    };
    match stopped {
        None => tracing::debug!("port-forward connection done"),
        Some(Stop::Gone) => tracing::debug!("the port-forward client went away"),
        Some(Stop::Failed(why)) => {
            tracing::debug!("port-forward connection failed: {why}");
            let _ = tx
                .send(Err(ApiError::new(Reason::Internal, why).to_status()))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::record::{PodRecord, Records};

    fn request(pod: &str, uid: &str, port: u32) -> PortForwardRequest {
        PortForwardRequest {
            namespace: "ns".into(),
            pod: pod.into(),
            uid: uid.into(),
            port,
        }
    }

    #[test]
    fn requests_find_their_pod_or_say_why_not() {
        let root = tempfile::tempdir().expect("tempdir");
        let rec = PodRecord {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "web".into(),
            ..Default::default()
        };
        Records::under(root.path()).save(&rec).expect("saved");
        let p = root.path();
        let refused = |r: Result<PathBuf, ApiError>| {
            let e = r.expect_err("refused");
            (e.reason, e.message)
        };
        assert_eq!(
            refused(locate(p, &request("api", "", 80))),
            (Reason::NotFound, "pod ns/api is not on this node".into())
        );
        assert_eq!(
            refused(locate(p, &request("web", "u2", 80))).0,
            Reason::NotFound
        );
        assert_eq!(
            refused(locate(p, &request("web", "../x", 80))).0,
            Reason::BadRequest
        );
        // The record is there, its namespace is not (never made, or already removed).
        assert_eq!(
            refused(locate(p, &request("web", "u1", 80))),
            (
                Reason::BadRequest,
                "pod ns/web has no network namespace on this node: it is not running".into()
            )
        );
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(port(&request("web", "", 8080)).expect("valid"), 8080);
        assert_eq!(
            port(&request("web", "", 0)).expect_err("zero").message,
            "invalid port 0"
        );
        assert_eq!(
            port(&request("web", "", 70000))
                .expect_err("too big")
                .message,
            "invalid port 70000"
        );
    }
}
