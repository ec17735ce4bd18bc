//! `ImageService`: makes an image available for a container under a pull policy, and says where
//! its unpacked layers are.
//!
//! `ensure` checks the store, or resolves the reference against the configured endpoints and
//! fetches what the store lacks: the manifest (and index), the config, then each layer blob, which
//! is unpacked once (its diff ID checked against the config) into a directory shared by every
//! image that uses it. Pulls of one reference are serialised: a caller that waited while another
//! pulled the same reference takes that result instead of pulling again; pulls of one layer by
//! different references are serialised too, so a layer is downloaded once.
//!
//! `collect_garbage` removes unused images when the disk fills up (see [`super::gc`]). It holds
//! the store exclusively while it runs; pulls, imports and lookups share it, so it never takes
//! a layer a pull has just unpacked but not yet recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use tokio::sync::Mutex;

use super::error::ImageError;
use super::gc::{self, DiskUsage, GcPolicy, GcReport};
use super::import;
use super::pull::{self, Platform, PullError, RegistryClient, MAX_CONFIG_BYTES};
use super::reference::ImageRef;
use super::registries::{DockerConfigJson, RegistryConfig};
use super::store::{ImageRecord, LayerRecord, Store};
use super::unpack;

/// Layers fetched at once by one pull.
const PARALLEL_LAYERS: usize = 3;

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve against the registry every time (fetching only what changed).
    Always,
    /// Use the stored image when there is one.
    IfNotPresent,
    /// Never contact a registry.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for the tag `latest` or no tag (and no digest), else
    /// `IfNotPresent`.
    pub fn default_for(reference: &str) -> PullPolicy {
        match ImageRef::parse(reference) {
            Ok(r) if r.tag() == Some("latest") => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// The policy a container spec names (`Always`, `IfNotPresent`, `Never`), or the default for
    /// its image when it names none; `None` for an unknown value.
    pub fn from_spec(policy: Option<&str>, reference: &str) -> Option<PullPolicy> {
        match policy {
            None | Some("") => Some(PullPolicy::default_for(reference)),
            Some("Always") => Some(PullPolicy::Always),
            Some("IfNotPresent") => Some(PullPolicy::IfNotPresent),
            Some("Never") => Some(PullPolicy::Never),
            Some(_) => None,
        }
    }
}

/// An image ready for a container.
#[derive(Debug, Clone)]
pub struct Image {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The kubelet's `imageID`: `docker.io/library/busybox@sha256:…` (the digest the reference
    /// resolved to: an index's for multi-platform images).
    pub image_id: String,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The config's digest (the image's ID as `crictl images` shows it).
    pub config_digest: String,
    /// The image config: `config()` holds Entrypoint, Cmd, Env, WorkingDir, User.
    pub config: ImageConfiguration,
    /// Unpacked layer directories, lowest first (overlayfs's `lowerdir` lists them highest first).
    pub layers: Vec<PathBuf>,
    /// Bytes of config and compressed layers.
    pub size: u64,
    /// What this call pulled: `None` when the image was already present (the kubelet's "already
    /// present on machine").
    pub pulled: Option<PullReport>,
}

/// What one pull did, for the `Pulled` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// Blobs downloaded (config and layers; manifests not counted).
    pub blobs_downloaded: usize,
    /// Bytes downloaded in them.
    pub bytes_downloaded: u64,
    /// How long the pull took.
    pub duration: Duration,
}

/// The node's images.
#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registries: RegistryConfig,
    platform: Platform,
    /// Per key ("ref:…", "layer:…"): the lock, holding when the last pull under it finished.
    locks: StdMutex<HashMap<String, Arc<Mutex<Option<Instant>>>>>,
    /// Shared by pulls, imports and lookups; held exclusively by garbage collection.
    collecting: Arc<tokio::sync::RwLock<()>>,
}

impl ImageService {
    /// Opens (creating) the store under `root` with the registry configuration to pull through.
    pub fn open(root: impl Into<PathBuf>, registries: RegistryConfig) -> Result<Self, ImageError> {
        let root = root.into();
        let store = Store::open(&root).map_err(|source| ImageError::Store {
            path: root.clone(),
            source,
        })?;
        Ok(ImageService {
            inner: Arc::new(Inner {
                store,
                registries,
                platform: Platform::current(),
                locks: StdMutex::new(HashMap::new()),
                collecting: Arc::default(),
            }),
        })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        self.inner.store.root()
    }

    /// Makes `reference` available under `policy`, pulling with `pull_secrets` (the pod's
    /// `imagePullSecrets`) when needed.
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        pull_secrets: &[DockerConfigJson],
    ) -> Result<Image, ImageError> {
        let image = ImageRef::parse(reference)?;
        let _store_in_use = self.inner.collecting.read().await;
        if policy != PullPolicy::Always {
            if let Some(found) = self.present(&image).await? {
                return Ok(found);
            }
            if policy == PullPolicy::Never {
                return Err(ImageError::NeverPull {
                    reference: reference.to_string(),
                });
            }
        }
        let asked = Instant::now();
        let lock = self.lock(format!("ref:{image}"));
        let mut last_pull = lock.lock().await;
        // Someone else pulled this reference while we waited: theirs is as fresh as ours would be.
        if last_pull.is_some_and(|done| done >= asked) {
            if let Some(found) = self.present(&image).await? {
                return Ok(found);
            }
        }
        let pulled = self
            .pull(&image, pull_secrets)
            .await
            .map_err(|source| ImageError::Pull {
                reference: reference.to_string(),
                source,
            })?;
        *last_pull = Some(Instant::now());
        Ok(pulled)
    }

    /// The stored image for `reference`, if it is complete, without contacting a registry.
    pub async fn get(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let image = ImageRef::parse(reference)?;
        let _store_in_use = self.inner.collecting.read().await;
        self.present(&image).await
    }

    /// Imports the images of a tarball (`docker save`'s docker-archive, or an OCI image layout;
    /// plain, gzip or zstd) read once from `reader`, as `ctr images import` does; returns one
    /// record per name. Imported images are stored exactly as pulled ones, so [`Self::get`]
    /// and [`Self::ensure`] (under `IfNotPresent` or `Never`) use them without a registry. See
    /// [`super::import`] for what is checked; on an error no record is written.
    ///
    /// It blocks while it reads and unpacks: async callers run it in `spawn_blocking` (it is
    /// sync so that any reader, such as a channel fed by an upload, can stream into it).
    pub fn import(&self, reader: impl std::io::Read) -> Result<Vec<ImageRecord>, ImageError> {
        let _store_in_use = self.inner.collecting.blocking_read();
        Ok(import::import(
            &self.inner.store,
            &self.inner.platform,
            reader,
        )?)
    }

    /// Every stored image's record, ordered by reference.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.inner
            .store
            .records()
            .map_err(|source| ImageError::Store {
                path: self.root().join("images"),
                source,
            })
    }

    /// Removes images as the kubelet's image GC does (see [`super::gc`]) when the store's
    /// filesystem is at or over `policy`'s high threshold: images no container uses (`in_use`
    /// holds the containers' imageIDs) and nothing used within the minimum age, least
    /// recently used first, until the low threshold is reached; then every blob and layer that
    /// no remaining image names and no mounted overlay reads.
    pub async fn collect_garbage(
        &self,
        policy: GcPolicy,
        in_use: std::collections::HashSet<String>,
    ) -> Result<GcReport, ImageError> {
        let held = self.inner.collecting.clone().write_owned().await;
        let store = self.inner.store.clone();
        let root = self.root().to_path_buf();
        let task = tokio::task::spawn_blocking(move || {
            let _held = held;
            collect(&store, &policy, &in_use)
                .map_err(|source| ImageError::Store { path: root, source })
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ImageError::Store {
                path: self.root().to_path_buf(),
                source: std::io::Error::other(format!("image collection failed: {e}")),
            }),
        }
    }

    fn lock(&self, key: String) -> Arc<Mutex<Option<Instant>>> {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key).or_default().clone()
    }

    /// Looks the image up in the store (by reference; a digest reference also matches any record
    /// of the same repository with that digest) and loads it, marking it used.
    async fn present(&self, image: &ImageRef) -> Result<Option<Image>, ImageError> {
        let inner = self.inner.clone();
        let image = image.clone();
        let root = self.root().to_path_buf();
        let task = tokio::task::spawn_blocking(move || {
            let store = &inner.store;
            let store_error = |source| ImageError::Store {
                path: root.clone(),
                source,
            };
            let mut record = store.record(&image.to_string()).map_err(store_error)?;
            if record.is_none() {
                if let Some(digest) = image.digest() {
                    record = store
                        .records()
                        .map_err(store_error)?
                        .into_iter()
                        .find(|r| {
                            r.reference.starts_with(&format!("{}:", image.name()))
                                || r.reference.starts_with(&format!("{}@", image.name()))
                        })
                        .filter(|r| r.repo_digest == digest || r.manifest_digest == digest);
                }
            }
            let Some(mut record) = record else {
                return Ok(None);
            };
            let complete = store.has_blob(&record.config_digest)
                && record.layers.iter().all(|l| store.has_layer(&l.digest));
            if !complete {
                tracing::warn!(image = %image, "stored image is incomplete; it will be pulled again");
                return Ok(None);
            }
            let config = match load_config(store, &record.config_digest) {
                Ok(config) => config,
                Err(e) => {
                    tracing::warn!(image = %image, error = %e, "stored image config is unusable; it will be pulled again");
                    return Ok(None);
                }
            };
            record.last_used = jiff::Timestamp::now();
            if let Err(e) = store.put_record(&record) {
                tracing::warn!(image = %image, error = %e, "cannot record the image's use");
            }
            let found =
                to_image(store, &image, &record, config, None).map_err(|e| ImageError::Store {
                    path: root.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            Ok(Some(found))
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ImageError::Store {
                path: self.root().to_path_buf(),
                source: std::io::Error::other(format!("image store task failed: {e}")),
            }),
        }
    }

    async fn pull(
        &self,
        image: &ImageRef,
        secrets: &[DockerConfigJson],
    ) -> Result<Image, PullError> {
        let started = Instant::now();
        let store = &self.inner.store;
        let endpoints = self.inner.registries.endpoints(image);
        tracing::info!(image = %image, endpoints = ?endpoints.iter().map(|e| e.url()).collect::<Vec<_>>(), "pulling");
        let resolved = pull::resolve(image, &endpoints, secrets, &self.inner.platform).await?;
        let client = resolved.client;
        let manifest = resolved.manifest;

        if let Some((digest, bytes)) = &resolved.index {
            self.blocking_store({
                let (digest, bytes) = (digest.clone(), bytes.clone());
                move |store| store.put_blob_bytes(&digest, &bytes)
            })
            .await?;
        }
        self.blocking_store({
            let (digest, bytes) = (
                resolved.manifest_digest.clone(),
                resolved.manifest_bytes.clone(),
            );
            move |store| store.put_blob_bytes(&digest, &bytes)
        })
        .await?;

        let mut report = PullReport {
            blobs_downloaded: 0,
            bytes_downloaded: 0,
            duration: Duration::ZERO,
        };
        let config_descriptor = manifest.config();
        let config_digest = config_descriptor.digest().to_string();
        if config_descriptor.size() > MAX_CONFIG_BYTES {
            return Err(PullError::Unsupported(format!(
                "image config {config_digest} is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
                config_descriptor.size()
            )));
        }
        if !store.has_blob(&config_digest) {
            let bytes = self.download(&client, "config", config_descriptor).await?;
            report.blobs_downloaded += 1;
            report.bytes_downloaded += bytes;
        }
        let config = {
            let digest = config_digest.clone();
            self.blocking_store(move |store| load_config(store, &digest))
                .await?
        };
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(PullError::Unsupported(format!(
                "image config {config_digest} lists {} layers, the manifest {}",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }

        // Owned items and an Arc'd client keep this future `Send` for callers that spawn it.
        let client = Arc::new(client);
        let work: Vec<(Descriptor, String)> = manifest
            .layers()
            .iter()
            .cloned()
            .zip(diff_ids.iter().cloned())
            .collect();
        let layer_reports: Vec<(u64, bool)> = futures::stream::iter(work)
            .map(|(layer, diff_id)| {
                let (service, client) = (self.clone(), client.clone());
                async move { service.ensure_layer(&client, &layer, &diff_id).await }
            })
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
        for (bytes, downloaded) in layer_reports {
            if downloaded {
                report.blobs_downloaded += 1;
                report.bytes_downloaded += bytes;
            }
        }

        let record = image_record(
            image,
            resolved.repo_digest,
            resolved.manifest_digest,
            &manifest,
            &diff_ids,
            jiff::Timestamp::now(),
        );
        self.blocking_store({
            let record = record.clone();
            move |store| {
                store.put_record(&record).map_err(|source| PullError::Io {
                    what: format!("recording image {}", record.reference),
                    source,
                })
            }
        })
        .await?;
        report.duration = started.elapsed();
        tracing::info!(image = %image, digest = %record.repo_digest, blobs = report.blobs_downloaded,
            bytes = report.bytes_downloaded, seconds = report.duration.as_secs_f64(), "pulled");
        to_image(store, image, &record, config, Some(report))
    }

    /// Makes layer `descriptor` unpacked in the store; returns (bytes downloaded, whether its
    /// blob was downloaded by this call).
    async fn ensure_layer(
        &self,
        client: &RegistryClient,
        descriptor: &Descriptor,
        diff_id: &str,
    ) -> Result<(u64, bool), PullError> {
        let digest = descriptor.digest().to_string();
        let store = &self.inner.store;
        store.layer_dir(&digest)?;
        let lock = self.lock(format!("layer:{digest}"));
        let _guard = lock.lock().await;
        if store.has_layer(&digest) {
            return Ok((0, false));
        }
        let mut downloaded = (0, false);
        if !store.has_blob(&digest) {
            downloaded = (self.download(client, "layer", descriptor).await?, true);
        }
        let media_type = descriptor.media_type().to_string();
        let expected_diff_id = diff_id.to_string();
        self.blocking_store(move |store| {
            unpack_stored_layer(store, &digest, &media_type, &expected_diff_id)
        })
        .await?;
        Ok(downloaded)
    }

    /// Streams one blob into `tmp/` and commits it once verified; returns its size.
    async fn download(
        &self,
        client: &RegistryClient,
        what: &str,
        descriptor: &Descriptor,
    ) -> Result<u64, PullError> {
        let digest = descriptor.digest().to_string();
        let store = &self.inner.store;
        store.blob_path(&digest)?;
        let temp = store.temp_file().map_err(|source| PullError::Io {
            what: "making a temporary file".into(),
            source,
        })?;
        let file = temp.as_file().try_clone().map_err(|source| PullError::Io {
            what: "opening a temporary file".into(),
            source,
        })?;
        let mut out = tokio::fs::File::from_std(file);
        let bytes = client
            .blob_to(what, &digest, descriptor.size(), &mut out)
            .await?;
        drop(out);
        let store = store.clone();
        blocking(move || store.commit_blob(temp, &digest)).await?;
        Ok(bytes)
    }

    async fn blocking_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, PullError> + Send + 'static,
    ) -> Result<T, PullError> {
        let store = self.inner.store.clone();
        blocking(move || f(&store)).await
    }
}

/// One collection over the store (blocking; the caller holds it exclusively).
fn collect(
    store: &Store,
    policy: &GcPolicy,
    in_use: &std::collections::HashSet<String>,
) -> std::io::Result<GcReport> {
    let usage = DiskUsage::of(store.root())?;
    let mut report = GcReport {
        percent: usage.percent(),
        ..GcReport::default()
    };
    let Some(needed) = usage.to_free(policy) else {
        return Ok(report);
    };
    report.needed = needed;
    let mut records = store.records()?;
    let doomed: Vec<String> =
        gc::candidates(&records, in_use, jiff::Timestamp::now(), policy.min_age)
            .into_iter()
            .map(|r| r.reference.clone())
            .collect();
    // Read once: while the store is held no container can mount layers it did not already.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = gc::mounted_layers(&mountinfo, &store.root().join("layers/sha256"));
    // Keeps what the records name and what mounted overlays read; returns the bytes freed.
    let sweep = |records: &[ImageRecord]| {
        let (blobs, mut layers) = gc::referenced(records);
        layers.extend(mounted.iter().cloned());
        store.sweep(&blobs, &layers)
    };
    // What no image names any more (an overlay was still reading it, or a tag moved on a
    // re-pull) costs no image: it goes first.
    report.freed += sweep(&records)?;
    for reference in doomed {
        if report.freed >= needed {
            break;
        }
        store.remove_record(&reference)?;
        records.retain(|r| r.reference != reference);
        let freed = sweep(&records)?;
        tracing::info!(image = %reference, freed, "removed an unused image");
        report.freed += freed;
        report.removed.push(reference);
    }
    Ok(report)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PullError> + Send + 'static,
) -> Result<T, PullError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(PullError::Io {
            what: "image store task".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

pub(super) fn load_config(store: &Store, digest: &str) -> Result<ImageConfiguration, PullError> {
    parse_config(digest, &store.read_blob(digest, MAX_CONFIG_BYTES)?)
}

/// Parses the image config blob `digest`.
pub(super) fn parse_config(digest: &str, bytes: &[u8]) -> Result<ImageConfiguration, PullError> {
    serde_json::from_slice(bytes).map_err(|e| {
        PullError::Unsupported(format!(
            "image config {digest} is not an image configuration: {e}"
        ))
    })
}

/// Unpacks the stored layer blob `digest` into `tmp/`, checks its diff ID against the config's
/// `expected_diff_id` and commits it as the layer's directory. Pulls and imports both unpack
/// with this; it blocks.
pub(super) fn unpack_stored_layer(
    store: &Store,
    digest: &str,
    media_type: &str,
    expected_diff_id: &str,
) -> Result<(), PullError> {
    let blob_path = store.blob_path(digest)?;
    let staged = store.temp_dir().map_err(|source| PullError::Io {
        what: "making a directory to unpack into".into(),
        source,
    })?;
    let fs_dir = staged.path().join("fs");
    std::fs::create_dir(&fs_dir).map_err(|source| PullError::Io {
        what: format!("making {}", fs_dir.display()),
        source,
    })?;
    let blob = std::fs::File::open(&blob_path).map_err(|source| PullError::Io {
        what: format!("opening layer {digest}"),
        source,
    })?;
    let unpacked =
        unpack::unpack_layer(blob, media_type, &fs_dir).map_err(|source| PullError::Unpack {
            layer: digest.to_string(),
            source,
        })?;
    if unpacked.diff_id != expected_diff_id {
        return Err(PullError::DiffIdMismatch {
            layer: digest.to_string(),
            expected: expected_diff_id.to_string(),
            got: unpacked.diff_id,
        });
    }
    store.commit_layer(staged, digest, &unpacked.diff_id)?;
    Ok(())
}

/// The record of `image` whose content is `manifest` (layers paired with the config's
/// `diff_ids`), stored or used at `now`. Pulls and imports record images with this.
pub(super) fn image_record(
    image: &ImageRef,
    repo_digest: String,
    manifest_digest: String,
    manifest: &ImageManifest,
    diff_ids: &[String],
    now: jiff::Timestamp,
) -> ImageRecord {
    let layers: Vec<LayerRecord> = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| LayerRecord {
            digest: l.digest().to_string(),
            media_type: l.media_type().to_string(),
            size: l.size(),
            diff_id: diff_id.clone(),
        })
        .collect();
    ImageRecord {
        reference: image.to_string(),
        repo_digest,
        manifest_digest,
        config_digest: manifest.config().digest().to_string(),
        size: manifest.config().size() + layers.iter().map(|l| l.size).sum::<u64>(),
        layers,
        pulled_at: now,
        last_used: now,
    }
}

fn to_image(
    store: &Store,
    image: &ImageRef,
    record: &ImageRecord,
    config: ImageConfiguration,
    pulled: Option<PullReport>,
) -> Result<Image, PullError> {
    let layers = record
        .layers
        .iter()
        .map(|l| store.layer_fs(&l.digest))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image {
        reference: image.to_string(),
        image_id: image.image_id(&record.repo_digest),
        manifest_digest: record.manifest_digest.clone(),
        config_digest: record.config_digest.clone(),
        config,
        layers,
        size: record.size,
        pulled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy_follows_kubernetes() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let with_digest = format!("busybox@{d}");
        let latest_and_digest = format!("busybox:latest@{d}");
        let cases = [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("127.0.0.1:5000/a/b", PullPolicy::Always),
            ("busybox:1.36", PullPolicy::IfNotPresent),
            (with_digest.as_str(), PullPolicy::IfNotPresent),
            (latest_and_digest.as_str(), PullPolicy::Always),
            ("Invalid Name", PullPolicy::IfNotPresent),
        ];
        for (reference, want) in cases {
            assert_eq!(PullPolicy::default_for(reference), want, "{reference}");
        }
        assert_eq!(
            PullPolicy::from_spec(None, "busybox:1"),
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(
            PullPolicy::from_spec(Some("Never"), "busybox"),
            Some(PullPolicy::Never)
        );
        assert_eq!(PullPolicy::from_spec(Some("Sometimes"), "busybox"), None);
    }

    #[tokio::test]
    async fn never_and_invalid_names_fail_without_a_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = ImageService::open(dir.path(), RegistryConfig::default()).expect("open");
        let never = service
            .ensure("busybox:1", PullPolicy::Never, &[])
            .await
            .expect_err("absent");
        assert_eq!(never.reason(), "ErrImageNeverPull");
        assert!(never.to_string().contains("\"busybox:1\""), "{never}");
        let invalid = service
            .ensure("Busy Box", PullPolicy::IfNotPresent, &[])
            .await
            .expect_err("invalid");
        assert_eq!(invalid.reason(), "InvalidImageName");
        assert!(service.list().expect("list").is_empty());
        assert!(service.get("busybox:1").await.expect("get").is_none());
    }
}
