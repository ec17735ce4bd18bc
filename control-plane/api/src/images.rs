//! `Client::import_images` and `Client::list_images`: image tarballs onto a node and the
//! images nodes hold, through the API (`skiff.v1` ImportImages, ListImages), as
//! `ctr images import` and `crictl images` on each node would.

use std::path::Path;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent_pb::{ImageInfo, ImportImagesChunk, ListImagesRequest};
use crate::client::Client;
use crate::error::{ApiError, Reason};

/// Bytes sent in one chunk.
const CHUNK: usize = 1 << 20;

/// Streams `path` into `tx`, the first chunk naming `node`.
async fn send_file(path: &Path, node: &str, tx: mpsc::Sender<ImportImagesChunk>) {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        // The caller opened it once already; a file gone since ends the stream short, and
        // the agent says the tarball is cut.
        Err(_) => return,
    };
    let mut node = node.to_string();
    loop {
        let mut data = vec![0u8; CHUNK];
        let n = match file.read(&mut data).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        data.truncate(n);
        let chunk = ImportImagesChunk {
            node: std::mem::take(&mut node),
            data,
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

impl Client {
    /// Imports the images of the tarball at `path` (docker-archive or OCI layout) onto
    /// `node`; returns what was imported.
    pub async fn import_images(&self, node: &str, path: &Path) -> Result<Vec<ImageInfo>, ApiError> {
        // Opened here first so that a missing file is the caller's error, not the agent's.
        tokio::fs::File::open(path).await.map_err(|e| {
            ApiError::new(
                Reason::BadRequest,
                format!("reading {}: {e}", path.display()),
            )
        })?;
        let response = self
            .call(|mut c| {
                let (tx, rx) = mpsc::channel(4);
                let path = path.to_path_buf();
                let node = node.to_string();
                tokio::spawn(async move { send_file(&path, &node, tx).await });
                async move { c.import_images(ReceiverStream::new(rx)).await }
            })
            .await?;
        Ok(response.images)
    }

    /// The images of `node`, or of every node when it is None.
    pub async fn list_images(&self, node: Option<&str>) -> Result<Vec<ImageInfo>, ApiError> {
        let req = ListImagesRequest {
            node: node.unwrap_or_default().to_string(),
        };
        let response = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.list_images(req).await }
            })
            .await?;
        Ok(response.images)
    }
}
