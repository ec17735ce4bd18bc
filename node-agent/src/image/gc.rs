//! Image garbage collection, as the kubelet's image GC manager does it: when the filesystem
//! holding the image store is at or above the high threshold (85 % by default), images that
//! no container uses and that nothing used within the minimum age (2 minutes) are removed,
//! least recently used first, until usage is back at the low threshold (80 %); then the blobs
//! and unpacked layers no remaining image names (and no mounted container overlay still reads)
//! go too. This module holds the pure parts — the policy, the arithmetic, the order, reading
//! mount tables — and [`super::ImageService::collect_garbage`] applies them to the store.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::store::ImageRecord;

/// When images are collected and down to where (the kubelet's `--image-gc-high-threshold`,
/// `--image-gc-low-threshold`, `--image-minimum-gc-age`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> GcPolicy {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// Why a policy cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("--image-gc-high-threshold {0} must be between 0 and 100")]
    High(u8),
    #[error("--image-gc-low-threshold {low} must be less than --image-gc-high-threshold {high}")]
    Low { low: u8, high: u8 },
}

impl GcPolicy {
    /// Checks the thresholds as the kubelet does (high at most 100, low below high).
    pub fn validate(self) -> Result<GcPolicy, PolicyError> {
        if self.high_threshold_percent > 100 {
            return Err(PolicyError::High(self.high_threshold_percent));
        }
        if self.low_threshold_percent >= self.high_threshold_percent {
            return Err(PolicyError::Low {
                low: self.low_threshold_percent,
                high: self.high_threshold_percent,
            });
        }
        Ok(self)
    }
}

/// How full a filesystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    /// The filesystem that holds `path`, as `statvfs` reports it (space for unprivileged
    /// users as available, as the kubelet counts it).
    pub fn of(path: &Path) -> std::io::Result<DiskUsage> {
        let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let unit = st.fragment_size();
        Ok(DiskUsage {
            capacity: st.blocks() * unit,
            available: st.blocks_available() * unit,
        })
    }

    /// Used percent, rounded up as the kubelet rounds it (`100 - available*100/capacity`).
    pub fn percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - (self.available.min(self.capacity) * 100 / self.capacity)
    }

    /// The bytes to free to come down to the low threshold, when usage has reached the high
    /// one; `None` below it.
    pub fn to_free(&self, policy: &GcPolicy) -> Option<u64> {
        if self.capacity == 0 || self.percent() < u64::from(policy.high_threshold_percent) {
            return None;
        }
        let target_available =
            self.capacity * (100 - u64::from(policy.low_threshold_percent)) / 100;
        Some(target_available.saturating_sub(self.available))
    }
}

/// Whether a container's `imageID` (`name@sha256:…`, or a bare digest) names this record.
fn names(record: &ImageRecord, image_id: &str) -> bool {
    let digest = image_id.rsplit('@').next().unwrap_or(image_id);
    [
        &record.repo_digest,
        &record.manifest_digest,
        &record.config_digest,
    ]
    .iter()
    .any(|d| d.as_str() == digest)
}

/// The images that may be removed, in the order they should be: none that a container's
/// `imageID` in `in_use` names, none used (or pulled) less than `min_age` ago, least recently
/// used first (then the older pull, then by reference, so the order is total).
pub fn candidates<'a>(
    records: &'a [ImageRecord],
    in_use: &HashSet<String>,
    now: jiff::Timestamp,
    min_age: Duration,
) -> Vec<&'a ImageRecord> {
    let young = |t: jiff::Timestamp| now.duration_since(t).as_secs_f64() < min_age.as_secs_f64();
    let mut out: Vec<&ImageRecord> = records
        .iter()
        .filter(|r| !in_use.iter().any(|id| names(r, id)))
        .filter(|r| !young(r.last_used) && !young(r.pulled_at))
        .collect();
    out.sort_by(|a, b| {
        (a.last_used, a.pulled_at, &a.reference).cmp(&(b.last_used, b.pulled_at, &b.reference))
    });
    out
}

/// The blob and layer digests (hex) that `records` need kept.
pub fn referenced(records: &[ImageRecord]) -> (HashSet<String>, HashSet<String>) {
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).to_string();
    let mut blobs = HashSet::new();
    let mut layers = HashSet::new();
    for r in records {
        for d in [&r.repo_digest, &r.manifest_digest, &r.config_digest] {
            blobs.insert(hex(d));
        }
        for l in &r.layers {
            blobs.insert(hex(&l.digest));
            layers.insert(hex(&l.digest));
        }
    }
    (blobs, layers)
}

/// The layers (digest hex) under `layers_dir` (`<store>/layers/sha256`) that overlay mounts in
/// `mountinfo` (the text of `/proc/self/mountinfo`) read from: a container's root filesystem
/// keeps its lower dirs even if its image was re-pulled under a new digest.
pub fn mounted_layers(mountinfo: &str, layers_dir: &Path) -> HashSet<String> {
    let prefix = format!("{}/", layers_dir.display());
    let mut found = HashSet::new();
    for line in mountinfo.lines() {
        let Some((_, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = after.split(' ');
        if fields.next() != Some("overlay") {
            continue;
        }
        let options = fields.nth(1).unwrap_or_default();
        for option in options.split(',') {
            let Some(lower) = option.strip_prefix("lowerdir=") else {
                continue;
            };
            for dir in lower.split(':') {
                let dir = crate::real::volumes::mounts_host::unescape(dir);
                if let Some(rest) = dir.strip_prefix(&prefix) {
                    if let Some(hex) = rest.split('/').next() {
                        found.insert(hex.to_string());
                    }
                }
            }
        }
    }
    found
}

/// What one collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Usage before, in percent.
    pub percent: u64,
    /// Bytes that had to go (0: usage was under the high threshold).
    pub needed: u64,
    /// Bytes freed.
    pub freed: u64,
    /// The references removed, in the order they went.
    pub removed: Vec<String>,
}

impl GcReport {
    /// Whether it fell short of what was needed (the kubelet's `FreeDiskSpaceFailed`).
    pub fn fell_short(&self) -> bool {
        self.freed < self.needed
    }

    /// The kubelet's words for falling short.
    pub fn shortfall_message(&self) -> String {
        format!(
            "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
            self.needed, self.freed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::LayerRecord;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    fn image(name: &str, used: &str, layers: &[&str]) -> ImageRecord {
        ImageRecord {
            reference: format!("docker.io/library/{name}:1"),
            repo_digest: format!("sha256:{name}-index"),
            manifest_digest: format!("sha256:{name}-manifest"),
            config_digest: format!("sha256:{name}-config"),
            layers: layers
                .iter()
                .map(|l| LayerRecord {
                    digest: format!("sha256:{l}"),
                    media_type: String::new(),
                    size: 1,
                    diff_id: String::new(),
                })
                .collect(),
            size: 1,
            pulled_at: at("2026-01-01T00:00:00Z"),
            last_used: at(used),
        }
    }

    #[test]
    fn thresholds_and_bytes_to_free() {
        let policy = GcPolicy::default();
        let disk = |available| DiskUsage {
            capacity: 1000,
            available,
        };
        assert_eq!(disk(160).percent(), 84);
        assert_eq!(disk(160).to_free(&policy), None);
        assert_eq!(disk(150).percent(), 85);
        assert_eq!(disk(150).to_free(&policy), Some(50));
        assert_eq!(disk(0).to_free(&policy), Some(200));
        let zero = DiskUsage {
            capacity: 0,
            available: 0,
        };
        assert_eq!(zero.to_free(&policy), None);
        let all = GcPolicy {
            high_threshold_percent: 0,
            low_threshold_percent: 0,
            ..policy
        };
        assert_eq!(
            all.validate(),
            Err(PolicyError::Low { low: 0, high: 0 }),
            "low must be below high"
        );
        let over = GcPolicy {
            high_threshold_percent: 101,
            ..policy
        };
        assert_eq!(
            over.validate().map_err(|e| e.to_string()),
            Err("--image-gc-high-threshold 101 must be between 0 and 100".into())
        );
        assert_eq!(policy.validate(), Ok(policy));
    }

    #[test]
    fn unused_old_images_go_least_recently_used_first() {
        let records = vec![
            image("a", "2026-01-03T00:00:00Z", &["l1"]),
            image("b", "2026-01-02T00:00:00Z", &["l1", "l2"]),
            image("c", "2026-01-04T00:00:00Z", &["l3"]),
            image("d", "2026-01-05T00:09:00Z", &["l4"]),
        ];
        let now = at("2026-01-05T00:10:00Z");
        let order = |in_use: &[&str]| -> Vec<String> {
            let in_use = in_use.iter().map(|s| s.to_string()).collect();
            candidates(&records, &in_use, now, Duration::from_secs(120))
                .into_iter()
                .map(|r| r.reference.clone())
                .collect()
        };
        // d was used a minute ago: too young.
        assert_eq!(
            order(&[]),
            [
                "docker.io/library/b:1",
                "docker.io/library/a:1",
                "docker.io/library/c:1"
            ]
        );
        // A container's imageID keeps its image, by any of its digests.
        assert_eq!(
            order(&["docker.io/library/b@sha256:b-index", "sha256:c-config"]),
            ["docker.io/library/a:1"]
        );
        let (blobs, layers) = referenced(&records[..2]);
        assert!(blobs.contains("a-config") && blobs.contains("l2"));
        assert_eq!(layers.len(), 2);
    }

    #[test]
    fn mounted_overlays_name_their_layers() {
        let layers = Path::new("/var/lib/skiff-agent/images/layers/sha256");
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/skiff-agent/containers/c1/rootfs rw,relatime - overlay overlay rw,lowerdir=/var/lib/skiff-agent/images/layers/sha256/aaa/fs:/var/lib/skiff-agent/images/layers/sha256/bbb/fs,upperdir=/x/upper,workdir=/x/work,index=off
91 22 0:51 / /other rw - overlay overlay rw,lowerdir=/elsewhere/ccc/fs,upperdir=/y/u,workdir=/y/w
";
        let found = mounted_layers(mountinfo, layers);
        let want: HashSet<String> = ["aaa", "bbb"].map(String::from).into();
        assert_eq!(found, want);
    }
}
