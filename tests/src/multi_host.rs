//! A cluster over several test hosts: one replica on host 0, Debian's docker-registry on host
//! 0's address holding the example image as `busybox`, and a real agent on every host (in the
//! host's network namespace, with its own `--node-name node-<i>`, `--node-ip`, `--root-dir` and
//! `--cgroup-root`), as the multi-host tests need. Drop order takes the agents (and their pods)
//! down before the cluster; the network goes when the test's last handle on it does.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::{mirror_config, until_ready, Agent};
use crate::cluster::Cluster;
use crate::netns::TestNet;
use crate::registry::TestRegistry;

/// How long a starting host may take to be Ready.
const READY_LIMIT: Duration = Duration::from_secs(90);

pub struct Hosts {
    // Field order is drop order.
    pub agents: Vec<Agent>,
    pub registry: TestRegistry,
    pub cluster: Cluster,
    pub client: skiff_api::Client,
    pub net: Arc<TestNet>,
    _config: tempfile::TempDir,
}

/// The node name of host `i`.
pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

impl Hosts {
    /// Starts the cluster, with `server_flags` for the replica and `agent_flags` for every
    /// agent, and waits until every node is Ready. Call from a thread inside host 0's
    /// namespace ([`TestNet::run_in_host`]): the registry listens there.
    pub async fn start(net: Arc<TestNet>, server_flags: &[&str], agent_flags: &[&str]) -> Hosts {
        let cluster = Cluster::start_on_hosts(&net, &[0], server_flags).await;
        let registry_ip = net.hosts[0].ip.parse().expect("host address");
        let registry = TestRegistry::start_at(registry_ip)
            .await
            .expect("registry starts");
        crate::registry::push_example_image(&registry, "library/busybox", "latest")
            .await
            .expect("image pushed");
        let config = mirror_config(&registry);
        let config_path = config.path().join("registries.yaml");
        let config_text = config_path.to_string_lossy();
        let endpoints = cluster.endpoints();
        let agents = net
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let mut flags = vec![
                    "--node-ip",
                    &host.ip,
                    "--registry-config",
                    &config_text,
                    "--disable-default-registry-endpoint",
                ];
                flags.extend_from_slice(agent_flags);
                Agent::start_in(Some(&host.ns), &node_name(i), &endpoints, &flags)
            })
            .collect::<Vec<_>>();
        let client = skiff_api::Client::new(&[endpoints]).expect("client");
        for i in 0..agents.len() {
            until_ready(&client, &node_name(i), READY_LIMIT).await;
        }
        Hosts {
            agents,
            registry,
            cluster,
            client,
            net,
            _config: config,
        }
    }

    /// Every agent's log, one after another, for a failing test's message.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- agent {}:\n{}", a.name, a.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
