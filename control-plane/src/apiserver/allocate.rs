//! Service ClusterIPs (from 10.96.0.0/12) and NodePorts (30000-32767), allocated without races:
//! every address or port in use has a key under `/registry/ranges/` naming its Service, claimed
//! in the same transaction that writes the Service (the claim fails if the key exists) and
//! released in the transaction that deletes it or stops using it. `plan` is pure: it decides,
//! from the Services' old and new specs and what is taken, what to claim and release.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};

use super::registry::Also;
use super::validate::FieldError;

/// Every allocation key starts with this.
pub const RANGES: &str = "/registry/ranges/";
pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// 10.96.0.0/12.
const CIDR_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const CIDR_BITS: u32 = 12;
pub const CIDR: &str = "10.96.0.0/12";
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// What is allocated now, across all Services.
#[derive(Clone, Debug, Default)]
pub struct Taken {
    pub ips: BTreeSet<Ipv4Addr>,
    pub ports: BTreeSet<u16>,
}

impl Taken {
    /// From the allocation keys (`/registry/ranges/...`) as listed.
    pub fn from_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Self {
        let mut t = Taken::default();
        for k in keys {
            if let Some(ip) = k.strip_prefix(IP_PREFIX).and_then(|s| s.parse().ok()) {
                t.ips.insert(ip);
            } else if let Some(p) = k.strip_prefix(PORT_PREFIX).and_then(|s| s.parse().ok()) {
                t.ports.insert(p);
            }
        }
        t
    }
}

fn in_cidr(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - CIDR_BITS);
    u32::from(ip) & mask == CIDR_BASE
}

/// Addresses handed out: the network address, the first address (kept for the API's own
/// Service, as in Kubernetes) and the broadcast address are never picked.
fn pick_ip(taken: &Taken) -> Option<Ipv4Addr> {
    let size = 1u32 << (32 - CIDR_BITS);
    let first = 2u32;
    let count = size - first - 1;
    let start = rand::thread_rng().gen_range(0..count);
    (0..count)
        .map(|i| Ipv4Addr::from(CIDR_BASE + first + (start + i) % count))
        .find(|ip| !taken.ips.contains(ip))
}

fn pick_port(taken: &Taken, also_used: &BTreeSet<u16>) -> Option<u16> {
    let count = (NODE_PORTS.end() - NODE_PORTS.start() + 1) as u32;
    let start = rand::thread_rng().gen_range(0..count);
    (0..count)
        .map(|i| NODE_PORTS.start() + ((start + i) % count) as u16)
        .find(|p| !taken.ports.contains(p) && !also_used.contains(p))
}

fn spec_str<'a>(svc: &'a Value, field: &str) -> &'a str {
    svc.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The ClusterIP a spec holds, if it holds a real one.
fn cluster_ip(svc: &Value) -> Option<Ipv4Addr> {
    spec_str(svc, "clusterIP").parse().ok()
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(spec_str(svc, "type"), "NodePort" | "LoadBalancer")
}

fn ports(svc: &Value) -> Vec<Value> {
    svc.get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn node_ports(svc: &Value) -> BTreeSet<u16> {
    ports(svc)
        .iter()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

fn invalid(path: &str, detail: String) -> FieldError {
    FieldError {
        path: path.into(),
        detail,
    }
}

/// Decides the allocations of Service `new` (replacing `live`, if any), owned by `owner`
/// (`namespace/name`): fills in `spec.clusterIP(s)` and `nodePort`s, and returns the claims and
/// releases to write with it.
pub fn plan(
    new: &mut Value,
    live: Option<&Value>,
    taken: &Taken,
    owner: &str,
) -> Result<Also, Vec<FieldError>> {
    let mut also = Also::default();
    let mut errors = Vec::new();
    let ty = spec_str(new, "type").to_string();
    let headless = spec_str(new, "clusterIP") == "None";
    let live_ip = live.and_then(cluster_ip);
    let requested = spec_str(new, "clusterIP").to_string();

    // ClusterIP.
    let mut ip = None;
    if ty == "ExternalName" || headless {
        if ty == "ExternalName" && !requested.is_empty() && requested != "None" {
            errors.push(invalid(
                "spec.clusterIP",
                format!("Invalid value: {requested:?}: must be empty for ExternalName services"),
            ));
        }
    } else if let Some(old) = live_ip {
        if !requested.is_empty() && requested != old.to_string() {
            errors.push(invalid(
                "spec.clusterIPs[0]",
                format!("Invalid value: []string{{{requested:?}}}: may not change once set"),
            ));
        }
        ip = Some(old);
    } else if !requested.is_empty() {
        match requested.parse::<Ipv4Addr>() {
            Err(_) => errors.push(invalid(
                "spec.clusterIPs",
                format!("Invalid value: []string{{{requested:?}}}: must be a valid IP address"),
            )),
            Ok(want) if !in_cidr(want) => errors.push(invalid(
                "spec.clusterIPs",
                format!(
                    "Invalid value: []string{{{requested:?}}}: failed to allocate IP {requested}: \
                     the provided IP ({requested}) is not in the valid range. The range of valid \
                     IPs is {CIDR}"
                ),
            )),
            Ok(want) if taken.ips.contains(&want) => errors.push(invalid(
                "spec.clusterIPs",
                format!(
                    "Invalid value: []string{{{requested:?}}}: failed to allocate IP \
                     {requested}: provided IP is already allocated"
                ),
            )),
            Ok(want) => {
                also.claim(&format!("{IP_PREFIX}{want}"), owner);
                ip = Some(want);
            }
        }
    } else {
        match pick_ip(taken) {
            Some(free) => {
                also.claim(&format!("{IP_PREFIX}{free}"), owner);
                ip = Some(free);
            }
            None => errors.push(invalid(
                "spec.clusterIPs",
                format!("Internal error: range {CIDR} is full"),
            )),
        }
    }
    if let (Some(old), None) = (live_ip, ip) {
        also.release(&format!("{IP_PREFIX}{old}"));
    }
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        match ip {
            Some(ip) => {
                spec.insert("clusterIP".into(), ip.to_string().into());
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
                spec.insert("ipFamilies".into(), json!(["IPv4"]));
                spec.insert("ipFamilyPolicy".into(), "SingleStack".into());
            }
            None if headless => {
                spec.insert("clusterIPs".into(), json!(["None"]));
            }
            None => {}
        }
    }

    // NodePorts.
    let live_ports = live.map(node_ports).unwrap_or_default();
    let live_port_list = live.map(ports).unwrap_or_default();
    let mut kept = BTreeSet::new();
    if wants_node_ports(new) {
        let mut used: BTreeSet<u16> = BTreeSet::new();
        let list = ports(new);
        let mut out = Vec::new();
        for (i, mut p) in list.into_iter().enumerate() {
            let path = format!("spec.ports[{i}].nodePort");
            let asked = p.get("nodePort").and_then(Value::as_i64);
            let chosen = match asked {
                Some(n) => {
                    let n16 = u16::try_from(n).ok().filter(|n| NODE_PORTS.contains(n));
                    match n16 {
                        None => {
                            errors.push(invalid(
                                &path,
                                format!(
                                    "Invalid value: {n}: provided port is not in the valid \
                                     range. The range of valid ports is 30000-32767"
                                ),
                            ));
                            None
                        }
                        Some(n) if live_ports.contains(&n) || !taken.ports.contains(&n) => {
                            if used.contains(&n) {
                                errors.push(invalid(&path, format!("Duplicate value: {n}")));
                            }
                            Some(n)
                        }
                        Some(n) => {
                            errors.push(invalid(
                                &path,
                                format!("Invalid value: {n}: provided port is already allocated"),
                            ));
                            None
                        }
                    }
                }
                None => {
                    // Keep the port the same Service port had before (apply replaces lists).
                    let same = live_port_list.iter().find(|lp| {
                        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                        let lname = lp.get("name").and_then(Value::as_str).unwrap_or_default();
                        (!name.is_empty() && name == lname)
                            || (lp.get("port") == p.get("port")
                                && lp.get("protocol") == p.get("protocol"))
                    });
                    let reuse = same
                        .and_then(|lp| lp.get("nodePort"))
                        .and_then(Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| !used.contains(n));
                    match reuse.or_else(|| pick_port(taken, &used)) {
                        Some(n) => Some(n),
                        None => {
                            errors.push(invalid(&path, "Internal error: no free node port".into()));
                            None
                        }
                    }
                }
            };
            if let Some(n) = chosen {
                used.insert(n);
                if live_ports.contains(&n) {
                    kept.insert(n);
                } else {
                    also.claim(&format!("{PORT_PREFIX}{n}"), owner);
                }
                if let Some(m) = p.as_object_mut() {
                    m.insert("nodePort".into(), n.into());
                }
            }
            out.push(p);
        }
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("ports".into(), Value::Array(out));
            spec.entry("externalTrafficPolicy")
                .or_insert_with(|| "Cluster".into());
        }
    }
    for old in live_ports.difference(&kept) {
        also.release(&format!("{PORT_PREFIX}{old}"));
    }
    health_check_port(new, live, taken, owner, &mut also, &mut errors);
    if errors.is_empty() {
        Ok(also)
    } else {
        Err(errors)
    }
}

/// A Service's `spec.healthCheckNodePort`, when it has one.
fn health_check_node_port(svc: &Value) -> Option<u16> {
    svc.get("spec")
        .and_then(|s| s.get("healthCheckNodePort"))
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// `spec.healthCheckNodePort`, from the NodePort range: LoadBalancer Services with
/// externalTrafficPolicy Local get one (the one asked for, the one they had, or a free one);
/// it may not change once set, and no other Service may ask for it.
fn health_check_port(
    new: &mut Value,
    live: Option<&Value>,
    taken: &Taken,
    owner: &str,
    also: &mut Also,
    errors: &mut Vec<FieldError>,
) {
    const PATH: &str = "spec.healthCheckNodePort";
    let live_port = live.and_then(health_check_node_port);
    let asked = new
        .get("spec")
        .and_then(|s| s.get("healthCheckNodePort"))
        .and_then(Value::as_i64)
        .filter(|p| *p != 0);
    let wanted = spec_str(new, "type") == "LoadBalancer"
        && spec_str(new, "externalTrafficPolicy") == "Local";
    let mut chosen = None;
    if !wanted {
        if let Some(n) = asked {
            errors.push(invalid(
                PATH,
                format!(
                    "Invalid value: {n}: may only be set when `type` is 'LoadBalancer' and \
                     `externalTrafficPolicy` is 'Local'"
                ),
            ));
        }
    } else {
        let own_node_ports = node_ports(new);
        match (asked, live_port) {
            (Some(n), Some(old)) if n != i64::from(old) => errors.push(invalid(
                PATH,
                format!("Invalid value: {n}: field is immutable"),
            )),
            (_, Some(old)) => chosen = Some(old),
            (Some(n), None) => match u16::try_from(n).ok().filter(|n| NODE_PORTS.contains(n)) {
                None => errors.push(invalid(
                    PATH,
                    format!(
                        "Invalid value: {n}: provided port is not in the valid range. The \
                         range of valid ports is 30000-32767"
                    ),
                )),
                Some(n) if taken.ports.contains(&n) || own_node_ports.contains(&n) => {
                    errors.push(invalid(
                        PATH,
                        format!("Invalid value: {n}: provided port is already allocated"),
                    ))
                }
                Some(n) => chosen = Some(n),
            },
            (None, None) => match pick_port(taken, &own_node_ports) {
                Some(n) => chosen = Some(n),
                None => errors.push(invalid(PATH, "Internal error: no free node port".into())),
            },
        }
        if let (Some(n), None) = (chosen, live_port) {
            also.claim(&format!("{PORT_PREFIX}{n}"), owner);
        }
    }
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        match chosen {
            Some(n) => {
                spec.insert("healthCheckNodePort".into(), n.into());
            }
            None if !wanted => {
                spec.remove("healthCheckNodePort");
            }
            None => {}
        }
    }
    if let (Some(old), false) = (live_port, chosen.is_some()) {
        also.release(&format!("{PORT_PREFIX}{old}"));
    }
}

/// The releases of everything a Service being deleted holds.
pub fn release_all(live: &Value) -> Also {
    let mut also = Also::default();
    if let Some(ip) = cluster_ip(live) {
        also.release(&format!("{IP_PREFIX}{ip}"));
    }
    for p in node_ports(live)
        .into_iter()
        .chain(health_check_node_port(live))
    {
        also.release(&format!("{PORT_PREFIX}{p}"));
    }
    also
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ty: &str, ip: &str, ports: Value) -> Value {
        json!({"spec": {"type": ty, "clusterIP": ip, "ports": ports}})
    }

    #[test]
    fn a_new_service_gets_a_free_address_and_node_ports() {
        let mut s = svc("NodePort", "", json!([{"port": 80, "protocol": "TCP"}]));
        let taken = Taken::default();
        plan(&mut s, None, &taken, "default/web").unwrap();
        let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(in_cidr(ip) && ip != Ipv4Addr::new(10, 96, 0, 1));
        let np = s["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
        assert!(NODE_PORTS.contains(&np));
    }

    #[test]
    fn requested_values_are_honoured_or_refused() {
        let mut taken = Taken::default();
        taken.ips.insert("10.96.0.10".parse().unwrap());
        taken.ports.insert(30080);
        let mut s = svc("ClusterIP", "10.96.0.11", json!([{"port": 80}]));
        plan(&mut s, None, &taken, "o").unwrap();
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.11");
        let mut s = svc("ClusterIP", "10.96.0.10", json!([{"port": 80}]));
        let e = plan(&mut s, None, &taken, "o").unwrap_err();
        assert!(
            e[0].to_string()
                .contains("provided IP is already allocated"),
            "{e:?}"
        );
        let mut s = svc("ClusterIP", "192.168.0.1", json!([{"port": 80}]));
        let e = plan(&mut s, None, &taken, "o").unwrap_err();
        assert!(e[0].to_string().contains("not in the valid range"), "{e:?}");
        let mut s = svc("NodePort", "", json!([{"port": 80, "nodePort": 30080}]));
        let e = plan(&mut s, None, &taken, "o").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        let mut s = svc("NodePort", "", json!([{"port": 80, "nodePort": 20000}]));
        assert!(plan(&mut s, None, &taken, "o").is_err());
    }

    #[test]
    fn an_update_keeps_its_address_and_node_ports() {
        let live = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30100}]}});
        let mut taken = Taken::default();
        taken.ips.insert("10.96.0.20".parse().unwrap());
        taken.ports.insert(30100);
        // A re-applied manifest names neither.
        let mut s = svc("NodePort", "", json!([{"port": 80, "protocol": "TCP"}]));
        plan(&mut s, Some(&live), &taken, "o").unwrap();
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.20");
        assert_eq!(s["spec"]["ports"][0]["nodePort"], 30100);
        let mut s = svc("NodePort", "10.96.0.21", json!([{"port": 80}]));
        let e = plan(&mut s, Some(&live), &taken, "o").unwrap_err();
        assert!(
            e[0].to_string().contains("may not change once set"),
            "{e:?}"
        );
    }

    #[test]
    fn load_balancers_with_a_local_policy_get_a_health_check_port_that_stays() {
        let lb = |policy: &str, hc: Option<u64>| {
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "",
                "externalTrafficPolicy": policy, "healthCheckNodePort": hc,
                "ports": [{"port": 80, "protocol": "TCP"}]}})
        };
        let mut s = lb("Local", None);
        plan(&mut s, None, &Taken::default(), "o").unwrap();
        let hc = s["spec"]["healthCheckNodePort"].as_u64().unwrap() as u16;
        assert!(NODE_PORTS.contains(&hc));
        assert_ne!(
            Some(u64::from(hc)),
            s["spec"]["ports"][0]["nodePort"].as_u64()
        );

        // Kept on update, not changeable, released when the policy goes.
        let live = s.clone();
        let mut again = lb("Local", None);
        plan(&mut again, Some(&live), &Taken::default(), "o").unwrap();
        assert_eq!(again["spec"]["healthCheckNodePort"], u64::from(hc));
        let other = if hc == 30000 { 30001 } else { 30000 };
        let mut moved = lb("Local", Some(other));
        let e = plan(&mut moved, Some(&live), &Taken::default(), "o").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            format!("spec.healthCheckNodePort: Invalid value: {other}: field is immutable")
        );
        let mut cluster = lb("Cluster", None);
        plan(&mut cluster, Some(&live), &Taken::default(), "o").unwrap();
        assert!(cluster["spec"].get("healthCheckNodePort").is_none());

        // Asked for: honoured when free, refused when taken or out of place.
        let mut asked = lb("Local", Some(31000));
        plan(&mut asked, None, &Taken::default(), "o").unwrap();
        assert_eq!(asked["spec"]["healthCheckNodePort"], 31000);
        let mut taken = Taken::default();
        taken.ports.insert(31000);
        let e = plan(&mut lb("Local", Some(31000)), None, &taken, "o").unwrap_err();
        assert!(
            e[0].to_string()
                .contains("provided port is already allocated"),
            "{e:?}"
        );
        let e = plan(
            &mut lb("Cluster", Some(31000)),
            None,
            &Taken::default(),
            "o",
        )
        .unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is \
             'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
        );
    }
}
