//! A real OCI registry for tests, and images to put in it.
//!
//! [`TestRegistry`] runs Debian's `docker-registry` (distribution 2.8) as a child process on a
//! loopback port, with its own config file (filesystem storage in a temp dir, access log to a
//! file, optionally htpasswd basic auth), and kills it when dropped. [`ImageBuilder`] makes OCI
//! or Docker v2 images (layers as tars, plain, gzip or zstd; a config; a manifest; optionally an
//! index) as bytes, and [`push_image`] pushes them with oci-client. [`example_layer`] is the
//! project's example image (built by `skiff_api::example_image`, which the CLI uses too):
//! Debian's statically linked `/bin/busybox` with a symlink per applet, `/etc/passwd` and
//! `/etc/group` (root and nobody 65534) and `/tmp`, whose command serves its hostname over HTTP
//! on port 8080.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Debian installs the registry (package `docker-registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
/// Debian's statically linked busybox (package `busybox-static`).
pub const BUSYBOX: &str = skiff_api::example_image::DEFAULT_BUSYBOX;
pub use skiff_api::example_image::{EXAMPLE_CMD, EXAMPLE_PORT};

/// A running `docker-registry` (on `127.0.0.1` unless started at another address), killed on
/// drop.
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl TestRegistry {
    /// Starts a registry without authentication and waits until `GET /v2/` answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(std::net::Ipv4Addr::LOCALHOST, None).await
    }

    /// Starts a registry without auth listening on `ip` (an address of the calling thread's
    /// network namespace), for agents on other test hosts.
    pub async fn start_at(ip: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        Self::start_with(ip, None).await
    }

    /// Starts a registry that requires HTTP basic auth as `user`/`password` (htpasswd, bcrypt).
    pub async fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(
            std::net::Ipv4Addr::LOCALHOST,
            Some((user.to_string(), password.to_string())),
        )
        .await
    }

    async fn start_with(
        ip: std::net::Ipv4Addr,
        auth: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        if !Path::new(DOCKER_REGISTRY).exists() {
            bail!("{DOCKER_REGISTRY} is missing: install Debian's docker-registry (tests/install-deps does)");
        }
        let dir = tempfile::tempdir().context("registry temp dir")?;
        let port = free_port()?;
        let addr: SocketAddr = (ip, port).into();
        let mut auth_section = String::new();
        if let Some((user, password)) = &auth {
            let hash = bcrypt::hash(password, 5).context("hashing the registry password")?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).context("writing htpasswd")?;
            auth_section = format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n\
             {auth_section}",
            storage = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).context("writing the registry config")?;
        let log = std::fs::File::create(dir.path().join("registry.log")).context("registry log")?;
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("registry log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {DOCKER_REGISTRY}"))?;
        let mut registry = TestRegistry {
            child,
            addr,
            dir,
            auth,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = registry.child.try_wait().context("registry status")? {
                bail!(
                    "docker-registry exited ({status}) at start:\n{}",
                    registry.log()
                );
            }
            match http_status(addr, "/v2/").await {
                // 401 is the answer of a registry with auth that is up.
                Ok(200) | Ok(401) => return Ok(registry),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                other => bail!(
                    "docker-registry did not answer GET /v2/ within 30 s ({other:?}):\n{}",
                    registry.log()
                ),
            }
        }
    }

    /// `IP:PORT`, as image references and registries.yaml name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The credentials pushes use, if the registry has auth.
    pub fn auth(&self) -> RegistryAuth {
        match &self.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The registry's own file for blob `digest` (to corrupt it in tests).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many times blob `digest` of `repository` was served whole (200) so far.
    pub fn blob_fetches(&self, repository: &str, digest: &str) -> usize {
        let request = format!("\"GET /v2/{repository}/blobs/{digest} HTTP/");
        self.log()
            .lines()
            .filter(|line| line.contains(&request) && line.contains("\" 200 "))
            .count()
    }

    /// Waits until the access log shows a request for `path` made after every earlier request
    /// completed: a marker that the log has caught up.
    pub async fn sync_log(&self) -> anyhow::Result<()> {
        let marker = format!("/v2/skiff-log-marker-{}/tags/list", rand::random::<u64>());
        let _ = http_status(self.addr, &marker).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(&format!("\"GET {marker} HTTP/")) {
            if Instant::now() >= deadline {
                bail!("the registry log never showed {marker}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The status code of `GET path` on `addr` (HTTP/1.0, no client library needed).
async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head).into_owned();
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| anyhow!("not an HTTP status line: {line:?}"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))?
}

/// `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Which family of media types the manifest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest and index.
    Oci,
    /// Docker image manifest v2 schema 2 and manifest list.
    Docker,
}

/// Content and its descriptor fields.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type.
    pub media_type: String,
    /// `sha256:…` of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: impl Into<String>, data: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.into(),
            digest: sha256(&data),
            data,
        }
    }

    /// The OCI descriptor for this blob.
    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// A built image: config, layers and the manifest naming them.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, lowest first.
    pub layers: Vec<Blob>,
    /// The manifest.
    pub manifest: Blob,
}

/// Builds an image from layer tars.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    format: Format,
    compression: Compression,
    architecture: String,
    cmd: Vec<String>,
    entrypoint: Vec<String>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Vec<String>,
    layers: Vec<Vec<u8>>,
}

impl ImageBuilder {
    /// An OCI image with gzip layers for this machine's architecture and a default `PATH`.
    pub fn new() -> Self {
        ImageBuilder {
            format: Format::Oci,
            compression: Compression::Gzip,
            architecture: go_arch().to_string(),
            cmd: Vec::new(),
            entrypoint: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: None,
            user: None,
            exposed_ports: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// Manifest and media-type family.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Layer compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// GOARCH-style architecture for the config.
    pub fn architecture(mut self, architecture: &str) -> Self {
        self.architecture = architecture.to_string();
        self
    }

    /// The image's Cmd.
    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The image's Entrypoint.
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> Self {
        self.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds `NAME=value` to Env.
    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.to_string());
        self
    }

    /// The image's WorkingDir.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_string());
        self
    }

    /// The image's User.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// Adds an exposed port (`8080/tcp`).
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.to_string());
        self
    }

    /// Adds a layer (an uncompressed tar) on top.
    pub fn layer(mut self, tar: Vec<u8>) -> Self {
        self.layers.push(tar);
        self
    }

    /// Compresses the layers and writes config and manifest.
    pub fn build(&self) -> anyhow::Result<BuiltImage> {
        let (layer_type, config_type, manifest_type) = match (self.format, self.compression) {
            (Format::Oci, c) => (
                match c {
                    Compression::None => "application/vnd.oci.image.layer.v1.tar",
                    Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                    Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                },
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
            ),
            (Format::Docker, Compression::Gzip) => (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ),
            (Format::Docker, c) => bail!("Docker v2 manifests carry gzip layers, not {c:?}"),
        };
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in &self.layers {
            diff_ids.push(sha256(tar));
            let data = match self.compression {
                Compression::None => tar.clone(),
                Compression::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(tar)?;
                    e.finish()?
                }
                Compression::Zstd => zstd::stream::encode_all(&tar[..], 3)?,
            };
            layers.push(Blob::new(layer_type, data));
        }
        let mut container_config = json!({"Env": self.env});
        if !self.cmd.is_empty() {
            container_config["Cmd"] = json!(self.cmd);
        }
        if !self.entrypoint.is_empty() {
            container_config["Entrypoint"] = json!(self.entrypoint);
        }
        if let Some(dir) = &self.working_dir {
            container_config["WorkingDir"] = json!(dir);
        }
        if let Some(user) = &self.user {
            container_config["User"] = json!(user);
        }
        if !self.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            container_config["ExposedPorts"] = json!(ports);
        }
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": self.architecture,
            "os": "linux",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "skiff tests ImageBuilder"}],
        });
        let config = Blob::new(config_type, serde_json::to_vec(&config)?);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(manifest_type, serde_json::to_vec(&manifest)?);
        Ok(BuiltImage {
            config,
            layers,
            manifest,
        })
    }
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// An index (manifest list) of `(manifest, architecture)` entries, all linux.
pub fn image_index(format: Format, entries: &[(&Blob, &str)]) -> anyhow::Result<Blob> {
    let media_type = match format {
        Format::Oci => "application/vnd.oci.image.index.v1+json",
        Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
    };
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(manifest, arch)| {
            let mut d = manifest.descriptor();
            d["platform"] = json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    Ok(Blob::new(media_type, serde_json::to_vec(&index)?))
}

/// This machine's architecture as Go (and image configs) name it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn push_client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

/// Pushes an image's blobs and its manifest as `host/repository:tag`; returns the manifest
/// digest.
pub async fn push_image(
    host: &str,
    auth: &RegistryAuth,
    repository: &str,
    tag: &str,
    image: &BuiltImage,
) -> anyhow::Result<String> {
    let client = push_client();
    let reference = Reference::with_tag(host.to_string(), repository.to_string(), tag.to_string());
    client.store_auth_if_needed(host, auth).await;
    for blob in image.layers.iter().chain([&image.config]) {
        client
            .push_blob(&reference, blob.data.clone(), &blob.digest)
            .await
            .with_context(|| format!("pushing blob {} to {host}/{repository}", blob.digest))?;
    }
    push_manifest(host, auth, repository, tag, &image.manifest).await
}

/// Pushes a manifest or index document as `host/repository:tag`; returns its digest.
pub async fn push_manifest(
    host: &str,
    auth: &RegistryAuth,
    repository: &str,
    tag: &str,
    manifest: &Blob,
) -> anyhow::Result<String> {
    let client = push_client();
    let reference = Reference::with_tag(host.to_string(), repository.to_string(), tag.to_string());
    client.store_auth_if_needed(host, auth).await;
    client
        .push_manifest_raw(
            &reference,
            manifest.data.clone(),
            manifest.media_type.parse()?,
        )
        .await
        .with_context(|| format!("pushing manifest {host}/{repository}:{tag}"))?;
    Ok(manifest.digest.clone())
}

/// The example image's only layer, an uncompressed tar (skiff-api's
/// [`skiff_api::example_image::layer`]): `/bin/busybox` from the host (Debian's busybox-static),
/// a symlink in `/bin` for each of its applets, `/etc/passwd` and `/etc/group` with root and
/// nobody (65534), `/tmp` (1777) and empty `/root`, `/proc`, `/sys`, `/dev`.
pub fn example_layer() -> anyhow::Result<Vec<u8>> {
    Ok(skiff_api::example_image::layer(Path::new(BUSYBOX))?)
}

/// The example image as skiff-api's [`skiff_api::example_image::config`] describes it:
/// [`example_layer`] with [`EXAMPLE_CMD`], port 8080 exposed, working dir `/`, `SKIFF_EXAMPLE=1`.
pub fn example_image() -> anyhow::Result<ImageBuilder> {
    let mut builder = ImageBuilder::new()
        .layer(example_layer()?)
        .cmd(&EXAMPLE_CMD)
        .working_dir(skiff_api::example_image::EXAMPLE_WORKING_DIR)
        .expose(&format!("{EXAMPLE_PORT}/tcp"));
    // The builder starts with the same PATH; the example's other variables are added.
    for var in skiff_api::example_image::EXAMPLE_ENV {
        if !builder.env.iter().any(|v| v == var) {
            builder = builder.env(var);
        }
    }
    Ok(builder)
}

/// Builds the example image (OCI, gzip) and pushes it to `registry` as `repository:tag`; returns
/// the manifest digest.
pub async fn push_example_image(
    registry: &TestRegistry,
    repository: &str,
    tag: &str,
) -> anyhow::Result<String> {
    let image = example_image()?.build()?;
    push_image(&registry.host(), &registry.auth(), repository, tag, &image).await
}

/// Flips one byte in the middle of a file (a registry's stored blob), keeping its length.
pub fn corrupt_file(path: &Path) -> anyhow::Result<()> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .with_context(|| format!("reading {}", path.display()))?;
    if data.is_empty() {
        bail!("{} is empty", path.display());
    }
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}
