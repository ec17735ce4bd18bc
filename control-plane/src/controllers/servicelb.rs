//! LoadBalancer Services on bare metal, as k3s's ServiceLB gives them: every LoadBalancer
//! Service (without a `spec.loadBalancerClass`, which means another controller's) gets the
//! InternalIPs of the Ready nodes as `status.loadBalancer.ingress`, and every node's proxy
//! then serves the Service's port on those addresses. A Service that stops being a
//! LoadBalancer loses the ingress this controller gave it.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::{object, Kind};

use super::pods;
use super::runner::{values, Pass};
use super::Context;

/// The InternalIP of every Ready node, sorted: the ingress of each LoadBalancer Service.
pub fn node_addresses(nodes: &[&Value]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| pods::is_ready(n) && object::meta_str(n, "deletionTimestamp").is_empty())
        .filter_map(|n| {
            object::field(n, "status.addresses")
                .and_then(Value::as_array)?
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
                .and_then(|a| a.get("address").and_then(Value::as_str))
                .map(str::to_string)
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The `status.loadBalancer` `service` should have given the nodes' addresses; None when it
/// is not this controller's to set.
pub fn desired(service: &Value, addresses: &[String]) -> Option<Value> {
    if !object::field_string(service, "spec.loadBalancerClass").is_empty() {
        return None;
    }
    if object::field_string(service, "spec.type") != "LoadBalancer" {
        // Clear what was given while it was one.
        let had = object::field(service, "status.loadBalancer.ingress")
            .and_then(Value::as_array)
            .is_some_and(|i| !i.is_empty());
        return had.then(|| json!({}));
    }
    let ingress: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    Some(if ingress.is_empty() {
        json!({})
    } else {
        json!({ "ingress": ingress })
    })
}

async fn pass(p: Pass) -> Option<Duration> {
    let services = Kind::named("services").expect("Service is served");
    let nodes = Kind::named("nodes").expect("Node is served");
    let node_items = p.cache.list(&nodes, None);
    let addresses = node_addresses(&values(&node_items));
    for s in p.live(&services) {
        let svc = &s.object;
        let Some(want) = desired(svc, &addresses) else {
            continue;
        };
        let have = object::field(svc, "status.loadBalancer")
            .cloned()
            .unwrap_or(json!({}));
        if have == want {
            continue;
        }
        let mut next = svc.clone();
        next["status"]["loadBalancer"] = want;
        if let Err(e) = p.update_status(&next).await {
            tracing::debug!(service = object::name(svc), %e, "load balancer status not written");
        }
    }
    None
}

/// Keeps LoadBalancer Services' ingress current whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let watched = ["services", "nodes"].map(|k| Kind::named(k).expect("served").prefix(None));
    super::runner::run(ctx, &watched, Duration::from_secs(30), pass).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: &str) -> Value {
        json!({"metadata": {"name": name},
               "status": {"addresses": [{"type": "Hostname", "address": name},
                                        {"type": "InternalIP", "address": ip}],
                          "conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn load_balancers_get_the_ready_nodes_addresses() {
        let (a, b, c) = (
            node("a", "10.0.0.2", "True"),
            node("b", "10.0.0.1", "True"),
            node("c", "10.0.0.3", "Unknown"),
        );
        let addresses = node_addresses(&[&a, &b, &c]);
        assert_eq!(addresses, ["10.0.0.1", "10.0.0.2"]);

        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(
            desired(&lb, &addresses),
            Some(json!({"ingress": [{"ip": "10.0.0.1", "ipMode": "VIP"},
                                    {"ip": "10.0.0.2", "ipMode": "VIP"}]}))
        );
        assert_eq!(desired(&lb, &[]), Some(json!({})));

        // Another controller's class, or not a load balancer: left alone.
        let other = json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "x.io/lb"}});
        assert_eq!(desired(&other, &addresses), None);
        let plain = json!({"spec": {"type": "ClusterIP"}});
        assert_eq!(desired(&plain, &addresses), None);
        // A former load balancer loses its ingress.
        let former = json!({"spec": {"type": "NodePort"},
                            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
        assert_eq!(desired(&former, &addresses), Some(json!({})));
    }
}
