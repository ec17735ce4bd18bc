//! The agent's `ImportImages` and `ListImages` calls (`skiff.agent.v1`): image tarballs into
//! the node's image store, and what the store holds.
//!
//! An upload is never held whole: its chunks go through a bounded channel to the importer,
//! which reads them as one stream on a blocking thread (`ImageService::import`). If the importer
//! stops early (bad input), the rest of the upload is not read; if the upload breaks off, the
//! importer fails and writes no record. Images are answered one [`ImageInfo`] per image (its
//! names together), as `crictl images` groups them; the API server fills in the node.

use std::io::{self, Read};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use skiff_api::agent_pb::{ImageInfo, ImportImagesChunk, ImportImagesResponse, ListImagesResponse};
use skiff_api::{ApiError, Reason};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::image::{ImageError, ImageRecord, ImageService};

/// Upload chunks buffered ahead of the importer.
const UPLOAD_BUFFER: usize = 16;

/// Imports into and lists the node's image store.
#[derive(Clone)]
pub struct ImagesService {
    images: Arc<ImageService>,
}

impl ImagesService {
    pub fn new(images: Arc<ImageService>) -> ImagesService {
        ImagesService { images }
    }

    /// Receives a tarball and imports the images it holds.
    pub async fn import(
        &self,
        chunks: Streaming<ImportImagesChunk>,
    ) -> Result<ImportImagesResponse, Status> {
        self.import_stream(chunks).await
    }

    /// [`Self::import`] over any stream of chunks.
    pub async fn import_stream(
        &self,
        mut chunks: impl Stream<Item = Result<ImportImagesChunk, Status>> + Unpin,
    ) -> Result<ImportImagesResponse, Status> {
        let (tx, rx) = mpsc::channel(UPLOAD_BUFFER);
        let images = self.images.clone();
        let importer = tokio::task::spawn_blocking(move || images.import(ChannelReader::new(rx)));
        while let Some(chunk) = chunks.next().await {
            let item = match chunk {
                Ok(chunk) if chunk.data.is_empty() => continue,
                Ok(chunk) => Ok(chunk.data),
                Err(status) => Err(format!("the upload failed: {}", status.message())),
            };
            let failed = item.is_err();
            // A closed channel: the importer has stopped (its result says why).
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let records = importer
            .await
            .map_err(|e| Status::internal(format!("the image import task failed: {e}")))?
            .map_err(image_status)?;
        Ok(ImportImagesResponse {
            images: image_infos(&records),
        })
    }

    /// The images in the store.
    pub async fn list(&self) -> Result<ListImagesResponse, Status> {
        let images = self.images.clone();
        let records = tokio::task::spawn_blocking(move || images.list())
            .await
            .map_err(|e| Status::internal(format!("the image listing task failed: {e}")))?
            .map_err(image_status)?;
        Ok(ListImagesResponse {
            images: image_infos(&records),
        })
    }
}

/// An image error as the API reports it: the caller's fault (a bad archive) or the node's.
fn image_status(e: ImageError) -> Status {
    let reason = if e.is_bad_input() {
        Reason::BadRequest
    } else {
        Reason::Internal
    };
    ApiError::new(reason, e.to_string()).to_status()
}

/// One entry per image (same config and repo digest), its names in the records' order; the
/// size is its stored layers', the time its latest pull or import.
pub fn image_infos(records: &[ImageRecord]) -> Vec<ImageInfo> {
    let mut infos: Vec<(ImageInfo, jiff::Timestamp)> = Vec::new();
    for record in records {
        let existing = infos
            .iter_mut()
            .find(|(i, _)| i.id == record.config_digest && i.digest == record.repo_digest);
        match existing {
            Some((info, created)) => {
                if !info.names.contains(&record.reference) {
                    info.names.push(record.reference.clone());
                }
                *created = (*created).max(record.pulled_at);
            }
            None => infos.push((
                ImageInfo {
                    node: String::new(),
                    names: vec![record.reference.clone()],
                    id: record.config_digest.clone(),
                    digest: record.repo_digest.clone(),
                    size: record.layers.iter().map(|l| l.size).sum(),
                    created: String::new(),
                },
                record.pulled_at,
            )),
        }
    }
    infos
        .into_iter()
        .map(|(mut info, created)| {
            info.created = created.to_string();
            info
        })
        .collect()
}

/// The upload's chunks as one byte stream, for the importer's blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    current: Vec<u8>,
    position: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Result<Vec<u8>, String>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Vec::new(),
            position: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    self.current = data;
                    self.position = 0;
                }
                Some(Err(message)) => return Err(io::Error::other(message)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{LayerRecord, PullPolicy, RegistryConfig};
    use serde_json::json;
    use sha2::{Digest, Sha256};

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data).expect("append");
    }

    /// An OCI layout tarball of one image named `name` with Cmd `cmd`.
    fn layout(name: &str, cmd: &str) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        append(&mut layer, "hello.txt", cmd.as_bytes());
        let layer = layer.into_inner().expect("layer");
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": [cmd]},
            "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
        }))
        .expect("config");
        let descriptor = |media_type: &str, data: &[u8]| json!({"mediaType": media_type, "digest": sha(data), "size": data.len()});
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        }))
        .expect("manifest");
        let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
        entry["annotations"] = json!({"io.containerd.image.name": name});
        let index =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).expect("index");
        let mut tar = tar::Builder::new(Vec::new());
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        for blob in [&layer, &config, &manifest] {
            append(&mut tar, &format!("blobs/sha256/{}", &sha(blob)[7..]), blob);
        }
        append(&mut tar, "index.json", &index);
        tar.into_inner().expect("tar")
    }

    fn service() -> (tempfile::TempDir, ImagesService, Arc<ImageService>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let images =
            Arc::new(ImageService::open(dir.path(), RegistryConfig::default()).expect("open"));
        (dir, ImagesService::new(images.clone()), images)
    }

    fn chunks(data: &[u8], size: usize) -> Vec<Result<ImportImagesChunk, Status>> {
        data.chunks(size)
            .enumerate()
            .map(|(i, c)| {
                Ok(ImportImagesChunk {
                    node: if i == 0 { "n1".into() } else { String::new() },
                    data: c.to_vec(),
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn an_upload_in_small_chunks_imports_and_lists() {
        let (_dir, service, images) = service();
        let archive = layout("web:1", "serve");
        // More chunks than the channel holds, and an empty one.
        let mut upload = chunks(&archive, 100);
        upload.insert(3, Ok(ImportImagesChunk::default()));
        assert!(upload.len() > UPLOAD_BUFFER * 2);
        let response = service
            .import_stream(futures::stream::iter(upload))
            .await
            .expect("imports");
        assert_eq!(response.images.len(), 1);
        let info = &response.images[0];
        assert_eq!(info.names, ["docker.io/library/web:1"]);
        assert!(info.id.starts_with("sha256:") && info.digest.starts_with("sha256:"));
        assert_ne!(info.id, info.digest);
        assert!(info.node.is_empty());
        assert!(info.size > 0);
        assert!(
            info.created.parse::<jiff::Timestamp>().is_ok(),
            "{}",
            info.created
        );
        let listed = service.list().await.expect("lists");
        assert_eq!(listed.images, response.images);
        let image = images
            .ensure("web:1", PullPolicy::Never, &[])
            .await
            .expect("present without a registry");
        assert_eq!(image.config_digest, info.id);
        assert_eq!(
            std::fs::read_to_string(image.layers[0].join("hello.txt")).expect("layer"),
            "serve"
        );
    }

    #[tokio::test]
    async fn bad_uploads_are_bad_requests_and_broken_ones_say_so() {
        let (_dir, service, images) = service();
        let not_tar = chunks(&b"definitely not a tarball ".repeat(100), 512);
        let status = service
            .import_stream(futures::stream::iter(not_tar))
            .await
            .expect_err("not a tar");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("not a tar archive"),
            "{}",
            status.message()
        );

        let archive = layout("web:1", "serve");
        let mut broken = chunks(&archive[..archive.len() / 2], 1000);
        broken.push(Err(Status::cancelled("client went away")));
        let status = service
            .import_stream(futures::stream::iter(broken))
            .await
            .expect_err("broken");
        assert!(
            status
                .message()
                .contains("the upload failed: client went away"),
            "{}",
            status.message()
        );
        assert!(images.list().expect("list").is_empty());
        assert!(service.list().await.expect("list").images.is_empty());
    }

    #[test]
    fn records_group_into_one_info_per_image() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().expect("time");
        let record = |reference: &str, config: &str, pulled: &str| ImageRecord {
            reference: reference.into(),
            repo_digest: format!("sha256:repo-{config}"),
            manifest_digest: format!("sha256:manifest-{config}"),
            config_digest: format!("sha256:{config}"),
            layers: vec![
                LayerRecord {
                    digest: "sha256:l1".into(),
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    size: 10,
                    diff_id: "sha256:d1".into(),
                },
                LayerRecord {
                    digest: "sha256:l2".into(),
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    size: 5,
                    diff_id: "sha256:d2".into(),
                },
            ],
            size: 16,
            pulled_at: t(pulled),
            last_used: t(pulled),
        };
        let infos = image_infos(&[
            record("docker.io/library/a:1", "c1", "2024-01-01T00:00:00Z"),
            record("docker.io/library/b:1", "c2", "2024-01-02T00:00:00Z"),
            record("docker.io/library/c:1", "c1", "2024-01-03T00:00:00Z"),
        ]);
        let want = vec![
            ImageInfo {
                node: String::new(),
                names: vec![
                    "docker.io/library/a:1".into(),
                    "docker.io/library/c:1".into(),
                ],
                id: "sha256:c1".into(),
                digest: "sha256:repo-c1".into(),
                size: 15,
                created: "2024-01-03T00:00:00Z".into(),
            },
            ImageInfo {
                node: String::new(),
                names: vec!["docker.io/library/b:1".into()],
                id: "sha256:c2".into(),
                digest: "sha256:repo-c2".into(),
                size: 15,
                created: "2024-01-02T00:00:00Z".into(),
            },
        ];
        assert_eq!(infos, want);
    }
}
