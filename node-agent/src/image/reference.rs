//! Image references as Kubernetes users write them, normalised the way Docker and the kubelet do:
//! `busybox` is `docker.io/library/busybox:latest`, `user/app:1` is `docker.io/user/app:1`, a first
//! path component with a `.` or `:` (or `localhost`) names the registry. Parsing itself is
//! oci-spec's port of Docker's grammar; this module adds the normal form, the kubelet's `imageID`
//! shape, and errors that say what is wrong with a reference.

use std::fmt;

use oci_client::{ParseError, Reference};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference: registry, repository, and a tag and/or a digest (a
/// reference with neither gets the tag `latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// A reference that cannot be parsed; the kubelet reports it as `InvalidImageName`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image name {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let error = |reason: String| ReferenceError {
            reference: input.to_string(),
            reason,
        };
        if let Some(reason) = obvious_problem(input) {
            return Err(error(reason));
        }
        let parsed = Reference::try_from(input).map_err(|e| error(explain(input, &e)))?;
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: parsed.tag().map(str::to_string),
            digest: parsed.digest().map(str::to_string),
        })
    }

    /// The registry host, with its port if one was given (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when the reference had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The image ID as the kubelet reports it in `containerStatuses[].imageID`:
    /// `docker.io/library/busybox@sha256:…`.
    pub fn image_id(&self, digest: &str) -> String {
        format!("{}@{}", self.name(), digest)
    }

    /// What to ask a registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Problems worth a precise message, checked before the grammar (whose own error for all of these
/// is only "invalid reference format").
fn obvious_problem(input: &str) -> Option<String> {
    if input.is_empty() {
        return Some("the reference is empty".into());
    }
    if input.chars().any(char::is_whitespace) {
        return Some("a reference must not contain whitespace".into());
    }
    if input.contains("://") {
        return Some("a reference names a registry host, not a URL: drop the scheme".into());
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (input, None),
    };
    if let Some(digest) = digest {
        if digest.is_empty() {
            return Some("nothing follows '@': a digest looks like sha256:<64 hex digits>".into());
        }
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return Some(format!(
                "digest {digest:?} has no algorithm: a digest looks like sha256:<64 hex digits>"
            ));
        };
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => {
                return Some(format!(
                    "the digest's algorithm {algorithm:?} is not one of sha256, sha384, sha512"
                ))
            }
        };
        if hex.len() != want {
            return Some(format!(
                "the digest has the wrong length for {algorithm} ({} hex digits, not {want})",
                hex.len()
            ));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Some("the digest must be lowercase hex digits".into());
        }
    }
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    if name.is_empty() {
        return Some("the repository name is empty".into());
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some("the repository name has an empty path component".into());
    }
    if let Some(tag) = tag {
        if tag.is_empty() {
            return Some("nothing follows ':': the tag is empty".into());
        }
        if tag.len() > 128 {
            return Some("the tag is longer than 128 characters".into());
        }
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Some(format!(
                "tag {tag:?} may hold only letters, digits, '_', '.' and '-' (not first)"
            ));
        }
    }
    // The registry part (before the first '/') may hold upper case; the repository may not.
    let repository = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => name,
    };
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(format!("repository name {repository:?} must be lowercase"));
    }
    None
}

/// Says what the grammar's error means.
fn explain(input: &str, error: &ParseError) -> String {
    match error {
        ParseError::DigestInvalidLength => {
            "the digest has the wrong length for its algorithm (sha256 takes 64 hex digits)".into()
        }
        ParseError::DigestUnsupported => {
            "the digest's algorithm is not one of sha256, sha384, sha512".into()
        }
        ParseError::DigestInvalidFormat => {
            "the digest is malformed: a digest looks like sha256:<64 hex digits>".into()
        }
        ParseError::NameTooLong => "the repository name is longer than 255 characters".into(),
        ParseError::NameContainsUppercase => "the repository name must be lowercase".into(),
        ParseError::NameEmpty => "the repository name is empty".into(),
        ParseError::TagInvalidFormat => "the tag is malformed".into(),
        ParseError::ReferenceInvalidFormat => {
            if input.contains('@') {
                "invalid reference format (a digest looks like sha256:<64 hex digits>; \
                 path components are lowercase letters and digits joined by '.', '_', '__' or '-')"
                    .into()
            } else {
                "invalid reference format (path components are lowercase letters and digits \
                 joined by '.', '_', '__' or '-')"
                    .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_docker_and_the_kubelet() {
        let digest_ref = format!("127.0.0.1:5000/x/y@{D}");
        let tagged_digest = format!("busybox:1.36@{D}");
        // input, registry, repository, tag, digest, normal form
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            String,
        );
        let cases: Vec<Case> = vec![
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
                "docker.io/library/busybox:1.36".into(),
            ),
            (
                "user/app:1",
                "docker.io",
                "user/app",
                Some("1"),
                None,
                "docker.io/user/app:1".into(),
            ),
            (
                "docker.io/nginx",
                "docker.io",
                "library/nginx",
                Some("latest"),
                None,
                "docker.io/library/nginx:latest".into(),
            ),
            (
                "index.docker.io/library/nginx:1",
                "docker.io",
                "library/nginx",
                Some("1"),
                None,
                "docker.io/library/nginx:1".into(),
            ),
            (
                &digest_ref,
                "127.0.0.1:5000",
                "x/y",
                None,
                Some(D),
                digest_ref.clone(),
            ),
            (
                &tagged_digest,
                "docker.io",
                "library/busybox",
                Some("1.36"),
                Some(D),
                format!("docker.io/library/busybox:1.36@{D}"),
            ),
            (
                "localhost/x",
                "localhost",
                "x",
                Some("latest"),
                None,
                "localhost/x:latest".into(),
            ),
            (
                "localhost:5000/a/b/c:v1.2_rc-3",
                "localhost:5000",
                "a/b/c",
                Some("v1.2_rc-3"),
                None,
                "localhost:5000/a/b/c:v1.2_rc-3".into(),
            ),
            (
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io",
                "pause",
                Some("3.9"),
                None,
                "registry.k8s.io/pause:3.9".into(),
            ),
            (
                "Quay.IO/some/app",
                "Quay.IO",
                "some/app",
                Some("latest"),
                None,
                "Quay.IO/some/app:latest".into(),
            ),
            (
                "my_user/my__app-x.y:Tag",
                "docker.io",
                "my_user/my__app-x.y",
                Some("Tag"),
                None,
                "docker.io/my_user/my__app-x.y:Tag".into(),
            ),
        ];
        for (input, registry, repository, tag, digest, whole) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest(), digest, "{input}");
            assert_eq!(r.to_string(), whole, "{input}");
            // The normal form parses to itself.
            assert_eq!(
                ImageRef::parse(&whole).expect("normal form parses"),
                r,
                "{input}"
            );
        }
    }

    #[test]
    fn image_id_and_manifest_reference() {
        let r = ImageRef::parse("busybox").expect("parses");
        assert_eq!(r.image_id(D), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.manifest_reference(), "latest");
        let pinned = ImageRef::parse(&format!("busybox:1@{D}")).expect("parses");
        assert_eq!(pinned.manifest_reference(), D);
        assert_eq!(pinned.name(), "docker.io/library/busybox");
    }

    #[test]
    fn invalid_references_say_what_is_wrong() {
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let long_name = "a/".repeat(130) + "b";
        let upper_digest = format!("busybox@sha256:{}", D[7..].to_uppercase());
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("busy box", "whitespace"),
            ("https://docker.io/library/busybox", "drop the scheme"),
            ("Busybox", "must be lowercase"),
            ("docker.io/Library/busybox", "must be lowercase"),
            ("busybox:", "tag is empty"),
            ("busybox:-x", "tag \"-x\""),
            ("busybox:a/b:c$", "tag \"c$\""),
            (&long_tag, "longer than 128"),
            ("busybox@", "nothing follows '@'"),
            ("busybox@1234", "no algorithm"),
            ("busybox@sha256:1234", "wrong length"),
            (
                "busybox@md5:0123456789abcdef0123456789abcdef",
                "not one of sha256",
            ),
            (&upper_digest, "lowercase hex"),
            ("/busybox", "empty path component"),
            ("a//b", "empty path component"),
            (":latest", "repository name is empty"),
            ("busy!box", "invalid reference format"),
            ("a/-b", "invalid reference format"),
            (&long_name, "longer than 255"),
        ];
        for (input, want) in cases {
            let e = ImageRef::parse(input).expect_err(input);
            assert_eq!(e.reference, input);
            assert!(
                e.reason.contains(want),
                "{input:?}: reason {:?} lacks {want:?}",
                e.reason
            );
            assert!(e
                .to_string()
                .starts_with(&format!("invalid image name {input:?}: ")));
        }
    }
}
