//! Command-line flags, named as etcd names them so that operators and scripts feel at home, and
//! their translation into the store's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use raft_store::server::{ClusterState, StoreConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InitialClusterState {
    New,
    Existing,
}

/// One Skiff control-plane replica.
#[derive(Parser, Debug, Clone)]
#[command(name = "skiff-server", version, about)]
pub struct Args {
    /// Human-readable name of this member.
    #[arg(long, env = "SKIFF_NAME", default_value = "default")]
    pub name: String,
    /// Directory holding the Raft log, snapshots and state.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "./skiff-data")]
    pub data_dir: PathBuf,
    /// URL to listen on for peer (Raft) traffic.
    #[arg(
        long,
        env = "SKIFF_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub listen_peer_urls: String,
    /// URLs to listen on for client traffic (etcd v3 API), comma-separated.
    #[arg(
        long,
        env = "SKIFF_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,
    /// This member's peer URL as the other members reach it (default: the listen peer URL).
    #[arg(long, env = "SKIFF_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// This member's client URLs as clients reach them (default: the listen client URLs).
    #[arg(long, env = "SKIFF_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// Initial members as name=peerURL,... (default: this member alone).
    #[arg(long, env = "SKIFF_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one (after `etcdctl member add`).
    #[arg(
        long,
        env = "SKIFF_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: InitialClusterState,
    /// Token that distinguishes this cluster's member IDs from another's.
    #[arg(
        long,
        env = "SKIFF_INITIAL_CLUSTER_TOKEN",
        default_value = "skiff-cluster"
    )]
    pub initial_cluster_token: String,
    /// Applied entries between snapshots; the log is truncated after each.
    #[arg(long, env = "SKIFF_SNAPSHOT_COUNT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_count: u64,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "SKIFF_HEARTBEAT_INTERVAL", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_interval: u64,
    /// Raft election timeout in milliseconds: a follower that hears nothing from the leader for
    /// 1.5x to 2x this starts an election (etcd: 1x to 2x). At least 4 heartbeat intervals.
    #[arg(long, env = "SKIFF_ELECTION_TIMEOUT", default_value_t = 400, value_parser = clap::value_parser!(u64).range(50..))]
    pub election_timeout: u64,
    /// Start a new cluster from a backup taken with `etcdctl snapshot save` (give every initial
    /// member the same file).
    #[arg(long, env = "SKIFF_RESTORE_FROM")]
    pub restore_from: Option<PathBuf>,
    /// Seconds between progress notifications to watchers that asked for them.
    #[arg(
        long,
        env = "SKIFF_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value_t = 600
    )]
    pub watch_progress_notify_interval: u64,
    /// Take part in the election of the replica that runs the scheduler and controllers (which
    /// write to the store continuously). `false` makes a store-and-API-only replica.
    #[arg(long, env = "SKIFF_CONTROLLERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub controllers: bool,
    /// Seconds a node may go without renewing its Lease before it is marked NotReady
    /// (Kubernetes: 40).
    #[arg(long, env = "SKIFF_NODE_MONITOR_GRACE_PERIOD", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_monitor_grace_period: u64,
    /// Seconds after a node turned NotReady before its pods are evicted, for pods that do not
    /// say otherwise in a toleration (Kubernetes: 300).
    #[arg(long, env = "SKIFF_POD_EVICTION_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..))]
    pub pod_eviction_timeout: u64,
    /// How the leader compacts history on its own: `periodic` (keep
    /// `--auto-compaction-retention` of time) or `revision` (keep that many revisions).
    #[arg(long, env = "SKIFF_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// History to keep: a duration such as `5m` or `1h` (a bare number counts hours) for
    /// `periodic`, a number of revisions for `revision`; 0 turns automatic compaction off.
    #[arg(long, env = "SKIFF_AUTO_COMPACTION_RETENTION", default_value = "5m")]
    pub auto_compaction_retention: String,
    /// MiB of memory for the store's page cache (the Raft log's gets a quarter more); sled's
    /// own default, 1 GiB, lets a replica's memory grow for hours.
    #[arg(long, env = "SKIFF_CACHE_SIZE_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_size_mb: u64,
    /// How long Events are kept (a duration such as `1h` or `30m`): each is stored with a store
    /// lease that removes it after this time.
    #[arg(long, env = "SKIFF_EVENT_TTL", default_value = "1h", value_parser = parse_event_ttl)]
    pub event_ttl: Duration,
    /// The pod network, one /24 per node (a /16 holds 256 nodes, a /14 1,024).
    #[arg(long, env = "SKIFF_CLUSTER_CIDR", default_value = crate::controllers::ipam::CLUSTER_CIDR, value_parser = crate::controllers::ipam::PodNetwork::parse)]
    pub cluster_cidr: crate::controllers::ipam::PodNetwork,
    /// Run no node agent beside this replica. By default a replica started as root also runs
    /// `skiff-agent` (beside this program or on PATH), so that one machine is a whole
    /// cluster, as `k3s server` does.
    #[arg(long, env = "SKIFF_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// A flag for this replica's node agent (repeatable), e.g. `--agent-arg=--node-ip=10.0.0.5`
    /// or `--agent-arg=--registry-config=/etc/skiff/registries.yaml`.
    #[arg(
        long = "agent-arg",
        env = "SKIFF_AGENT_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub agent_args: Vec<String>,
}

fn parse_event_ttl(s: &str) -> Result<Duration, String> {
    match raft_store::auto_compact::parse_go_duration(s) {
        Some(d) if d >= Duration::from_secs(1) => Ok(d),
        Some(_) => Err(format!("{s:?} is shorter than one second")),
        None => Err(format!("{s:?} is not a duration such as 1h or 30m")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Retention(#[from] raft_store::auto_compact::RetentionError),
    #[error("{flag}: {value:?} is not a URL: {reason}")]
    BadUrl {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{flag}: {value:?} must be an http:// URL with a host and a port")]
    UnsupportedUrl { flag: &'static str, value: String },
    #[error("{flag}: cannot resolve {value:?}: {reason}")]
    Resolve {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--initial-cluster: {0:?} is not name=peerURL")]
    BadMember(String),
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Checks that `value` is an http URL with host and port.
pub fn check_url(flag: &'static str, value: &str) -> Result<url::Url, ConfigError> {
    let u = url::Url::parse(value).map_err(|e| ConfigError::BadUrl {
        flag,
        value: value.into(),
        reason: e.to_string(),
    })?;
    if u.scheme() != "http" || u.host_str().is_none() || u.port_or_known_default().is_none() {
        return Err(ConfigError::UnsupportedUrl {
            flag,
            value: value.into(),
        });
    }
    Ok(u)
}

/// The socket address to bind for a listen URL.
pub async fn bind_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let u = check_url(flag, value)?;
    let host = u
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = u.port_or_known_default().unwrap_or_default();
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ConfigError::Resolve {
            flag,
            value: value.into(),
            reason: e.to_string(),
        })?;
    addrs.next().ok_or_else(|| ConfigError::Resolve {
        flag,
        value: value.into(),
        reason: "no address".into(),
    })
}

/// Trims the trailing slash `url` adds so URLs compare as users wrote them.
fn normal(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

impl Args {
    pub fn client_listen_urls(&self) -> Vec<String> {
        split(&self.listen_client_urls)
    }

    pub async fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        for u in self.client_listen_urls() {
            check_url("--listen-client-urls", &u)?;
        }
        let peer_listen = split(&self.listen_peer_urls).into_iter().next().ok_or(
            ConfigError::UnsupportedUrl {
                flag: "--listen-peer-urls",
                value: String::new(),
            },
        )?;
        let listen_peer = bind_addr("--listen-peer-urls", &peer_listen).await?;
        let advertise_peer = match &self.initial_advertise_peer_urls {
            Some(list) => split(list).into_iter().next().unwrap_or_default(),
            None => peer_listen.clone(),
        };
        let advertise_peer_url = normal(&check_url(
            "--initial-advertise-peer-urls",
            &advertise_peer,
        )?);
        let client_urls = match &self.advertise_client_urls {
            Some(list) => split(list),
            None => self.client_listen_urls(),
        };
        let mut advertise_client_urls = Vec::new();
        for u in client_urls {
            advertise_client_urls.push(normal(&check_url("--advertise-client-urls", &u)?));
        }
        let initial_cluster = match &self.initial_cluster {
            None => vec![(self.name.clone(), advertise_peer_url.clone())],
            Some(list) => {
                let mut members = Vec::new();
                for item in split(list) {
                    let (name, url) = item
                        .split_once('=')
                        .ok_or_else(|| ConfigError::BadMember(item.clone()))?;
                    if name.is_empty() {
                        return Err(ConfigError::BadMember(item.clone()));
                    }
                    members.push((
                        name.to_string(),
                        normal(&check_url("--initial-cluster", url)?),
                    ));
                }
                members
            }
        };
        Ok(StoreConfig {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            listen_peer,
            advertise_peer_url,
            advertise_client_urls,
            initial_cluster,
            initial_cluster_state: match self.initial_cluster_state {
                InitialClusterState::New => ClusterState::New,
                InitialClusterState::Existing => ClusterState::Existing,
            },
            initial_cluster_token: self.initial_cluster_token.clone(),
            snapshot_count: self.snapshot_count,
            heartbeat_ms: self.heartbeat_interval,
            election_ms: self.election_timeout,
            restore_from: self.restore_from.clone(),
            watch_progress_every: Duration::from_secs(self.watch_progress_notify_interval.max(1)),
            auto_compaction: raft_store::auto_compact::AutoCompaction::parse(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )?,
            cache_bytes: self.cache_size_mb << 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["skiff-server"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[tokio::test]
    async fn defaults_make_a_single_member_cluster_on_loopback() {
        let cfg = args(&[]).store_config().await.unwrap();
        assert_eq!(cfg.listen_peer, "127.0.0.1:2380".parse().unwrap());
        assert_eq!(
            cfg.initial_cluster,
            vec![("default".into(), "http://127.0.0.1:2380".into())]
        );
        assert_eq!(
            cfg.advertise_client_urls,
            vec!["http://127.0.0.1:2379".to_string()]
        );
        assert_eq!(cfg.data_dir, PathBuf::from("./skiff-data"));
        assert_eq!(
            cfg.auto_compaction,
            raft_store::auto_compact::AutoCompaction::Periodic(Duration::from_secs(300))
        );
        assert_eq!(args(&[]).event_ttl, Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn compaction_and_event_flags_name_what_is_wrong() {
        let e = args(&["--auto-compaction-retention", "5x"])
            .store_config()
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--auto-compaction-retention \"5x\""),
            "{e}"
        );
        let e = args(&[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ])
        .store_config()
        .await
        .unwrap_err();
        assert!(e.to_string().contains("number of revisions"), "{e}");
        let cfg = args(&[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1000",
        ])
        .store_config()
        .await
        .unwrap();
        assert_eq!(
            cfg.auto_compaction,
            raft_store::auto_compact::AutoCompaction::Revision(1000)
        );
        let e = Args::try_parse_from(["skiff-server", "--event-ttl", "60"]).unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }

    #[tokio::test]
    async fn bad_urls_and_members_name_the_flag() {
        let e = args(&["--listen-peer-urls", "nonsense"])
            .store_config()
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--listen-peer-urls: \"nonsense\""),
            "{e}"
        );
        let e = args(&["--initial-cluster", "a=http://127.0.0.1:1,oops"])
            .store_config()
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--initial-cluster: \"oops\" is not name=peerURL"
        );
        let e = args(&["--listen-peer-urls", "https://127.0.0.1:2380"])
            .store_config()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("must be an http:// URL"), "{e}");
        assert!(Args::try_parse_from(["skiff-server", "--snapshot-count", "0"]).is_err());
        assert!(
            Args::try_parse_from(["skiff-server", "--initial-cluster-state", "maybe"]).is_err()
        );
    }
}
