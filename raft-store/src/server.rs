//! Starting and stopping one store replica: data directory, member identity, Raft, the peer
//! listener, the duties loop, and the etcd services for the client port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::etcd::{cluster::ClusterService, kv::KvService, lease::LeaseService};
use crate::etcd::{
    election::ElectionService, maintenance::MaintenanceService, watch::WatchService,
};
use crate::forward::{LeaderRequest, LeaderResponse};
use crate::pb::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::pb::skiffpb::peer_server::PeerServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, Peers, MAX_PEER_MESSAGE};
use crate::raft::peer_service::PeerService;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{PeerNode, Raft};
use crate::replica::{Identity, Replica};

/// Largest gRPC message on the client port: etcd's request limit plus its 512 KiB allowance.
pub const MAX_CLIENT_MESSAGE: usize = crate::error::MAX_REQUEST_BYTES + 512 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// How often a replica asks the leader whether it is still a member.
const MEMBERSHIP_CHECK_EVERY: Duration = Duration::from_secs(2);

/// openraft's (min, max) election timeout for `--election-timeout E`. A follower in openraft
/// campaigns only after a leader lease, fixed to the maximum, plus its randomised timeout; with
/// E/2..E that is 1.5E..2E after the last heartbeat, close to etcd's E..2E (E..2E would make it
/// 2E..4E).
fn election_timeouts(cfg: &StoreConfig) -> (u64, u64) {
    let max = cfg.election_ms.max(cfg.heartbeat_ms * 4);
    (max / 2, max)
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_peer: SocketAddr,
    pub advertise_peer_url: String,
    pub advertise_client_urls: Vec<String>,
    /// (name, peer URL) of every member the cluster starts with.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// Applied entries between snapshots (after which the log is truncated).
    pub snapshot_count: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Start a new cluster from this backup (made by Maintenance.Snapshot / `etcdctl snapshot save`).
    pub restore_from: Option<PathBuf>,
    pub watch_progress_every: Duration,
    /// What the leader compacts on its own (`--auto-compaction-mode`/`-retention`).
    pub auto_compaction: crate::auto_compact::AutoCompaction,
    /// How much memory sled may keep cached pages of the state database in (the Raft log's
    /// database gets a quarter of it). sled's own default is 1 GiB per database, which a
    /// long-running replica fills: its memory then grows for hours.
    pub cache_bytes: u64,
}

/// etcd's shortest lease TTL: one and a half election timeouts, in whole seconds rounded up, so
/// that a lease outlives a leader election.
fn min_lease_ttl(cfg: &StoreConfig) -> i64 {
    let ms = election_timeouts(cfg).1 * 3 / 2;
    ms.div_ceil(1000).max(1) as i64
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("cannot listen on peer address {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("--name {0:?} is not in --initial-cluster")]
    NotInInitialCluster(String),
    #[error("--initial-cluster lists {name}={listed} but this member advertises {advertised} (--initial-advertise-peer-urls)")]
    PeerUrlMismatch {
        name: String,
        listed: String,
        advertised: String,
    },
    #[error("no member of the existing cluster knows peer URL {0}; add it first with `etcdctl member add`")]
    NotAMember(String),
    #[error("cannot restore from {path}: {reason}")]
    Restore { path: PathBuf, reason: String },
    #[error("raft: {0}")]
    Raft(String),
}

/// A running replica.
pub struct StoreServer {
    pub replica: Arc<Replica>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    db: sled::Db,
    log_db: sled::Db,
    progress_every: Duration,
}

const IDENTITY_TREE: &str = "identity";
const MEMBER_ID: &[u8] = b"member_id";

impl StoreServer {
    pub async fn start(cfg: StoreConfig) -> Result<Self, StartError> {
        let data_err = |reason: String| StartError::DataDir {
            path: cfg.data_dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| data_err(e.to_string()))?;
        let db = sled::Config::new()
            .path(cfg.data_dir.join("db"))
            .cache_capacity(cfg.cache_bytes)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| data_err(e.to_string()))?;
        let identity = db
            .open_tree(IDENTITY_TREE)
            .map_err(|e| data_err(e.to_string()))?;
        let fresh = identity
            .get(MEMBER_ID)
            .map_err(|e| data_err(e.to_string()))?
            .is_none();

        let peers = Peers::default();
        if fresh {
            match cfg.initial_cluster.iter().find(|(n, _)| n == &cfg.name) {
                None => return Err(StartError::NotInInitialCluster(cfg.name.clone())),
                Some((_, url)) if url != &cfg.advertise_peer_url => {
                    return Err(StartError::PeerUrlMismatch {
                        name: cfg.name.clone(),
                        listed: url.clone(),
                        advertised: cfg.advertise_peer_url.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        let id = match identity
            .get(MEMBER_ID)
            .map_err(|e| data_err(e.to_string()))?
        {
            Some(v) => crate::codec::decode::<u64>(&v).map_err(|e| data_err(e.to_string()))?,
            None => {
                let id = match cfg.initial_cluster_state {
                    ClusterState::New => {
                        crate::ids::member_id(&cfg.advertise_peer_url, &cfg.initial_cluster_token)
                    }
                    ClusterState::Existing => find_own_id(&peers, &cfg).await?,
                };
                identity
                    .insert(MEMBER_ID, crate::codec::encode(&id))
                    .map_err(|e| data_err(e.to_string()))?;
                identity.flush().map_err(|e| data_err(e.to_string()))?;
                id
            }
        };

        // The Raft log has a database of its own: syncing it after every append then writes
        // only log entries, not the state machine's changes (which Raft can replay).
        let log_db = sled::Config::new()
            .path(cfg.data_dir.join("log"))
            .cache_capacity((cfg.cache_bytes / 4).max(1 << 20))
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| data_err(e.to_string()))?;
        crate::raft::log_store::move_from_shared_db(&db, &log_db)
            .map_err(|e| data_err(e.to_string()))?;
        let log_store = LogStore::open(&log_db, &cfg.data_dir.join("log"))
            .map_err(|e| data_err(e.to_string()))?;
        let sm = StateMachineStore::open(&db, &cfg.data_dir.join("snap"))
            .map_err(|e| data_err(e.to_string()))?;
        if let (Some(path), false) = (&cfg.restore_from, fresh) {
            return Err(StartError::Restore {
                path: path.clone(),
                reason: format!(
                    "{} already holds a member; restore into an empty data dir",
                    cfg.data_dir.display()
                ),
            });
        }
        if let (Some(path), true) = (&cfg.restore_from, fresh) {
            let restore_err = |reason: String| StartError::Restore {
                path: path.clone(),
                reason,
            };
            let file = std::fs::read(path).map_err(|e| restore_err(e.to_string()))?;
            let body = crate::backup::open(&file).map_err(|e| restore_err(e.to_string()))?;
            crate::raft::state_machine::check_snapshot(body)
                .map_err(|e| restore_err(e.to_string()))?;
            sm.restore_backup(body)
                .map_err(|e| restore_err(e.to_string()))?;
            tracing::info!(path = %path.display(), "restored state from backup");
        }

        let config = openraft::Config {
            cluster_name: cfg.initial_cluster_token.clone(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: election_timeouts(&cfg).0,
            election_timeout_max: election_timeouts(&cfg).1,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
            max_in_snapshot_log_to_keep: (cfg.snapshot_count / 2).min(5000),
            purge_batch_size: 256,
            // A replica cut off from the others must not force an election when it returns.
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = Raft::new(
            id,
            Arc::new(config),
            NetworkFactory {
                peers: peers.clone(),
            },
            log_store,
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let bootstrap_ids: Vec<String> =
            cfg.initial_cluster.iter().map(|(_, u)| u.clone()).collect();
        let cluster_id = match cfg.initial_cluster_state {
            ClusterState::New => crate::ids::cluster_id(&cfg.initial_cluster_token, &bootstrap_ids),
            ClusterState::Existing => 0,
        };
        let identity = Identity {
            id,
            name: cfg.name.clone(),
            client_urls: cfg.advertise_client_urls.clone(),
            bootstrap_cluster_id: cluster_id,
        };
        let replica = Arc::new(Replica::new(
            identity,
            raft.clone(),
            sm.shared.clone(),
            peers,
            crate::replica::Settings {
                min_lease_ttl: min_lease_ttl(&cfg),
                auto_compaction: cfg.auto_compaction,
            },
        ));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let listener =
            TcpListener::bind(cfg.listen_peer)
                .await
                .map_err(|e| StartError::Listen {
                    addr: cfg.listen_peer,
                    reason: e.to_string(),
                })?;
        let peer_service = PeerServer::new(PeerService {
            replica: replica.clone(),
        })
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
        let mut rx = shutdown_rx.clone();
        let peer_task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(peer_service)
                .serve_with_incoming_shutdown(accept_nodelay(listener), async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(%e, "peer server stopped");
            }
        });

        if cfg.initial_cluster_state == ClusterState::New && fresh {
            let members: BTreeMap<u64, PeerNode> = cfg
                .initial_cluster
                .iter()
                .map(|(_, url)| {
                    (
                        crate::ids::member_id(url, &cfg.initial_cluster_token),
                        PeerNode {
                            peer_url: url.clone(),
                        },
                    )
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(member = format!("{id:x}"), "bootstrapped a new cluster"),
                Err(e) => tracing::info!(%e, "cluster already initialized"),
            }
        }

        let duties_replica = replica.clone();
        let mut rx = shutdown_rx.clone();
        let duties = tokio::spawn(async move {
            // Often enough that a one-second lease expires within a tenth of its TTL.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => duties_replica.run_duties().await,
                    _ = rx.changed() => break,
                }
            }
        });
        let membership_replica = replica.clone();
        let stop = shutdown.clone();
        let mut rx = shutdown_rx.clone();
        let membership_check = tokio::spawn(async move {
            let mut tick = tokio::time::interval(MEMBERSHIP_CHECK_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if membership_replica.still_a_member().await == Some(false) {
                            tracing::error!(
                                "this member was removed from the cluster; shutting down (remove \
                                 its data dir before adding it again)"
                            );
                            let _ = stop.send(true);
                            break;
                        }
                    }
                    _ = rx.changed() => break,
                }
            }
        });

        tracing::info!(
            name = %cfg.name,
            member = format!("{id:x}"),
            peer = %cfg.listen_peer,
            "store replica started"
        );
        Ok(Self {
            replica,
            shutdown,
            tasks: vec![peer_task, duties, membership_check],
            db,
            log_db,
            progress_every: cfg.watch_progress_every,
        })
    }

    /// The etcd v3 services for the client port.
    pub fn etcd_routes(&self) -> tonic::service::Routes {
        let r = self.replica.clone();
        tonic::service::Routes::new(
            KvServer::new(KvService { replica: r.clone() })
                .max_decoding_message_size(MAX_CLIENT_MESSAGE),
        )
        .add_service(WatchServer::new(WatchService {
            replica: r.clone(),
            progress_every: self.progress_every,
        }))
        .add_service(LeaseServer::new(LeaseService { replica: r.clone() }))
        .add_service(ClusterServer::new(ClusterService { replica: r.clone() }))
        .add_service(MaintenanceServer::new(MaintenanceService {
            replica: r.clone(),
        }))
        .add_service(ElectionServer::new(ElectionService { replica: r }))
    }

    /// A future that resolves when shutdown has been requested.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Stops Raft and the listeners and flushes the data dir.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.replica.raft.shutdown().await {
            tracing::warn!(%e, "raft shutdown");
        }
        for t in self.tasks {
            let _ = t.await;
        }
        for db in [&self.db, &self.log_db] {
            if let Err(e) = db.flush_async().await {
                tracing::warn!(%e, "final flush");
            }
        }
    }
}

/// Accepted connections with TCP_NODELAY: small gRPC messages (Raft heartbeats, acks, watch
/// events) must not wait for Nagle's algorithm (about 40 ms stalls otherwise). Both the client
/// and the peer port use this. Each connection's requests get a `:authority` the HTTP/2 server
/// accepts, whatever etcd's clients sent (see `authority`).
pub fn accept_nodelay(
    listener: TcpListener,
) -> impl futures::Stream<
    Item = std::io::Result<crate::authority::LenientAuthority<tokio::net::TcpStream>>,
> + Send
       + 'static {
    use futures::StreamExt;
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|conn| conn.map(crate::authority::LenientAuthority::new))
}

/// A joining replica learns its member ID from the existing members (the ID was assigned by
/// `member add`).
async fn find_own_id(peers: &Peers, cfg: &StoreConfig) -> Result<u64, StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let req = LeaderRequest::FindMember {
        peer_url: cfg.advertise_peer_url.clone(),
    };
    loop {
        for (_, url) in cfg.initial_cluster.iter().filter(|(n, _)| n != &cfg.name) {
            match peers.forward(url, &req, Duration::from_secs(2)).await {
                Ok(Ok(LeaderResponse::Member(Some(id)))) => return Ok(id),
                Ok(Ok(LeaderResponse::Member(None))) => {
                    return Err(StartError::NotAMember(cfg.advertise_peer_url.clone()))
                }
                other => tracing::debug!(?other, peer = %url, "asking for my member ID"),
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StartError::NotAMember(cfg.advertise_peer_url.clone()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
