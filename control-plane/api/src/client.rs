//! A `skiff.v1` client that holds every control-plane endpoint and fails over between them:
//! a call that cannot reach its replica (or finds it without a leader for too long) is tried on
//! the next one. Objects go in and come out as JSON values.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApiError, Reason};
use crate::kinds::Kind;
use crate::pb::api_client::ApiClient as RawClient;
use crate::pb::{DeleteRequest, GetRequest, ListRequest, WriteRequest};

/// How long one call keeps trying endpoints before giving up.
const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// Largest message accepted (objects are limited well below this by the server).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// The endpoint that answered last; calls start there.
    current: AtomicUsize,
}

/// A write's answer: the object as stored and what was done ("created", "configured",
/// "unchanged", "deleted").
#[derive(Clone, Debug)]
pub struct Written {
    pub object: Value,
    pub outcome: String,
}

/// A list answer: objects and the revision they were read at.
#[derive(Clone, Debug)]
pub struct List {
    pub items: Vec<Value>,
    pub resource_version: String,
}

/// `host:port` or a URL, as `http://host:port`.
fn url_of(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Client {
    /// A client for these endpoints (`host:port` or `http://host:port`). Connections are made
    /// on first use.
    pub fn new(endpoints: &[String]) -> Result<Self, ApiError> {
        if endpoints.is_empty() {
            return Err(ApiError::bad_request("no endpoints given"));
        }
        let mut channels = Vec::new();
        for e in endpoints {
            let endpoint = Endpoint::from_shared(url_of(e))
                .map_err(|err| ApiError::bad_request(format!("invalid endpoint {e:?}: {err}")))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true);
            channels.push(endpoint.connect_lazy());
        }
        Ok(Self {
            endpoints: endpoints.to_vec(),
            channels,
            current: AtomicUsize::new(0),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs `call` on the current endpoint, moving on to the next while the answer is
    /// Unavailable (unreachable, or no leader), until one answers or the deadline passes.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: Fn(RawClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let n = self.channels.len();
        let mut i = self.current.load(Ordering::Relaxed) % n;
        let mut tried = 0usize;
        loop {
            let raw = RawClient::new(self.channels[i].clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            match call(raw).await {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    let err = ApiError::from_status(&status);
                    if err.reason != Reason::Unavailable {
                        return Err(err);
                    }
                    tried += 1;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::new(
                            Reason::Unavailable,
                            format!(
                                "no control-plane replica answered (last: {}: {})",
                                self.endpoints[i], err.message
                            ),
                        ));
                    }
                    i = (i + 1) % n;
                    if tried.is_multiple_of(n) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    pub async fn create(&self, obj: &Value, default_namespace: &str) -> Result<Written, ApiError> {
        let req = write_request(obj, default_namespace)?;
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.create(req).await }
            })
            .await?;
        written(resp)
    }

    pub async fn apply(&self, obj: &Value, default_namespace: &str) -> Result<Written, ApiError> {
        let req = write_request(obj, default_namespace)?;
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.apply(req).await }
            })
            .await?;
        written(resp)
    }

    pub async fn update(&self, obj: &Value, default_namespace: &str) -> Result<Written, ApiError> {
        let req = write_request(obj, default_namespace)?;
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.update(req).await }
            })
            .await?;
        written(resp)
    }

    pub async fn update_status(
        &self,
        obj: &Value,
        default_namespace: &str,
    ) -> Result<Written, ApiError> {
        let req = write_request(obj, default_namespace)?;
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.update_status(req).await }
            })
            .await?;
        written(resp)
    }

    pub async fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let req = GetRequest {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        decode(&resp.object)
    }

    /// Objects of `kind` in `namespace` (None: all namespaces) matching both selectors.
    pub async fn list(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<List, ApiError> {
        let req = ListRequest {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
            namespace: namespace.unwrap_or_default().into(),
            label_selector: label_selector.into(),
            field_selector: field_selector.into(),
        };
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.list(req).await }
            })
            .await?;
        Ok(List {
            items: resp
                .items
                .iter()
                .map(|b| decode(b))
                .collect::<Result<_, _>>()?,
            resource_version: resp.resource_version,
        })
    }

    pub async fn delete(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Written, ApiError> {
        let req = DeleteRequest {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            resource_version: String::new(),
        };
        let resp = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await?;
        written(resp)
    }
}

fn write_request(obj: &Value, default_namespace: &str) -> Result<WriteRequest, ApiError> {
    Ok(WriteRequest {
        object: serde_json::to_vec(obj)
            .map_err(|e| ApiError::bad_request(format!("cannot encode object: {e}")))?,
        default_namespace: default_namespace.into(),
    })
}

fn written(resp: crate::pb::ObjectResponse) -> Result<Written, ApiError> {
    Ok(Written {
        object: decode(&resp.object)?,
        outcome: resp.outcome,
    })
}

fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(Reason::Internal, format!("undecodable answer: {e}")))
}
