//! The kernel settings a pod network needs, checked (and set where the agent may) at start:
//! IPv4 forwarding on, and bridged traffic passing through iptables (br_netfilter), whose
//! absence is reported with what to do about it; `route_localnet` for the proxy's NodePorts on
//! 127.0.0.1.

use std::path::Path;

const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Turns on what can be turned on; the error says what is missing and how to fix it.
pub fn prepare() -> Result<(), String> {
    ensure_one(FORWARD, "IPv4 forwarding")?;
    if !Path::new(BRIDGE_NF).exists() {
        return Err(format!(
            "{BRIDGE_NF} is missing: the br_netfilter kernel module is not loaded (run \
             `modprobe br_netfilter`, and list it in /etc/modules-load.d/ to keep it)"
        ));
    }
    ensure_one(BRIDGE_NF, "bridged traffic through iptables")
}

/// Lets packets to 127.0.0.0/8 be routed elsewhere once DNATed, so NodePorts answer on
/// 127.0.0.1 (the proxy's rules drop such packets that were not DNATed).
pub fn route_localnet() -> Result<(), String> {
    ensure_one(
        "/proc/sys/net/ipv4/conf/all/route_localnet",
        "routing of localhost traffic",
    )
}

fn ensure_one(path: &str, what: &str) -> Result<(), String> {
    let now =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path} ({what}): {e}"))?;
    if now.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| {
        format!(
            "{what} is off ({path} is {}) and cannot be turned on: {e}",
            now.trim()
        )
    })
}
