//! Image tarballs into the node's store, as `ctr images import` and k3s's airgap images do:
//! docker-archives as `docker save` writes them (`manifest.json` with Config/RepoTags/Layers,
//! layers at `<id>/layer.tar` or `blobs/sha256/<hex>`, plain, gzip or zstd; the legacy
//! `repositories` file names images whose RepoTags are empty) and OCI image layouts (`oci-layout`,
//! `index.json`, `blobs/sha256/…`; names from the `io.containerd.image.name` annotation, or from
//! `org.opencontainers.image.ref.name` when it is a full name; indexes inside indexes narrowed
//! to this machine's platform as pulls do). The tarball itself may be gzip or zstd compressed.
//!
//! The archive is read once, in order, without holding it in memory: every file goes to a temp
//! file in the store's `tmp/` with its sha256 computed on the way (a `blobs/sha256/<hex>` entry
//! must match its name), and only once the stream has ended (`manifest.json` and `index.json`
//! may come after the blobs) are the images assembled. Then every descriptor is checked (digest
//! and size), and the blobs are committed and the layers unpacked with the functions a pull uses
//! (diff IDs checked against the config), so an imported image is indistinguishable from a
//! pulled one. A docker-archive has no manifest: one is written for it (Docker v2 schema 2,
//! layer media types from their content), and its digest is the image's repo digest. Records
//! are kept by name (`get` and `ensure` look images up by reference), so an image the archive
//! does not name is refused rather than stored under its ID.
//!
//! Records, the only thing that makes an image visible, are written last, after every image of
//! the archive is complete: bad input (not a tar, no manifest, a missing blob, a digest or size
//! mismatch, a path with `..`, an image without a name) leaves no record. Blobs and layers
//! committed before a failure stay in the store, content-addressed and verified, for a later pull
//! or import to reuse. Everything here blocks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path};
use std::rc::Rc;

use oci_spec::image::{Descriptor, ImageManifest};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tempfile::{NamedTempFile, TempPath};

use super::pull::{
    self, sha256_digest, Manifest, Platform, PullError, DOCKER_MANIFEST, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
};
use super::reference::{ImageRef, ReferenceError};
use super::service::{image_record, parse_config, unpack_stored_layer};
use super::store::{ImageRecord, Store};
use super::unpack::{compression_for_media_type, detect_compression, Compression};

/// The annotation containerd reads an image's full name from.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming an image in a layout: a tag, or a full name.
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

const MANIFEST_JSON: &str = "manifest.json";
const INDEX_JSON: &str = "index.json";
const OCI_LAYOUT: &str = "oci-layout";
const REPOSITORIES: &str = "repositories";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Indexes inside indexes followed at most.
const MAX_NESTING: usize = 4;
/// Symlinks followed at most to find one archive entry.
const MAX_LINK_HOPS: usize = 16;
/// Bytes copied at a time.
const COPY_BUFFER: usize = 256 * 1024;

/// Why an archive could not be imported. All but [`ImportError::Io`] (and store failures
/// underneath [`ImportError::Store`]) are the archive's fault.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The stream is not a tar (plain, gzip or zstd) or is damaged.
    #[error("the file is not a tar archive (plain, gzip or zstd), or it is damaged: {source}")]
    NotTar {
        /// What the tar reader said.
        #[source]
        source: io::Error,
    },
    /// The stream itself failed (the upload broke off).
    #[error("reading the archive: {message}")]
    Stream {
        /// Why.
        message: String,
    },
    /// An entry's data could not be read (a truncated archive).
    #[error("reading archive entry {entry:?}: {source}")]
    Read {
        /// The entry's path.
        entry: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An entry, a link target or a path in `manifest.json` leads outside the archive.
    #[error("{entry:?} in the archive escapes it: {why}")]
    Escape {
        /// The path as the archive has it.
        entry: String,
        /// How it escapes.
        why: String,
    },
    /// Neither kind of image archive.
    #[error("the archive has neither manifest.json (as docker save writes) nor index.json (an OCI image layout)")]
    NoManifest,
    /// A file the archive's documents name is not in it.
    #[error("the archive lacks {path:?}, which {needed_by} names")]
    Missing {
        /// The path looked for.
        path: String,
        /// The document naming it.
        needed_by: String,
    },
    /// Content does not match the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {got}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest that named it.
        expected: String,
        /// The digest of the content.
        got: String,
    },
    /// Content is not the size its descriptor says.
    #[error("size mismatch for {what}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// The content's size.
        got: u64,
    },
    /// A document or entry this agent cannot use.
    #[error("{what}: {message}")]
    Invalid {
        /// The document or entry.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// An image has no name the store could keep it under.
    #[error("image {image} in the archive has no name (no RepoTags in manifest.json, no io.containerd.image.name annotation or full org.opencontainers.image.ref.name in index.json{hint}); the node keeps images by name: save it by name (docker save NAME:TAG)")]
    Unnamed {
        /// The image's config or manifest digest.
        image: String,
        /// More on what the archive has.
        hint: String,
    },
    /// A name in the archive is not a valid reference.
    #[error("image name {name:?} in the archive: {source}")]
    Name {
        /// The name as the archive has it.
        name: String,
        /// Why it does not parse.
        #[source]
        source: ReferenceError,
    },
    /// No image in the archive runs on this machine.
    #[error("no image in the archive is for {platform} (it has: {available})")]
    NoPlatform {
        /// This machine's platform.
        platform: String,
        /// The platforms the archive's index lists.
        available: String,
    },
    /// Storing or unpacking an image's content failed (a layer whose diff ID differs from the
    /// config's, a layer that does not unpack, the store's disk).
    #[error("image {image}: {source}")]
    Store {
        /// The image (its first name, or its digest).
        image: String,
        /// Why.
        #[source]
        source: PullError,
    },
    /// The node's own disk failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ImportError {
    /// Whether the archive is at fault (a client error), not the node.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ImportError::Io { .. } => false,
            ImportError::Store { source, .. } => !matches!(source, PullError::Io { .. }),
            _ => true,
        }
    }
}

/// Imports every image in the tarball `reader` yields into `store`, choosing `platform`'s
/// manifest from indexes; returns one record per name, in the archive's order.
pub fn import(
    store: &Store,
    platform: &Platform,
    reader: impl Read,
) -> Result<Vec<ImageRecord>, ImportError> {
    let mut archive = Archive::read(store, reader)?;
    let plans = if archive.docs.contains_key(INDEX_JSON) {
        plan_oci(&archive, platform)?
    } else if archive.docs.contains_key(MANIFEST_JSON) {
        plan_docker(&archive)?
    } else {
        return Err(ImportError::NoManifest);
    };
    check_names_unique(&plans)?;
    for plan in &plans {
        commit(store, &mut archive, plan)?;
    }
    let now = jiff::Timestamp::now();
    let mut records = Vec::new();
    for plan in &plans {
        for name in &plan.names {
            records.push(image_record(
                name,
                plan.repo_digest.clone(),
                plan.manifest_digest.clone(),
                &plan.manifest,
                &plan.diff_ids,
                now,
            ));
        }
    }
    for record in &records {
        store.put_record(record).map_err(|source| ImportError::Io {
            what: format!("recording image {}", record.reference),
            source,
        })?;
        tracing::info!(image = %record.reference, digest = %record.repo_digest, id = %record.config_digest, "imported");
    }
    Ok(records)
}

/// One archive file, copied to the store's `tmp/`.
struct Staged {
    path: TempPath,
    digest: String,
    size: u64,
}

/// What the archive holds once read: files as temp files, links, and the small documents.
struct Archive {
    files: HashMap<String, Staged>,
    /// Entry path → the archive path it links to (symlinks resolved against their directory).
    links: HashMap<String, String>,
    /// `manifest.json`, `index.json`, `oci-layout`, `repositories`.
    docs: HashMap<&'static str, Vec<u8>>,
}

/// A reader that remembers whether the stream under the tar (and decompression) failed.
struct Watched<R> {
    inner: R,
    failure: Rc<RefCell<Option<String>>>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                *self.failure.borrow_mut() = Some(e.to_string());
            }
        })
    }
}

impl Archive {
    /// Reads the whole stream once, staging every file.
    fn read(store: &Store, reader: impl Read) -> Result<Archive, ImportError> {
        let failure = Rc::new(RefCell::new(None));
        let watched = Watched {
            inner: reader,
            failure: failure.clone(),
        };
        let stream_error = |tar_error: io::Error| match failure.borrow().clone() {
            Some(message) => ImportError::Stream { message },
            None => ImportError::NotTar { source: tar_error },
        };
        let mut buffered = BufReader::with_capacity(COPY_BUFFER, watched);
        let compression = detect_compression(buffered.fill_buf().map_err(stream_error)?);
        let decompressed: Box<dyn Read> = match compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(stream_error)?)
            }
        };
        let mut tar = tar::Archive::new(decompressed);
        let mut archive = Archive {
            files: HashMap::new(),
            links: HashMap::new(),
            docs: HashMap::new(),
        };
        let mut buffer = vec![0u8; COPY_BUFFER];
        for entry in tar.entries().map_err(stream_error)? {
            let mut entry = entry.map_err(stream_error)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = clean_path(&name).map_err(|why| ImportError::Escape {
                entry: name.clone(),
                why,
            })?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory
                | tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => continue,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .ok_or_else(|| ImportError::Invalid {
                            what: format!("archive entry {name:?}"),
                            message: "a link without a target".into(),
                        })?;
                    let resolved = if kind == tar::EntryType::Symlink {
                        resolve_symlink(&path, &target)
                    } else {
                        clean_path(&target)
                    }
                    .map_err(|why| ImportError::Escape {
                        entry: name.clone(),
                        why: format!("its link target {target:?}: {why}"),
                    })?;
                    archive.files.remove(&path);
                    archive.links.insert(path, resolved);
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    archive.links.remove(&path);
                    if let Some(doc) = [MANIFEST_JSON, INDEX_JSON, OCI_LAYOUT, REPOSITORIES]
                        .into_iter()
                        .find(|d| *d == path)
                    {
                        archive.docs.insert(doc, read_doc(&mut entry, &name)?);
                    } else if is_legacy_metadata(&path) {
                        // `<id>/json` and `<id>/VERSION`: Docker's v1 layer metadata, unused.
                    } else {
                        let size = entry.size();
                        let staged = stage(store, &mut entry, &name, size, &mut buffer)?;
                        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                            let named = format!("sha256:{hex}");
                            if staged.digest != named {
                                return Err(ImportError::DigestMismatch {
                                    what: format!("archive entry {name:?}"),
                                    expected: named,
                                    got: staged.digest,
                                });
                            }
                        }
                        archive.files.insert(path, staged);
                    }
                }
                other => {
                    return Err(ImportError::Invalid {
                        what: format!("archive entry {name:?}"),
                        message: format!(
                            "an image archive holds files, directories and links, not {other:?}"
                        ),
                    })
                }
            }
        }
        Ok(archive)
    }

    /// The archive path `path` leads to (following links), and its staged file.
    fn find(&self, path: &str, needed_by: &str) -> Result<(String, &Staged), ImportError> {
        let mut current = path.to_string();
        for _ in 0..MAX_LINK_HOPS {
            if let Some(staged) = self.files.get(&current) {
                return Ok((current, staged));
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => break,
            }
        }
        Err(ImportError::Missing {
            path: path.to_string(),
            needed_by: needed_by.to_string(),
        })
    }

    /// The blob `descriptor` names (`blobs/sha256/<hex>`), its digest and size checked.
    fn blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        needed_by: &str,
    ) -> Result<(String, &Staged), ImportError> {
        let digest = descriptor.digest().to_string();
        let hex = pull::sha256_hex(&digest).map_err(|e| ImportError::Invalid {
            what: needed_by.to_string(),
            message: e.to_string(),
        })?;
        let (path, staged) = self.find(&format!("blobs/sha256/{hex}"), needed_by)?;
        if staged.digest != digest {
            return Err(ImportError::DigestMismatch {
                what: format!("{what} {digest}"),
                expected: digest,
                got: staged.digest.clone(),
            });
        }
        if staged.size != descriptor.size() {
            return Err(ImportError::SizeMismatch {
                what: format!("{what} {digest}"),
                expected: descriptor.size(),
                got: staged.size,
            });
        }
        Ok((path, staged))
    }

    /// Takes a staged file out, to be committed.
    fn take(&mut self, path: &str) -> Option<Staged> {
        self.files.remove(path)
    }
}

/// Reads a small document entry whole; too large or truncated ones are refused.
fn read_doc<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>, ImportError> {
    let expected = entry.size();
    let mut bytes = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ImportError::Read {
            entry: name.to_string(),
            source,
        })?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ImportError::Invalid {
            what: format!("archive entry {name:?}"),
            message: format!("more than the {MAX_MANIFEST_BYTES} bytes accepted"),
        });
    }
    if bytes.len() as u64 != expected {
        return Err(ImportError::Read {
            entry: name.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the archive ends {} bytes into its {expected}: it is truncated",
                    bytes.len()
                ),
            ),
        });
    }
    Ok(bytes)
}

/// Copies an entry to a temp file in the store, hashing it on the way.
fn stage(
    store: &Store,
    entry: &mut impl Read,
    name: &str,
    expected: u64,
    buffer: &mut [u8],
) -> Result<Staged, ImportError> {
    let io_error = |source| ImportError::Io {
        what: format!("storing archive entry {name:?}"),
        source,
    };
    let mut temp = store.temp_file().map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match entry.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImportError::Read {
                    entry: name.to_string(),
                    source,
                })
            }
        };
        hasher.update(&buffer[..n]);
        temp.write_all(&buffer[..n]).map_err(io_error)?;
        size += n as u64;
    }
    if size != expected {
        return Err(ImportError::Read {
            entry: name.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends {size} bytes into its {expected}: it is truncated"),
            ),
        });
    }
    temp.as_file().sync_all().map_err(io_error)?;
    Ok(Staged {
        path: temp.into_temp_path(),
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
    })
}

/// `<id>/json` and `<id>/VERSION` of a legacy docker-archive.
fn is_legacy_metadata(path: &str) -> bool {
    matches!(path.split_once('/'), Some((_, "json" | "VERSION")))
}

/// The path's normal components joined by `/`; an error saying why for absolute paths and `..`.
fn clean_path(path: &str) -> Result<String, String> {
    let mut out: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => out.push(c.to_str().unwrap_or_default()),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path has a '..' component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute".into()),
        }
    }
    Ok(out.join("/"))
}

/// Where a symlink at `path` pointing to `target` leads, as an archive path; an error for
/// absolute targets and ones that climb out of the archive.
fn resolve_symlink(path: &str, target: &str) -> Result<String, String> {
    let mut out: Vec<&str> = path.split('/').collect();
    out.pop();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(c) => out.push(c.to_str().unwrap_or_default()),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err("it leads out of the archive".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("it is absolute".into()),
        }
    }
    Ok(out.join("/"))
}

/// Where a blob to commit comes from.
enum Source {
    /// A staged archive file (its archive path).
    Archive(String),
    /// Bytes made here (a docker-archive's manifest).
    Bytes(Vec<u8>),
}

/// One image of the archive, checked and ready to commit.
struct Plan {
    /// Its normalised names.
    names: Vec<ImageRef>,
    /// The digest its names resolve to (the outermost index's, or the manifest's).
    repo_digest: String,
    manifest_digest: String,
    manifest: ImageManifest,
    diff_ids: Vec<String>,
    /// Blobs to store: indexes, manifest, config, layers.
    blobs: Vec<(String, Source)>,
}

impl Plan {
    fn label(&self) -> String {
        self.names
            .first()
            .map_or_else(|| self.manifest_digest.clone(), ToString::to_string)
    }
}

/// Stores a plan's blobs (moving the staged files) and unpacks its layers, as a pull does.
fn commit(store: &Store, archive: &mut Archive, plan: &Plan) -> Result<(), ImportError> {
    let store_error = |source| ImportError::Store {
        image: plan.label(),
        source,
    };
    for (digest, source) in &plan.blobs {
        if store.has_blob(digest) {
            continue;
        }
        match source {
            Source::Bytes(bytes) => store.put_blob_bytes(digest, bytes).map_err(store_error)?,
            Source::Archive(path) => {
                let staged = archive.take(path).ok_or_else(|| ImportError::Missing {
                    path: path.clone(),
                    needed_by: format!("image {}", plan.label()),
                })?;
                let file = File::open(&staged.path).map_err(|source| ImportError::Io {
                    what: format!("reopening the staged archive entry {path:?}"),
                    source,
                })?;
                store
                    .commit_blob(NamedTempFile::from_parts(file, staged.path), digest)
                    .map_err(store_error)?;
            }
        }
    }
    for (layer, diff_id) in plan.manifest.layers().iter().zip(&plan.diff_ids) {
        let digest = layer.digest().to_string();
        if store.has_layer(&digest) {
            continue;
        }
        unpack_stored_layer(store, &digest, layer.media_type().as_ref(), diff_id)
            .map_err(store_error)?;
    }
    Ok(())
}

/// Parses `name`, normalised.
fn parse_name(name: &str) -> Result<ImageRef, ImportError> {
    ImageRef::parse(name).map_err(|source| ImportError::Name {
        name: name.to_string(),
        source,
    })
}

/// Refuses an archive giving one name to different images; drops repeats of the same one.
fn check_names_unique(plans: &[Plan]) -> Result<(), ImportError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for plan in plans {
        for name in &plan.names {
            if let Some(other) = seen.insert(name.to_string(), &plan.manifest_digest) {
                if other != plan.manifest_digest {
                    return Err(ImportError::Invalid {
                        what: format!("image name {name}"),
                        message: format!(
                            "the archive gives it to two images ({other} and {})",
                            plan.manifest_digest
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Checks a name with a digest names this image.
fn check_pinned(
    name: &ImageRef,
    repo_digest: &str,
    manifest_digest: &str,
) -> Result<(), ImportError> {
    match name.digest() {
        Some(d) if d != repo_digest && d != manifest_digest => Err(ImportError::Invalid {
            what: format!("image name {name}"),
            message: format!("it pins digest {d}, but the image's is {repo_digest}"),
        }),
        _ => Ok(()),
    }
}

/// Parses a JSON document of the archive.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|e| ImportError::Invalid {
        what: what.to_string(),
        message: format!("not valid JSON of the expected shape: {e}"),
    })
}

/// Reads a staged document whole (up to `limit` bytes).
fn read_staged(staged: &Staged, what: &str, limit: u64) -> Result<Vec<u8>, ImportError> {
    if staged.size > limit {
        return Err(ImportError::Invalid {
            what: what.to_string(),
            message: format!("{} bytes, more than the {limit} accepted", staged.size),
        });
    }
    std::fs::read(&staged.path).map_err(|source| ImportError::Io {
        what: format!("reading the staged {what}"),
        source,
    })
}

/// The config's diff IDs, checked against the manifest's layer count and media types.
fn checked_layers(
    manifest: &ImageManifest,
    config_digest: &str,
    config_bytes: &[u8],
) -> Result<Vec<String>, ImportError> {
    let config = parse_config(config_digest, config_bytes).map_err(|e| ImportError::Invalid {
        what: format!("image config {config_digest}"),
        message: e.to_string(),
    })?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImportError::Invalid {
            what: format!("image config {config_digest}"),
            message: format!(
                "it lists {} layers, the manifest {}",
                diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }
    for layer in manifest.layers() {
        compression_for_media_type(layer.media_type().as_ref()).map_err(|e| {
            ImportError::Invalid {
                what: format!("layer {}", layer.digest()),
                message: e.to_string(),
            }
        })?;
    }
    Ok(diff_ids)
}

// ---- OCI image layouts ----------------------------------------------------------------------

/// The images of an OCI image layout: each entry of `index.json` whose platform (if it names
/// one) runs here, followed through nested indexes to this platform's manifest.
fn plan_oci(archive: &Archive, platform: &Platform) -> Result<Vec<Plan>, ImportError> {
    if !archive.docs.contains_key(OCI_LAYOUT) {
        tracing::warn!(
            "the archive has index.json but no oci-layout file; reading it as an OCI image layout"
        );
    }
    let index = match pull::parse_manifest(&archive.docs[INDEX_JSON]).map_err(|message| {
        ImportError::Invalid {
            what: INDEX_JSON.into(),
            message,
        }
    })? {
        Manifest::Index(index) => index,
        Manifest::Image(_) => {
            return Err(ImportError::Invalid {
                what: INDEX_JSON.into(),
                message: "it is an image manifest, not an image index".into(),
            })
        }
    };
    let docker_names = docker_names_by_config(archive);
    let mut plans = Vec::new();
    let mut elsewhere: Vec<Descriptor> = Vec::new();
    for entry in index.manifests() {
        if let Some(p) = entry.platform() {
            if !platform.runs(p) {
                tracing::info!(digest = %entry.digest(), platform = %format!("{}/{}", p.os(), p.architecture()), "skipping an image for another platform");
                elsewhere.push(entry.clone());
                continue;
            }
        }
        plans.push(plan_oci_entry(archive, platform, entry, &docker_names)?);
    }
    if plans.is_empty() {
        if elsewhere.is_empty() {
            return Err(ImportError::Invalid {
                what: INDEX_JSON.into(),
                message: "it lists no images".into(),
            });
        }
        return Err(ImportError::NoPlatform {
            platform: platform.to_string(),
            available: pull::platform_list(&elsewhere),
        });
    }
    Ok(plans)
}

/// The names an `index.json` entry's annotations give, and, when there are none, a hint for
/// the error.
fn annotated_names(entry: &Descriptor) -> Result<(Vec<ImageRef>, String), ImportError> {
    let annotations = entry.annotations().clone().unwrap_or_default();
    if let Some(name) = annotations.get(CONTAINERD_NAME) {
        return Ok((vec![parse_name(name)?], String::new()));
    }
    match annotations.get(OCI_REF_NAME) {
        Some(name) if name.contains(['/', ':', '@']) => {
            Ok((vec![parse_name(name)?], String::new()))
        }
        Some(tag) => Ok((
            Vec::new(),
            format!("; its {OCI_REF_NAME} {tag:?} is only a tag"),
        )),
        None => Ok((Vec::new(), String::new())),
    }
}

fn plan_oci_entry(
    archive: &Archive,
    platform: &Platform,
    entry: &Descriptor,
    docker_names: &HashMap<String, Vec<String>>,
) -> Result<Plan, ImportError> {
    let (mut names, hint) = annotated_names(entry)?;
    let repo_digest = entry.digest().to_string();
    let mut blobs = Vec::new();
    let mut descriptor = entry.clone();
    let mut needed_by = INDEX_JSON.to_string();
    let mut depth = 0;
    let (manifest_digest, manifest) = loop {
        let digest = descriptor.digest().to_string();
        let (path, staged) = archive.blob(&descriptor, "manifest", &needed_by)?;
        let what = format!("manifest {digest}");
        let bytes = read_staged(staged, &what, MAX_MANIFEST_BYTES as u64)?;
        blobs.push((digest.clone(), Source::Archive(path)));
        match pull::parse_manifest(&bytes)
            .map_err(|message| ImportError::Invalid { what, message })?
        {
            Manifest::Image(manifest) => break (digest, *manifest),
            Manifest::Index(index) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ImportError::Invalid {
                        what: format!("image index {digest}"),
                        message: format!("indexes are nested more than {MAX_NESTING} deep"),
                    });
                }
                let chosen = pull::choose_platform(&index, platform).map_err(|e| match e {
                    PullError::NoPlatform {
                        platform,
                        available,
                    } => ImportError::NoPlatform {
                        platform,
                        available,
                    },
                    other => ImportError::Invalid {
                        what: format!("image index {digest}"),
                        message: other.to_string(),
                    },
                })?;
                descriptor = chosen.clone();
                needed_by = format!("image index {digest}");
            }
        }
    };
    let config_digest = manifest.config().digest().to_string();
    let manifest_label = format!("manifest {manifest_digest}");
    let (config_path, config_staged) =
        archive.blob(manifest.config(), "config", &manifest_label)?;
    let config_bytes = read_staged(
        config_staged,
        &format!("image config {config_digest}"),
        MAX_CONFIG_BYTES,
    )?;
    let diff_ids = checked_layers(&manifest, &config_digest, &config_bytes)?;
    blobs.push((config_digest.clone(), Source::Archive(config_path)));
    for layer in manifest.layers() {
        let (path, _) = archive.blob(layer, "layer", &manifest_label)?;
        blobs.push((layer.digest().to_string(), Source::Archive(path)));
    }
    if names.is_empty() {
        for name in docker_names.get(&config_digest).into_iter().flatten() {
            names.push(parse_name(name)?);
        }
    }
    if names.is_empty() {
        return Err(ImportError::Unnamed {
            image: repo_digest,
            hint,
        });
    }
    for name in &names {
        check_pinned(name, &repo_digest, &manifest_digest)?;
    }
    Ok(Plan {
        names,
        repo_digest,
        manifest_digest,
        manifest,
        diff_ids,
        blobs,
    })
}

// ---- docker-archives ------------------------------------------------------------------------

/// One image of `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// RepoTags of `manifest.json` by config digest, for an OCI layout that also has one (Docker 25
/// and later write both) but whose index lacks names.
fn docker_names_by_config(archive: &Archive) -> HashMap<String, Vec<String>> {
    let Some(bytes) = archive.docs.get(MANIFEST_JSON) else {
        return HashMap::new();
    };
    let entries: Vec<DockerEntry> = match parse_json(bytes, MANIFEST_JSON) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the OCI layout's manifest.json");
            return HashMap::new();
        }
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let path = clean_path(&e.config).ok()?;
            let (_, staged) = archive.find(&path, MANIFEST_JSON).ok()?;
            Some((staged.digest.clone(), e.repo_tags.unwrap_or_default()))
        })
        .collect()
}

/// The hex digest a file name carries (`<hex>.json`, `blobs/sha256/<hex>`), if it carries one.
fn digest_in_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    let digest = format!("sha256:{hex}");
    pull::sha256_hex(&digest).ok()?;
    Some(digest)
}

/// The layer media type for a docker-archive layer, from its first bytes.
fn docker_layer_media_type(staged: &Staged, what: &str) -> Result<&'static str, ImportError> {
    let mut magic = [0u8; 4];
    let mut file = File::open(&staged.path).map_err(|source| ImportError::Io {
        what: format!("reading the staged {what}"),
        source,
    })?;
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ImportError::Io {
                    what: format!("reading the staged {what}"),
                    source,
                })
            }
        }
    }
    Ok(match detect_compression(&magic[..got]) {
        Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
        Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
    })
}

/// Names from the legacy `repositories` file (`{"repo": {"tag": "<top layer id>"}}`) for the
/// image whose top layer is in directory `top_layer_id`.
fn legacy_names(archive: &Archive, top_layer_id: &str) -> Vec<String> {
    let Some(bytes) = archive.docs.get(REPOSITORIES) else {
        return Vec::new();
    };
    let repositories: HashMap<String, HashMap<String, String>> =
        match parse_json(bytes, REPOSITORIES) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the archive's repositories file");
                return Vec::new();
            }
        };
    let mut names: Vec<String> = repositories
        .into_iter()
        .flat_map(|(repo, tags)| {
            tags.into_iter()
                .filter(|(_, id)| id == top_layer_id)
                .map(move |(tag, _)| format!("{repo}:{tag}"))
        })
        .collect();
    names.sort();
    names
}

/// The images of a docker-archive, each with a Docker v2 schema 2 manifest written for it.
fn plan_docker(archive: &Archive) -> Result<Vec<Plan>, ImportError> {
    let entries: Vec<DockerEntry> = parse_json(&archive.docs[MANIFEST_JSON], MANIFEST_JSON)?;
    if entries.is_empty() {
        return Err(ImportError::Invalid {
            what: MANIFEST_JSON.into(),
            message: "it lists no images".into(),
        });
    }
    let archive_path = |path: &str| {
        clean_path(path).map_err(|why| ImportError::Escape {
            entry: path.to_string(),
            why: format!("{MANIFEST_JSON} names it and {why}"),
        })
    };
    let mut plans = Vec::new();
    for entry in entries {
        let config_path = archive_path(&entry.config)?;
        let (config_path, config_staged) = archive.find(&config_path, MANIFEST_JSON)?;
        let config_digest = config_staged.digest.clone();
        if let Some(named) = digest_in_name(&config_path) {
            if named != config_digest {
                return Err(ImportError::DigestMismatch {
                    what: format!("archive entry {config_path:?}"),
                    expected: named,
                    got: config_digest,
                });
            }
        }
        let config_bytes = read_staged(
            config_staged,
            &format!("image config {config_digest}"),
            MAX_CONFIG_BYTES,
        )?;
        let mut blobs = vec![(config_digest.clone(), Source::Archive(config_path))];
        let mut layers = Vec::new();
        let mut top_layer_id = String::new();
        for layer in &entry.layers {
            let path = archive_path(layer)?;
            top_layer_id = path.split('/').next().unwrap_or_default().to_string();
            let (path, staged) = archive.find(&path, MANIFEST_JSON)?;
            let media_type = docker_layer_media_type(staged, &format!("layer {path:?}"))?;
            layers.push(serde_json::json!({
                "mediaType": media_type,
                "size": staged.size,
                "digest": staged.digest,
            }));
            blobs.push((staged.digest.clone(), Source::Archive(path)));
        }
        let manifest_bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "size": config_staged.size,
                "digest": config_digest,
            },
            "layers": layers,
        }))
        .map_err(|e| ImportError::Invalid {
            what: MANIFEST_JSON.into(),
            message: e.to_string(),
        })?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        let manifest = match pull::parse_manifest(&manifest_bytes) {
            Ok(Manifest::Image(m)) => *m,
            other => {
                return Err(ImportError::Invalid {
                    what: format!("the manifest written for image {config_digest}"),
                    message: format!("it does not read back as a manifest: {:?}", other.err()),
                })
            }
        };
        let diff_ids = checked_layers(&manifest, &config_digest, &config_bytes)?;
        blobs.insert(0, (manifest_digest.clone(), Source::Bytes(manifest_bytes)));
        let mut raw_names = entry.repo_tags.unwrap_or_default();
        let mut hint = String::new();
        if raw_names.is_empty() {
            raw_names = legacy_names(archive, &top_layer_id);
            if raw_names.is_empty() {
                hint = "; its RepoTags are empty".into();
            }
        }
        let names = raw_names
            .iter()
            .map(|n| parse_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        if names.is_empty() {
            return Err(ImportError::Unnamed {
                image: config_digest,
                hint,
            });
        }
        for name in &names {
            check_pinned(name, &manifest_digest, &manifest_digest)?;
        }
        plans.push(Plan {
            names,
            repo_digest: manifest_digest.clone(),
            manifest_digest,
            manifest,
            diff_ids,
            blobs,
        });
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn sha(data: &[u8]) -> String {
        sha256_digest(data)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    }

    /// A tar in memory.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn file(mut self, path: &str, data: &[u8]) -> Self {
            let mut h = header(tar::EntryType::Regular, data.len() as u64);
            self.0.append_data(&mut h, path, data).expect("file");
            self
        }
        fn dir(mut self, path: &str) -> Self {
            let mut h = header(tar::EntryType::Directory, 0);
            self.0.append_data(&mut h, path, io::empty()).expect("dir");
            self
        }
        fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut h = header(tar::EntryType::Symlink, 0);
            self.0.append_link(&mut h, path, target).expect("symlink");
            self
        }
        /// An entry whose name is written raw, bypassing the builder's checks.
        fn raw(mut self, name: &[u8], data: &[u8]) -> Self {
            let mut h = header(tar::EntryType::Regular, data.len() as u64);
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            self.0.append(&h, data).expect("raw");
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().expect("tar")
        }
    }

    /// A layer tar with one file.
    fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
        Tar::new().dir("etc").file(file, content).bytes()
    }

    fn config(diff_ids: &[String], cmd: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": [cmd]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("config")
    }

    fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": sha(data), "size": data.len()})
    }

    fn blob_path(data: &[u8]) -> String {
        format!("blobs/sha256/{}", &sha(data)[7..])
    }

    /// An OCI image: (layer blob, config, manifest) with `cmd`.
    struct Oci {
        layer: Vec<u8>,
        config: Vec<u8>,
        manifest: Vec<u8>,
    }

    fn oci_image(cmd: &str) -> Oci {
        let tar = layer_tar("etc/cmd", cmd.as_bytes());
        let layer = gzip(&tar);
        let config = config(&[sha(&tar)], cmd);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": pull::OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor(OCI_LAYER_GZIP, &layer)],
        }))
        .expect("manifest");
        Oci {
            layer,
            config,
            manifest,
        }
    }

    fn platform_json(arch: &str) -> serde_json::Value {
        json!({"architecture": arch, "os": "linux"})
    }

    fn here() -> Platform {
        Platform::linux("x86_64")
    }

    fn index_doc(entries: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": pull::OCI_INDEX, "manifests": entries}),
        )
        .expect("index")
    }

    fn with_blobs(mut tar: Tar, blobs: &[&[u8]]) -> Tar {
        for blob in blobs {
            tar = tar.file(&blob_path(blob), blob);
        }
        tar
    }

    /// An OCI layout of one image named by `annotations`, the index last.
    fn oci_layout(image: &Oci, annotations: serde_json::Value) -> Vec<u8> {
        let mut entry = descriptor(pull::OCI_MANIFEST, &image.manifest);
        entry["annotations"] = annotations;
        let tar = Tar::new()
            .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .dir("blobs")
            .dir("blobs/sha256");
        with_blobs(tar, &[&image.layer, &image.config, &image.manifest])
            .file("index.json", &index_doc(vec![entry]))
            .bytes()
    }

    fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        (dir, store)
    }

    fn refs(records: &[ImageRecord]) -> Vec<&str> {
        records.iter().map(|r| r.reference.as_str()).collect()
    }

    /// The stored image's `etc/cmd` and the config's Cmd.
    fn stored_cmd(store: &Store, record: &ImageRecord) -> (String, Vec<String>) {
        assert!(store.has_blob(&record.manifest_digest));
        assert!(store.has_blob(&record.repo_digest));
        let config =
            crate::image::service::load_config(store, &record.config_digest).expect("config");
        let layer = &record.layers[0];
        let file = store.layer_fs(&layer.digest).expect("fs").join("etc/cmd");
        (
            std::fs::read_to_string(file).expect("layer content"),
            config
                .config()
                .as_ref()
                .and_then(|c| c.cmd().clone())
                .expect("cmd"),
        )
    }

    #[test]
    fn docker_archives_import_with_gzip_layers_and_legacy_files() {
        let (_dir, store) = open_store();
        let tar_a = layer_tar("etc/cmd", b"first");
        let tar_b = Tar::new().file("etc/other", b"second").bytes();
        let layer_a = gzip(&tar_a);
        let config = config(&[sha(&tar_a), sha(&tar_b)], "serve");
        let config_name = format!("{}.json", &sha(&config)[7..]);
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": ["busybox", "example.com/team/app:1"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
        }]);
        // The legacy layout: manifest.json before the layers, `repositories`, v1 metadata, and a
        // second layer reached through a symlink as docker save writes for shared layers.
        let archive = Tar::new()
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .file("repositories", br#"{"busybox":{"latest":"bbb"}}"#)
            .file(&config_name, &config)
            .dir("aaa")
            .file("aaa/VERSION", b"1.0")
            .file("aaa/json", b"{}")
            .file("aaa/layer.tar", &layer_a)
            .dir("ccc")
            .file("ccc/layer.tar", &tar_b)
            .dir("bbb")
            .symlink("bbb/layer.tar", "../ccc/layer.tar")
            .bytes();
        let records = import(&store, &here(), &archive[..]).expect("imports");
        assert_eq!(
            refs(&records),
            ["docker.io/library/busybox:latest", "example.com/team/app:1"]
        );
        let record = &records[0];
        assert_eq!(record.config_digest, sha(&config));
        assert_eq!(record.repo_digest, record.manifest_digest);
        assert_eq!(record.layers.len(), 2);
        assert_eq!(record.layers[0].digest, sha(&layer_a));
        assert_eq!(
            record.layers[0].media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            record.layers[1].media_type,
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_eq!(record.layers[1].diff_id, sha(&tar_b));
        assert_eq!(
            record.size,
            (config.len() + layer_a.len() + tar_b.len()) as u64
        );
        assert_eq!(
            stored_cmd(&store, record),
            ("first".into(), vec!["serve".into()])
        );
        // The manifest written for it is stored and reads back as the record says.
        let manifest = store
            .read_blob(&record.manifest_digest, 1 << 20)
            .expect("manifest");
        match pull::parse_manifest(&manifest).expect("parses") {
            Manifest::Image(m) => {
                assert_eq!(m.config().digest().to_string(), record.config_digest);
                assert_eq!(m.layers().len(), 2);
            }
            Manifest::Index(_) => panic!("an index"),
        }
        for r in &records {
            assert_eq!(store.record(&r.reference).expect("read").as_ref(), Some(r));
        }
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
        // Importing again is harmless and gives the same content.
        let again = import(&store, &here(), &archive[..]).expect("again");
        assert_eq!(again[0].manifest_digest, record.manifest_digest);
    }

    #[test]
    fn docker_archives_without_repo_tags_take_names_from_repositories() {
        let (_dir, store) = open_store();
        let tar = layer_tar("etc/cmd", b"x");
        let config = config(&[sha(&tar)], "x");
        let manifest = json!([{"Config": "c.json", "RepoTags": null, "Layers": ["abc/layer.tar"]}]);
        let archive = Tar::new()
            .file("c.json", &config)
            .file("abc/layer.tar", &tar)
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .file(
                "repositories",
                br#"{"team/app":{"2":"abc"},"other":{"1":"def"}}"#,
            )
            .bytes();
        let records = import(&store, &here(), &archive[..]).expect("imports");
        assert_eq!(refs(&records), ["docker.io/team/app:2"]);
    }

    #[test]
    fn oci_layouts_import_with_either_name_annotation() {
        let cases = [
            (
                json!({CONTAINERD_NAME: "busybox:1", OCI_REF_NAME: "1"}),
                "docker.io/library/busybox:1",
            ),
            (
                json!({OCI_REF_NAME: "127.0.0.1:5000/a/b:v2"}),
                "127.0.0.1:5000/a/b:v2",
            ),
        ];
        for (annotations, want) in cases {
            let (_dir, store) = open_store();
            let image = oci_image("hello");
            let records = import(&store, &here(), &oci_layout(&image, annotations)[..])
                .unwrap_or_else(|e| panic!("{want}: {e}"));
            assert_eq!(refs(&records), [want]);
            let record = &records[0];
            assert_eq!(record.manifest_digest, sha(&image.manifest));
            assert_eq!(record.repo_digest, sha(&image.manifest));
            assert_eq!(record.config_digest, sha(&image.config));
            assert_eq!(record.layers[0].media_type, OCI_LAYER_GZIP);
            assert_eq!(
                stored_cmd(&store, record),
                ("hello".into(), vec!["hello".into()])
            );
        }
    }

    #[test]
    fn compressed_archives_are_read() {
        let (_dir, store) = open_store();
        let image = oci_image("z");
        let layout = oci_layout(&image, json!({CONTAINERD_NAME: "z:1"}));
        let records = import(&store, &here(), &gzip(&layout)[..]).expect("gzip archive");
        assert_eq!(refs(&records), ["docker.io/library/z:1"]);
        let zstd = zstd::stream::encode_all(&layout[..], 1).expect("zstd");
        import(&store, &here(), &zstd[..]).expect("zstd archive");
    }

    #[test]
    fn nested_indexes_choose_this_platform() {
        let (_dir, store) = open_store();
        let amd = oci_image("amd64");
        let arm = oci_image("arm64");
        let mut amd_entry = descriptor(pull::OCI_MANIFEST, &amd.manifest);
        amd_entry["platform"] = platform_json("amd64");
        let mut arm_entry = descriptor(pull::OCI_MANIFEST, &arm.manifest);
        arm_entry["platform"] = platform_json("arm64");
        // index.json → a multi-platform index → an index of one → the manifest. Only the chosen
        // platform's blobs are in the archive, as docker save writes for a multi-platform image.
        let inner = index_doc(vec![arm_entry.clone(), amd_entry]);
        let mut inner_entry = descriptor(pull::OCI_INDEX, &inner);
        inner_entry["platform"] = platform_json("amd64");
        let middle = index_doc(vec![inner_entry]);
        let mut top = descriptor(pull::OCI_INDEX, &middle);
        top["annotations"] = json!({CONTAINERD_NAME: "docker.io/library/multi:1"});
        let archive = with_blobs(
            Tar::new().file("index.json", &index_doc(vec![top])),
            &[&middle, &inner, &amd.manifest, &amd.config, &amd.layer],
        )
        .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .bytes();
        let records = import(&store, &here(), &archive[..]).expect("imports");
        let record = &records[0];
        assert_eq!(
            record.repo_digest,
            sha(&middle),
            "the outermost index names the image"
        );
        assert_eq!(record.manifest_digest, sha(&amd.manifest));
        assert!(store.has_blob(&sha(&inner)));
        assert_eq!(stored_cmd(&store, record).0, "amd64");

        // On arm64 the same index leads to a manifest the archive lacks.
        let (_dir2, store2) = open_store();
        let e = import(&store2, &Platform::linux("aarch64"), &archive[..]).expect_err("arm64");
        assert!(matches!(e, ImportError::NoPlatform { .. }), "{e}");
        assert!(e.to_string().contains("linux/arm64"), "{e}");
        assert!(store2.records().expect("records").is_empty());
    }

    #[test]
    fn top_level_entries_for_other_platforms_are_skipped() {
        let (_dir, store) = open_store();
        let amd = oci_image("amd64");
        let arm = oci_image("arm64");
        let mut amd_entry = descriptor(pull::OCI_MANIFEST, &amd.manifest);
        amd_entry["platform"] = platform_json("amd64");
        amd_entry["annotations"] = json!({CONTAINERD_NAME: "app:1"});
        let mut arm_entry = descriptor(pull::OCI_MANIFEST, &arm.manifest);
        arm_entry["platform"] = platform_json("arm64");
        arm_entry["annotations"] = json!({CONTAINERD_NAME: "app:1"});
        let archive = with_blobs(
            Tar::new().file("index.json", &index_doc(vec![arm_entry, amd_entry])),
            &[&amd.manifest, &amd.config, &amd.layer],
        )
        .bytes();
        let records = import(&store, &here(), &archive[..]).expect("imports");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].manifest_digest, sha(&amd.manifest));
    }

    /// A docker-archive with one image whose layer is `layer` (uncompressed `tar`).
    fn docker_archive(tar: &[u8], layer: &[u8], tags: serde_json::Value) -> Vec<u8> {
        let config = config(&[sha(tar)], "x");
        let manifest = json!([{"Config": "c.json", "RepoTags": tags, "Layers": ["l/layer.tar"]}]);
        Tar::new()
            .file("c.json", &config)
            .file("l/layer.tar", layer)
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .bytes()
    }

    #[test]
    fn bad_archives_are_refused_by_what_is_wrong_and_leave_no_record() {
        let image = oci_image("bad");
        let good_tar = layer_tar("etc/cmd", b"bad");
        let entry = |annotations: serde_json::Value| {
            let mut e = descriptor(pull::OCI_MANIFEST, &image.manifest);
            e["annotations"] = annotations;
            e
        };
        let named = || entry(json!({CONTAINERD_NAME: "bad:1"}));
        let wrong_blob = with_blobs(Tar::new(), &[&image.config, &image.manifest])
            .file(&blob_path(&image.layer), b"not the layer")
            .file("index.json", &index_doc(vec![named()]))
            .bytes();
        let missing_layer = with_blobs(Tar::new(), &[&image.config, &image.manifest])
            .file("index.json", &index_doc(vec![named()]))
            .bytes();
        let mut wrong_size = named();
        wrong_size["size"] = json!(image.manifest.len() + 1);
        let wrong_size = with_blobs(Tar::new(), &[&image.layer, &image.config, &image.manifest])
            .file("index.json", &index_doc(vec![wrong_size]))
            .bytes();
        let other_tar = layer_tar("etc/cmd", b"other");
        let mut truncated = oci_layout(&image, json!({CONTAINERD_NAME: "bad:1"}));
        // oci-layout (1024 bytes), two directories (1024), the layer's header (512), then into
        // the layer's data.
        truncated.truncate(2600);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not a tar", b"hello, this is not a tarball\n".repeat(40), "not a tar archive"),
            ("empty", Vec::new(), "neither manifest.json"),
            ("no manifest", Tar::new().file("etc/passwd", b"root").bytes(), "neither manifest.json"),
            ("truncated", truncated, "it is truncated"),
            (
                "escaping entry",
                Tar::new().raw(b"../evil", b"x").bytes(),
                "\"../evil\" in the archive escapes it: its path has a '..' component",
            ),
            (
                "absolute entry",
                Tar::new().raw(b"/etc/evil", b"x").bytes(),
                "its path is absolute",
            ),
            (
                "escaping symlink",
                Tar::new().symlink("a/layer.tar", "../../etc/shadow").bytes(),
                "its link target \"../../etc/shadow\": it leads out of the archive",
            ),
            (
                "escaping layer path",
                Tar::new()
                    .file("manifest.json", br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["../l.tar"]}]"#)
                    .file("c.json", &config(&[], "x"))
                    .bytes(),
                "\"../l.tar\" in the archive escapes it: manifest.json names it and its path has a '..' component",
            ),
            ("blob digest mismatch", wrong_blob, "digest mismatch for archive entry \"blobs/sha256/"),
            ("missing blob", missing_layer, "the archive lacks \"blobs/sha256/"),
            ("size mismatch", wrong_size, "size mismatch for manifest"),
            (
                "missing docker layer",
                Tar::new()
                    .file("manifest.json", br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]"#)
                    .file("c.json", &config(&[sha(&good_tar)], "x"))
                    .bytes(),
                "the archive lacks \"l/layer.tar\", which manifest.json names",
            ),
            (
                "diff id mismatch",
                docker_archive(&good_tar, &gzip(&other_tar), json!(["x:1"])),
                "its content has diff ID",
            ),
            (
                "unnamed docker image",
                docker_archive(&good_tar, &good_tar, json!([])),
                "has no name",
            ),
            (
                "tag-only ref name",
                with_blobs(Tar::new(), &[&image.layer, &image.config, &image.manifest])
                    .file("index.json", &index_doc(vec![entry(json!({OCI_REF_NAME: "latest"}))]))
                    .bytes(),
                "\"latest\" is only a tag",
            ),
            (
                "invalid name",
                docker_archive(&good_tar, &good_tar, json!(["Not A Name"])),
                "image name \"Not A Name\" in the archive",
            ),
            (
                "malformed manifest.json",
                Tar::new().file("manifest.json", b"{").bytes(),
                "manifest.json: not valid JSON",
            ),
        ];
        for (case, archive, want) in cases {
            let (_dir, store) = open_store();
            let e = import(&store, &here(), &archive[..]).expect_err(case);
            let text = e.to_string();
            assert!(text.contains(want), "{case}: {text:?} lacks {want:?}");
            assert!(e.is_bad_input(), "{case}: {text}");
            assert!(
                store.records().expect("records").is_empty(),
                "{case}: a record was written"
            );
            assert_eq!(
                std::fs::read_dir(store.root().join("tmp"))
                    .expect("tmp")
                    .count(),
                0,
                "{case}: staged files are removed"
            );
        }
    }

    #[test]
    fn a_failure_in_a_later_image_leaves_no_record_of_earlier_ones() {
        let (_dir, store) = open_store();
        let good_tar = layer_tar("etc/cmd", b"ok");
        let bad_tar = layer_tar("etc/cmd", b"bad");
        let good_config = config(&[sha(&good_tar)], "ok");
        let bad_config = config(&[sha(&good_tar)], "bad");
        let manifest = json!([
            {"Config": "good.json", "RepoTags": ["good:1"], "Layers": ["g/layer.tar"]},
            {"Config": "bad.json", "RepoTags": ["bad:1"], "Layers": ["b/layer.tar"]},
        ]);
        let archive = Tar::new()
            .file("good.json", &good_config)
            .file("bad.json", &bad_config)
            .file("g/layer.tar", &good_tar)
            .file("b/layer.tar", &bad_tar)
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .bytes();
        let e = import(&store, &here(), &archive[..]).expect_err("bad layer");
        assert!(
            e.to_string().contains("image docker.io/library/bad:1"),
            "{e}"
        );
        assert!(store.records().expect("records").is_empty());
        // The good image's verified content stays for reuse, invisible without a record.
        assert!(store.has_layer(&sha(&good_tar)));
    }

    #[test]
    fn a_broken_stream_is_reported_as_such() {
        struct Broken(Vec<u8>, usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 >= self.0.len() {
                    return Err(io::Error::other("the upload broke off"));
                }
                let n = buf.len().min(self.0.len() - self.1).min(700);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let (_dir, store) = open_store();
        let mut layout = oci_layout(&oci_image("x"), json!({CONTAINERD_NAME: "x:1"}));
        layout.truncate(2048);
        let e = import(&store, &here(), Broken(layout, 0)).expect_err("broken");
        assert!(e.to_string().contains("the upload broke off"), "{e}");
    }

    #[test]
    fn names_given_to_two_images_are_refused() {
        let (_dir, store) = open_store();
        let a = oci_image("a");
        let b = oci_image("b");
        let entry = |image: &Oci| {
            let mut e = descriptor(pull::OCI_MANIFEST, &image.manifest);
            e["annotations"] = json!({CONTAINERD_NAME: "same:1"});
            e
        };
        let archive = with_blobs(
            Tar::new().file("index.json", &index_doc(vec![entry(&a), entry(&b)])),
            &[
                &a.layer,
                &a.config,
                &a.manifest,
                &b.layer,
                &b.config,
                &b.manifest,
            ],
        )
        .bytes();
        let e = import(&store, &here(), &archive[..]).expect_err("ambiguous");
        assert!(e.to_string().contains("gives it to two images"), "{e}");
        assert!(store.records().expect("records").is_empty());
    }

    #[test]
    fn paths_and_links_resolve_inside_the_archive() {
        assert_eq!(clean_path("./a//b/./c").as_deref(), Ok("a/b/c"));
        assert!(clean_path("a/../b").is_err());
        assert!(clean_path("/a").is_err());
        assert_eq!(
            resolve_symlink("a/layer.tar", "../b/layer.tar").as_deref(),
            Ok("b/layer.tar")
        );
        assert_eq!(resolve_symlink("a/x", "y").as_deref(), Ok("a/y"));
        assert!(resolve_symlink("a/x", "../../y").is_err());
        assert!(resolve_symlink("a/x", "/etc/passwd").is_err());
        assert_eq!(
            digest_in_name(&format!("{}.json", "ab".repeat(32))),
            Some(format!("sha256:{}", "ab".repeat(32)))
        );
        assert_eq!(digest_in_name("config.json"), None);
        assert!(is_legacy_metadata("abc/json"));
        assert!(!is_legacy_metadata("manifest.json"));
    }
}
