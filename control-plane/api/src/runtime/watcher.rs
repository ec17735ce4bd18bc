//! A typed watcher over one kind: `next()` yields a whole list first (`Event::Restarted`), then
//! every change after it. A watch whose revision was compacted (410 Expired) lists again and
//! yields a new `Restarted`; a stream broken by a replica going away resumes on another replica
//! from the last revision seen (events and bookmarks), so nothing is missed or repeated.

use std::marker::PhantomData;
use std::time::Duration;

use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{Client, Watch};
use crate::error::{ApiError, Reason};
use crate::kinds::Kind;

/// What to follow: a namespace (None: all) and selectors, as in a list.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub namespace: Option<String>,
    pub label_selector: String,
    pub field_selector: String,
}

impl Config {
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = selector.into();
        self
    }

    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = selector.into();
        self
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

/// What the watcher saw.
#[derive(Clone, Debug)]
pub enum Event<K> {
    /// Every object that matches, read at one revision: replaces whatever was known before.
    Restarted(Vec<K>),
    /// An object was added or changed.
    Applied(K),
    /// An object was deleted (its last state).
    Deleted(K),
}

enum State {
    /// A list is needed (at start, and after the watch's revision was compacted).
    Empty,
    Watching(Box<Watch>),
}

/// Follows the objects of kind `K` that `Config` selects.
pub struct Watcher<K> {
    client: Client,
    kind: Kind,
    config: Config,
    state: State,
    /// Waits before retrying after an error, doubling up to a limit.
    backoff: Duration,
    _kind: PhantomData<fn() -> K>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl<K: Resource + DeserializeOwned> Watcher<K> {
    /// A watcher of `K`; fails if Skiff does not serve that kind.
    pub fn new(client: Client, config: Config) -> Result<Self, ApiError> {
        let kind = Kind::of(K::API_VERSION, K::KIND).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the server does not serve {}/{}",
                K::API_VERSION,
                K::KIND
            ))
        })?;
        Ok(Self {
            client,
            kind,
            config,
            state: State::Empty,
            backoff: Duration::ZERO,
            _kind: PhantomData,
        })
    }

    /// The next event. An error (no replica answers) leaves the watcher able to go on: the next
    /// call waits a little and tries again from where it was.
    pub async fn next(&mut self) -> Result<Event<K>, ApiError> {
        if !self.backoff.is_zero() {
            tokio::time::sleep(self.backoff).await;
        }
        match self.step().await {
            Ok(ev) => {
                self.backoff = Duration::ZERO;
                Ok(ev)
            }
            Err(e) => {
                self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                Err(e)
            }
        }
    }

    async fn step(&mut self) -> Result<Event<K>, ApiError> {
        loop {
            match &mut self.state {
                State::Empty => {
                    let list = self
                        .client
                        .list(
                            &self.kind,
                            self.config.namespace.as_deref(),
                            &self.config.label_selector,
                            &self.config.field_selector,
                        )
                        .await?;
                    let items = list.items.into_iter().filter_map(decode).collect();
                    self.state = State::Watching(Box::new(self.client.watch(
                        &self.kind,
                        self.config.namespace.as_deref(),
                        &self.config.label_selector,
                        &self.config.field_selector,
                        &list.resource_version,
                    )));
                    return Ok(Event::Restarted(items));
                }
                State::Watching(watch) => {
                    let Some(ev) = watch.next().await? else {
                        // The watch ended with an ERROR event handled below; list again.
                        self.state = State::Empty;
                        continue;
                    };
                    match ev.kind.as_str() {
                        "ADDED" | "MODIFIED" => {
                            if let Some(obj) = decode(ev.object) {
                                return Ok(Event::Applied(obj));
                            }
                        }
                        "DELETED" => {
                            if let Some(obj) = decode(ev.object) {
                                return Ok(Event::Deleted(obj));
                            }
                        }
                        "ERROR" => {
                            let code = ev.object.get("code").and_then(Value::as_i64);
                            self.state = State::Empty;
                            if code != Some(410) {
                                let message = ev
                                    .object
                                    .get("message")
                                    .and_then(Value::as_str)
                                    .unwrap_or("the watch ended with an error")
                                    .to_string();
                                return Err(ApiError::new(Reason::Internal, message));
                            }
                            tracing::debug!(kind = self.kind.kind, "watch expired; listing again");
                        }
                        // Bookmarks only move the resume revision, which `Watch` keeps.
                        _ => {}
                    }
                }
            }
        }
    }
}

/// A typed object from its JSON, or None (logged) when it does not decode: one bad object must
/// not stop everyone following the kind.
fn decode<K: Resource + DeserializeOwned>(object: Value) -> Option<K> {
    match serde_json::from_value(object) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(kind = K::KIND, %e, "watcher skips an object it cannot decode");
            None
        }
    }
}
