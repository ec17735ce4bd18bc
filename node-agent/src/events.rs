//! The agent's Events about pods (Pulling, Pulled, Created, Started, Killing, BackOff, Failed…)
//! and about its node (FreeDiskSpaceFailed, ImageGCFailed), written in the background so a sync never waits on them. The same event repeated about the
//! same pod is one Event whose count and last time go up, as the kubelet's correlator does,
//! so a crash loop does not flood the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use skiff_api::events::{event, Occurrence};
use skiff_api::Client;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    host: String,
    /// Per (pod uid, type, reason, message): times seen and when first.
    seen: Arc<Mutex<HashMap<String, (u64, String)>>>,
}

/// Most distinct events remembered before the memory of them is cleared.
const REMEMBERED: usize = 4096;

impl Recorder {
    pub fn new(client: Client, host: impl Into<String>) -> Recorder {
        Recorder {
            client,
            host: host.into(),
            seen: Arc::default(),
        }
    }

    pub fn normal(&self, pod: &Pod, reason: &str, message: impl Into<String>) {
        self.record(pod, false, reason, message.into());
    }

    pub fn warning(&self, pod: &Pod, reason: &str, message: impl Into<String>) {
        self.record(pod, true, reason, message.into());
    }

    /// A warning about this node (the kubelet names the node as its own uid).
    pub fn node_warning(&self, node: &str, reason: &str, message: impl Into<String>) {
        let involved = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "uid": node}
        });
        self.record_about(node, involved, true, reason, message.into());
    }

    fn record(&self, pod: &Pod, warning: bool, reason: &str, message: String) {
        let mut involved = match serde_json::to_value(pod) {
            Ok(v) => v,
            Err(_) => return,
        };
        involved["apiVersion"] = "v1".into();
        involved["kind"] = "Pod".into();
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.record_about(&name, involved, warning, reason, message);
    }

    fn record_about(
        &self,
        name: &str,
        involved: serde_json::Value,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let uid = skiff_api::object::meta_str(&involved, "uid").to_string();
        let key = format!("{uid}\0{warning}\0{reason}\0{message}");
        let digest = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        let now = jiff::Timestamp::now().to_string();
        let (count, first) = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            let entry = seen.entry(key).or_insert((0, now.clone()));
            entry.0 += 1;
            entry.clone()
        };
        let name = format!("{name}.{digest}");
        let what = Occurrence {
            warning,
            reason,
            message: &message,
            component: "kubelet",
            host: &self.host,
        };
        let ev = event(&name, &involved, &what, count, &first, &now);
        let client = self.client.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = client.apply(&ev, "").await {
                tracing::debug!(%e, reason, "event not written");
            }
        });
    }
}
