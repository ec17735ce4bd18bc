//! Endpoints: for every Service with a selector, an Endpoints object of the same name listing
//! the pods it selects: ready ones under `addresses`, the others under `notReadyAddresses`
//! (all under `addresses` with `publishNotReadyAddresses`), grouped into subsets by the ports
//! the Service's targetPorts resolve to on each pod (a named targetPort is looked up in the
//! pod's container ports). Pods without an IP or finished are left out, and so are pods being
//! deleted unless the Service publishes not-ready addresses (as Kubernetes does).
//! Endpoints this controller made are deleted with their Service.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::selector::LabelSelector;
use skiff_api::{object, Kind};

use super::pods;
use super::runner::{values, Pass};
use super::Context;

/// Marks Endpoints this controller manages.
pub const MANAGED_BY: &str = "skiff.io/managed-by";
const MANAGER: &str = "endpoints-controller";

/// The port `target` (a number, or a container port's name) stands for on `pod`.
fn resolve(pod: &Value, target: &Value, protocol: &str) -> Option<i64> {
    match target {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            object::field(pod, "spec.containers")
                .and_then(Value::as_array)?
                .iter()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .find(|p| {
                    p.get("name").and_then(Value::as_str) == Some(name)
                        && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == protocol
                })
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        _ => None,
    }
}

/// The `subsets` of `service`'s Endpoints, given the pods of its namespace.
pub fn subsets(service: &Value, pods_list: &[&Value]) -> Vec<Value> {
    let selector =
        LabelSelector::from_map(&object::string_map(object::field(service, "spec.selector")));
    let publish_all = object::field(service, "spec.publishNotReadyAddresses")
        .and_then(Value::as_bool)
        == Some(true);
    let ports: Vec<&Value> = object::field(service, "spec.ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().collect())
        .unwrap_or_default();
    // Resolved port list -> (ready addresses, not-ready addresses), by IP.
    type Addresses = BTreeMap<String, Value>;
    let mut groups: BTreeMap<String, (Vec<Value>, Addresses, Addresses)> = BTreeMap::new();
    for pod in pods_list {
        // Terminating pods stay only under publishNotReadyAddresses (Kubernetes'
        // ShouldPodBeInEndpoints with includeTerminating).
        let finished = matches!(pods::phase(pod).as_str(), "Succeeded" | "Failed");
        if object::namespace(pod) != object::namespace(service)
            || finished
            || (pods::is_terminating(pod) && !publish_all)
            || !selector.matches_object(pod)
        {
            continue;
        }
        let ip = object::field_string(pod, "status.podIP");
        if ip.is_empty() {
            continue;
        }
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|p| {
                let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                let target = p
                    .get("targetPort")
                    .or_else(|| p.get("port"))
                    .unwrap_or(&Value::Null);
                let port = resolve(pod, target, protocol)?;
                let mut out = json!({"port": port, "protocol": protocol});
                if let Some(name) = p.get("name").and_then(Value::as_str) {
                    out["name"] = json!(name);
                }
                Some(out)
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let mut address = json!({
            "ip": ip,
            "nodeName": object::field_string(pod, "spec.nodeName"),
            "targetRef": {
                "kind": "Pod", "namespace": object::namespace(pod),
                "name": object::name(pod), "uid": object::meta_str(pod, "uid")
            }
        });
        // A pod in the Service's subdomain is named by its hostname under the Service in DNS
        // (StatefulSets' stable names), as Kubernetes' endpoints controller publishes it.
        let hostname = object::field_string(pod, "spec.hostname");
        if !hostname.is_empty()
            && object::field_string(pod, "spec.subdomain") == object::name(service)
        {
            address["hostname"] = json!(hostname);
        }
        let key = Value::Array(resolved.clone()).to_string();
        let group = groups
            .entry(key)
            .or_insert((resolved, BTreeMap::new(), BTreeMap::new()));
        if publish_all || pods::is_ready(pod) {
            group.1.insert(ip, address);
        } else {
            group.2.insert(ip, address);
        }
    }
    groups
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = Value::Array(ready.into_values().collect());
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = Value::Array(not_ready.into_values().collect());
            }
            if !ports.is_empty() {
                subset["ports"] = Value::Array(ports);
            }
            subset
        })
        .collect()
}

/// The Endpoints object `service` should have (None when it has no selector).
pub fn desired(service: &Value, pods_list: &[&Value]) -> Option<Value> {
    if object::string_map(object::field(service, "spec.selector")).is_empty() {
        return None;
    }
    let mut labels = object::labels(service);
    labels.remove(MANAGED_BY);
    Some(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {
            "name": object::name(service),
            "namespace": object::namespace(service),
            "labels": labels,
            "annotations": {MANAGED_BY: MANAGER},
        },
        "subsets": subsets(service, pods_list),
    }))
}

fn is_managed(endpoints: &Value) -> bool {
    object::annotations(endpoints)
        .get(MANAGED_BY)
        .map(String::as_str)
        == Some(MANAGER)
}

async fn pass(p: Pass) -> Option<Duration> {
    let services = Kind::named("services").expect("Service is served");
    let endpoints = Kind::named("endpoints").expect("Endpoints is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let pod_items = p.cache.list(&pod_kind, None);
    let pod_refs = values(&pod_items);
    let service_items = p.cache.list(&services, None);
    for s in &service_items {
        let svc = &s.object;
        if pods::is_terminating(svc) {
            continue;
        }
        let Some(want) = desired(svc, &pod_refs) else {
            continue;
        };
        let ns = object::namespace(svc);
        let name = object::name(svc);
        let result = match p.cache.get(&endpoints, ns, name) {
            None => p.create(&want).await.map(|_| ()),
            Some(have) => {
                let same = have.object.get("subsets").unwrap_or(&json!([])) == &want["subsets"]
                    && object::labels(&have.object) == object::labels(&want)
                    && is_managed(&have.object);
                if same {
                    continue;
                }
                let mut next = have.object.clone();
                next["subsets"] = want["subsets"].clone();
                object::set_meta(&mut next, "labels", want["metadata"]["labels"].clone());
                let mut annotations = object::annotations(&have.object);
                annotations.insert(MANAGED_BY.into(), MANAGER.into());
                object::set_meta(&mut next, "annotations", json!(annotations));
                p.update(&next).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::debug!(service = name, %e, "endpoints not written");
        }
    }
    // Endpoints made here whose Service is gone.
    for e in p.cache.list(&endpoints, None) {
        let (ns, name) = (object::namespace(&e.object), object::name(&e.object));
        if is_managed(&e.object) && p.cache.get(&services, ns, name).is_none() {
            if let Err(err) = p.delete(&endpoints, ns, name).await {
                tracing::debug!(endpoints = name, %err, "endpoints not deleted");
            }
        }
    }
    None
}

/// Keeps Endpoints current whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let watched =
        ["services", "pods", "endpoints"].map(|k| Kind::named(k).expect("served").prefix(None));
    super::runner::run(ctx, &watched, Duration::from_secs(10), pass).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": 9000, "targetPort": 9100, "protocol": "TCP"}
            ]}
        })
    }

    fn pod(name: &str, ip: &str, ready: bool, http: i64) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": http}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        })
    }

    #[test]
    fn pods_in_the_services_subdomain_publish_their_hostname() {
        let mut named = pod("web-0", "10.244.0.3", true, 8080);
        named["spec"]["hostname"] = json!("web-0");
        named["spec"]["subdomain"] = json!("web");
        let mut elsewhere = pod("db-0", "10.244.0.4", true, 8080);
        elsewhere["spec"]["hostname"] = json!("db-0");
        elsewhere["spec"]["subdomain"] = json!("db");
        let subsets = subsets(&service(), &[&named, &elsewhere]);
        let addresses = subsets[0]["addresses"].as_array().expect("addresses");
        let by_ip = |ip: &str| addresses.iter().find(|a| a["ip"] == ip).expect("address");
        assert_eq!(by_ip("10.244.0.3")["hostname"], "web-0");
        assert!(by_ip("10.244.0.4").get("hostname").is_none());
    }

    #[test]
    fn ready_and_not_ready_pods_grouped_by_resolved_ports() {
        let a = pod("a", "10.244.0.3", true, 8080);
        let b = pod("b", "10.244.0.2", false, 8080);
        let c = pod("c", "10.244.1.2", true, 8081);
        let mut gone = pod("d", "10.244.1.3", true, 8080);
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut other = pod("e", "10.244.1.4", true, 8080);
        other["metadata"]["labels"]["app"] = json!("db");
        let mut no_ip = pod("f", "", true, 8080);
        no_ip["status"]["podIP"] = json!(null);
        let subsets = subsets(&service(), &[&a, &b, &c, &gone, &other, &no_ip]);
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let at_8080 = subsets
            .iter()
            .find(|s| s["ports"][0]["port"] == 8080)
            .unwrap();
        assert_eq!(at_8080["addresses"][0]["ip"], "10.244.0.3");
        assert_eq!(at_8080["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(at_8080["notReadyAddresses"][0]["ip"], "10.244.0.2");
        assert_eq!(
            at_8080["ports"][1],
            json!({"name": "metrics", "port": 9100, "protocol": "TCP"})
        );
        let at_8081 = subsets
            .iter()
            .find(|s| s["ports"][0]["port"] == 8081)
            .unwrap();
        assert_eq!(at_8081["addresses"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn terminating_pods_stay_only_when_not_ready_addresses_are_published() {
        let mut going = pod("a", "10.244.0.3", true, 8080);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut done = pod("b", "10.244.0.4", true, 8080);
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(subsets(&service(), &[&going, &done]), Vec::<Value>::new());
        let mut publish = service();
        publish["spec"]["publishNotReadyAddresses"] = json!(true);
        let subsets = subsets(&publish, &[&going, &done]);
        assert_eq!(subsets.len(), 1, "{subsets:#?}");
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.244.0.3");
        assert!(subsets[0].get("notReadyAddresses").is_none());
    }

    #[test]
    fn services_without_selectors_are_left_alone() {
        let mut svc = service();
        svc["spec"]["selector"] = json!({});
        assert!(desired(&svc, &[]).is_none());
        let e = desired(&service(), &[]).unwrap();
        assert_eq!(e["subsets"], json!([]));
        assert_eq!(e["metadata"]["labels"]["tier"], "front");
        assert!(is_managed(&e));
    }
}
