//! `Client::logs`: a container's output through the API (`skiff.v1` Logs), as `kubectl logs`
//! asks for it. The replica that answers reads the pod and relays the stream of the node agent
//! running it; the stream ends when the log does (or, following, when the container stops).

use crate::client::Client;
use crate::error::{ApiError, Reason};
use crate::pb::{LogChunk, LogsRequest};

/// What to read of a container's log; the defaults read the whole log of the pod's only
/// container's current run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The container (None: the pod's only one).
    pub container: Option<String>,
    /// Keep the stream open and receive lines as they are written.
    pub follow: bool,
    /// The previous run (after a restart) instead of the current one.
    pub previous: bool,
    /// Only this many lines from the end.
    pub tail_lines: Option<i64>,
    /// Only lines written in the last this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines written at or after this RFC 3339 time.
    pub since_time: Option<String>,
    /// Start each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<i64>,
}

impl LogOptions {
    /// The request for `namespace`/`pod`.
    pub fn request(&self, namespace: &str, pod: &str) -> LogsRequest {
        LogsRequest {
            namespace: namespace.into(),
            name: pod.into(),
            container: self.container.clone().unwrap_or_default(),
            follow: self.follow,
            previous: self.previous,
            tail_lines: self.tail_lines,
            since_seconds: self.since_seconds,
            since_time: self.since_time.clone().unwrap_or_default(),
            timestamps: self.timestamps,
            limit_bytes: self.limit_bytes,
        }
    }
}

/// The output of one `logs` call, chunk by chunk (whole lines, as the agent sends them).
pub struct LogStream {
    stream: tonic::Streaming<LogChunk>,
}

impl LogStream {
    /// The next piece of output; None once the log has ended.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        match self.stream.message().await {
            Ok(Some(chunk)) => Ok(Some(chunk.data)),
            Ok(None) => Ok(None),
            Err(status) => {
                let err = ApiError::from_status(&status);
                // A broken stream is not a reason to try elsewhere: say what happened.
                Err(if err.reason == Reason::Unavailable {
                    ApiError::new(Reason::Internal, err.message)
                } else {
                    err
                })
            }
        }
    }
}

impl Client {
    /// Opens the log of a container of `namespace`/`pod` (see [`LogOptions`]). Errors that
    /// come before the first byte (no such pod, a container to name, one not started yet) are
    /// returned here, with kubectl's messages.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        options: &LogOptions,
    ) -> Result<LogStream, ApiError> {
        let req = options.request(namespace, pod);
        let stream = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.logs(req).await }
            })
            .await?;
        Ok(LogStream { stream })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_request() {
        let o = LogOptions {
            container: Some("c".into()),
            tail_lines: Some(3),
            timestamps: true,
            ..Default::default()
        };
        let r = o.request("ns", "web");
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("ns", "web"));
        assert_eq!(r.container, "c");
        assert_eq!(r.tail_lines, Some(3));
        assert_eq!(r.since_seconds, None);
        assert!(r.timestamps && !r.follow && !r.previous);
        assert_eq!(LogOptions::default().request("", "p").container, "");
    }
}
