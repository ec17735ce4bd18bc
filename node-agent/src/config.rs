//! The agent's flags (each also an environment variable), as the kubelet and k3s name them
//! where they have one.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::Parser;

use crate::node::object::Reserved;

/// Runs pods on this node for a Skiff cluster.
#[derive(Parser, Debug, Clone)]
#[command(name = "skiff-agent", version, about)]
pub struct Args {
    /// Comma-separated client endpoints of the control-plane replicas.
    #[arg(long, env = "SKIFF_ENDPOINTS", default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// This node's name (default: the hostname).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// The address other nodes reach this one on (default: the address of the default
    /// route's interface).
    #[arg(long, env = "SKIFF_NODE_IP")]
    pub node_ip: Option<Ipv4Addr>,
    /// The port the agent serves its calls on (container logs, for the API server), published
    /// in the Node's status.daemonEndpoints.kubeletEndpoint.port.
    #[arg(long, env = "SKIFF_AGENT_PORT", default_value_t = crate::server::DEFAULT_PORT)]
    pub port: u16,
    /// The address the agent's port listens on.
    #[arg(long, env = "SKIFF_AGENT_ADDRESS", default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Where the agent keeps everything it writes: images, containers, pod directories, logs.
    #[arg(long, env = "SKIFF_ROOT_DIR", default_value = "/var/lib/skiff-agent")]
    pub root_dir: PathBuf,
    /// The cgroup under which pods' cgroups are made.
    #[arg(long, env = "SKIFF_CGROUP_ROOT", default_value = "skiff")]
    pub cgroup_root: String,
    /// A container's log file is rotated once it would pass this size (`10Mi`, `1Gi`, bytes).
    #[arg(long, env = "SKIFF_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi", value_parser = parse_log_size)]
    pub container_log_max_size: u64,
    /// Log files kept per container run, the current one included (at least 2).
    #[arg(long, env = "SKIFF_CONTAINER_LOG_MAX_FILES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    pub container_log_max_files: u32,
    /// Image collection starts when the disk holding the images is this full (percent).
    #[arg(long, env = "SKIFF_IMAGE_GC_HIGH_THRESHOLD", default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Image collection removes unused images until the disk is this full (percent).
    #[arg(long, env = "SKIFF_IMAGE_GC_LOW_THRESHOLD", default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// An image used (or pulled) more recently than this is never collected (`2m`, `1h`).
    #[arg(long, env = "SKIFF_IMAGE_MINIMUM_GC_AGE", default_value = "2m", value_parser = parse_duration)]
    pub image_minimum_gc_age: std::time::Duration,
    /// How often the disk is checked for image collection.
    #[arg(long, env = "SKIFF_IMAGE_GC_PERIOD", default_value = "5m", value_parser = parse_positive_duration)]
    pub image_gc_period: std::time::Duration,
    /// Resources kept back from pods: `cpu=100m,memory=256Mi,ephemeral-storage=1Gi`.
    #[arg(long, env = "SKIFF_SYSTEM_RESERVED", default_value = "")]
    pub system_reserved: Reserved,
    /// Registry mirrors, plain-HTTP registries, CAs and credentials, in the shape of k3s's
    /// registries.yaml.
    #[arg(long, env = "SKIFF_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,
    /// Pull only through the mirrors registries.yaml names, never from a registry's own
    /// address (k3s's flag of the same name).
    #[arg(long, env = "SKIFF_DISABLE_DEFAULT_REGISTRY_ENDPOINT")]
    pub disable_default_registry_endpoint: bool,
    /// Where the CNI network configuration is read from (Skiff's default is written there when
    /// it holds none). Default: `<root-dir>/cni/net.d`.
    #[arg(long, env = "SKIFF_CNI_CONF_DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Where the CNI plugins are.
    #[arg(long, env = "SKIFF_CNI_BIN_DIR", default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
    /// Most processes one pod may have (-1: no limit).
    #[arg(long, env = "SKIFF_POD_PIDS_LIMIT", default_value_t = -1, allow_negative_numbers = true)]
    pub pod_pids_limit: i64,
    /// The shim binary (default: `skiff-shim` beside this program).
    #[arg(long, env = "SKIFF_SHIM")]
    pub shim: Option<PathBuf>,
    /// The cluster's pod network: traffic to a Service's cluster IP from outside it is
    /// masqueraded (as kube-proxy's --cluster-cidr).
    #[arg(long, env = "SKIFF_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The cluster's DNS domain: the node's DNS server answers for it, pods search it.
    #[arg(long, env = "SKIFF_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// DNS servers for pods' resolv.conf (comma-separated IPs; default: this node's own DNS
    /// server, on the pod bridge's address).
    #[arg(long, env = "SKIFF_CLUSTER_DNS", value_delimiter = ',')]
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The node's resolver configuration: the upstream of the node's DNS server, and what pods
    /// with dnsPolicy Default get (the kubelet's flag).
    #[arg(long, env = "SKIFF_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Run no DNS server on this node (pods use --cluster-dns, or the node's resolv.conf).
    #[arg(long, env = "SKIFF_DISABLE_DNS")]
    pub disable_dns: bool,
    /// Least time between two syncs of the Services' rules (0s: sync at every change).
    #[arg(long, env = "SKIFF_PROXY_MIN_SYNC_PERIOD", default_value = "1s", value_parser = parse_duration)]
    pub proxy_min_sync_period: std::time::Duration,
    /// Most time between two full syncs (changes in between write only the chains that
    /// changed); a full sync reads the rules back and repairs what someone else changed.
    #[arg(long, env = "SKIFF_PROXY_SYNC_PERIOD", default_value = "30s", value_parser = parse_positive_duration)]
    pub proxy_sync_period: std::time::Duration,
    /// Keep no Service rules on this node (another proxy does it).
    #[arg(long, env = "SKIFF_DISABLE_PROXY")]
    pub disable_proxy: bool,
    /// Remove every iptables rule and chain of Skiff's on this node, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Run this many simulated nodes instead of a real one.
    #[arg(long, default_value_t = 0)]
    pub hollow: usize,
    /// Name prefix of the hollow nodes (PREFIX-0, PREFIX-1, ...).
    #[arg(long, default_value = "hollow")]
    pub name: String,
    /// Duration of the node's Lease; the agent renews it every quarter of that (the kubelet's
    /// flag and default). The control plane's --node-monitor-grace-period must be longer.
    #[arg(long, env = "SKIFF_NODE_LEASE_DURATION_SECONDS", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub node_lease_duration_seconds: u32,
    /// Seconds between Lease renewals of each hollow node.
    #[arg(long, env = "SKIFF_NODE_HEARTBEAT", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_every: u64,
}

/// A log size limit: a quantity of at least 1 KiB.
fn parse_log_size(s: &str) -> Result<u64, String> {
    let q = skiff_api::quantity::Quantity::parse(s)
        .map_err(|e| format!("{s:?} is not a size such as 10Mi: {e}"))?;
    let bytes = q.value();
    if bytes < 1024 {
        return Err(format!("{s:?} is less than 1Ki"));
    }
    Ok(bytes as u64)
}

/// A duration as Kubernetes' flags take them: `90s`, `2m`, `1h30m`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 2m or 1h30m: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

/// A duration above zero.
fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be more than zero"));
    }
    Ok(d)
}

impl Args {
    /// The image collection policy the flags give, checked as the kubelet checks it.
    pub fn image_gc_policy(&self) -> anyhow::Result<crate::image::GcPolicy> {
        Ok(crate::image::GcPolicy {
            high_threshold_percent: self.image_gc_high_threshold,
            low_threshold_percent: self.image_gc_low_threshold,
            min_age: self.image_minimum_gc_age,
        }
        .validate()?)
    }

    /// The shim binary: `--shim`, or `skiff-shim` beside this program.
    pub fn shim_path(&self) -> std::io::Result<PathBuf> {
        match &self.shim {
            Some(p) => Ok(p.clone()),
            None => Ok(std::env::current_exe()?
                .parent()
                .map(|d| d.join("skiff-shim"))
                .unwrap_or_else(|| PathBuf::from("skiff-shim"))),
        }
    }

    /// The image store with the registries `--registry-config` names.
    pub fn image_service(&self) -> anyhow::Result<crate::image::ImageService> {
        let mut registries = match &self.registry_config {
            Some(path) => crate::image::RegistryConfig::load(path)?,
            None => crate::image::RegistryConfig::default(),
        };
        registries.disable_default_endpoint = self.disable_default_registry_endpoint;
        Ok(crate::image::ImageService::open(
            self.root_dir.join("images"),
            registries,
        )?)
    }

    pub fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}
