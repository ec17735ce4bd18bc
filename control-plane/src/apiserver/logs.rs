//! `Logs` (`skiff.v1`): any replica reads the pod (linearized, as Get does), decides what to
//! read (`log_target`), reads the pod's Node for where its agent listens, dials the agent
//! (`skiff.agent.v1` Logs) and relays its stream. Errors before the first byte come back as the
//! call's status; the relay ends when the agent's stream does, or stops reading from the agent
//! (closing that stream) when the client goes away.

use std::sync::Arc;

use skiff_api::agent_pb::LogsRequest as AgentLogsRequest;
use skiff_api::pb::{LogChunk, LogsRequest};
use skiff_api::{object, ApiError};
use tokio::sync::mpsc;
use tonic::Status;

use super::registry::Registry;
use super::{agents, log_target};

/// What the relay asks of the agent, for messages.
const READING: &str = "reading the log";

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
    let pod = agents::pod(&registry, &namespace, &req.name).await?;
    let container = log_target::container(&pod, &req.container)?;
    let container_id = log_target::run(&pod, &container, req.previous)?;
    let mut agent = agents::dial_for_pod(&registry, &pod).await?;
    let upstream = agent
        .client
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
        .map_err(|s| agent.error(READING, &s))?;
    let upstream = upstream.into_inner();
    Ok(agents::relay(upstream, agent, READING, |chunk| {
        Ok(LogChunk { data: chunk.data })
    }))
}
