//! Talking to registries: resolving a reference to a platform manifest through the endpoints
//! [`super::registries`] lists, and streaming blobs to files with their sha256 checked on the way.
//!
//! Built on oci-client's manifest and blob-stream calls (never its `pull()`, which holds whole
//! layers in memory). Manifests are parsed here with oci-spec's types, so Docker v2 schema 2
//! manifests and manifest lists read the same as OCI manifests and indexes; an index is narrowed
//! to this machine's platform (linux and its architecture). Every byte taken from a registry is
//! checked against the digest that named it: manifests in memory, blobs while they stream to
//! disk; a mismatch names the digest expected and the one received.

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::reference::ImageRef;
use super::registries::{Credentials, DockerConfigJson, Endpoint};
use super::unpack::UnpackError;

/// Manifest media types this agent asks for and understands.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Manifests and indexes larger than this are refused.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Image configs larger than this are refused.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Why a pull failed. Each names the endpoint or the digest involved.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry does not have it.
    #[error("{what} not found at {endpoint}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// The endpoint's URL.
        endpoint: String,
    },
    /// The registry wants (other) credentials.
    #[error("{endpoint} refused access to {what}{}: {message}", if *.had_credentials { " with the credentials given" } else { " without credentials" })]
    Unauthorized {
        /// What was asked for.
        what: String,
        /// The endpoint's URL.
        endpoint: String,
        /// Whether credentials were sent.
        had_credentials: bool,
        /// The registry's words.
        message: String,
    },
    /// The endpoint could not be reached (refused, DNS, TLS, timeout).
    #[error("cannot reach {endpoint}: {message}")]
    Unreachable {
        /// The endpoint's URL.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The registry answered with an error.
    #[error("{endpoint}: {message}")]
    Registry {
        /// The endpoint's URL.
        endpoint: String,
        /// What it said.
        message: String,
    },
    /// Content does not match the digest that named it.
    #[error("digest mismatch for {what}: expected {expected}, got {got}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// The digest that named it.
        expected: String,
        /// The digest of what arrived.
        got: String,
    },
    /// Content is larger or smaller than its descriptor says.
    #[error("size mismatch for {what}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        /// What was fetched.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// Bytes received (at least).
        got: u64,
    },
    /// A manifest, index or config this agent cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// No manifest in an index is for this machine.
    #[error("no manifest for {platform} in the image index (it has: {available})")]
    NoPlatform {
        /// This machine's platform.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// The uncompressed layer does not match the config's diff ID.
    #[error("layer {layer}: its content has diff ID {got}, the image config says {expected}")]
    DiffIdMismatch {
        /// The layer's blob digest.
        layer: String,
        /// The config's diff ID.
        expected: String,
        /// The unpacked tar's digest.
        got: String,
    },
    /// Unpacking a layer failed.
    #[error("unpacking layer {layer}: {source}")]
    Unpack {
        /// The layer's blob digest.
        layer: String,
        /// Why.
        source: UnpackError,
    },
    /// The node's own disk failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Several endpoints were tried and all failed.
    #[error("{last} (also tried: {})", earlier.join("; "))]
    AllEndpointsFailed {
        /// The last endpoint's failure.
        last: Box<PullError>,
        /// The earlier ones, as text.
        earlier: Vec<String>,
    },
}

impl PullError {
    /// Whether the content simply is not there (for messages and retries).
    pub fn is_not_found(&self) -> bool {
        match self {
            PullError::NotFound { .. } => true,
            PullError::AllEndpointsFailed { last, .. } => last.is_not_found(),
            _ => false,
        }
    }
}

/// The platform this agent runs images for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// GOOS-style OS name (`linux`).
    pub os: String,
    /// GOARCH-style architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Acceptable variants, most preferred first; `None` is an entry without a variant.
    pub variants: Vec<Option<String>>,
}

impl Platform {
    /// Linux on this machine's architecture.
    pub fn current() -> Self {
        Self::linux(std::env::consts::ARCH)
    }

    /// Linux on `rust_arch` (a `std::env::consts::ARCH` value).
    pub fn linux(rust_arch: &str) -> Self {
        let v = |s: &str| Some(s.to_string());
        let (architecture, variants) = match rust_arch {
            "x86_64" => ("amd64", vec![None, v("v1")]),
            "aarch64" => ("arm64", vec![v("v8"), None]),
            "arm" => ("arm", vec![v("v7"), v("v6"), v("v5"), None]),
            "x86" => ("386", vec![None]),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", vec![None]),
            "powerpc64" => ("ppc64", vec![None]),
            "riscv64" => ("riscv64", vec![None]),
            other => (other, vec![None]),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variants,
        }
    }
}

impl Platform {
    /// Whether an image for `p` runs here: OS and architecture equal and its variant (or none)
    /// one of ours.
    pub fn runs(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && self.variants.contains(p.variant())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// One platform's image.
    Image(Box<ImageManifest>),
    /// An index (manifest list) of platform manifests.
    Index(Box<ImageIndex>),
}

/// Parses a manifest document by its own `mediaType` (or its shape when it has none).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if probe.schema_version != Some(2) {
        return Err(format!(
            "manifest schemaVersion {:?} is not supported (only Docker v2 schema 2 and OCI)",
            probe.schema_version
        ));
    }
    let is_index = match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        None if probe.manifests.is_some() => true,
        None if probe.layers.is_some() => false,
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(|i| Manifest::Index(Box::new(i)))
            .map_err(|e| format!("malformed image index: {e}"))
    } else {
        serde_json::from_slice(bytes)
            .map(|m| Manifest::Image(Box::new(m)))
            .map_err(|e| format!("malformed image manifest: {e}"))
    }
}

/// The index entry for `platform`: OS and architecture equal, the most preferred variant.
pub fn select_platform<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == platform.os
                    && p.architecture().to_string() == platform.architecture
            })
        })
        .collect();
    for wanted in &platform.variants {
        if let Some(d) = candidates
            .iter()
            .find(|d| d.platform().as_ref().and_then(|p| p.variant().clone()) == *wanted)
        {
            return Some(d);
        }
    }
    None
}

/// The index entry for `platform` as [`select_platform`] picks it, or [`PullError::NoPlatform`]
/// listing the platforms the index has. Pulls and imports choose with this.
pub fn choose_platform<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
) -> Result<&'a Descriptor, PullError> {
    select_platform(index, platform).ok_or_else(|| PullError::NoPlatform {
        platform: platform.to_string(),
        available: platform_list(index.manifests()),
    })
}

/// The platforms `entries` name (`linux/arm/v7, linux/amd64`), for messages.
pub fn platform_list(entries: &[Descriptor]) -> String {
    entries
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, checked; an error for other algorithms or malformed ones.
pub fn sha256_hex(digest: &str) -> Result<&str, PullError> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(PullError::Unsupported(format!(
            "digest {digest:?} is not a sha256 digest this agent can store"
        ))),
    }
}

/// One endpoint, ready to ask for one image's content.
pub struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
    endpoint: Endpoint,
    had_credentials: bool,
}

/// Why no registry client can be made on a machine without CA certificates.
pub const NO_CA_CERTIFICATES: &str = "this machine has no CA certificates (none in /etc/ssl/certs \
     nor in SSL_CERT_FILE/SSL_CERT_DIR; on Debian install the package ca-certificates), and the \
     registry client cannot start without them, even for plain HTTP";

/// Whether the machine has CA certificates the HTTP client can load. oci-client makes a default
/// HTTP client inside every client it builds, and that panics on a machine with none (a minimal
/// Debian without `ca-certificates`), so the agent asks first and fails the pull with
/// [`NO_CA_CERTIFICATES`]. A yes is kept; a no is asked again next time (the package may have
/// been installed since).
pub fn system_has_ca_certificates() -> bool {
    static FOUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if FOUND.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    let found = !rustls_native_certs::load_native_certs().certs.is_empty();
    FOUND.store(found, std::sync::atomic::Ordering::Relaxed);
    found
}

impl RegistryClient {
    /// A client for `endpoint` with `credentials` (reads the endpoint's CA file, if any).
    pub fn new(endpoint: &Endpoint, credentials: Option<&Credentials>) -> Result<Self, PullError> {
        let mut extra_root_certificates = Vec::new();
        if let Some(ca_file) = &endpoint.tls.ca_file {
            let data = std::fs::read(ca_file).map_err(|source| PullError::Io {
                what: format!(
                    "reading the CA file {} for {}",
                    ca_file.display(),
                    endpoint.host
                ),
                source,
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.tls.insecure_skip_verify,
            extra_root_certificates,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("skiff-agent/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        if !system_has_ca_certificates() {
            return Err(PullError::Unreachable {
                endpoint: endpoint.url(),
                message: NO_CA_CERTIFICATES.into(),
            });
        }
        let client = Client::try_from(config).map_err(|e| PullError::Unreachable {
            endpoint: endpoint.url(),
            message: format!("cannot set up the HTTP client: {e}"),
        })?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(RegistryClient {
            client,
            auth,
            endpoint: endpoint.clone(),
            had_credentials: credentials.is_some(),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn reference(&self, tag_or_digest: &str) -> Reference {
        let host = self.endpoint.host.clone();
        let repository = self.endpoint.repository.clone();
        if tag_or_digest.contains(':') {
            Reference::with_digest(host, repository, tag_or_digest.to_string())
        } else {
            Reference::with_tag(host, repository, tag_or_digest.to_string())
        }
    }

    fn what(&self, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.contains(':') {
            '@'
        } else {
            ':'
        };
        format!("{}{sep}{tag_or_digest}", self.endpoint.repository)
    }

    /// Fetches the manifest `tag_or_digest` names; returns its bytes and sha256 digest. When
    /// asked by digest, the bytes are checked against it.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<(Vec<u8>, String), PullError> {
        let what = self.what(tag_or_digest);
        let (body, _) = self
            .client
            .pull_manifest_raw(
                &self.reference(tag_or_digest),
                &self.auth,
                &ACCEPTED_MANIFESTS,
            )
            .await
            .map_err(|e| self.classify(e, &what))?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(PullError::Unsupported(format!(
                "manifest {what} is {} bytes, more than the {MAX_MANIFEST_BYTES} accepted",
                body.len()
            )));
        }
        let got = sha256_digest(&body);
        if tag_or_digest.contains(':') && got != tag_or_digest {
            return Err(PullError::DigestMismatch {
                what: format!("manifest {what}"),
                expected: tag_or_digest.to_string(),
                got,
            });
        }
        Ok((body.to_vec(), got))
    }

    /// Streams blob `digest` (of `size` bytes) into `out`, checking size and sha256 as it goes.
    /// `what` names the blob in errors ("layer", "config"). Returns the bytes written.
    pub async fn blob_to(
        &self,
        what: &str,
        digest: &str,
        size: u64,
        out: &mut tokio::fs::File,
    ) -> Result<u64, PullError> {
        let what = format!("{what} {digest}");
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference("latest"), digest)
            .await
            .map_err(|e| self.classify(e, &what))?;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let write_error = |source| PullError::Io {
            what: format!("writing {what}"),
            source,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let verification = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<DigestError>())
                        .is_some_and(|d| matches!(d, DigestError::VerificationError { .. }));
                    if verification {
                        return Err(PullError::DigestMismatch {
                            what,
                            expected: digest.to_string(),
                            got: format!("sha256:{}", hex::encode(hasher.finalize())),
                        });
                    }
                    return Err(PullError::Unreachable {
                        endpoint: self.endpoint.url(),
                        message: format!("reading {what}: {}", innermost(&e)),
                    });
                }
            };
            written += chunk.len() as u64;
            if written > size {
                return Err(PullError::SizeMismatch {
                    what,
                    expected: size,
                    got: written,
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(write_error)?;
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest {
            return Err(PullError::DigestMismatch {
                what,
                expected: digest.to_string(),
                got,
            });
        }
        if written != size {
            return Err(PullError::SizeMismatch {
                what,
                expected: size,
                got: written,
            });
        }
        out.flush().await.map_err(write_error)?;
        out.sync_all().await.map_err(write_error)?;
        Ok(written)
    }

    /// Turns oci-client's error into one that says what happened, where.
    fn classify(&self, error: OciDistributionError, what: &str) -> PullError {
        let endpoint = self.endpoint.url();
        let not_found = || PullError::NotFound {
            what: what.to_string(),
            endpoint: endpoint.clone(),
        };
        let unauthorized = |message: String| PullError::Unauthorized {
            what: what.to_string(),
            endpoint: endpoint.clone(),
            had_credentials: self.had_credentials,
            message,
        };
        match error {
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(message)
                } else {
                    PullError::Registry { endpoint, message }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => not_found(),
            OciDistributionError::ServerError {
                code: code @ (401 | 403),
                message,
                ..
            } => unauthorized(format!("HTTP {code} {}", message.trim())),
            OciDistributionError::ServerError { code, message, .. } => PullError::Registry {
                endpoint,
                message: format!("HTTP {code}: {}", message.trim()),
            },
            OciDistributionError::UnauthorizedError { .. } => {
                unauthorized("authentication required".into())
            }
            OciDistributionError::AuthenticationFailure(message) => unauthorized(message),
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => PullError::DigestMismatch {
                what: what.to_string(),
                expected,
                got: actual,
            },
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                PullError::Unreachable {
                    endpoint,
                    message: innermost(&e),
                }
            }
            other => PullError::Registry {
                endpoint,
                message: innermost(&other),
            },
        }
    }
}

/// The error's own text followed by its causes', without repeats.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// What [`resolve`] found: the endpoint that had the image and its platform manifest.
pub struct Resolved {
    /// The client for the endpoint that answered (blobs come from there too).
    pub client: RegistryClient,
    /// The digest the reference resolved to (an index's when the image is multi-platform): the
    /// repo digest the kubelet reports in `imageID`.
    pub repo_digest: String,
    /// The index document, when there was one: (digest, bytes).
    pub index: Option<(String, Vec<u8>)>,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// Its bytes.
    pub manifest_bytes: Vec<u8>,
    /// Parsed.
    pub manifest: ImageManifest,
}

/// Resolves `image` to this platform's manifest, trying `endpoints` in order.
pub async fn resolve(
    image: &ImageRef,
    endpoints: &[Endpoint],
    secrets: &[DockerConfigJson],
    platform: &Platform,
) -> Result<Resolved, PullError> {
    let mut failures: Vec<PullError> = Vec::new();
    for endpoint in endpoints {
        let attempt = async {
            let client = RegistryClient::new(endpoint, endpoint.credentials(secrets))?;
            resolve_at(client, image, platform).await
        };
        match attempt.await {
            Ok(resolved) => return Ok(resolved),
            Err(e) => {
                tracing::debug!(image = %image, endpoint = %endpoint.url(), error = %e, "endpoint failed");
                failures.push(e);
            }
        }
    }
    let Some(last) = failures.pop() else {
        return Err(PullError::Unsupported(format!(
            "no registry endpoint for {image}"
        )));
    };
    if failures.is_empty() {
        Err(last)
    } else {
        Err(PullError::AllEndpointsFailed {
            last: Box::new(last),
            earlier: failures.iter().map(ToString::to_string).collect(),
        })
    }
}

async fn resolve_at(
    client: RegistryClient,
    image: &ImageRef,
    platform: &Platform,
) -> Result<Resolved, PullError> {
    let (bytes, digest) = client.manifest(image.manifest_reference()).await?;
    let what = client.what(image.manifest_reference());
    match parse_manifest(&bytes).map_err(|m| PullError::Unsupported(format!("{what}: {m}")))? {
        Manifest::Image(manifest) => Ok(Resolved {
            client,
            repo_digest: digest.clone(),
            index: None,
            manifest_digest: digest,
            manifest_bytes: bytes,
            manifest: *manifest,
        }),
        Manifest::Index(index) => {
            let entry = choose_platform(&index, platform)?;
            let child_digest = entry.digest().to_string();
            let (child_bytes, _) = client.manifest(&child_digest).await?;
            let manifest = match parse_manifest(&child_bytes).map_err(|m| {
                PullError::Unsupported(format!("{}: {m}", client.what(&child_digest)))
            })? {
                Manifest::Image(m) => *m,
                Manifest::Index(_) => {
                    return Err(PullError::Unsupported(format!(
                        "{}: an index inside an index is not supported",
                        client.what(&child_digest)
                    )))
                }
            };
            Ok(Resolved {
                client,
                repo_digest: digest.clone(),
                index: Some((digest, bytes)),
                manifest_digest: child_digest,
                manifest_bytes: child_bytes,
                manifest,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn entry(arch: &str, variant: Option<&str>, os: &str, n: u8) -> serde_json::Value {
        let digest = format!("sha256:{}", format!("{n:x}").repeat(64));
        let mut platform = serde_json::json!({"architecture": arch, "os": os});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 100, "platform": platform})
    }

    fn index(entries: Vec<serde_json::Value>) -> ImageIndex {
        let doc =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        match parse_manifest(doc.to_string().as_bytes()).expect("index parses") {
            Manifest::Index(i) => *i,
            Manifest::Image(_) => panic!("parsed as an image"),
        }
    }

    #[test]
    fn platform_selection() {
        let typical = vec![
            entry("amd64", None, "linux", 1),
            entry("arm", Some("v6"), "linux", 2),
            entry("arm", Some("v7"), "linux", 3),
            entry("arm64", Some("v8"), "linux", 4),
            entry("amd64", None, "windows", 5),
            entry("unknown", None, "unknown", 6),
        ];
        let cases: Vec<(&str, Vec<serde_json::Value>, Option<u8>)> = vec![
            ("x86_64", typical.clone(), Some(1)),
            ("aarch64", typical.clone(), Some(4)),
            ("arm", typical.clone(), Some(3)),
            ("riscv64", typical.clone(), None),
            // Windows-only images do not run here.
            ("x86_64", vec![entry("amd64", None, "windows", 5)], None),
            // arm64 without a variant is still arm64.
            ("aarch64", vec![entry("arm64", None, "linux", 7)], Some(7)),
            // amd64 micro-architecture levels above v1 are not assumed.
            ("x86_64", vec![entry("amd64", Some("v3"), "linux", 8)], None),
            (
                "x86_64",
                vec![
                    entry("amd64", Some("v3"), "linux", 8),
                    entry("amd64", Some("v1"), "linux", 9),
                ],
                Some(9),
            ),
        ];
        for (arch, entries, want) in cases {
            let index = index(entries);
            let got = select_platform(&index, &Platform::linux(arch));
            let want = want.map(|n| format!("sha256:{}", format!("{n:x}").repeat(64)));
            assert_eq!(got.map(|d| d.digest().to_string()), want, "{arch}");
        }
        assert_eq!(Platform::linux("x86_64").to_string(), "linux/amd64");
    }

    #[test]
    fn manifests_of_both_formats_parse() {
        let docker = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 10, "digest": D1},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 20, "digest": D1}]
        });
        let oci_without_media_type = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 10, "digest": D1},
            "layers": []
        });
        let docker_list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "size": 5, "digest": D1,
                           "platform": {"architecture": "amd64", "os": "linux"}}]
        });
        let cases: Vec<(serde_json::Value, Result<bool, &str>)> = vec![
            (docker, Ok(false)),
            (oci_without_media_type, Ok(false)),
            (docker_list, Ok(true)),
            (
                serde_json::json!({"schemaVersion": 1, "name": "x"}),
                Err("schemaVersion Some(1)"),
            ),
            (
                serde_json::json!({"schemaVersion": 2, "mediaType": "application/x"}),
                Err("unsupported manifest media type"),
            ),
            (
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": "no"}),
                Err("malformed image manifest"),
            ),
            (serde_json::json!([1]), Err("not JSON")),
        ];
        for (doc, want) in cases {
            let got = parse_manifest(doc.to_string().as_bytes());
            match (got, want) {
                (Ok(Manifest::Index(_)), Ok(true)) | (Ok(Manifest::Image(_)), Ok(false)) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{e:?} lacks {w:?}"),
                (got, want) => panic!("{doc}: got {got:?}, want {want:?}"),
            }
        }
        if let Ok(Manifest::Image(m)) = parse_manifest(
            serde_json::json!({
                "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 10, "digest": D1},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 20, "digest": D1}]
            })
            .to_string()
            .as_bytes(),
        ) {
            assert_eq!(m.layers()[0].media_type().to_string(), "application/vnd.docker.image.rootfs.diff.tar.gzip");
            assert_eq!(m.layers()[0].size(), 20);
        } else {
            panic!("docker manifest parses as an image");
        }
    }

    #[test]
    fn sha256_digests() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(sha256_hex(D1).expect("valid"), &D1[7..]);
        for bad in [
            "sha512:00",
            "sha256:XYZ",
            "sha256",
            &D1[..70],
            &D1.to_uppercase(),
        ] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_read_as_a_user_would() {
        let cases: Vec<(PullError, &str)> = vec![
            (
                PullError::NotFound {
                    what: "library/x:latest".into(),
                    endpoint: "http://127.0.0.1:5000".into(),
                },
                "library/x:latest not found at http://127.0.0.1:5000",
            ),
            (
                PullError::DigestMismatch {
                    what: "layer sha256:a".into(),
                    expected: "sha256:a".into(),
                    got: "sha256:b".into(),
                },
                "digest mismatch for layer sha256:a: expected sha256:a, got sha256:b",
            ),
            (
                PullError::Unauthorized {
                    what: "x:1".into(),
                    endpoint: "https://r".into(),
                    had_credentials: false,
                    message: "authentication required".into(),
                },
                "https://r refused access to x:1 without credentials: authentication required",
            ),
            (
                PullError::AllEndpointsFailed {
                    last: Box::new(PullError::Unreachable {
                        endpoint: "https://b".into(),
                        message: "connection refused".into(),
                    }),
                    earlier: vec!["x not found at http://a".into()],
                },
                "cannot reach https://b: connection refused (also tried: x not found at http://a)",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }
}
