//! `ImportImages` and `ListImages` (`skiff.v1`): image tarballs relayed to one node's agent
//! (the first chunk names the node), and the images of one node or of every node, each
//! entry naming its node.

use std::sync::Arc;

use serde_json::Value;
use skiff_api::agent_pb::{
    ImageInfo, ImportImagesChunk, ImportImagesResponse, ListImagesRequest, ListImagesResponse,
};
use skiff_api::{object, ApiError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::agents;
use super::registry::Registry;

/// Chunks buffered before the relay waits for the agent.
const STREAM_BUFFER: usize = 8;

fn on_node(images: Vec<ImageInfo>, node: &str) -> Vec<ImageInfo> {
    images
        .into_iter()
        .map(|i| ImageInfo {
            node: node.to_string(),
            ..i
        })
        .collect()
}

/// Relays a tarball to the agent of the node its first chunk names.
pub async fn import(
    registry: Arc<Registry>,
    mut chunks: Streaming<ImportImagesChunk>,
) -> Result<ImportImagesResponse, ApiError> {
    let first = chunks
        .message()
        .await
        .map_err(|s| ApiError::from_status(&s))?
        .ok_or_else(|| ApiError::bad_request("image import: no data was sent"))?;
    if first.node.is_empty() {
        return Err(ApiError::bad_request(
            "image import: the first chunk must name the node to import onto",
        ));
    }
    let node = agents::node(&registry, &first.node, None).await?;
    let mut agent = agents::dial(&node).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let _ = tx.send(first).await;
    tokio::spawn(async move {
        while let Ok(Some(chunk)) = chunks.message().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let response = agent
        .client
        .import_images(ReceiverStream::new(rx))
        .await
        .map_err(|s| agent.error("importing images", &s))?
        .into_inner();
    Ok(ImportImagesResponse {
        images: on_node(response.images, &agent.node),
    })
}

/// The images of the node the request names, or of every node.
pub async fn list(
    registry: Arc<Registry>,
    req: ListImagesRequest,
) -> Result<ListImagesResponse, ApiError> {
    let nodes: Vec<Value> = if req.node.is_empty() {
        let (items, _) = registry.list(&agents::kind("Node").prefix(None)).await?;
        items.into_iter().map(|s| s.object).collect()
    } else {
        vec![agents::node(&registry, &req.node, None).await?]
    };
    let mut images = Vec::new();
    for node in &nodes {
        let mut agent = agents::dial(node).await?;
        let listed = agent
            .client
            .list_images(ListImagesRequest {
                node: object::name(node).to_string(),
            })
            .await
            .map_err(|s| agent.error("listing images", &s))?
            .into_inner();
        images.extend(on_node(listed.images, &agent.node));
    }
    Ok(ListImagesResponse { images })
}
