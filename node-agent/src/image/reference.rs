//! Image references as Kubernetes users write them, normalised the way Docker and the kubelet do:
//! `busybox` is `docker.io/library/busybox:latest`, `user/app:1` is `docker.io/user/app:1`, a first
//! path component with a `.` or `:` (or `localhost`) names the registry; the kubelet's
//! `imageID` shape; errors that say what is wrong with a reference.
//!
//! The grammar is Docker's (distribution/reference), checked here by hand rather than with
//! oci-spec's `Reference::try_from`: that one compiles a single large regular expression whose
//! matcher stays allocated for the life of the process, 7 MiB resident after the first image
//! and 20 MiB while it is built (heaptrack on the agent, 2026-12-05), against an agent target of
//! 30 MiB in all. The registry client still gets oci-spec's `Reference`, built from the parts.

use std::fmt;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's older name, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The longest repository name Docker accepts.
const NAME_MAX: usize = 255;

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
        // obvious_problem has checked the tag and the digest; the name's grammar is left.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (input, None),
        };
        let (name, tag) = split_tag(rest);
        if !name_grammar(name) {
            return Err(error(invalid_format(input)));
        }
        let (registry, repository) = split_registry(name);
        if repository.len() > NAME_MAX {
            return Err(error(format!(
                "the repository name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
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
    let (name, tag) = split_tag(rest);
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

/// `name[:tag]` split at the last `:` that comes after the last `/` (before it, the `:` is a
/// registry's port).
fn split_tag(rest: &str) -> (&str, Option<&str>) {
    let last_slash = rest.rfind('/');
    match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    }
}

/// Docker's `name`: an optional `domain/` then path components joined by `/`.
fn name_grammar(name: &str) -> bool {
    let components: Vec<&str> = name.split('/').collect();
    let path = match components.split_first() {
        Some((first, rest)) if !rest.is_empty() && domain_grammar(first) => rest,
        _ => &components[..],
    };
    !path.is_empty() && path.iter().all(|c| path_component_grammar(c))
}

/// `domain-component ('.' domain-component)* (':' [0-9]+)?`, a domain component being letters
/// and digits with inner `-`.
fn domain_grammar(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    host.split('.').all(component_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or any number of `-`.
fn path_component_grammar(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = component.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// The registry and the repository of a name, as Docker splits them: the first component names
/// a registry when it has a `.` or a `:` or is `localhost`; otherwise (and for Docker Hub's
/// older name) the registry is Docker Hub, where a one-component name is an official image
/// under `library/`.
fn split_registry(name: &str) -> (String, String) {
    let (mut registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry == DOCKER_HUB_LEGACY {
        registry = DOCKER_HUB.to_string();
    }
    if registry == DOCKER_HUB && !repository.contains('/') {
        return (registry, format!("library/{repository}"));
    }
    (registry, repository)
}

/// The message for a name outside the grammar.
fn invalid_format(input: &str) -> String {
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
    fn the_grammar_agrees_with_oci_specs_parser() {
        // oci-spec's regex-based parser, in a test only, as the reference for what is accepted
        // and how it splits.
        let inputs = [
            "a",
            "a__b",
            "a___b",
            "a-----b",
            "a._b",
            "a.b",
            "ab.",
            "_ab",
            "a/b/c/d",
            "registry-1.docker.io/x/y",
            "-reg.io/x",
            "reg-.io/x",
            "reg.io:/x",
            "reg.io:5000/x",
            "reg.io:50a0/x",
            "a:5000",
            "a:5000/b",
            "localhost:5000/b:t",
            "1.2.3.4/x",
            "1.2.3.4:80/x:y",
            "x.y.z/a__b-c.d/e:TAG_1.0-rc",
            "docker.io/a",
            "index.docker.io/a/b",
            "reg.io/a/b/",
            "a/b:c:d",
        ];
        for input in inputs {
            let ours = ImageRef::parse(input);
            let theirs = oci_client::Reference::try_from(input);
            match (&ours, &theirs) {
                (Ok(o), Ok(t)) => {
                    assert_eq!(o.registry(), t.registry(), "{input}");
                    assert_eq!(o.repository(), t.repository(), "{input}");
                    assert_eq!(o.tag(), t.tag(), "{input}");
                    assert_eq!(o.digest(), t.digest(), "{input}");
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{input}: ours {ours:?}, oci-spec's {theirs:?}"),
            }
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
