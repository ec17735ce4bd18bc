//! `Exec` (`skiff.v1`): any replica reads the pod, checks the container is running (as
//! kube-apiserver and the kubelet do, with their messages), fills in the pod's uid and the
//! container's ID, dials the pod's agent and relays its `skiff.agent.v1` Exec both ways.
//! Errors before the command starts come back as the call's status; the relay ends when the
//! agent's stream does (after the exit code), and the agent's side is dropped — which ends
//! the command — when the client goes away.

use std::sync::Arc;

use serde_json::Value;
use skiff_api::agent_pb::exec_input::Input;
use skiff_api::agent_pb::{ExecInput, ExecOutput};
use skiff_api::{object, ApiError};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::registry::Registry;
use super::{agents, log_target};

/// What the relay asks of the agent, for messages.
const RUNNING: &str = "running the command";

/// The ID (`skiff://…`) of the running container `container` of `pod`, or why a command
/// cannot run in it. Pure.
pub fn running(pod: &Value, container: &str) -> Result<String, ApiError> {
    let pod_name = object::name(pod);
    let phase = object::field_string(pod, "status.phase");
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let status = log_target::container_status(pod, container);
    let waiting = |reason: &str| {
        ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {reason}"
        ))
    };
    let Some(status) = status else {
        return Err(waiting("ContainerCreating"));
    };
    let state = status.get("state");
    if state.and_then(|s| s.get("running")).is_none() {
        if let Some(reason) = state
            .and_then(|s| s.get("waiting"))
            .and_then(|w| w.get("reason"))
            .and_then(Value::as_str)
        {
            return Err(waiting(reason));
        }
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is not running"
        )));
    }
    status
        .get("containerID")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(String::from)
        .ok_or_else(|| waiting("ContainerCreating"))
}

/// Starts the command and returns the stream to send to the client.
pub async fn start(
    registry: Arc<Registry>,
    mut input: Streaming<ExecInput>,
) -> Result<mpsc::Receiver<Result<ExecOutput, Status>>, ApiError> {
    let mut req = agents::first(
        &mut input,
        |m| match m.input {
            Some(Input::Start(req)) => Some(req),
            _ => None,
        },
        "exec: the first message must be the request (which pod, container and command)",
    )
    .await?;
    if req.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if req.namespace.is_empty() {
        req.namespace = "default".into();
    }
    let pod = agents::pod(&registry, &req.namespace, &req.pod).await?;
    req.container = log_target::container(&pod, &req.container)?;
    req.container_id = running(&pod, &req.container)?;
    req.uid = object::meta_str(&pod, "uid").to_string();
    let mut agent = agents::dial_for_pod(&registry, &pod).await?;

    let start = ExecInput {
        input: Some(Input::Start(req)),
    };
    let upstream = agent
        .client
        .exec(agents::upstream(start, input))
        .await
        .map_err(|s| agent.error(RUNNING, &s))?
        .into_inner();
    Ok(agents::relay(upstream, agent, RUNNING, Ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, state: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "app", "containerID": "skiff://abc", "state": state}
            ]},
        })
    }

    #[test]
    fn only_running_containers_take_commands() {
        let ok = pod(
            "Running",
            json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(running(&ok, "app").expect("running"), "skiff://abc");
        let msg = |p: &Value| running(p, "app").expect_err("refused").message;
        assert_eq!(
            msg(&pod("Succeeded", json!({"terminated": {"exitCode": 0}}))),
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
        assert_eq!(
            msg(&pod(
                "Pending",
                json!({"waiting": {"reason": "ImagePullBackOff"}})
            )),
            "container \"app\" in pod \"web\" is waiting to start: ImagePullBackOff"
        );
        assert_eq!(
            msg(&pod("Running", json!({"terminated": {"exitCode": 1}}))),
            "container \"app\" in pod \"web\" is not running"
        );
        assert_eq!(
            running(&ok, "other").expect_err("no status").message,
            "container \"other\" in pod \"web\" is waiting to start: ContainerCreating"
        );
    }
}
