//! The agent's image garbage collection loop: every `--image-gc-period` (the kubelet's fixed
//! 5 minutes by default) it gathers the imageIDs of every container the pod records on disk
//! still name (running or not, as the kubelet counts a container's image as used until the
//! container is removed) and asks the image service to collect under the policy; a collection
//! that falls short or fails becomes a Warning Event on the Node, with the kubelet's reasons.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::record::Records;
use crate::events::Recorder;
use crate::image::{GcPolicy, ImageService};

/// The imageIDs of the containers the pod records on disk name.
pub fn images_in_use(records: &Records) -> HashSet<String> {
    records
        .uids()
        .iter()
        .filter_map(|uid| records.load(uid))
        .flat_map(|pod| pod.containers.into_values())
        .map(|c| c.image_id)
        .filter(|id| !id.is_empty())
        .collect()
}

/// Collects every `period`, forever.
pub async fn run(
    images: Arc<ImageService>,
    records: Records,
    policy: GcPolicy,
    period: Duration,
    events: Recorder,
    node: String,
) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let in_use = {
            let records = records.clone();
            match tokio::task::spawn_blocking(move || images_in_use(&records)).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(%e, "cannot read the pod records for image collection");
                    continue;
                }
            }
        };
        match images.collect_garbage(policy, in_use).await {
            Ok(report) if report.fell_short() => {
                tracing::warn!(?report, "image collection fell short");
                events.node_warning(&node, "FreeDiskSpaceFailed", report.shortfall_message());
            }
            Ok(report) if report.needed > 0 => {
                tracing::info!(percent = report.percent, freed = report.freed, removed = ?report.removed, "collected unused images");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%e, "image collection failed");
                events.node_warning(&node, "ImageGCFailed", e.to_string());
            }
        }
    }
}
