//! The API objects volumes read: configMaps, secrets, and for claims the
//! PersistentVolumeClaim and its PersistentVolume. A missing object is `None`; any other
//! failure an error naming what was being read.

use serde::de::DeserializeOwned;
use skiff_api::error::Reason;
use skiff_api::{Client, Kind};

use super::error::VolumeError;

/// The object `kind` `namespace/name`, None if it does not exist.
pub async fn get<T: DeserializeOwned>(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<T>, VolumeError> {
    let what = || format!("{} {namespace}/{name}", kind.to_ascii_lowercase());
    let k = Kind::of("v1", kind).ok_or_else(|| VolumeError::Api {
        what: what(),
        message: "unknown kind".into(),
    })?;
    match client.get(&k, namespace, name).await {
        Ok(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| VolumeError::Api {
                what: what(),
                message: e.to_string(),
            }),
        Err(e) if e.reason == Reason::NotFound => Ok(None),
        Err(e) => Err(VolumeError::Api {
            what: what(),
            message: e.to_string(),
        }),
    }
}
