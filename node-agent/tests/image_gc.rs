//! Image garbage collection on a real, small filesystem: a tmpfs the test mounts (so it can be
//! filled past the thresholds without touching the machine's disk) holds an image store with
//! three images that share a base layer. Nothing goes while usage is under the high threshold;
//! past it, the least recently used unused image goes first and collection stops at the low
//! threshold; an image a container uses and a layer a mounted overlay reads are kept; a
//! collection that cannot free enough says so in the kubelet's words. Needs root (mounts).

#[path = "runtime_support/mod.rs"]
mod runtime_support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use node_agent::image::gc::DiskUsage;
use node_agent::image::{GcPolicy, ImageRecord, ImageService, RegistryConfig};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A layer tar with one file of `size` bytes that do not compress, different per `seed`.
fn layer(seed: &str, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size);
    let mut block = Sha256::digest(seed.as_bytes());
    while data.len() < size {
        block = Sha256::digest(block);
        data.extend_from_slice(&block);
    }
    data.truncate(size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size as u64);
    h.set_mtime(1_704_067_200);
    tar.append_data(&mut h, format!("data/{seed}"), &data[..])
        .expect("append");
    tar.into_inner().expect("tar")
}

/// A docker-archive (`docker save`) of image `name` whose layers are `layers` (lowest first).
fn archive(name: &str, layers: &[&Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": skiff_api::example_image::go_arch(), "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config");
    let config_name = format!("{}.json", &sha256(&config)[7..]);
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
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let path = format!("{i}-{}/layer.tar", &diff_ids[i][7..15]);
        file(&path, l);
        paths.push(path);
    }
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": [format!("{name}:1")], "Layers": paths,
    }]);
    file(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("manifest"),
    );
    tar.into_inner().expect("archive")
}

async fn import(service: &Arc<ImageService>, archive: Vec<u8>) -> ImageRecord {
    let service = service.clone();
    tokio::task::spawn_blocking(move || service.import(&archive[..]))
        .await
        .expect("import task")
        .expect("imports")
        .remove(0)
}

/// A tmpfs of `size` bytes at `dir`, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: usize) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Writes `path` until the filesystem is `percent` full.
fn fill_to(path: &Path, percent: u64) {
    let usage = DiskUsage::of(path.parent().expect("dir")).expect("statvfs");
    let target_used = usage.capacity * percent / 100;
    let used = usage.capacity - usage.available;
    let more = target_used.saturating_sub(used) as usize;
    let mut existing = std::fs::read(path).unwrap_or_default();
    existing.resize(existing.len() + more, 1);
    std::fs::write(path, existing).expect("filler");
}

fn names(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_go_least_recently_used_first_down_to_the_low_threshold() {
    if !runtime_support::root_or_skip("image gc") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let disk = tmp.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, 64 * MIB);
    let service =
        Arc::new(ImageService::open(disk.join("images"), RegistryConfig::default()).expect("open"));
    let base = layer("base", MIB);
    let mut records = Vec::new();
    for name in ["a", "b", "c"] {
        let own = layer(name, 4 * MIB);
        records.push(import(&service, archive(name, &[&base, &own])).await);
    }
    let [a, b, c] = [&records[0], &records[1], &records[2]];
    // Used in the order c, a, b: c is the least recently used.
    for r in [c, a, b] {
        assert!(service.get(&r.reference).await.expect("get").is_some());
    }
    let policy = GcPolicy {
        high_threshold_percent: 85,
        low_threshold_percent: 80,
        min_age: Duration::ZERO,
    };
    let b_in_use: HashSet<String> = [format!("docker.io/library/b@{}", b.repo_digest)].into();

    // Under the high threshold nothing goes.
    let filler = disk.join("filler");
    fill_to(&filler, 70);
    let report = service
        .collect_garbage(policy, b_in_use.clone())
        .await
        .expect("collect");
    assert_eq!((report.needed, report.removed.len()), (0, 0), "{report:?}");
    assert_eq!(service.list().expect("list").len(), 3);

    // A container's overlay still reads c's own layer (its image could have been re-pulled).
    let c_layer = disk
        .join("images/layers/sha256")
        .join(&c.layers[1].digest[7..]);
    let overlay = disk.join("overlay");
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir_all(overlay.join(d)).expect("overlay dirs");
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        c_layer.join("fs").display(),
        overlay.join("upper").display(),
        overlay.join("work").display()
    );
    mount(
        Some("overlay"),
        &overlay.join("merged"),
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .expect("overlay");

    // Past it: c (least recently used) goes, and that is enough for the low threshold.
    fill_to(&filler, 86);
    let report = service
        .collect_garbage(policy, b_in_use.clone())
        .await
        .expect("collect");
    assert!(report.percent >= 85 && report.needed > 0, "{report:?}");
    assert_eq!(
        report.removed,
        std::slice::from_ref(&c.reference),
        "{report:?}"
    );
    assert!(!report.fell_short(), "{report:?}");
    let usage = DiskUsage::of(&disk).expect("statvfs");
    assert!(usage.percent() <= 80, "{usage:?} after {report:?}");
    let left: Vec<String> = service
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(left, [a.reference.clone(), b.reference.clone()]);
    assert!(service.get(&a.reference).await.expect("get").is_some());
    assert!(
        c_layer.join("fs").is_dir(),
        "a layer a mounted overlay reads is kept"
    );

    // Far past it: a goes too, b is in use, and collection falls short and says so.
    fill_to(&filler, 97);
    let report = service
        .collect_garbage(policy, b_in_use.clone())
        .await
        .expect("collect");
    assert_eq!(
        report.removed,
        std::slice::from_ref(&a.reference),
        "{report:?}"
    );
    assert!(report.fell_short(), "{report:?}");
    assert!(
        report
            .shortfall_message()
            .starts_with("Failed to garbage collect required amount of images."),
        "{}",
        report.shortfall_message()
    );
    let image = service
        .get(&b.reference)
        .await
        .expect("get")
        .expect("the image in use stays");
    assert!(image.layers.iter().all(|l| l.is_dir()));
    assert!(c_layer.join("fs").is_dir(), "still read by the overlay");

    // Once no overlay reads c's layer, the next collection takes it first.
    umount2(&overlay.join("merged"), MntFlags::MNT_DETACH).expect("unmount overlay");
    fill_to(&filler, 97);
    let report = service
        .collect_garbage(policy, b_in_use.clone())
        .await
        .expect("collect");
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(report.freed >= 4 * MIB as u64, "{report:?}");
    assert!(!c_layer.exists());
    // Only b's blobs and layers are left (c's layer went once no overlay read it).
    let want_layers: HashSet<String> = b.layers.iter().map(|l| l.digest[7..].into()).collect();
    assert_eq!(names(&disk.join("images/layers/sha256")), want_layers);
    let mut want_blobs = want_layers.clone();
    want_blobs.insert(b.config_digest[7..].into());
    want_blobs.insert(b.manifest_digest[7..].into());
    want_blobs.retain(|d| disk.join("images/blobs/sha256").join(d).exists());
    assert_eq!(names(&disk.join("images/blobs/sha256")), want_blobs);
    assert!(names(&disk.join("images/tmp")).is_empty());
}
