//! What a `Logs` call reads, decided from the pod and its node as Kubernetes decides it, with
//! kubectl's messages: the request's options checked (kube-apiserver's PodLogOptions rules),
//! the container picked (kube-apiserver's: the only one by default), the run picked from the
//! container's status (the kubelet's: the running or last terminated run, or with `previous`
//! lastState.terminated; a container not started yet is refused with its waiting reason), and
//! where the node's agent listens (its InternalIP and status.daemonEndpoints.kubeletEndpoint).
//! Pure.

use serde_json::Value;
use skiff_api::pb::LogsRequest;
use skiff_api::{object, ApiError};

/// The agent's port when a Node publishes none (the kubelet's, as kube-apiserver assumes).
pub const DEFAULT_AGENT_PORT: u16 = 10250;

fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> ApiError {
    ApiError::bad_request(format!("{field}: Invalid value: {value}: {why}"))
}

/// Refuses options Kubernetes refuses.
pub fn check_options(req: &LogsRequest) -> Result<(), ApiError> {
    if req.since_seconds.is_some() && !req.since_time.is_empty() {
        return Err(ApiError::bad_request(
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if let Some(n) = req.tail_lines.filter(|n| *n < 0) {
        return Err(invalid(
            "tailLines",
            n,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = req.since_seconds.filter(|n| *n < 1) {
        return Err(invalid("sinceSeconds", n, "must be greater than 0"));
    }
    if let Some(n) = req.limit_bytes.filter(|n| *n < 1) {
        return Err(invalid("limitBytes", n, "must be greater than 0"));
    }
    if !req.since_time.is_empty() && req.since_time.parse::<jiff::Timestamp>().is_err() {
        return Err(invalid(
            "sinceTime",
            format!("{:?}", req.since_time),
            "must be an RFC 3339 time",
        ));
    }
    Ok(())
}

fn names(pod: &Value, path: &str) -> Vec<String> {
    object::field(pod, path)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request names, or the pod's only one.
pub fn container(pod: &Value, requested: &str) -> Result<String, ApiError> {
    let pod_name = object::name(pod);
    let containers = names(pod, "spec.containers");
    // Init containers first, then the others, as kube-apiserver lists them.
    let all: Vec<String> = names(pod, "spec.initContainers")
        .into_iter()
        .chain(containers.iter().cloned())
        .chain(names(pod, "spec.ephemeralContainers"))
        .collect();
    if requested.is_empty() {
        return match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                all.join(" ")
            ))),
        };
    }
    if all.iter().any(|c| c == requested) {
        Ok(requested.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "container {requested} is not valid for pod {pod_name}"
        )))
    }
}

/// The status of the pod's container (init, app or ephemeral) named `container`.
pub fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    [
        "status.initContainerStatuses",
        "status.containerStatuses",
        "status.ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|p| object::field(pod, p).and_then(Value::as_array))
    .flatten()
    .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
}

/// The container ID (`skiff://…`) of the run to read, from the container's status.
pub fn run(pod: &Value, container: &str, previous: bool) -> Result<String, ApiError> {
    let pod_name = object::name(pod);
    let refuse = |what: String| ApiError::bad_request(what);
    let waiting = |reason: &str| {
        refuse(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {reason}"
        ))
    };
    if object::field_string(pod, "spec.nodeName").is_empty() {
        return Err(waiting("ContainerCreating"));
    }
    let Some(status) = container_status(pod, container) else {
        return Err(waiting("ContainerCreating"));
    };
    let id_of = |v: Option<&Value>| {
        v.and_then(|t| t.get("containerID"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(String::from)
    };
    let last = status.get("lastState").and_then(|s| s.get("terminated"));
    let state = status.get("state");
    let running = state.and_then(|s| s.get("running"));
    let terminated = state.and_then(|s| s.get("terminated"));
    let waiting_state = state.and_then(|s| s.get("waiting"));
    let is_terminated = || {
        refuse(format!(
            "container \"{container}\" in pod \"{pod_name}\" is terminated"
        ))
    };
    if previous {
        return id_of(last).ok_or_else(|| {
            refuse(format!(
                "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
            ))
        });
    }
    if running.is_some() {
        return id_of(Some(status)).ok_or_else(|| waiting("ContainerCreating"));
    }
    if terminated.is_some() {
        return id_of(terminated)
            .or_else(|| id_of(last))
            .ok_or_else(is_terminated);
    }
    if last.is_some() {
        return id_of(last).ok_or_else(is_terminated);
    }
    match waiting_state
        .and_then(|w| w.get("reason"))
        .and_then(Value::as_str)
    {
        Some("ErrImagePull") => Err(waiting("image can't be pulled")),
        Some("ImagePullBackOff") => Err(waiting("trying and failing to pull image")),
        Some(reason) => Err(waiting(reason)),
        None => Err(refuse(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start - no logs yet"
        ))),
    }
}

/// Where the node's agent listens: an address from its status (InternalIP first) and its
/// published port (the default when it publishes none).
pub fn agent_endpoint(node: &Value) -> Result<String, ApiError> {
    let name = object::name(node);
    let addresses = object::field(node, "status.addresses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                .and_then(|a| a.get("address"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
        })
        .ok_or_else(|| {
            ApiError::new(
                skiff_api::Reason::Internal,
                format!("node \"{name}\" reports no address to reach its agent at"),
            )
        })?;
    let port = object::field(node, "status.daemonEndpoints.kubeletEndpoint.Port")
        .and_then(Value::as_i64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Ok(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        let list = |names: &[&str]| -> Vec<Value> {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "busybox"}))
                .collect()
        };
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "node-a", "containers": list(containers),
                     "initContainers": list(init)},
        })
    }

    #[test]
    fn containers_are_picked_as_kube_apiserver_picks_them() {
        let err = |r: Result<String, ApiError>| r.expect_err("refused").message;
        assert_eq!(container(&pod(&["a"], &[]), "").expect("only one"), "a");
        assert_eq!(
            err(container(&pod(&["a", "b"], &[]), "")),
            "a container name must be specified for pod web, choose one of: [a b]"
        );
        assert_eq!(
            err(container(&pod(&["a", "b"], &["init"]), "")),
            "a container name must be specified for pod web, choose one of: [init a b]"
        );
        assert_eq!(
            err(container(&pod(&["a"], &[]), "x")),
            "container x is not valid for pod web"
        );
        assert_eq!(
            container(&pod(&["a"], &["init"]), "init").expect("init"),
            "init"
        );
    }

    fn with_status(status: Value) -> Value {
        let mut p = pod(&["app"], &[]);
        p["status"] = json!({"containerStatuses": [status]});
        p
    }

    #[test]
    fn runs_are_picked_as_the_kubelet_picks_them() {
        let running = with_status(json!({
            "name": "app", "containerID": "skiff://b",
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "skiff://a"}},
        }));
        assert_eq!(run(&running, "app", false).expect("current"), "skiff://b");
        assert_eq!(run(&running, "app", true).expect("previous"), "skiff://a");
        let backing_off = with_status(json!({
            "name": "app", "containerID": "skiff://b",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "skiff://b"}},
        }));
        assert_eq!(run(&backing_off, "app", false).expect("last"), "skiff://b");
        assert_eq!(run(&backing_off, "app", true).expect("last"), "skiff://b");
        let done = with_status(json!({
            "name": "app", "containerID": "skiff://a",
            "state": {"terminated": {"exitCode": 0, "containerID": "skiff://a"}},
        }));
        assert_eq!(run(&done, "app", false).expect("ended run"), "skiff://a");
        let msg = |p: &Value, previous: bool| run(p, "app", previous).expect_err("refused").message;
        assert_eq!(
            msg(&done, true),
            "previous terminated container \"app\" in pod \"web\" not found"
        );
        let cases = [
            (
                "ContainerCreating",
                "is waiting to start: ContainerCreating",
            ),
            ("ErrImagePull", "is waiting to start: image can't be pulled"),
            (
                "ImagePullBackOff",
                "is waiting to start: trying and failing to pull image",
            ),
            (
                "CreateContainerConfigError",
                "is waiting to start: CreateContainerConfigError",
            ),
        ];
        for (reason, text) in cases {
            let p = with_status(json!({"name": "app", "state": {"waiting": {"reason": reason}}}));
            assert_eq!(
                msg(&p, false),
                format!("container \"app\" in pod \"web\" {text}")
            );
        }
        let mut pending = pod(&["app"], &[]);
        pending["spec"]["nodeName"] = Value::Null;
        assert_eq!(
            msg(&pending, false),
            "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        assert_eq!(
            msg(&pod(&["app"], &[]), false),
            "container \"app\" in pod \"web\" is waiting to start: ContainerCreating",
            "scheduled, no status yet"
        );
    }

    #[test]
    fn the_agent_is_reached_at_the_nodes_address_and_port() {
        let node = |addresses: Value, port: Value| {
            json!({"metadata": {"name": "n"}, "status": {
                "addresses": addresses,
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }})
        };
        let both = json!([{"type": "Hostname", "address": "n"},
                          {"type": "InternalIP", "address": "10.0.0.5"}]);
        assert_eq!(
            agent_endpoint(&node(both.clone(), json!(12345))).expect("endpoint"),
            "10.0.0.5:12345"
        );
        assert_eq!(
            agent_endpoint(&node(both, Value::Null)).expect("endpoint"),
            "10.0.0.5:10250"
        );
        let v6 = json!([{"type": "InternalIP", "address": "fd00::5"}]);
        assert_eq!(
            agent_endpoint(&node(v6, json!(10250))).expect("endpoint"),
            "[fd00::5]:10250"
        );
        assert!(agent_endpoint(&node(json!([]), json!(1))).is_err());
    }

    #[test]
    fn options_are_checked_as_kubernetes_checks_them() {
        let ok = LogsRequest {
            name: "web".into(),
            tail_lines: Some(0),
            since_time: "2026-12-04T10:00:00Z".into(),
            ..Default::default()
        };
        assert!(check_options(&ok).is_ok());
        let bad = [
            LogsRequest {
                since_seconds: Some(5),
                ..ok.clone()
            },
            LogsRequest {
                tail_lines: Some(-1),
                ..ok.clone()
            },
            LogsRequest {
                since_time: "5m".into(),
                ..ok.clone()
            },
            LogsRequest {
                limit_bytes: Some(0),
                ..ok.clone()
            },
            LogsRequest {
                since_time: String::new(),
                since_seconds: Some(0),
                ..ok.clone()
            },
        ];
        for req in bad {
            assert!(check_options(&req).is_err(), "{req:?}");
        }
    }
}
