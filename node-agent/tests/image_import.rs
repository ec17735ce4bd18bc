//! Importing the project's example image into a node's image store without a registry: the OCI
//! image layout tarball skiff-api writes from the host's busybox (Debian's busybox-static), and a
//! docker-archive of the same layer as `docker save` writes one. Imported images must then be
//! found by `get` and used by `ensure` under `IfNotPresent` and `Never`. No root needed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use node_agent::image::{ImageRecord, ImageService, PullPolicy, RegistryConfig};
use sha2::{Digest, Sha256};
use skiff_api::example_image::{self, DEFAULT_BUSYBOX, EXAMPLE_CMD};

/// The host's busybox, or `None` (with a message) when it is missing outside CI.
fn busybox() -> Option<PathBuf> {
    let path = PathBuf::from(DEFAULT_BUSYBOX);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{DEFAULT_BUSYBOX} is missing under CI: install Debian's busybox-static"
    );
    eprintln!("skipping: {DEFAULT_BUSYBOX} is missing (install Debian's busybox-static)");
    None
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn open(dir: &Path) -> Arc<ImageService> {
    Arc::new(ImageService::open(dir, RegistryConfig::default()).expect("open the store"))
}

/// Imports `archive` on a blocking thread, as the agent's server does.
async fn import(service: &Arc<ImageService>, archive: Vec<u8>) -> Vec<ImageRecord> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || service.import(&archive[..]))
        .await
        .expect("import task")
        .expect("imports")
}

/// Checks `reference` is present, runs the example command, holds busybox, and is used by
/// `ensure` under `IfNotPresent` and `Never` without pulling (the default registry
/// configuration would try docker.io).
async fn check_usable(service: &ImageService, reference: &str, busybox: &Path) -> String {
    let image = service
        .get(reference)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("{reference} is not found after the import"));
    let cmd = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.cmd().clone())
        .expect("the config has a Cmd");
    assert_eq!(cmd, EXAMPLE_CMD.map(String::from));
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert_eq!(
        std::fs::read(layer.join("bin/busybox")).expect("bin/busybox in the layer"),
        std::fs::read(busybox).expect("host busybox")
    );
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).expect("bin/sh"),
        Path::new("busybox")
    );
    assert!(std::fs::read_to_string(layer.join("etc/passwd"))
        .expect("passwd")
        .contains("nobody:x:65534"));
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Never] {
        let ensured = service
            .ensure(reference, policy, &[])
            .await
            .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        assert!(ensured.pulled.is_none(), "{policy:?} pulled");
        assert_eq!(ensured.config_digest, image.config_digest);
        assert_eq!(ensured.layers, image.layers);
    }
    image.config_digest
}

#[tokio::test]
async fn the_example_oci_archive_imports_and_is_used_without_a_registry() {
    let Some(busybox) = busybox() else { return };
    let archive = example_image::oci_archive(&busybox, "skiff/example:1").expect("archive");
    let dir = tempfile::tempdir().expect("tempdir");
    let service = open(dir.path());
    let records = import(&service, archive.clone()).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.reference, "docker.io/skiff/example:1");
    assert_eq!(
        record.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        record.layers[0].digest, record.layers[0].diff_id,
        "an uncompressed layer's digest is its diff ID"
    );
    let id = check_usable(&service, "skiff/example:1", &busybox).await;
    assert_eq!(id, record.config_digest);
    let image_id = service
        .get("docker.io/skiff/example:1")
        .await
        .expect("get")
        .expect("present")
        .image_id;
    assert_eq!(
        image_id,
        format!("docker.io/skiff/example@{}", record.repo_digest)
    );
    // Listed as imported (only its last use has moved on).
    let listed = service.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        ImageRecord {
            last_used: record.last_used,
            ..listed[0].clone()
        },
        *record
    );

    // The archive is deterministic: importing a fresh one again gives the same image.
    let again = example_image::oci_archive(&busybox, "skiff/example:1").expect("archive");
    assert_eq!(again, archive);
    let records_again = import(&service, again).await;
    assert_eq!(records_again[0].manifest_digest, record.manifest_digest);
    assert_eq!(service.list().expect("list").len(), 1);
}

#[tokio::test]
async fn a_docker_archive_of_the_example_layer_imports_under_a_normalised_name() {
    let Some(busybox) = busybox() else { return };
    let layer = example_image::layer(&busybox).expect("layer");
    let config = serde_json::to_vec(&example_image::config(&sha256(&layer))).expect("config");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).expect("gzip");
    let layer_gz = gz.finish().expect("gzip");
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let layer_id = "0123abcd";
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["busybox"],
        "Layers": [format!("{layer_id}/layer.tar")],
    }]);
    let mut tar = tar::Builder::new(Vec::new());
    let mut file = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_704_067_200);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data).expect("append");
    };
    file(&config_name, &config);
    file(&format!("{layer_id}/VERSION"), b"1.0");
    file(&format!("{layer_id}/json"), b"{}");
    file(&format!("{layer_id}/layer.tar"), &layer_gz);
    file(
        "repositories",
        format!(r#"{{"busybox":{{"latest":"{layer_id}"}}}}"#).as_bytes(),
    );
    file(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("manifest"),
    );
    let archive = tar.into_inner().expect("tar");

    let dir = tempfile::tempdir().expect("tempdir");
    let service = open(dir.path());
    let records = import(&service, archive).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.reference, "docker.io/library/busybox:latest");
    assert_eq!(record.config_digest, sha256(&config));
    assert_eq!(record.layers[0].digest, sha256(&layer_gz));
    assert_eq!(
        record.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(record.layers[0].diff_id, sha256(&layer));
    // `busybox:latest` has the default policy Always; IfNotPresent and Never use the import.
    check_usable(&service, "busybox", &busybox).await;
    check_usable(&service, "docker.io/library/busybox:latest", &busybox).await;
}
