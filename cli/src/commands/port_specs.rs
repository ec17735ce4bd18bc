//! The pure parts of `skiff port-forward`'s arguments, read as kubectl reads them: port specs
//! (`[LOCAL_PORT:]REMOTE_PORT`, `:REMOTE_PORT` or `0:REMOTE_PORT` for a random local port, a
//! remote port named by a container port's name), the listen addresses (`--address`, where
//! `localhost` means 127.0.0.1 and ::1), and when a port counts as listened on.

use std::net::IpAddr;

use serde_json::Value;
use skiff_api::object;

/// The port inside the pod, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    Number(u16),
    /// A container port's name (`http`), looked up in the pod.
    Name(String),
}

/// One `[LOCAL_PORT:]REMOTE_PORT` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// None: the same as the remote port; 0: a random free port.
    pub local: Option<u16>,
    pub remote: Remote,
}

/// A port to forward: local (0 until a random one is picked) to remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub local: u16,
    pub remote: u16,
}

/// A decimal port number as Go's `strconv.ParseUint(s, 10, 16)` reads it.
fn number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `s` is a port name (IANA_SVC_NAME: up to 15 lower-case letters, digits and
/// single inner hyphens, with at least one letter).
fn port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Reads one port argument, with kubectl's messages for bad ones.
pub fn parse_port(spec: &str) -> Result<PortSpec, String> {
    let (local, remote) = match spec.split(':').collect::<Vec<_>>()[..] {
        [both] => (None, both),
        [local, remote] => (Some(if local.is_empty() { "0" } else { local }), remote),
        _ => return Err(format!("invalid port format '{spec}'")),
    };
    let local = match local {
        None => None,
        Some(l) => {
            Some(number(l).ok_or_else(|| format!("error parsing local port '{l}': invalid port"))?)
        }
    };
    let remote = if remote.bytes().all(|b| b.is_ascii_digit()) && !remote.is_empty() {
        match number(remote) {
            Some(0) => return Err("remote port must be > 0".into()),
            Some(n) => Remote::Number(n),
            None => {
                return Err(format!(
                    "error parsing remote port '{remote}': invalid port"
                ))
            }
        }
    } else if port_name(remote) {
        Remote::Name(remote.to_string())
    } else {
        return Err(format!(
            "error parsing remote port '{remote}': invalid port"
        ));
    };
    Ok(PortSpec { local, remote })
}

/// The port numbers of `spec` for `pod`: a named remote port is the pod's container port of
/// that name (kubectl's message when there is none).
pub fn resolve(spec: &PortSpec, pod: &Value) -> Result<Forward, String> {
    let remote = match &spec.remote {
        Remote::Number(n) => *n,
        Remote::Name(name) => object::field(pod, "spec.containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["ports"].as_array())
            .flatten()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!(
                    "Pod '{}' does not have a named port '{name}'",
                    object::name(pod)
                )
            })?,
    };
    Ok(Forward {
        local: spec.local.unwrap_or(remote),
        remote,
    })
}

/// The port numbers of `spec` through `service` to `pod`, as kubectl translates them: the
/// remote port is a service port (by number, or by its name), forwarded to its target port
/// (a number; the service port itself when none is set or the Service is headless; a name
/// looked up in the pod's container ports); the local port, when not given, is the service
/// port.
pub fn resolve_through_service(
    spec: &PortSpec,
    service: &Value,
    pod: &Value,
) -> Result<Forward, String> {
    let name = object::name(service);
    let ports: Vec<&Value> = object::field(service, "spec.ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let port_of = |p: &Value| p["port"].as_u64().and_then(|n| u16::try_from(n).ok());
    let port = match &spec.remote {
        Remote::Number(n) => *n,
        Remote::Name(wanted) => ports
            .iter()
            .find(|p| p["name"].as_str() == Some(wanted))
            .and_then(|p| port_of(p))
            .ok_or_else(|| format!("Service '{name}' does not have a named port '{wanted}'"))?,
    };
    let entry = ports
        .iter()
        .find(|p| port_of(p) == Some(port))
        .ok_or_else(|| format!("Service {name} does not have a service port {port}"))?;
    let headless = object::field_string(service, "spec.clusterIP") == "None";
    let remote = match &entry["targetPort"] {
        _ if headless => port,
        Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(0) | None => port,
            Some(n) => n,
        },
        Value::String(target) => {
            let by_name = PortSpec {
                local: Some(0),
                remote: Remote::Name(target.clone()),
            };
            resolve(&by_name, pod)?.remote
        }
        _ => port,
    };
    Ok(Forward {
        local: spec.local.unwrap_or(port),
        remote,
    })
}

/// The ports as Go prints kubectl's list of them: `[{8080 80} {0 443}]`.
pub fn port_list(forwards: &[Forward]) -> String {
    let each: Vec<String> = forwards
        .iter()
        .map(|f| format!("{{{} {}}}", f.local, f.remote))
        .collect();
    format!("[{}]", each.join(" "))
}

/// One address to listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddress {
    pub ip: IpAddr,
    /// One of `localhost`'s two: a failure to listen on it does not matter while the other
    /// one listens (an explicit address must listen).
    pub localhost: bool,
}

/// The addresses of `--address`, each once, in kubectl's order (sorted as text): `localhost`
/// is 127.0.0.1 and ::1; anything else must be an IP address.
pub fn parse_addresses(given: &[String]) -> Result<Vec<ListenAddress>, String> {
    let mut found: Vec<ListenAddress> = Vec::new();
    for a in given {
        if a == "localhost" {
            for ip in [
                IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ] {
                if !found.iter().any(|f| f.ip == ip) {
                    found.push(ListenAddress {
                        ip,
                        localhost: true,
                    });
                }
            }
            continue;
        }
        let ip: IpAddr = a.parse().map_err(|_| format!("{a} is not a valid IP"))?;
        found.retain(|f| f.ip != ip);
        found.push(ListenAddress {
            ip,
            localhost: false,
        });
    }
    found.sort_by_key(|f| f.ip.to_string());
    Ok(found)
}

/// Whether a port failed to listen, given per address whether it is one of localhost's and
/// whether it listens: every one of localhost's failed, or an explicit address did.
pub fn port_failed(results: &[(bool, bool)]) -> bool {
    let local_ok = results.iter().any(|&(local, ok)| local && ok);
    let local_failed = results.iter().any(|&(local, ok)| local && !ok);
    let explicit_failed = results.iter().any(|&(local, ok)| !local && !ok);
    (!local_ok && local_failed) || explicit_failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(local: Option<u16>, remote: u16) -> PortSpec {
        PortSpec {
            local,
            remote: Remote::Number(remote),
        }
    }

    #[test]
    fn ports_are_read_as_kubectl_reads_them() {
        assert_eq!(parse_port("8080"), Ok(spec(None, 8080)));
        assert_eq!(parse_port("8080:80"), Ok(spec(Some(8080), 80)));
        assert_eq!(parse_port(":80"), Ok(spec(Some(0), 80)));
        assert_eq!(parse_port("0:80"), Ok(spec(Some(0), 80)));
        assert_eq!(parse_port("080:0443"), Ok(spec(Some(80), 443)));
        assert_eq!(
            parse_port("9000:http"),
            Ok(PortSpec {
                local: Some(9000),
                remote: Remote::Name("http".into())
            })
        );
        assert_eq!(
            parse_port("metrics-2"),
            Ok(PortSpec {
                local: None,
                remote: Remote::Name("metrics-2".into())
            })
        );
    }

    #[test]
    fn bad_ports_are_refused_with_kubectls_messages() {
        let refused = |s: &str| parse_port(s).expect_err(s);
        assert_eq!(refused("1:2:3"), "invalid port format '1:2:3'");
        assert_eq!(
            refused("x:80"),
            "error parsing local port 'x': invalid port"
        );
        assert_eq!(
            refused("70000:80"),
            "error parsing local port '70000': invalid port"
        );
        assert_eq!(
            refused("+80:80"),
            "error parsing local port '+80': invalid port"
        );
        assert_eq!(refused("80:0"), "remote port must be > 0");
        assert_eq!(refused("0"), "remote port must be > 0");
        assert_eq!(
            refused("70000"),
            "error parsing remote port '70000': invalid port"
        );
        for bad in [
            "8080:",
            "-1",
            "Http",
            "a--b",
            "-ab",
            "ab-",
            "abcdefghijklmnop",
            "12-34",
        ] {
            let remote = bad.rsplit(':').next().unwrap_or(bad);
            assert_eq!(
                refused(bad),
                format!("error parsing remote port '{remote}': invalid port"),
                "{bad}"
            );
        }
    }

    #[test]
    fn named_ports_are_the_pods_container_ports() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [
            {"name": "side"},
            {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]},
        ]}});
        let named = |s: &str| resolve(&parse_port(s).expect("parsed"), &pod);
        assert_eq!(
            named("http"),
            Ok(Forward {
                local: 8080,
                remote: 8080
            })
        );
        assert_eq!(
            named(":http"),
            Ok(Forward {
                local: 0,
                remote: 8080
            })
        );
        assert_eq!(
            named("9000:80"),
            Ok(Forward {
                local: 9000,
                remote: 80
            })
        );
        assert_eq!(
            named("grpc"),
            Err("Pod 'web' does not have a named port 'grpc'".into())
        );
        assert_eq!(
            port_list(&[
                Forward {
                    local: 8080,
                    remote: 80
                },
                Forward {
                    local: 0,
                    remote: 443
                }
            ]),
            "[{8080 80} {0 443}]"
        );
    }

    #[test]
    fn service_ports_are_translated_to_target_ports_as_kubectl_does() {
        let service = json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8000},
            {"name": "admin", "port": 81, "targetPort": "admin"},
            {"name": "same", "port": 82},
        ]}});
        let pod = json!({"metadata": {"name": "web-1"}, "spec": {"containers": [
            {"name": "c", "ports": [{"name": "admin", "containerPort": 9000}]}]}});
        let through =
            |spec: &str| resolve_through_service(&parse_port(spec).expect("spec"), &service, &pod);
        let forward = |local, remote| Ok(Forward { local, remote });
        assert_eq!(through("80"), forward(80, 8000));
        assert_eq!(through("8080:80"), forward(8080, 8000));
        assert_eq!(through("http"), forward(80, 8000));
        assert_eq!(through(":http"), forward(0, 8000));
        assert_eq!(through("81"), forward(81, 9000));
        assert_eq!(through("82"), forward(82, 82));
        assert_eq!(
            through("90"),
            Err("Service web does not have a service port 90".into())
        );
        assert_eq!(
            through("metrics"),
            Err("Service 'web' does not have a named port 'metrics'".into())
        );
        let bare = json!({"metadata": {"name": "web-2"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(
            resolve_through_service(&parse_port("81").expect("spec"), &service, &bare),
            Err("Pod 'web-2' does not have a named port 'admin'".into())
        );
        let mut headless = service.clone();
        headless["spec"]["clusterIP"] = json!("None");
        assert_eq!(
            resolve_through_service(&parse_port("80").expect("spec"), &headless, &pod),
            forward(80, 80)
        );
    }

    #[test]
    fn addresses_are_read_as_kubectl_reads_them() {
        let addrs = |list: &[&str]| {
            parse_addresses(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            addrs(&["localhost"]),
            Ok(vec![
                ListenAddress {
                    ip: ip("127.0.0.1"),
                    localhost: true
                },
                ListenAddress {
                    ip: ip("::1"),
                    localhost: true
                },
            ])
        );
        // An address named explicitly must listen; each address once; sorted as text.
        assert_eq!(
            addrs(&["localhost", "127.0.0.1", "10.0.0.1", "10.0.0.1"]),
            Ok(vec![
                ListenAddress {
                    ip: ip("10.0.0.1"),
                    localhost: false
                },
                ListenAddress {
                    ip: ip("127.0.0.1"),
                    localhost: false
                },
                ListenAddress {
                    ip: ip("::1"),
                    localhost: true
                },
            ])
        );
        assert_eq!(addrs(&["0.0.0.0", "::"]).expect("parsed").len(), 2);
        assert_eq!(
            addrs(&["web.local"]),
            Err("web.local is not a valid IP".into())
        );
    }

    #[test]
    fn a_port_fails_as_kubectl_decides() {
        // localhost: one of its two is enough.
        assert!(!port_failed(&[(true, true), (true, false)]));
        assert!(port_failed(&[(true, false), (true, false)]));
        // An explicit address must listen.
        assert!(port_failed(&[(false, false), (true, true)]));
        assert!(!port_failed(&[(false, true)]));
    }
}
