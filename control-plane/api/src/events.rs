//! Events as every Skiff component writes them (core/v1 Event: the object involved, reason,
//! message, Normal or Warning, the reporting component and host, first and last time, count),
//! so controllers and agents describe what happened in one shape `skiff describe` reads.

use serde_json::{json, Value};

use crate::object;

/// What one Event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub message: &'a str,
    /// `kubelet`, `deployment-controller`…
    pub component: &'a str,
    /// The node that saw it ("" for the control plane).
    pub host: &'a str,
}

/// The Event object named `name` about `involved`, seen `count` times from `first` to `last`
/// (RFC 3339).
pub fn event(
    name: &str,
    involved: &Value,
    what: &Occurrence<'_>,
    count: u64,
    first: &str,
    last: &str,
) -> Value {
    let namespace = match object::namespace(involved) {
        "" => "default",
        ns => ns,
    };
    let mut source = json!({"component": what.component});
    if !what.host.is_empty() {
        source["host"] = json!(what.host);
    }
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "apiVersion": object::api_version(involved), "kind": object::kind(involved),
            "name": object::name(involved), "namespace": object::namespace(involved),
            "uid": object::meta_str(involved, "uid")
        },
        "reason": what.reason,
        "message": what.message,
        "type": if what.warning { "Warning" } else { "Normal" },
        "source": source,
        "firstTimestamp": first, "lastTimestamp": last, "count": count
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_what_it_is_about() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}});
        let what = Occurrence {
            warning: true,
            reason: "BackOff",
            message: "Back-off restarting failed container",
            component: "kubelet",
            host: "node-a",
        };
        let e = event("web.1", &pod, &what, 3, "t0", "t1");
        assert_eq!(e["metadata"]["namespace"], "shop");
        assert_eq!(e["involvedObject"]["uid"], "u1");
        assert_eq!(e["type"], "Warning");
        assert_eq!(
            e["source"],
            json!({"component": "kubelet", "host": "node-a"})
        );
        assert_eq!(e["count"], 3);
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
        let quiet = Occurrence {
            warning: false,
            host: "",
            ..what
        };
        let e = event("n.1", &node, &quiet, 1, "t0", "t0");
        assert_eq!(e["metadata"]["namespace"], "default");
        assert_eq!(e["source"], json!({"component": "kubelet"}));
    }
}
