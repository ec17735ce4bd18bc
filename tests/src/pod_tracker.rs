//! Follows pods through a watch and checks a condition on every state the store went through,
//! for tests that must hold "at every step" (a rolling update's limits, a pod never bound
//! twice). Each watch event is one revision, so every checked state really existed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use skiff_api::{Client, Kind};

/// Pods by uid.
pub type Pods = BTreeMap<String, Value>;

/// What the tracker found.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Each state for which the check returned a complaint, with the revision.
    pub violations: Vec<String>,
    /// States checked.
    pub states: usize,
}

pub struct PodTracker {
    findings: Arc<Mutex<Findings>>,
    task: tokio::task::JoinHandle<()>,
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn node(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

impl PodTracker {
    /// Starts following the pods in `namespace` matching `selector`, calling `check` on each
    /// state (it returns a complaint or None). A pod moved from one node to another is always
    /// a violation.
    pub async fn start(
        urls: &[String],
        namespace: &str,
        selector: &str,
        check: impl Fn(&Pods) -> Option<String> + Send + 'static,
    ) -> PodTracker {
        let client = Client::new(urls).expect("client");
        let kind = Kind::named("pods").expect("pods");
        let list = client
            .list(&kind, Some(namespace), selector, "")
            .await
            .expect("initial pod list");
        let findings = Arc::new(Mutex::new(Findings::default()));
        let out = findings.clone();
        let namespace = namespace.to_string();
        let selector = selector.to_string();
        let task = tokio::spawn(async move {
            let mut pods: Pods = list.items.iter().map(|p| (uid(p), p.clone())).collect();
            let mut watch = client.watch(
                &kind,
                Some(&namespace),
                &selector,
                "",
                &list.resource_version,
            );
            while let Ok(Some(ev)) = watch.next().await {
                let rv = ev.object["metadata"]["resourceVersion"].clone();
                let mut complaint = None;
                match ev.kind.as_str() {
                    "ADDED" | "MODIFIED" => {
                        let id = uid(&ev.object);
                        if let Some(old) = pods.get(&id) {
                            if !node(old).is_empty() && node(old) != node(&ev.object) {
                                complaint = Some(format!(
                                    "pod {} moved from {} to {}",
                                    ev.object["metadata"]["name"],
                                    node(old),
                                    node(&ev.object)
                                ));
                            }
                        }
                        pods.insert(id, ev.object);
                    }
                    "DELETED" => {
                        pods.remove(&uid(&ev.object));
                    }
                    _ => continue,
                }
                let complaint = complaint.or_else(|| check(&pods));
                let mut f = out.lock().unwrap();
                f.states += 1;
                if let Some(c) = complaint {
                    f.violations.push(format!("at revision {rv}: {c}"));
                }
            }
        });
        PodTracker { findings, task }
    }

    /// What was found so far.
    pub fn findings(&self) -> Findings {
        self.findings.lock().unwrap().clone()
    }

    /// Stops following and returns what was found.
    pub fn stop(self) -> Findings {
        self.task.abort();
        self.findings()
    }
}

/// Not being deleted and not finished.
pub fn is_active(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        )
}

/// Active and Ready.
pub fn is_ready(pod: &Value) -> bool {
    is_active(pod)
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}
