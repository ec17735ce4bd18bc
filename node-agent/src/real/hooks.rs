//! Container lifecycle hooks as the kubelet runs them: postStart right after the container
//! starts (a failure kills the container, which then restarts as its policy says), preStop
//! before the stop signal whenever the agent stops a running container (pod deletion, a failed
//! liveness probe), within the pod's grace period. A handler is an exec command in the
//! container, an HTTP GET (to `httpGet.host` or the pod's address), or a sleep; tcpSocket is
//! deprecated and, as the kubelet does, only warned about. Failures are told in
//! FailedPostStartHook / FailedPreStopHook Events with the kubelet's messages.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::probe_checks::{exec, http_get, Target};

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    /// The container's handler for this hook, if it has one.
    pub fn handler(self, c: &Container) -> Option<&LifecycleHandler> {
        let l = c.lifecycle.as_ref()?;
        match self {
            Hook::PostStart => l.post_start.as_ref(),
            Hook::PreStop => l.pre_stop.as_ref(),
        }
    }

    /// The reason of the Event telling a failure.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// The kubelet's description of a failed handler: `Exec lifecycle hook ([sh -c exit 1]) for
/// Container "app" in Pod "web_default(uid)" failed - error: …`. Pure.
pub fn failure_message(h: &LifecycleHandler, c: &Container, pod: &Pod, error: &str) -> String {
    let pod_name = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    let what = if let Some(e) = &h.exec {
        format!(
            "Exec lifecycle hook ({:?})",
            e.command.as_deref().unwrap_or_default()
        )
    } else if let Some(g) = &h.http_get {
        format!("HTTP lifecycle hook ({})", g.path.as_deref().unwrap_or("/"))
    } else {
        "Lifecycle hook".to_string()
    };
    format!(
        "{what} for Container \"{}\" in Pod \"{pod_name}\" failed - error: {error}",
        c.name
    )
}

/// Runs `h` for the container `t` names, for at most `limit`.
pub async fn run(h: &LifecycleHandler, t: &Target<'_>, limit: Duration) -> Result<(), String> {
    if let Some(e) = &h.exec {
        return exec(e.command.as_deref().unwrap_or_default(), t, limit).await;
    }
    if let Some(g) = &h.http_get {
        return match tokio::time::timeout(limit, http_get(g, t)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timeout: no answer within {limit:?}")),
        };
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(limit)).await;
        return Ok(());
    }
    if h.tcp_socket.is_some() {
        tracing::warn!(
            container = %t.container.name,
            "tcpSocket lifecycle handlers are deprecated and not run"
        );
        return Ok(());
    }
    Err("the handler names no action".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle};

    #[test]
    fn handlers_and_messages_as_the_kubelet_has_them() {
        let handler = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), "exit 1".into()]),
            }),
            ..Default::default()
        };
        let c = Container {
            name: "app".into(),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(handler.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(Hook::PostStart.handler(&c).is_none());
        assert_eq!(Hook::PreStop.handler(&c), Some(&handler));
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        assert_eq!(
            failure_message(&handler, &c, &pod, "command exited with 1"),
            "Exec lifecycle hook ([\"sh\", \"-c\", \"exit 1\"]) for Container \"app\" in Pod \
             \"web_default(u1)\" failed - error: command exited with 1"
        );
    }
}
