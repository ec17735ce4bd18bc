//! The node agent's image service against a real registry (Debian's docker-registry on loopback):
//! short names through a `docker.io` mirror, OCI and Docker manifests, an index with platform
//! selection, zstd layers, the store's reuse of what it has, one download for concurrent pulls,
//! credentials, and the errors a user sees for a missing image, a registry that is down and a
//! corrupt blob.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use node_agent::image::{DockerConfigJson, ImageService, PullPolicy, RegistryConfig};
use tests::registry::{
    self, corrupt_file, example_image, image_index, push_example_image, push_image, push_manifest,
    Compression, Format, TestRegistry, EXAMPLE_CMD,
};
use tests::wait;

/// A registries.yaml with `docker.io` mirrored to `registry`, and no fallback to Docker Hub (tests
/// never leave this machine).
fn mirror_config(registry: &TestRegistry) -> RegistryConfig {
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
        registry.host()
    );
    let mut config = RegistryConfig::from_yaml(&yaml).expect("registries.yaml parses");
    config.disable_default_endpoint = true;
    config
}

fn assert_example_unpacked(layer: &Path) {
    let busybox = std::fs::metadata(layer.join("bin/busybox")).expect("bin/busybox unpacked");
    assert!(busybox.is_file());
    assert_eq!(busybox.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(layer.join("bin/httpd")).expect("httpd applet link"),
        Path::new("busybox")
    );
    let passwd = std::fs::read_to_string(layer.join("etc/passwd")).expect("etc/passwd");
    assert!(passwd.contains("nobody:x:65534:65534"), "{passwd}");
    let tmp = std::fs::metadata(layer.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names_pull_through_a_docker_io_mirror_and_are_reused() {
    let registry = TestRegistry::start().await.expect("registry starts");
    let digest = push_example_image(&registry, "library/busybox", "latest")
        .await
        .expect("example image pushed");
    let built = example_image().expect("example").build().expect("builds");
    let layer_digest = built.layers[0].digest.clone();
    assert_eq!(built.manifest.digest, digest);

    let root = tempfile::tempdir().expect("tempdir");
    let service = ImageService::open(root.path().join("images"), mirror_config(&registry))
        .expect("store opens");
    let image = service
        .ensure("busybox", PullPolicy::default_for("busybox"), &[])
        .await
        .expect("busybox pulls through the mirror");
    assert_eq!(image.reference, "docker.io/library/busybox:latest");
    assert_eq!(
        image.image_id,
        format!("docker.io/library/busybox@{digest}")
    );
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.config_digest, built.config.digest);
    let cmd = image.config.config().as_ref().and_then(|c| c.cmd().clone());
    assert_eq!(
        cmd,
        Some(EXAMPLE_CMD.iter().map(|s| s.to_string()).collect())
    );
    let env = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert_eq!(image.layers.len(), 1);
    assert!(image.layers[0].starts_with(root.path().join("images/layers/sha256")));
    assert_example_unpacked(&image.layers[0]);
    let report = image.pulled.clone().expect("a pull happened");
    assert_eq!(report.blobs_downloaded, 2, "config and layer");
    assert_eq!(
        report.bytes_downloaded,
        (built.config.data.len() + built.layers[0].data.len()) as u64
    );
    registry.sync_log().await.expect("log");
    assert_eq!(registry.blob_fetches("library/busybox", &layer_digest), 1);

    // IfNotPresent: nothing is asked of the registry.
    let again = service
        .ensure(
            "docker.io/library/busybox:latest",
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .expect("present");
    assert!(again.pulled.is_none(), "already present on machine");
    assert_eq!(again.layers, image.layers);
    // Always resolves again but downloads nothing it has.
    let always = service
        .ensure("busybox", PullPolicy::Always, &[])
        .await
        .expect("resolves");
    assert_eq!(always.pulled.as_ref().map(|r| r.blobs_downloaded), Some(0));
    // Never: present, so fine; by digest too.
    service
        .ensure("busybox", PullPolicy::Never, &[])
        .await
        .expect("present under Never");
    let by_digest = service
        .ensure(&format!("busybox@{digest}"), PullPolicy::Never, &[])
        .await
        .expect("the stored image answers to its digest");
    assert_eq!(by_digest.image_id, image.image_id);
    registry.sync_log().await.expect("log");
    assert_eq!(
        registry.blob_fetches("library/busybox", &layer_digest),
        1,
        "one download in all"
    );

    let listed = service.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference, "docker.io/library/busybox:latest");
    assert_eq!(listed[0].manifest_digest, digest);
    assert!(listed[0].last_used >= listed[0].pulled_at);

    // A new service on the same root (an agent restart) finds it without a registry.
    drop(registry);
    let reopened =
        ImageService::open(root.path().join("images"), RegistryConfig::default()).expect("reopens");
    let after_restart = reopened
        .ensure("busybox", PullPolicy::IfNotPresent, &[])
        .await
        .expect("still present");
    assert_eq!(after_restart.layers, image.layers);
    let never = reopened
        .ensure("busybox:other", PullPolicy::Never, &[])
        .await
        .expect_err("absent");
    assert_eq!(never.reason(), "ErrImageNeverPull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_one_download() {
    let registry = TestRegistry::start().await.expect("registry starts");
    push_example_image(&registry, "team/web", "1")
        .await
        .expect("pushed");
    let layer_digest = example_image()
        .expect("example")
        .build()
        .expect("builds")
        .layers[0]
        .digest
        .clone();
    let root = tempfile::tempdir().expect("tempdir");
    let service = ImageService::open(root.path(), mirror_config(&registry)).expect("opens");
    let pulls = (0..4).map(|i| {
        let service = service.clone();
        let policy = if i % 2 == 0 {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        };
        tokio::spawn(async move { service.ensure("team/web:1", policy, &[]).await })
    });
    let results = futures_join(pulls.collect()).await;
    let mut downloads = 0;
    for result in &results {
        let image = result.as_ref().expect("every caller gets the image");
        assert_eq!(image.reference, "docker.io/team/web:1");
        assert_example_unpacked(&image.layers[0]);
        downloads += image.pulled.as_ref().map_or(0, |r| r.blobs_downloaded);
    }
    assert_eq!(
        downloads, 2,
        "config and layer downloaded once between four callers"
    );
    registry.sync_log().await.expect("log");
    assert_eq!(registry.blob_fetches("team/web", &layer_digest), 1);
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_manifests_indexes_and_zstd_layers() {
    let registry = TestRegistry::start().await.expect("registry starts");
    let host = registry.host();
    let auth = registry.auth();

    // Docker v2 schema 2 with a gzip layer.
    let docker = example_image()
        .expect("example")
        .format(Format::Docker)
        .build()
        .expect("builds");
    let docker_digest = push_image(&host, &auth, "docker/busybox", "1", &docker)
        .await
        .expect("pushed");

    // An OCI index: a foreign platform first, then this machine's with a zstd layer.
    let foreign_arch = if registry::go_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let foreign = example_image()
        .expect("example")
        .architecture(foreign_arch)
        .build()
        .expect("builds");
    let native = example_image()
        .expect("example")
        .compression(Compression::Zstd)
        .build()
        .expect("builds");
    push_image(&host, &auth, "multi/busybox", "foreign", &foreign)
        .await
        .expect("pushed");
    push_image(&host, &auth, "multi/busybox", "native", &native)
        .await
        .expect("pushed");
    let index = image_index(
        Format::Oci,
        &[
            (&foreign.manifest, foreign_arch),
            (&native.manifest, registry::go_arch()),
        ],
    )
    .expect("index");
    let index_digest = push_manifest(&host, &auth, "multi/busybox", "1", &index)
        .await
        .expect("pushed");
    let only_foreign =
        image_index(Format::Docker, &[(&foreign.manifest, foreign_arch)]).expect("index");
    push_manifest(&host, &auth, "multi/busybox", "foreign-only", &only_foreign)
        .await
        .expect("pushed");

    let root = tempfile::tempdir().expect("tempdir");
    // The registry is reached directly by its loopback name: plain HTTP without configuration.
    let service = ImageService::open(root.path(), RegistryConfig::default()).expect("opens");

    let image = service
        .ensure(
            &format!("{host}/docker/busybox:1"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .expect("docker manifest pulls");
    assert_eq!(
        image.image_id,
        format!("{host}/docker/busybox@{docker_digest}")
    );
    assert_example_unpacked(&image.layers[0]);

    let multi = service
        .ensure(
            &format!("{host}/multi/busybox:1"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .expect("index pulls");
    assert_eq!(
        multi.image_id,
        format!("{host}/multi/busybox@{index_digest}"),
        "imageID names the index"
    );
    assert_eq!(
        multi.manifest_digest, native.manifest.digest,
        "this machine's manifest chosen"
    );
    assert_eq!(multi.config.architecture().to_string(), registry::go_arch());
    assert_example_unpacked(&multi.layers[0]);

    let error = service
        .ensure(
            &format!("{host}/multi/busybox:foreign-only"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .expect_err("no manifest for this platform");
    assert_eq!(error.reason(), "ErrImagePull");
    let text = error.to_string();
    assert!(
        text.contains(&format!("no manifest for linux/{}", registry::go_arch())),
        "{text}"
    );
    assert!(text.contains(&format!("linux/{foreign_arch}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_down_registries_and_corrupt_blobs_are_errors() {
    let registry = TestRegistry::start().await.expect("registry starts");
    let host = registry.host();
    let root = tempfile::tempdir().expect("tempdir");
    let service = ImageService::open(root.path(), mirror_config(&registry)).expect("opens");

    // An image the registry does not have, by short name through the mirror and by full name.
    for (reference, repository) in [
        ("nosuch:1".to_string(), "library/nosuch:1"),
        (format!("{host}/library/nosuch:1"), "library/nosuch:1"),
    ] {
        let error = service
            .ensure(&reference, PullPolicy::IfNotPresent, &[])
            .await
            .expect_err("missing image");
        assert_eq!(error.reason(), "ErrImagePull");
        assert_eq!(
            error.to_string(),
            format!("failed to pull image {reference:?}: {repository} not found at http://{host}")
        );
    }

    // A registry that is down.
    let dead = registry::free_port().expect("port");
    let reference = format!("127.0.0.1:{dead}/x/y:1");
    let error = service
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .expect_err("registry down");
    assert_eq!(error.reason(), "ErrImagePull");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "failed to pull image {reference:?}: cannot reach http://127.0.0.1:{dead}"
        )),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connection refused"), "{text}");

    // A blob whose stored bytes no longer match its digest.
    let corrupt = example_image()
        .expect("example")
        .env("MARK=corrupt")
        .layer(single_file_layer(
            "corrupt-marker",
            b"this layer will be damaged",
        ))
        .build()
        .expect("builds");
    push_image(&host, &registry.auth(), "corrupt/busybox", "1", &corrupt)
        .await
        .expect("pushed");
    let bad_layer = &corrupt.layers[1];
    corrupt_file(&registry.blob_data_path(&bad_layer.digest)).expect("corrupted");
    let error = service
        .ensure(
            &format!("{host}/corrupt/busybox:1"),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .expect_err("digest mismatch");
    assert_eq!(error.reason(), "ErrImagePull");
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "digest mismatch for layer {d}: expected {d}, got sha256:",
            d = bad_layer.digest
        )),
        "{text}"
    );
    // Nothing of the bad layer is kept; the good layer is, and nothing is left half-written.
    let hex = &bad_layer.digest[7..];
    assert!(!root.path().join("blobs/sha256").join(hex).exists());
    assert!(!root.path().join("layers/sha256").join(hex).exists());
    assert_eq!(
        std::fs::read_dir(root.path().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
    assert!(
        service.list().expect("list").is_empty(),
        "no image recorded"
    );
    let never = service
        .ensure(&format!("{host}/corrupt/busybox:1"), PullPolicy::Never, &[])
        .await
        .expect_err("not present");
    assert_eq!(never.reason(), "ErrImageNeverPull");

    let invalid = service
        .ensure("Busybox:latest", PullPolicy::IfNotPresent, &[])
        .await
        .expect_err("invalid");
    assert_eq!(invalid.reason(), "InvalidImageName");
    assert!(
        invalid.to_string().contains("\"Busybox:latest\""),
        "{invalid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_pull_secrets_and_registries_yaml() {
    let registry = TestRegistry::start_with_auth("alice", "s3cret")
        .await
        .expect("registry starts");
    let host = registry.host();
    push_example_image(&registry, "private/busybox", "1")
        .await
        .expect("pushed with auth");
    let reference = format!("{host}/private/busybox:1");

    let root = tempfile::tempdir().expect("tempdir");
    let anonymous = ImageService::open(root.path(), RegistryConfig::default()).expect("opens");
    let error = anonymous
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .expect_err("credentials needed");
    assert_eq!(error.reason(), "ErrImagePull");
    assert!(error.to_string().contains("without credentials"), "{error}");

    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let wrong = DockerConfigJson::parse(
        format!(
            r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
            encode("alice:wrong")
        )
        .as_bytes(),
    )
    .expect("secret parses");
    let error = anonymous
        .ensure(&reference, PullPolicy::IfNotPresent, &[wrong])
        .await
        .expect_err("wrong password");
    assert!(
        error.to_string().contains("with the credentials given"),
        "{error}"
    );

    let secret = DockerConfigJson::parse(
        format!(
            r#"{{"auths": {{"http://{host}": {{"auth": "{}"}}}}}}"#,
            encode("alice:s3cret")
        )
        .as_bytes(),
    )
    .expect("secret parses");
    let image = anonymous
        .ensure(&reference, PullPolicy::IfNotPresent, &[secret])
        .await
        .expect("pull secret admits");
    assert_example_unpacked(&image.layers[0]);

    let yaml = format!(
        "configs:\n  \"{host}\":\n    auth:\n      username: alice\n      password: s3cret\n"
    );
    let configured = ImageService::open(
        tempfile::tempdir().expect("tempdir").keep(),
        RegistryConfig::from_yaml(&yaml).expect("parses"),
    )
    .expect("opens");
    let image = configured
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .expect("registries.yaml credentials admit");
    assert_example_unpacked(&image.layers[0]);
    std::fs::remove_dir_all(configured.root()).expect("cleanup");
}

/// A layer tar holding one file.
fn single_file_layer(name: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(content.len() as u64);
    tar.append_data(&mut header, name, content)
        .expect("tar entry");
    tar.into_inner().expect("tar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_harness_waits_for_readiness_and_stops_on_drop() {
    let registry = TestRegistry::start().await.expect("registry starts");
    let host = registry.host();
    assert!(
        registry.log().contains("listening on"),
        "{}",
        registry.log()
    );
    drop(registry);
    let addr: std::net::SocketAddr = host.parse().expect("addr");
    wait::until(
        "the registry port to close",
        Duration::from_secs(10),
        || async move { std::net::TcpStream::connect(addr).is_err().then_some(()) },
    )
    .await;
}

/// Run by [`a_machine_without_ca_certificates_fails_pulls_with_a_clear_error`] in a child
/// process whose environment points the certificate search at an empty directory.
#[tokio::test]
#[ignore = "run in a child process by a_machine_without_ca_certificates_fails_pulls_with_a_clear_error"]
async fn pull_on_a_machine_without_ca_certificates() {
    let root = tempfile::tempdir().expect("tempdir");
    let service = ImageService::open(root.path().join("images"), RegistryConfig::default())
        .expect("store opens");
    let dead = registry::free_port().expect("port");
    let reference = format!("127.0.0.1:{dead}/x/y:1");
    let error = service
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .expect_err("no certificates");
    assert_eq!(error.reason(), "ErrImagePull");
    let text = error.to_string();
    // With certificates the same pull reaches the port and finds nobody (see
    // `missing_images_down_registries_and_corrupt_blobs_are_errors`); without, it says why it could not even start.
    let expected = format!(
        "failed to pull image {reference:?}: cannot reach http://127.0.0.1:{dead}: {}",
        node_agent::image::pull::NO_CA_CERTIFICATES
    );
    assert_eq!(text, expected);
}

#[test]
fn a_machine_without_ca_certificates_fails_pulls_with_a_clear_error() {
    // The HTTP client the registry library makes panics without CA certificates; the agent
    // must answer with an error instead (a minimal Debian has no ca-certificates package).
    let empty = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(std::env::current_exe().expect("this test"))
        .args([
            "--exact",
            "pull_on_a_machine_without_ca_certificates",
            "--ignored",
            "--nocapture",
        ])
        .env("SSL_CERT_FILE", empty.path().join("none.pem"))
        .env("SSL_CERT_DIR", empty.path())
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{}\n{stdout}\n{stderr}",
        out.status
    );
}
