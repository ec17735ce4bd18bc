//! Registering the Node and keeping it alive: the Node is applied at start (with the local
//! volumes' directory made and published), its Lease in
//! `kube-node-lease` renewed every quarter of its duration, 10 s of the default 40 (a Lease renewal is what the control plane's node
//! lifecycle watches), and its status — capacity, conditions from fresh measurements, addresses,
//! node info — reported when it changes and at least once a minute, as the kubelet does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use skiff_api::{Client, Kind, Reason};
use tokio::sync::watch;

use super::conditions::conditions;
use super::facts::{self, Facts};
use super::object::{self, Reserved};

/// A status report at least this often even when nothing changed.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);

pub struct Heartbeat {
    pub client: Client,
    pub name: String,
    pub root_dir: PathBuf,
    pub facts: Facts,
    /// The agent's port, published in the status.
    pub port: u16,
    pub reserved: Reserved,
    /// The Lease's duration (`--node-lease-duration-seconds`); renewed every quarter of it,
    /// as the kubelet does.
    pub lease_seconds: u32,
}

fn nodes() -> Kind {
    Kind::of("v1", "Node").expect("Node is served")
}

impl Heartbeat {
    /// Makes the local volumes' directory, applies the Node (creating it or taking over a Node
    /// of this name) and reports a first status.
    pub async fn register(&self, ready: Result<(), String>) -> anyhow::Result<NodeStatus> {
        let storage = super::storage::ensure_dir(&self.root_dir).with_context(|| {
            format!("creating {}", super::storage::dir(&self.root_dir).display())
        })?;
        let node = serde_json::to_value(object::node(&self.name, &self.facts, &storage))?;
        self.client
            .apply(&node, "")
            .await
            .with_context(|| format!("registering node {}", self.name))?;
        let status = self.report(None, ready).await?;
        tracing::info!(node = %self.name, address = %self.facts.address, "node registered");
        Ok(status)
    }

    /// Writes the status; a conflict (the control plane changed the Node meanwhile) reads the
    /// Node again and retries.
    async fn report(
        &self,
        previous: Option<&NodeStatus>,
        ready: Result<(), String>,
    ) -> anyhow::Result<NodeStatus> {
        let usage = facts::usage(&self.root_dir)?;
        let status = object::status(
            &self.name,
            &self.facts,
            self.port,
            &self.reserved,
            &conditions(&usage, ready),
            previous,
            jiff::Timestamp::now(),
        );
        for _ in 0..10 {
            let live = self.client.get(&nodes(), "", &self.name).await?;
            let mut live: Node = serde_json::from_value(live)?;
            live.status = Some(status.clone());
            match self
                .client
                .update_status(&serde_json::to_value(&live)?, "")
                .await
            {
                Ok(_) => return Ok(status),
                Err(e) if e.reason == Reason::Conflict => continue,
                Err(e) => return Err(e).context("reporting the node's status"),
            }
        }
        anyhow::bail!("reporting the node's status: conflicts kept coming")
    }

    /// Renews the Lease and reports the status, until the process ends. `ready` says whether
    /// the node can run pods (and why not).
    pub async fn run(self, mut last: NodeStatus, ready: watch::Receiver<Result<(), String>>) {
        let renew_every = Duration::from_millis(u64::from(self.lease_seconds) * 250);
        let mut renew = tokio::time::interval(renew_every);
        let mut reported = tokio::time::Instant::now();
        let mut ready = ready;
        loop {
            tokio::select! {
                _ = renew.tick() => {}
                changed = ready.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let lease = object::lease(
                &self.name,
                i32::try_from(self.lease_seconds).unwrap_or(i32::MAX),
                jiff::Timestamp::now(),
            );
            match serde_json::to_value(&lease) {
                Ok(l) => {
                    if let Err(e) = self.client.apply(&l, "kube-node-lease").await {
                        tracing::warn!(%e, "node lease not renewed");
                    }
                }
                Err(e) => tracing::error!(%e, "cannot encode the node lease"),
            }
            let now_ready = ready.borrow().clone();
            let next = match facts::usage(&self.root_dir) {
                Ok(usage) => object::status(
                    &self.name,
                    &self.facts,
                    self.port,
                    &self.reserved,
                    &conditions(&usage, now_ready.clone()),
                    Some(&last),
                    jiff::Timestamp::now(),
                ),
                Err(e) => {
                    tracing::warn!(%e, "cannot measure the node");
                    continue;
                }
            };
            if object::changed(&last, &next) || reported.elapsed() >= STATUS_EVERY {
                match self.report(Some(&last), now_ready).await {
                    Ok(s) => {
                        last = s;
                        reported = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::warn!(%e, "node status not reported"),
                }
            }
        }
    }
}
