//! Measuring this machine: its name, the address other nodes reach it on (the default route's
//! interface unless told), CPUs, memory, the disk under the agent's root directory, kernel and
//! OS, and the current free memory, disk and process counts the pressure conditions read.

use std::net::Ipv4Addr;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FactsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find this machine's address: {0}; give it with --node-ip")]
    NoAddress(String),
    #[error("{0}")]
    Sys(#[from] nix::Error),
}

/// What the Node reports as its capacity and identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    pub hostname: String,
    pub address: Ipv4Addr,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub architecture: String,
    pub machine_id: String,
    pub boot_id: String,
}

/// Current usage, for the pressure conditions.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Usage {
    pub memory_available_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_available_bytes: u64,
    pub disk_total_bytes: u64,
    pub pids: u64,
    pub pid_max: u64,
}

fn read(path: &str) -> Result<String, FactsError> {
    std::fs::read_to_string(path).map_err(|source| FactsError::Read {
        path: path.into(),
        source,
    })
}

/// A `Key:  123 kB` line of /proc/meminfo, in bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The interface of the default route in /proc/net/route's text.
fn default_route_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let iface = f.next()?;
        let dest = f.next()?;
        (dest == "00000000").then(|| iface.to_string())
    })
}

/// PRETTY_NAME from /etc/os-release.
fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim_matches('"').to_string())
    })
}

/// The IPv4 address of `interface`, or of the first non-loopback interface when it is None.
fn interface_address(interface: Option<&str>) -> Result<Ipv4Addr, FactsError> {
    let addrs = nix::ifaddrs::getifaddrs()?;
    let mut found = None;
    for a in addrs {
        let Some(ip) = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        let wanted = match interface {
            Some(i) => a.interface_name == i,
            None => !ip.is_loopback(),
        };
        if wanted {
            found = Some(ip);
            break;
        }
    }
    found.ok_or_else(|| {
        FactsError::NoAddress(match interface {
            Some(i) => format!("interface {i} (of the default route) has no IPv4 address"),
            None => "no default route and no interface with an IPv4 address".into(),
        })
    })
}

/// Measures this machine. `address` overrides the default route's interface address.
pub fn measure(root_dir: &Path, address: Option<Ipv4Addr>) -> Result<Facts, FactsError> {
    let address = match address {
        Some(a) => a,
        None => {
            let route = read("/proc/net/route")?;
            interface_address(default_route_interface(&route).as_deref())?
        }
    };
    let uname = nix::sys::utsname::uname()?;
    let meminfo = read("/proc/meminfo")?;
    let disk = nix::sys::statvfs::statvfs(root_dir)?;
    Ok(Facts {
        hostname: uname.nodename().to_string_lossy().into_owned(),
        address,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1),
        memory_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        disk_bytes: disk.blocks() as u64 * disk.fragment_size() as u64,
        kernel: uname.release().to_string_lossy().into_owned(),
        os_image: std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| pretty_name(&t))
            .unwrap_or_else(|| "Linux".into()),
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            other => other.into(),
        },
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .unwrap_or_default()
            .trim()
            .into(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .into(),
    })
}

/// Measures current usage.
pub fn usage(root_dir: &Path) -> Result<Usage, FactsError> {
    let meminfo = read("/proc/meminfo")?;
    let disk = nix::sys::statvfs::statvfs(root_dir)?;
    let pids = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    Ok(Usage {
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(0),
        memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        disk_available_bytes: disk.blocks_available() as u64 * disk.fragment_size() as u64,
        disk_total_bytes: disk.blocks() as u64 * disk.fragment_size() as u64,
        pids,
        pid_max: read("/proc/sys/kernel/pid_max")?
            .trim()
            .parse()
            .unwrap_or(32768),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_texts() {
        let meminfo = "MemTotal:       24683656 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), Some(24683656 * 1024));
        assert_eq!(meminfo_bytes(meminfo, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
        let route = "Iface\tDestination\tGateway\n\
                     br0\t0000A8C0\t00000000\n\
                     eth0\t00000000\t0100A8C0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n").as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
    }

    #[test]
    fn measures_this_machine() {
        let f = measure(Path::new("/"), Some(Ipv4Addr::LOCALHOST)).expect("measured");
        assert!(f.cpus >= 1);
        assert!(f.memory_bytes > 0);
        assert!(f.disk_bytes > 0);
        assert!(!f.kernel.is_empty());
        let u = usage(Path::new("/")).expect("measured");
        assert!(u.memory_available_bytes <= u.memory_total_bytes);
        assert!(u.pids > 0 && u.pids < u.pid_max);
    }
}
