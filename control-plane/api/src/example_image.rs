//! The project's example image, built from the host's statically linked busybox: its one layer
//! ([`layer`]) and the whole image as an OCI image layout tarball ([`oci_archive`]) that a node
//! agent imports, so that a newcomer can run a pod without a registry. The CLI writes it with
//! these functions and the tests build their images from the same layer and settings.
//!
//! The layer holds `/bin/busybox` (Debian's `busybox-static`), a symlink in `/bin` for each of
//! its applets, `/etc/passwd` and `/etc/group` (root and nobody 65534), `/tmp` (1777) and empty
//! `/root`, `/proc`, `/sys`, `/dev`. The image's command ([`EXAMPLE_CMD`]) serves the container's
//! hostname over HTTP on [`EXAMPLE_PORT`]. Every entry and document has fixed times and owners,
//! so the same busybox always gives the same bytes and digests.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

/// Where Debian's `busybox-static` installs its statically linked busybox.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// The example image's command: a web server answering with the container's hostname and
/// logging each request; the shell stays PID 1 and ends at SIGTERM (a PID 1 with no handler
/// ignores it, and the pod would wait out its whole grace period).
pub const EXAMPLE_CMD: [&str; 3] = [
    "sh",
    "-c",
    "mkdir -p /www; hostname > /www/index.html; trap 'exit 0' TERM; \
     httpd -f -v -p 8080 -h /www & wait",
];
/// The port the example image serves on.
pub const EXAMPLE_PORT: u16 = 8080;
/// The example image's environment.
pub const EXAMPLE_ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SKIFF_EXAMPLE=1",
];
/// The example image's working directory.
pub const EXAMPLE_WORKING_DIR: &str = "/";

/// The modification time of every entry (2024-01-01T00:00:00Z), for reproducible bytes.
const MTIME: u64 = 1_704_067_200;
/// The same instant, as image configs write it.
const CREATED: &str = "2024-01-01T00:00:00Z";
/// Applets the example command needs.
const NEEDED_APPLETS: [&str; 4] = ["sh", "httpd", "hostname", "mkdir"];

const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation containerd (and `ctr images import`) reads an image's full name from.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation naming an image in a layout (here: its tag).
pub const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Why the example image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExampleImageError {
    /// The busybox binary cannot be read.
    #[error("reading {}: {source} (the example image needs a statically linked busybox there; Debian's busybox-static package provides /bin/busybox)", path.display())]
    ReadBusybox {
        /// The busybox path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Asking busybox for its applets failed.
    #[error("running {} --list: {message} (Debian's busybox-static package provides a busybox that runs anywhere)", path.display())]
    ListApplets {
        /// The busybox path given.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The busybox lacks an applet the example command needs.
    #[error("{} lacks the applets {missing} that the example command needs (Debian's busybox-static package has them)", path.display())]
    MissingApplets {
        /// The busybox path given.
        path: PathBuf,
        /// The applets missing, space separated.
        missing: String,
    },
    /// The image name cannot be used.
    #[error("invalid image name {name:?}: {reason}")]
    Name {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the tar in memory failed.
    #[error("writing the example image: {0}")]
    Write(#[from] io::Error),
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A root-owned tar header with the fixed time.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// The applets `busybox --list` names, without `busybox` itself.
fn applets(busybox: &Path) -> Result<Vec<String>, ExampleImageError> {
    let list_error = |message: String| ExampleImageError::ListApplets {
        path: busybox.to_path_buf(),
        message,
    };
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| list_error(e.to_string()))?;
    if !output.status.success() {
        return Err(list_error(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    let missing: Vec<&str> = NEEDED_APPLETS
        .into_iter()
        .filter(|needed| !applets.iter().any(|a| a == needed))
        .collect();
    if !missing.is_empty() {
        return Err(ExampleImageError::MissingApplets {
            path: busybox.to_path_buf(),
            missing: missing.join(" "),
        });
    }
    Ok(applets)
}

/// The example image's only layer, an uncompressed tar (see the module comment), with the
/// binary at `busybox` (normally [`DEFAULT_BUSYBOX`]) as `/bin/busybox`.
pub fn layer(busybox: &Path) -> Result<Vec<u8>, ExampleImageError> {
    let binary = std::fs::read(busybox).map_err(|source| ExampleImageError::ReadBusybox {
        path: busybox.to_path_buf(),
        source,
    })?;
    let applets = applets(busybox)?;
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        tar.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            io::empty(),
        )?;
    }
    tar.append_data(
        &mut header(tar::EntryType::Regular, 0o755, binary.len() as u64),
        "bin/busybox",
        &binary[..],
    )?;
    for applet in &applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let passwd =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\nnobody:x:65534:\n";
    for (path, content) in [("etc/passwd", passwd), ("etc/group", group)] {
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o644, content.len() as u64),
            path,
            content.as_bytes(),
        )?;
    }
    Ok(tar.into_inner()?)
}

/// This machine's architecture as image configs (and Go) name it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// The example image's config for a layer whose uncompressed tar has digest `diff_id`: this
/// machine's architecture, [`EXAMPLE_CMD`], [`EXAMPLE_ENV`], [`EXAMPLE_WORKING_DIR`] and
/// [`EXAMPLE_PORT`] exposed.
pub fn config(diff_id: &str) -> serde_json::Value {
    json!({
        "created": CREATED,
        "architecture": go_arch(),
        "os": "linux",
        "config": {
            "Cmd": EXAMPLE_CMD,
            "Env": EXAMPLE_ENV,
            "WorkingDir": EXAMPLE_WORKING_DIR,
            "ExposedPorts": {format!("{EXAMPLE_PORT}/tcp"): {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "skiff example image"}],
    })
}

/// `name` normalised as Docker does (`busybox` is `docker.io/library/busybox:latest`), and its
/// tag. Names with a digest are refused: the archive is what makes the digest.
pub fn normalise_name(name: &str) -> Result<(String, String), ExampleImageError> {
    let invalid = |reason: &str| ExampleImageError::Name {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.contains('@') {
        return Err(invalid(
            "a digest cannot be given: the image's digest comes from its content",
        ));
    }
    if name.contains("://") {
        return Err(invalid("a name names a registry host, not a URL"));
    }
    let (path, tag) = match name.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (name, "latest"),
    };
    let tag_ok = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !tag_ok {
        return Err(invalid(
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ));
    }
    let mut components: Vec<&str> = path.split('/').collect();
    let domain = match components.as_slice() {
        [first, _, ..] if first.contains(['.', ':']) || *first == "localhost" => {
            let domain = components.remove(0);
            if domain.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(invalid("the registry host must be lowercase"));
            }
            domain.to_string()
        }
        _ => "docker.io".to_string(),
    };
    if domain == "docker.io" && components.len() == 1 {
        components.insert(0, "library");
    }
    for component in &components {
        let ok = component
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && component.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !ok {
            return Err(invalid(
                "each path component is lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
    }
    Ok((
        format!("{domain}/{}:{tag}", components.join("/")),
        tag.to_string(),
    ))
}

/// A blob of the layout: its media type, digest and bytes.
struct Blob {
    media_type: &'static str,
    digest: String,
    data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: sha256(&data),
            data,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// The example image (busybox from `busybox`) as an OCI image layout tarball named `name`
/// (normalised; `index.json` carries the full name as `io.containerd.image.name` and the tag as
/// `org.opencontainers.image.ref.name`). The layer is uncompressed; the blobs come before
/// `index.json`. Deterministic: the same busybox and name give the same bytes.
pub fn oci_archive(busybox: &Path, name: &str) -> Result<Vec<u8>, ExampleImageError> {
    let (full_name, tag) = normalise_name(name)?;
    let layer = Blob::new(OCI_LAYER, layer(busybox)?);
    let config = Blob::new(
        OCI_CONFIG,
        serde_json::to_vec(&config(&layer.digest)).map_err(io::Error::other)?,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob::new(
        OCI_MANIFEST,
        serde_json::to_vec(&manifest).map_err(io::Error::other)?,
    );
    let mut entry = manifest.descriptor();
    entry["platform"] = json!({"architecture": go_arch(), "os": "linux"});
    entry["annotations"] = json!({
        CONTAINERD_NAME_ANNOTATION: full_name,
        OCI_REF_NAME_ANNOTATION: tag,
    });
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]});
    let index = serde_json::to_vec(&index).map_err(io::Error::other)?;

    let mut tar = tar::Builder::new(Vec::new());
    let file = |tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            path,
            data,
        )
    };
    file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for dir in ["blobs", "blobs/sha256"] {
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            dir,
            io::empty(),
        )?;
    }
    for blob in [&layer, &config, &manifest] {
        let hex = blob.digest.trim_start_matches("sha256:");
        file(&mut tar, &format!("blobs/sha256/{hex}"), &blob.data)?;
    }
    file(&mut tar, "index.json", &index)?;
    Ok(tar.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    fn busybox() -> Option<PathBuf> {
        let path = PathBuf::from(DEFAULT_BUSYBOX);
        if path.exists() {
            return Some(path);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{DEFAULT_BUSYBOX} is missing under CI: install Debian's busybox-static"
        );
        eprintln!("skipping: {DEFAULT_BUSYBOX} is missing (install Debian's busybox-static)");
        None
    }

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let kind = entry.header().entry_type();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            out.push((path, kind, data));
        }
        out
    }

    #[test]
    fn names_normalise_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest", "latest"),
            ("skiff/example:1", "docker.io/skiff/example:1", "1"),
            ("localhost/web", "localhost/web:latest", "latest"),
            ("127.0.0.1:5000/a/b:v1.2", "127.0.0.1:5000/a/b:v1.2", "v1.2"),
            ("docker.io/busybox:x", "docker.io/library/busybox:x", "x"),
        ];
        for (name, full, tag) in cases {
            let got = normalise_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, (full.to_string(), tag.to_string()), "{name}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox@sha256:00", "digest"),
            ("busybox:-x", "tag"),
            ("a//b", "path component"),
            ("http://x/y", "URL"),
        ] {
            let e = normalise_name(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{e} names {bad:?}");
        }
    }

    #[test]
    fn a_missing_busybox_is_named_with_its_package() {
        let missing = Path::new("/nonexistent/busybox");
        for e in [
            layer(missing).expect_err("missing"),
            oci_archive(missing, "busybox").expect_err("missing"),
        ] {
            let text = e.to_string();
            assert!(text.contains("/nonexistent/busybox"), "{text}");
            assert!(text.contains("busybox-static"), "{text}");
        }
    }

    #[test]
    fn a_binary_without_the_applets_is_refused() {
        // `echo --list` prints "--list": a program that runs but offers none of the applets.
        let echo = Path::new("/bin/echo");
        let e = layer(echo).expect_err("lacks the applets").to_string();
        assert!(e.contains("sh httpd hostname mkdir"), "{e}");
        assert!(e.contains("/bin/echo"), "{e}");
        assert!(e.contains("busybox-static"), "{e}");
    }

    #[test]
    fn the_layer_holds_busybox_applets_and_users() {
        let Some(busybox) = busybox() else { return };
        let tar = layer(&busybox).expect("layer");
        let entries = entries(&tar);
        let find = |p: &str| entries.iter().find(|(path, _, _)| path == p);
        let (_, kind, data) = find("bin/busybox").expect("bin/busybox");
        assert_eq!(*kind, tar::EntryType::Regular);
        assert_eq!(data, &std::fs::read(&busybox).expect("busybox"));
        for applet in ["bin/sh", "bin/httpd", "bin/hostname"] {
            assert_eq!(find(applet).expect(applet).1, tar::EntryType::Symlink);
        }
        let passwd =
            String::from_utf8(find("etc/passwd").expect("passwd").2.clone()).expect("utf8");
        assert!(passwd.contains("nobody:x:65534:65534"), "{passwd}");
        assert_eq!(find("tmp").expect("tmp").1, tar::EntryType::Directory);
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            assert_eq!(entry.header().mtime().expect("mtime"), MTIME);
            assert_eq!(entry.header().uid().expect("uid"), 0);
        }
    }

    #[test]
    fn the_archive_is_a_complete_deterministic_oci_layout() {
        let Some(busybox) = busybox() else { return };
        let archive = oci_archive(&busybox, "skiff/example:1").expect("archive");
        assert_eq!(
            archive,
            oci_archive(&busybox, "skiff/example:1").expect("again"),
            "the same busybox gives the same bytes"
        );
        let entries = entries(&archive);
        let names: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(names.first(), Some(&"oci-layout"));
        assert_eq!(names.last(), Some(&"index.json"));
        let files: HashMap<&str, &Vec<u8>> = entries
            .iter()
            .filter(|(_, kind, _)| *kind == tar::EntryType::Regular)
            .map(|(p, _, d)| (p.as_str(), d))
            .collect();
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256(data), format!("sha256:{hex}"), "{path}");
            }
        }
        let blob = |digest: &str| -> serde_json::Value {
            let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
            serde_json::from_slice(files.get(path.as_str()).expect("blob")).expect("json")
        };
        let index: serde_json::Value =
            serde_json::from_slice(files.get("index.json").expect("index")).expect("json");
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["annotations"][CONTAINERD_NAME_ANNOTATION],
            "docker.io/skiff/example:1"
        );
        assert_eq!(entry["annotations"][OCI_REF_NAME_ANNOTATION], "1");
        let manifest = blob(entry["digest"].as_str().expect("digest"));
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        let config = blob(manifest["config"]["digest"].as_str().expect("config"));
        assert_eq!(config["config"]["Cmd"], json!(EXAMPLE_CMD));
        assert_eq!(config["config"]["WorkingDir"], "/");
        assert_eq!(config["config"]["ExposedPorts"], json!({"8080/tcp": {}}));
        assert_eq!(config["config"]["Env"], json!(EXAMPLE_ENV));
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("layer");
        let layer_bytes = files
            .get(
                format!(
                    "blobs/sha256/{}",
                    layer_digest.trim_start_matches("sha256:")
                )
                .as_str(),
            )
            .expect("layer blob");
        assert_eq!(
            config["rootfs"]["diff_ids"][0].as_str(),
            Some(sha256(layer_bytes).as_str()),
            "the layer is uncompressed: its digest is its diff ID"
        );
        assert_eq!(**layer_bytes, layer(&busybox).expect("layer"));
    }
}
