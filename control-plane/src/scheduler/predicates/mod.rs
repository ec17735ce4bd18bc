//! Whether a pod may go on a node: pure predicates shared by every caller, as the Kubernetes
//! scheduler's filter plugins serve both its scheduler and its DaemonSet controller. The
//! scheduler's filters (`plan`) run all of them; the DaemonSet controller's eligibility check
//! runs node affinity and taints (resources and ports are the scheduler's to weigh when it
//! places the pod); the PersistentVolume binder shares volume binding's matching. Each module owns one predicate and reads what it needs from a pod spec or a
//! node once, so that a pass checking many nodes parses each object once.

pub mod node_affinity;
pub mod node_ports;
pub mod node_unschedulable;
pub mod resources;
pub mod taints;
pub mod volume_binding;

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::object;

use taints::Taint;

/// What the predicates read off a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

impl NodeInfo {
    pub fn of(node: &Value) -> NodeInfo {
        NodeInfo {
            name: object::name(node).to_string(),
            labels: object::labels(node),
            taints: Taint::of_node(node),
            unschedulable: object::field(node, "spec.unschedulable").and_then(Value::as_bool)
                == Some(true),
        }
    }
}

/// The entries of the array at `key` in `v`, or none.
fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The string at `key` in `v`, or "".
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
