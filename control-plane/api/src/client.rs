//! A `skiff.v1` client that holds every control-plane endpoint and fails over between them:
//! a call that cannot reach its replica (or finds it without a leader for too long) is tried on
//! the next one. Objects go in and come out as JSON values.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApiError, Reason};
use crate::kinds::Kind;
use crate::pb::api_client::ApiClient as RawClient;
use crate::pb::{DeleteRequest, GetRequest, ListRequest, WatchRequest, WriteRequest};

/// How long one call keeps trying endpoints before giving up.
const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// Largest message accepted (objects are limited well below this by the server).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Cheap to clone: clones share the connections and the endpoint that answered last.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// How long a call keeps trying endpoints.
    deadline: Duration,
}

struct Shared {
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

/// How to delete: the grace period of a bound pod (None: its own; 0: at once) and what becomes
/// of dependents ("Background", "Foreground" or "Orphan"; None: Background).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
}

/// A list answer: objects and the revision they were read at.
/// Objects asked for per page of a list (kubectl asks for 500).
pub const LIST_PAGE: i64 = 500;

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
            shared: Arc::new(Shared {
                endpoints: endpoints.to_vec(),
                channels,
                current: AtomicUsize::new(0),
            }),
            deadline: CALL_DEADLINE,
        })
    }

    /// The same client, giving up after `deadline` (zero: one try per endpoint).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    /// Runs `call` on the current endpoint, moving on to the next while the answer is
    /// Unavailable (unreachable, or no leader), until one answers or the deadline passes.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: Fn(RawClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let shared = &self.shared;
        let n = shared.channels.len();
        let mut i = shared.current.load(Ordering::Relaxed) % n;
        let mut tried = 0usize;
        loop {
            let raw = RawClient::new(shared.channels[i].clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            match call(raw).await {
                Ok(resp) => {
                    shared.current.store(i, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    let err = ApiError::from_status(&status);
                    if err.reason != Reason::Unavailable {
                        return Err(err);
                    }
                    tried += 1;
                    if tokio::time::Instant::now() >= deadline && tried >= n {
                        return Err(ApiError::new(
                            Reason::Unavailable,
                            format!(
                                "no control-plane replica answered (last: {}: {})",
                                shared.endpoints[i], err.message
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
    /// Every object of `kind` matching the selectors, read page by page (500 at a time) at
    /// one revision.
    pub async fn list(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<List, ApiError> {
        let mut req = ListRequest {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
            namespace: namespace.unwrap_or_default().into(),
            label_selector: label_selector.into(),
            field_selector: field_selector.into(),
            limit: LIST_PAGE,
            continue_token: String::new(),
        };
        let mut items = Vec::new();
        loop {
            let resp = self
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.list(req).await }
                })
                .await?;
            for b in &resp.items {
                items.push(decode(b)?);
            }
            if resp.continue_token.is_empty() {
                return Ok(List {
                    items,
                    resource_version: resp.resource_version,
                });
            }
            req.continue_token = resp.continue_token;
        }
    }

    pub async fn delete(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Written, ApiError> {
        self.delete_with(kind, namespace, name, &DeleteOptions::default())
            .await
    }

    /// Delete with a grace period and a propagation policy (see `DeleteOptions`).
    pub async fn delete_with(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Written, ApiError> {
        let req = DeleteRequest {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            resource_version: String::new(),
            grace_period_seconds: options.grace_period_seconds.unwrap_or(-1),
            propagation_policy: options.propagation_policy.clone().unwrap_or_default(),
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

/// One watch event: ADDED, MODIFIED, DELETED, BOOKMARK, or ERROR (the object is then a
/// Status; code 410 means the resourceVersion was compacted and a new list is needed).
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: String,
    pub object: Value,
}

/// A watch that survives the replica serving it: when the stream breaks it is opened again on
/// the next endpoint from the last resourceVersion seen (events or bookmarks), so nothing is
/// missed or repeated.
pub struct Watch {
    client: Client,
    request: WatchRequest,
    stream: Option<tonic::Streaming<crate::pb::WatchEvent>>,
    done: bool,
}

impl Watch {
    /// The next event; None after an ERROR event ended the watch.
    pub async fn next(&mut self) -> Result<Option<Event>, ApiError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.stream.is_none() {
                let req = self.request.clone();
                let stream = self
                    .client
                    .call(|mut c| {
                        let req = req.clone();
                        async move { c.watch(req).await }
                    })
                    .await?;
                self.stream = Some(stream);
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.message().await {
                Ok(Some(ev)) => {
                    let object = decode(&ev.object)?;
                    let rv = crate::object::resource_version(&object);
                    if !rv.is_empty() && ev.r#type != "ERROR" {
                        self.request.resource_version = rv.to_string();
                    }
                    if ev.r#type == "ERROR" {
                        self.done = true;
                    }
                    return Ok(Some(Event {
                        kind: ev.r#type,
                        object,
                    }));
                }
                // The replica went away (or ended the stream): resume elsewhere.
                Ok(None) | Err(_) => {
                    self.stream = None;
                    let shared = &self.client.shared;
                    let n = shared.channels.len();
                    let i = shared.current.load(Ordering::Relaxed);
                    shared.current.store((i + 1) % n, Ordering::Relaxed);
                }
            }
        }
    }

    /// The resourceVersion the watch would resume from.
    pub fn resource_version(&self) -> &str {
        &self.request.resource_version
    }
}

impl Client {
    /// The control-plane view of the first replica that answers.
    pub async fn cluster_status(&self) -> Result<crate::pb::ClusterStatusResponse, ApiError> {
        self.call(|mut c| async move { c.cluster_status(crate::pb::ClusterStatusRequest {}).await })
            .await
    }

    /// Watches objects of `kind` (see the `Watch` RPC): from `resource_version`, or, when it is
    /// empty, ADDED events for what exists first.
    pub fn watch(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
        resource_version: &str,
    ) -> Watch {
        Watch {
            client: self.clone(),
            request: WatchRequest {
                api_version: kind.api_version.into(),
                kind: kind.kind.into(),
                namespace: namespace.unwrap_or_default().into(),
                label_selector: label_selector.into(),
                field_selector: field_selector.into(),
                resource_version: resource_version.into(),
                allow_bookmarks: true,
            },
            stream: None,
            done: false,
        }
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
