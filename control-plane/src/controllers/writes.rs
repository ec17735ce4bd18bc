//! The writes a controller pass makes, each through the API's own paths (admission, defaults,
//! allocation, deletion rules) with the election fence, and the Events that tell users what the
//! controllers did.

use serde_json::{json, Value};
use skiff_api::pb::{DeleteRequest, WriteRequest};
use skiff_api::{object, ApiError, Kind, Reason};

use super::runner::Pass;
use crate::apiserver::admission::now;
use crate::apiserver::registry::Stored;

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
        let namespace = match object::namespace(involved) {
            "" => "default",
            ns => ns,
        };
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {
                "name": format!("{}.{:x}", object::name(involved), rand::random::<u64>()),
                "namespace": namespace
            },
            "involvedObject": {
                "apiVersion": object::api_version(involved), "kind": object::kind(involved),
                "name": object::name(involved), "namespace": object::namespace(involved),
                "uid": object::meta_str(involved, "uid")
            },
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": component},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1
        });
        if let Err(e) = self.create(&event).await {
            tracing::debug!(%e, reason, "event not written");
        }
    }
}
