//! The writes a controller pass makes, each through the API's own paths (admission, defaults,
//! allocation, deletion rules) with the election fence, and the Events that tell users what the
//! controllers did. The scheduler's bindings go through here too, batched by `update_many`.

use serde_json::Value;
use skiff_api::pb::{DeleteRequest, WriteRequest};
use skiff_api::{object, ApiError, Kind, Reason};

use super::runner::Pass;
use crate::apiserver::admission::now;
use crate::apiserver::registry::Stored;
use crate::apiserver::update::Part;

/// Objects written per transaction by `update_many`: one compare and one put each, plus the
/// fence, within the store's limit of 128 operations per transaction (etcd's `--max-txn-ops`).
pub const BATCH: usize = 120;
/// Transactions of one `update_many` in flight at once (the store commits them together).
pub const BATCHES_IN_FLIGHT: usize = 8;

fn request(obj: &Value) -> Result<WriteRequest, ApiError> {
    let bytes = serde_json::to_vec(obj)
        .map_err(|e| ApiError::new(Reason::Internal, format!("cannot encode object: {e}")))?;
    Ok(WriteRequest {
        object: bytes,
        default_namespace: object::namespace(obj).to_string(),
    })
}

impl Pass {
    /// Creates `obj`.
    pub async fn create(&self, obj: &Value) -> Result<Stored, ApiError> {
        self.api.create_fenced(request(obj)?, &self.fence).await
    }

    /// Creates `objs` as Kubernetes' controllers create pods ("slow start"): batches of 1, 2,
    /// 4, … created concurrently, each batch only if the previous one fully succeeded, so a
    /// failing create (a quota, a bad template) costs one request, not hundreds, while a
    /// healthy burst of hundreds of pods takes a handful of round trips. Returns what was
    /// created and the first error, if any.
    pub async fn create_many(&self, objs: &[Value]) -> (Vec<Stored>, Option<ApiError>) {
        let mut created = Vec::with_capacity(objs.len());
        let mut rest = objs;
        let mut size = 1;
        while !rest.is_empty() {
            let (batch, after) = rest.split_at(size.min(rest.len()));
            rest = after;
            let results = futures::future::join_all(batch.iter().map(|o| self.create(o))).await;
            let mut failed = None;
            for r in results {
                match r {
                    Ok(s) => created.push(s),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if failed.is_some() {
                return (created, failed);
            }
            size *= 2;
        }
        (created, None)
    }

    /// Replaces `obj` (its resourceVersion, if set, must still be current).
    pub async fn update(&self, obj: &Value) -> Result<Stored, ApiError> {
        self.api.update_fenced(request(obj)?, &self.fence).await
    }

    /// Replaces `obj`'s status (resourceVersion as for `update`).
    pub async fn update_status(&self, obj: &Value) -> Result<Stored, ApiError> {
        self.api
            .update_status_fenced(request(obj)?, &self.fence)
            .await
    }

    /// Replaces `part` of each of `objs` (resourceVersion as for `update`), each admitted as
    /// `update` admits one: `BATCH` objects to a transaction (all or nothing),
    /// `BATCHES_IN_FLIGHT` transactions at once. One result per object, in order.
    pub async fn update_many(&self, objs: &[Value], part: Part) -> Vec<Result<Stored, ApiError>> {
        let mut results = Vec::with_capacity(objs.len());
        let batches: Vec<&[Value]> = objs.chunks(BATCH).collect();
        for wave in batches.chunks(BATCHES_IN_FLIGHT) {
            let mut done: Vec<Option<Vec<Result<Stored, ApiError>>>> = vec![None; wave.len()];
            let mut writes = tokio::task::JoinSet::new();
            for (n, batch) in wave.iter().enumerate() {
                let reqs = match batch.iter().map(request).collect::<Result<Vec<_>, _>>() {
                    Ok(reqs) => reqs,
                    Err(e) => {
                        done[n] = Some(vec![Err(e); batch.len()]);
                        continue;
                    }
                };
                let (api, fence) = (self.api.clone(), self.fence.clone());
                writes.spawn(async move { (n, api.update_many_fenced(&reqs, part, &fence).await) });
            }
            while let Some(joined) = writes.join_next().await {
                if let Ok((n, written)) = joined {
                    done[n] = Some(written);
                }
            }
            for (batch, written) in wave.iter().zip(done) {
                results.extend(written.unwrap_or_else(|| {
                    let e = ApiError::new(Reason::Internal, "the write task failed");
                    vec![Err(e); batch.len()]
                }));
            }
        }
        results
    }

    /// Deletes `kind` `namespace/name` with its default grace period, in the background.
    pub async fn delete(&self, kind: &Kind, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.delete_with(kind, namespace, name, -1, "").await
    }

    /// Deletes with an explicit grace period (-1: the object's default) and propagation.
    pub async fn delete_with(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        grace_period_seconds: i64,
        propagation: &str,
    ) -> Result<(), ApiError> {
        let req = DeleteRequest {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            resource_version: String::new(),
            grace_period_seconds,
            propagation_policy: propagation.to_string(),
        };
        self.api.delete_fenced(req, &self.fence).await.map(|_| ())
    }

    /// Records an Event about `involved` (`kind_of` names its kind, as objects from the store
    /// carry theirs). `warning` picks the type.
    pub async fn event(
        &self,
        involved: &Value,
        warning: bool,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let what = skiff_api::events::Occurrence {
            warning,
            reason,
            message,
            component,
            host: "",
        };
        let name = format!("{}.{:x}", object::name(involved), rand::random::<u64>());
        let t = now();
        let event = skiff_api::events::event(&name, involved, &what, 1, &t, &t);
        if let Err(e) = self.create(&event).await {
            tracing::debug!(%e, reason, "event not written");
        }
    }
}
