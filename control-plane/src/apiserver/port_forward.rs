//! `PortForward` (`skiff.v1`): one TCP connection to a port of a running pod. Any replica
//! reads the pod, checks it is running (in kubectl's words when it is not), fills in the pod's
//! uid, dials the pod's agent and relays its `skiff.agent.v1` PortForward both ways. Errors
//! before the connection is made (the agent's too: nothing listening on the port) come back
//! as the call's status; the relay ends when the agent's stream does, and the agent's side
//! is dropped — which closes the connection — when the client goes away.

use std::sync::Arc;

use serde_json::Value;
use skiff_api::agent_pb::port_forward_input::Input;
use skiff_api::agent_pb::{PortForwardInput, PortForwardOutput};
use skiff_api::{object, ApiError};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::agents;
use super::registry::Registry;

/// What the relay asks of the agent, for messages.
const FORWARDING: &str = "forwarding the port";

/// Why a connection to `pod` cannot be made, if it cannot: kubectl's refusal of a pod that is
/// not running. Pure.
pub fn forwardable(pod: &Value) -> Result<(), ApiError> {
    let phase = object::field_string(pod, "status.phase");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    Ok(())
}

/// A port a connection can be made to (1-65535), or why not. Pure.
pub fn valid_port(port: u32) -> Result<u16, ApiError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid port {port}: must be 1-65535")))
}

/// Makes the connection and returns the stream to send to the client.
pub async fn start(
    registry: Arc<Registry>,
    mut input: Streaming<PortForwardInput>,
) -> Result<mpsc::Receiver<Result<PortForwardOutput, Status>>, ApiError> {
    let mut req = agents::first(
        &mut input,
        |m| match m.input {
            Some(Input::Start(req)) => Some(req),
            _ => None,
        },
        "port-forward: the first message must be the request (which pod and port)",
    )
    .await?;
    valid_port(req.port)?;
    if req.namespace.is_empty() {
        req.namespace = "default".into();
    }
    let pod = agents::pod(&registry, &req.namespace, &req.pod).await?;
    forwardable(&pod)?;
    req.uid = object::meta_str(&pod, "uid").to_string();
    let mut agent = agents::dial_for_pod(&registry, &pod).await?;
    let start = PortForwardInput {
        input: Some(Input::Start(req)),
    };
    let upstream = agent
        .client
        .port_forward(agents::upstream(start, input))
        .await
        .map_err(|s| agent.error(FORWARDING, &s))?
        .into_inner();
    Ok(agents::relay(upstream, agent, FORWARDING, Ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_running_pods_take_connections() {
        let pod = |phase: &str| json!({"metadata": {"name": "web"}, "status": {"phase": phase}});
        assert!(forwardable(&pod("Running")).is_ok());
        for phase in ["Pending", "Succeeded", "Failed"] {
            assert_eq!(
                forwardable(&pod(phase)).expect_err("refused").message,
                format!(
                    "unable to forward port because pod is not running. Current status={phase}"
                )
            );
        }
        let unset = json!({"metadata": {"name": "web"}});
        assert_eq!(
            forwardable(&unset).expect_err("refused").message,
            "unable to forward port because pod is not running. Current status="
        );
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(valid_port(8080).expect("valid"), 8080);
        assert_eq!(valid_port(65535).expect("valid"), 65535);
        for bad in [0, 65536, u32::MAX] {
            assert_eq!(
                valid_port(bad).expect_err("refused").message,
                format!("invalid port {bad}: must be 1-65535")
            );
        }
    }
}
