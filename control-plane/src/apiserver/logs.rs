//! `Logs` (`skiff.v1`): any replica reads the pod (linearized, as Get does), decides what to
//! read (`log_target`), reads the pod's Node for where its agent listens, dials the agent
//! (`skiff.agent.v1` Logs) and relays its stream. Errors before the first byte come back as the
//! call's status; the relay ends when the agent's stream does, or stops reading from the agent
//! (closing that stream) when the client goes away.

use std::sync::Arc;
use std::time::Duration;

use skiff_api::agent_pb::agent_client::AgentClient;
use skiff_api::agent_pb::LogsRequest as AgentLogsRequest;
use skiff_api::pb::{LogChunk, LogsRequest};
use skiff_api::{object, ApiError, Kind, Reason};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::Status;

use super::admission::not_found;
use super::log_target;
use super::registry::Registry;

/// How long dialing an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle agent connection is checked (a followed log can be quiet for long), and
/// how long the agent has to answer before the stream is given up.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks buffered for a slow client before the relay stops reading from the agent.
const STREAM_BUFFER: usize = 16;

fn kind(kind: &str) -> Kind {
    Kind::of("v1", kind).expect("core kinds are served")
}

/// What an agent's error means to the client. Statuses without a reason come from the
/// transport: the node is the problem, not this replica, so they are not Unavailable (which
/// would send the client to another replica to fail the same way).
fn from_agent(status: &Status, node: &str, endpoint: &str) -> ApiError {
    let e = ApiError::from_status(status);
    match e.reason {
        Reason::Unavailable | Reason::Internal => ApiError::new(
            Reason::Internal,
            format!(
                "reading the log from the agent of node \"{node}\" at {endpoint}: {}",
                e.message
            ),
        ),
        _ => e,
    }
}

/// Opens the log and returns the stream to send to the client.
pub async fn start(
    registry: Arc<Registry>,
    req: LogsRequest,
) -> Result<mpsc::Receiver<Result<LogChunk, Status>>, ApiError> {
    log_target::check_options(&req)?;
    let namespace = if req.namespace.is_empty() {
        "default".to_string()
    } else {
        req.namespace.clone()
    };
    let pods = kind("Pod");
    let pod = registry
        .get(&pods.key(&namespace, &req.name))
        .await?
        .ok_or_else(|| not_found(&pods, &req.name))?
        .object;
    let container = log_target::container(&pod, &req.container)?;
    let container_id = log_target::run(&pod, &container, req.previous)?;
    let node_name = object::field_string(&pod, "spec.nodeName");
    let nodes = kind("Node");
    let node = registry
        .get(&nodes.key("", &node_name))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                Reason::Internal,
                format!("node \"{node_name}\" of pod \"{}\" not found", req.name),
            )
        })?
        .object;
    let endpoint = log_target::agent_endpoint(&node)?;
    let dial_error = |e: &dyn std::fmt::Display| {
        ApiError::new(
            Reason::Internal,
            format!("dialing the agent of node \"{node_name}\" at {endpoint}: {e}"),
        )
    };
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| dial_error(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| dial_error(&e))?;
    let upstream = AgentClient::new(channel)
        .logs(AgentLogsRequest {
            namespace: namespace.clone(),
            pod: req.name.clone(),
            uid: object::meta_str(&pod, "uid").to_string(),
            container,
            follow: req.follow,
            previous: req.previous,
            tail_lines: req.tail_lines,
            since_seconds: req.since_seconds,
            since_time: req.since_time.clone(),
            timestamps: req.timestamps,
            limit_bytes: req.limit_bytes,
            container_id,
        })
        .await
        .map_err(|s| from_agent(&s, &node_name, &endpoint))?;
    let mut upstream = upstream.into_inner();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                msg = upstream.message() => {
                    let out = match msg {
                        Ok(Some(chunk)) => Ok(LogChunk { data: chunk.data }),
                        Ok(None) => return,
                        Err(s) => Err(from_agent(&s, &node_name, &endpoint).to_status()),
                    };
                    let failed = out.is_err();
                    if tx.send(out).await.is_err() || failed {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}
