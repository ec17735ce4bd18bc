//! Reaching node agents: the agent of the node a pod runs on, or of a node by name, dialed at
//! the address and port its Node publishes (`log_target::agent_endpoint`), and what an
//! agent's error means to the API's client, and the relays both ways. Used by every call the
//! API server relays to an agent (logs, exec, port-forward, images).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_api::agent_pb::agent_client::AgentClient;
use skiff_api::{object, ApiError, Kind, Reason};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::admission::not_found;
use super::log_target;
use super::registry::Registry;

/// How long dialing an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle agent connection is checked (a followed log or an exec session can be
/// quiet for long), and how long the agent has to answer before the stream is given up.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn kind(kind: &str) -> Kind {
    Kind::of("v1", kind).expect("core kinds are served")
}

/// A dialed agent: its client, and the node and address it was reached at (for messages).
pub struct Agent {
    pub client: AgentClient<Channel>,
    pub node: String,
    pub endpoint: String,
}

impl Agent {
    /// What an agent's error means to the client, `doing` saying what was asked of it.
    /// Statuses without a reason come from the transport: the node is the problem, not this
    /// replica, so they are not Unavailable (which would send the client to another replica
    /// to fail the same way).
    pub fn error(&self, doing: &str, status: &Status) -> ApiError {
        from_agent(status, doing, &self.node, &self.endpoint)
    }
}

/// See [`Agent::error`].
pub fn from_agent(status: &Status, doing: &str, node: &str, endpoint: &str) -> ApiError {
    let e = ApiError::from_status(status);
    match e.reason {
        Reason::Unavailable | Reason::Internal => ApiError::new(
            Reason::Internal,
            format!(
                "{doing} from the agent of node \"{node}\" at {endpoint}: {}",
                e.message
            ),
        ),
        _ => e,
    }
}

/// Reads a pod (linearized, as Get does); `default` when no namespace is given.
pub async fn pod(registry: &Registry, namespace: &str, name: &str) -> Result<Value, ApiError> {
    let namespace = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    let pods = kind("Pod");
    Ok(registry
        .get(&pods.key(namespace, name))
        .await?
        .ok_or_else(|| not_found(&pods, name))?
        .object)
}

/// Reads a Node; `pod` names the pod that led here, for the message when it is gone.
pub async fn node(registry: &Registry, name: &str, pod: Option<&str>) -> Result<Value, ApiError> {
    let nodes = kind("Node");
    let found = registry.get(&nodes.key("", name)).await?;
    match (found, pod) {
        (Some(n), _) => Ok(n.object),
        (None, Some(pod)) => Err(ApiError::new(
            Reason::Internal,
            format!("node \"{name}\" of pod \"{pod}\" not found"),
        )),
        (None, None) => Err(not_found(&nodes, name)),
    }
}

/// Dials the agent of `node` (a Node object).
pub async fn dial(node: &Value) -> Result<Agent, ApiError> {
    let name = object::name(node).to_string();
    let endpoint = log_target::agent_endpoint(node)?;
    let dial_error = |e: &dyn std::fmt::Display| {
        ApiError::new(
            Reason::Internal,
            format!("dialing the agent of node \"{name}\" at {endpoint}: {e}"),
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
    Ok(Agent {
        client: AgentClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
        node: name,
        endpoint,
    })
}

/// Dials the agent running `pod` (a Pod object).
pub async fn dial_for_pod(registry: &Arc<Registry>, pod: &Value) -> Result<Agent, ApiError> {
    let node_name = object::field_string(pod, "spec.nodeName");
    let node = node(registry, &node_name, Some(object::name(pod))).await?;
    dial(&node).await
}

/// Messages buffered each way: for a slow client before a relay stops reading from the
/// agent, and for a slow agent before the client's input waits.
const STREAM_BUFFER: usize = 16;

/// The request a two-way call's first input carries (`start` picks it out), or BadRequest
/// with `refusal` when the first input is something else.
pub async fn first<T, R>(
    input: &mut tonic::Streaming<T>,
    start: impl FnOnce(T) -> Option<R>,
    refusal: &str,
) -> Result<R, ApiError> {
    let msg = input
        .message()
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    msg.and_then(start)
        .ok_or_else(|| ApiError::bad_request(refusal))
}

/// The input for an agent's two-way call: `start` (the request, as this replica completed
/// it), then the client's further input as it comes. The agent's input ends when the
/// client's does, or fails.
pub fn upstream<T>(start: T, mut input: tonic::Streaming<T>) -> ReceiverStream<T>
where
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    // The channel is new and has room: the request goes first.
    let _ = tx.try_send(start);
    tokio::spawn(async move {
        while let Ok(Some(msg)) = input.message().await {
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Relays an agent's stream to the client, each message through `convert`: the relay ends
/// when the agent's stream does, after passing on its error (as `agent`'s, `doing` what), or
/// stops reading from the agent — dropping its stream — as soon as the client goes away.
pub fn relay<T, U, F>(
    mut upstream: tonic::Streaming<T>,
    agent: Agent,
    doing: &'static str,
    convert: F,
) -> tokio::sync::mpsc::Receiver<Result<U, Status>>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> Result<U, Status> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                msg = upstream.message() => {
                    let out = match msg {
                        Ok(Some(m)) => convert(m),
                        Ok(None) => return,
                        Err(s) => Err(agent.error(doing, &s).to_status()),
                    };
                    let failed = out.is_err();
                    if tx.send(out).await.is_err() || failed {
                        return;
                    }
                }
            }
        }
    });
    rx
}
