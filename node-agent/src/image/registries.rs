//! Where an image is pulled from and with which credentials: the k3s `registries.yaml` shape
//! (`--registry-config`) and Docker config JSON from `kubernetes.io/dockerconfigjson` pull secrets.
//!
//! Semantics follow k3s/containerd: a registry's mirror endpoints are tried in order (a `"*"`
//! mirror serves every registry without its own entry), then the registry's default endpoint
//! (`registry-1.docker.io` for `docker.io`) unless the caller disables it, as k3s's
//! `--disable-default-registry-endpoint` does. `rewrite` rules change the repository path on
//! mirror endpoints only. An endpoint is plain HTTP when its URL says `http://`; one given without
//! a scheme, and every default endpoint, is HTTPS unless the host is `localhost` or a loopback
//! address, which Docker treats as plain HTTP. `configs` holds each endpoint host's credentials
//! and TLS settings (a `"*"` entry applies to hosts without their own). Credentials from a pull
//! secret are matched against the endpoint's host, so a secret for `docker.io` is not sent to a
//! mirror; they take precedence over `configs`. Everything here is pure: no file is read except
//! by [`RegistryConfig::load`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use regex::Regex;
use serde::Deserialize;

use super::reference::{ImageRef, DOCKER_HUB};

/// The host behind `docker.io`'s default endpoint, as containerd resolves it.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A registry configuration that cannot be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The file could not be read.
    #[error("reading registry configuration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content is wrong.
    #[error("registry configuration {where_}: {message}")]
    Invalid {
        /// The file, or "(inline)".
        where_: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A pull secret's `.dockerconfigjson` is wrong.
    #[error("image pull secret: {0}")]
    PullSecret(String),
}

/// A user name and password for HTTP basic authentication (and registry token exchange).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password (never printed).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS settings for one endpoint host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Extra CA certificate(s), PEM, to trust for this host.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
}

/// One place to try for an image, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to.
    pub host: String,
    /// Plain HTTP rather than HTTPS.
    pub plain_http: bool,
    /// The repository path to ask this endpoint for (after mirror rewrites).
    pub repository: String,
    /// A mirror rather than the registry's own default endpoint.
    pub is_mirror: bool,
    /// TLS settings from `configs`.
    pub tls: TlsSettings,
    /// Credentials from `configs`, if any.
    pub auth: Option<Credentials>,
}

impl Endpoint {
    /// `http://host` or `https://host`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// The name pull secrets are matched against: the host, except that Docker Hub's default
    /// endpoint answers to `docker.io`.
    fn secret_host(&self) -> &str {
        if !self.is_mirror && self.host == DOCKER_HUB_ENDPOINT {
            DOCKER_HUB
        } else {
            &self.host
        }
    }

    /// The credentials to use here: the first pull secret entry matching this endpoint, else the
    /// registry configuration's.
    pub fn credentials<'a>(&'a self, secrets: &'a [DockerConfigJson]) -> Option<&'a Credentials> {
        secrets
            .iter()
            .find_map(|s| s.credentials_for(self.secret_host(), &self.repository))
            .or(self.auth.as_ref())
    }
}

/// A parsed, checked `registries.yaml`.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    mirrors: BTreeMap<String, MirrorSpec>,
    configs: BTreeMap<String, HostSpec>,
    /// Do not fall back to a registry's default endpoint after its mirrors (k3s's
    /// `--disable-default-registry-endpoint`; not part of the file).
    pub disable_default_endpoint: bool,
}

#[derive(Debug, Clone)]
struct MirrorSpec {
    endpoints: Vec<EndpointUrl>,
    rewrites: Vec<(Regex, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct EndpointUrl {
    host: String,
    plain_http: bool,
}

#[derive(Debug, Clone, Default)]
struct HostSpec {
    auth: Option<Credentials>,
    tls: TlsSettings,
}

// The file's shape, as k3s documents it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorShape>,
    #[serde(default)]
    configs: BTreeMap<String, ConfigShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorShape {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default)]
    rewrite: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigShape {
    auth: Option<AuthShape>,
    tls: Option<TlsShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthShape {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsShape {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

impl RegistryConfig {
    /// Reads and checks a `registries.yaml` file.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistriesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks `registries.yaml` text.
    pub fn from_yaml(text: &str) -> Result<Self, RegistriesError> {
        Self::parse(text, "(inline)")
    }

    fn parse(text: &str, where_: &str) -> Result<Self, RegistriesError> {
        let invalid = |message: String| RegistriesError::Invalid {
            where_: where_.to_string(),
            message,
        };
        let shape: FileShape = if text.trim().is_empty() {
            FileShape::default()
        } else {
            serde_saphyr::from_str::<Option<FileShape>>(text)
                .map_err(|e| invalid(e.to_string()))?
                .unwrap_or_default()
        };
        let mut mirrors = BTreeMap::new();
        for (registry, mirror) in shape.mirrors {
            let mut endpoints = Vec::new();
            for url in &mirror.endpoint {
                let endpoint = parse_endpoint_url(url)
                    .map_err(|m| invalid(format!("mirrors.{registry:?}.endpoint {url:?}: {m}")))?;
                endpoints.push(endpoint);
            }
            let mut rewrites = Vec::new();
            for (pattern, replacement) in mirror.rewrite {
                let regex = Regex::new(&pattern).map_err(|e| {
                    invalid(format!("mirrors.{registry:?}.rewrite {pattern:?}: {e}"))
                })?;
                rewrites.push((regex, replacement));
            }
            mirrors.insert(
                registry,
                MirrorSpec {
                    endpoints,
                    rewrites,
                },
            );
        }
        let mut configs = BTreeMap::new();
        for (key, config) in shape.configs {
            let at = |field: &str, m: &str| invalid(format!("configs.{key:?}.{field}: {m}"));
            let host = if key == "*" {
                key.clone()
            } else {
                parse_endpoint_url(&key)
                    .map_err(|m| invalid(format!("configs key {key:?}: {m}")))?
                    .host
            };
            let mut spec = HostSpec::default();
            if let Some(auth) = config.auth {
                if auth.identitytoken.is_some() {
                    return Err(at(
                        "auth.identitytoken",
                        "identity tokens are not supported; give username and password",
                    ));
                }
                spec.auth =
                    match (auth.username, auth.password, auth.auth) {
                        (Some(username), Some(password), None) => {
                            Some(Credentials { username, password })
                        }
                        (None, None, Some(encoded)) => {
                            Some(decode_auth(&encoded).map_err(|m| at("auth.auth", &m))?)
                        }
                        (None, None, None) => None,
                        _ => return Err(at(
                            "auth",
                            "give either username and password, or auth (base64 of user:password)",
                        )),
                    };
            }
            if let Some(tls) = config.tls {
                if tls.cert_file.is_some() || tls.key_file.is_some() {
                    return Err(at(
                        "tls",
                        "client certificates (cert_file, key_file) are not supported",
                    ));
                }
                spec.tls = TlsSettings {
                    ca_file: tls.ca_file,
                    insecure_skip_verify: tls.insecure_skip_verify,
                };
            }
            configs.insert(host, spec);
        }
        Ok(RegistryConfig {
            mirrors,
            configs,
            disable_default_endpoint: false,
        })
    }

    /// The endpoints to try for `image`, in order.
    pub fn endpoints(&self, image: &ImageRef) -> Vec<Endpoint> {
        let registry = image.registry();
        let mut out: Vec<Endpoint> = Vec::new();
        if let Some(mirror) = self.mirrors.get(registry).or_else(|| self.mirrors.get("*")) {
            let repository = rewrite(&mirror.rewrites, image.repository());
            for url in &mirror.endpoints {
                if out
                    .iter()
                    .any(|e| e.host == url.host && e.plain_http == url.plain_http)
                {
                    continue;
                }
                out.push(self.endpoint(&url.host, url.plain_http, &repository, true, None));
            }
        }
        if !self.disable_default_endpoint || out.is_empty() {
            let (host, alias) = if registry == DOCKER_HUB {
                (DOCKER_HUB_ENDPOINT, Some(DOCKER_HUB))
            } else {
                (registry, None)
            };
            let plain_http = is_loopback_host(host);
            let already = out
                .iter()
                .any(|e| e.host == host && e.plain_http == plain_http);
            if !already {
                out.push(self.endpoint(host, plain_http, image.repository(), false, alias));
            }
        }
        out
    }

    fn endpoint(
        &self,
        host: &str,
        plain_http: bool,
        repository: &str,
        is_mirror: bool,
        alias: Option<&str>,
    ) -> Endpoint {
        let spec = self
            .configs
            .get(host)
            .or_else(|| alias.and_then(|a| self.configs.get(a)))
            .or_else(|| self.configs.get("*"));
        Endpoint {
            host: host.to_string(),
            plain_http,
            repository: repository.to_string(),
            is_mirror,
            tls: spec.map(|s| s.tls.clone()).unwrap_or_default(),
            auth: spec.and_then(|s| s.auth.clone()),
        }
    }
}

/// The first matching rewrite (in pattern order) applied to `repository`.
fn rewrite(rules: &[(Regex, String)], repository: &str) -> String {
    for (regex, replacement) in rules {
        if regex.is_match(repository) {
            return regex.replace(repository, replacement.as_str()).into_owned();
        }
    }
    repository.to_string()
}

/// `http://host:port`, `https://host`, `host:port`, optionally followed by `/` or `/v2`.
fn parse_endpoint_url(url: &str) -> Result<EndpointUrl, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, url),
    };
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if host.contains('@') || host.contains(char::is_whitespace) {
        return Err("the host must be host[:port], without user information or spaces".into());
    }
    if !matches!(path, "" | "/" | "/v2" | "/v2/") {
        return Err(format!(
            "endpoints with a path ({path:?}) are not supported; give scheme://host[:port]"
        ));
    }
    let plain_http = match scheme.as_deref() {
        Some("http") => true,
        Some("https") => false,
        Some(other) => return Err(format!("scheme {other:?} is neither http nor https")),
        None => is_loopback_host(host),
    };
    Ok(EndpointUrl {
        host: host.to_string(),
        plain_http,
    })
}

/// `localhost` or a loopback address, with or without a port: plain HTTP by default, as Docker
/// treats them.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || bare.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback())
}

/// `base64(user:password)`.
fn decode_auth(encoded: &str) -> Result<Credentials, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 once decoded".to_string())?;
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(Credentials {
            username: user.to_string(),
            password: password.to_string(),
        }),
        _ => Err("decodes to no user:password pair".into()),
    }
}

/// The credentials of one `kubernetes.io/dockerconfigjson` (or legacy `dockercfg`) secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfigJson {
    entries: Vec<SecretEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretEntry {
    /// Host pattern (labels may be `*`), lower case, with port if the key had one.
    host: String,
    /// Repository path prefix, empty for the whole registry.
    path: String,
    credentials: Credentials,
}

#[derive(Deserialize)]
struct DockerAuthShape {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

impl DockerConfigJson {
    /// Parses a secret's `.dockerconfigjson` (`{"auths": {...}}`) or `.dockercfg` (the map
    /// itself). Entries with neither `auth` nor username and password are an error.
    pub fn parse(data: &[u8]) -> Result<Self, RegistriesError> {
        let bad = |m: String| RegistriesError::PullSecret(m);
        let value: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| bad(format!("not JSON: {e}")))?;
        let map = match value.get("auths") {
            Some(auths) => auths.clone(),
            None => value,
        };
        let map: BTreeMap<String, DockerAuthShape> = serde_json::from_value(map).map_err(|e| {
            bad(format!(
                "expected {{\"auths\": {{HOST: {{\"auth\": …}}}}}}: {e}"
            ))
        })?;
        let mut entries = Vec::new();
        for (key, shape) in map {
            let credentials = match (shape.username, shape.password, shape.auth) {
                (_, _, Some(encoded)) if !encoded.is_empty() => {
                    decode_auth(&encoded).map_err(|m| bad(format!("auths.{key:?}.auth: {m}")))?
                }
                (Some(username), Some(password), _) => Credentials { username, password },
                _ => {
                    return Err(bad(format!(
                    "auths.{key:?}: give auth (base64 of user:password) or username and password"
                )))
                }
            };
            let (host, path) = secret_key(&key);
            entries.push(SecretEntry {
                host,
                path,
                credentials,
            });
        }
        // Most specific first: longer paths, then hosts without wildcards.
        entries.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(a.host.contains('*').cmp(&b.host.contains('*')))
        });
        Ok(DockerConfigJson { entries })
    }

    /// The credentials for `repository` on `host` (Docker Hub as `docker.io`), if an entry
    /// matches.
    pub fn credentials_for(&self, host: &str, repository: &str) -> Option<&Credentials> {
        let host = host.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|e| {
                host_matches(&e.host, &host)
                    && (e.path.is_empty()
                        || repository == e.path
                        || repository.starts_with(&format!("{}/", e.path)))
            })
            .map(|e| &e.credentials)
    }
}

/// A Docker config key (`https://index.docker.io/v1/`, `registry:5000`, `*.example.com/team`)
/// as (host pattern, path prefix).
fn secret_key(key: &str) -> (String, String) {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], rest[slash..].trim_matches('/')),
        None => (rest, ""),
    };
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => host,
    };
    let path = match path {
        "v1" | "v2" => "",
        p => p,
    };
    (host, path.to_string())
}

/// Label-wise glob match (`*.example.com` matches `a.example.com`, not `a.b.example.com`); a
/// pattern without a port matches the host on any port only if the host has none.
fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |s: &str| -> (String, Option<String>) {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
            _ => (s.to_string(), None),
        }
    };
    let (pattern_host, pattern_port) = split(pattern);
    let (host_name, host_port) = split(host);
    if pattern_port != host_port {
        return false;
    }
    let pattern_labels: Vec<&str> = pattern_host.split('.').collect();
    let host_labels: Vec<&str> = host_name.split('.').collect();
    pattern_labels.len() == host_labels.len()
        && pattern_labels
            .iter()
            .zip(&host_labels)
            .all(|(p, h)| *p == "*" || p == h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).expect("test reference parses")
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "https://mirror.example.com/v2"
    rewrite:
      "^library/(.*)": "hub/$1"
  "*":
    endpoint:
      - "localhost:6000"
  quay.io:
    endpoint: []
configs:
  "127.0.0.1:5000":
    auth:
      username: alice
      password: secret
  mirror.example.com:
    tls:
      ca_file: /etc/ssl/mirror.pem
      insecure_skip_verify: true
  docker.io:
    auth:
      auth: Ym9iOmh1bnRlcjI=
"#;

    #[test]
    fn endpoints_in_order_with_settings() {
        let config = RegistryConfig::from_yaml(YAML).expect("valid config");
        struct Want {
            host: &'static str,
            plain_http: bool,
            repository: &'static str,
            is_mirror: bool,
            user: Option<&'static str>,
            ca: Option<&'static str>,
        }
        let want = |host, plain_http, repository, is_mirror, user, ca| Want {
            host,
            plain_http,
            repository,
            is_mirror,
            user,
            ca,
        };
        let cases: Vec<(&str, Vec<Want>)> = vec![
            (
                "busybox",
                vec![
                    want(
                        "127.0.0.1:5000",
                        true,
                        "hub/busybox",
                        true,
                        Some("alice"),
                        None,
                    ),
                    want(
                        "mirror.example.com",
                        false,
                        "hub/busybox",
                        true,
                        None,
                        Some("/etc/ssl/mirror.pem"),
                    ),
                    want(
                        "registry-1.docker.io",
                        false,
                        "library/busybox",
                        false,
                        Some("bob"),
                        None,
                    ),
                ],
            ),
            (
                "user/app:1",
                vec![
                    want(
                        "127.0.0.1:5000",
                        true,
                        "user/app",
                        true,
                        Some("alice"),
                        None,
                    ),
                    want(
                        "mirror.example.com",
                        false,
                        "user/app",
                        true,
                        None,
                        Some("/etc/ssl/mirror.pem"),
                    ),
                    want(
                        "registry-1.docker.io",
                        false,
                        "user/app",
                        false,
                        Some("bob"),
                        None,
                    ),
                ],
            ),
            // The wildcard mirror serves registries without their own entry.
            (
                "ghcr.io/o/r:1",
                vec![
                    want("localhost:6000", true, "o/r", true, None, None),
                    want("ghcr.io", false, "o/r", false, None, None),
                ],
            ),
            // An entry with no endpoints means: only the default endpoint.
            (
                "quay.io/o/r",
                vec![want("quay.io", false, "o/r", false, None, None)],
            ),
            // Loopback registries are plain HTTP by default; the mirror is used first.
            (
                "127.0.0.1:5000/x/y:1",
                vec![
                    want("localhost:6000", true, "x/y", true, None, None),
                    want("127.0.0.1:5000", true, "x/y", false, Some("alice"), None),
                ],
            ),
        ];
        for (input, wants) in cases {
            let got = config.endpoints(&image(input));
            assert_eq!(got.len(), wants.len(), "{input}: {got:?}");
            for (g, w) in got.iter().zip(&wants) {
                assert_eq!(g.host, w.host, "{input}");
                assert_eq!(g.plain_http, w.plain_http, "{input} {}", w.host);
                assert_eq!(g.repository, w.repository, "{input} {}", w.host);
                assert_eq!(g.is_mirror, w.is_mirror, "{input} {}", w.host);
                assert_eq!(
                    g.auth.as_ref().map(|c| c.username.as_str()),
                    w.user,
                    "{input}"
                );
                assert_eq!(
                    g.tls.ca_file.as_deref(),
                    w.ca.map(Path::new),
                    "{input} {}",
                    w.host
                );
            }
        }
        let mirror = &config.endpoints(&image("busybox"))[1];
        assert!(mirror.tls.insecure_skip_verify);
        assert_eq!(mirror.url(), "https://mirror.example.com");
        assert_eq!(
            config.endpoints(&image("busybox"))[0].auth,
            Some(Credentials {
                username: "alice".into(),
                password: "secret".into()
            })
        );
    }

    #[test]
    fn default_endpoints_without_configuration() {
        let config = RegistryConfig::default();
        let cases = [
            ("busybox", "registry-1.docker.io", false),
            ("localhost/x", "localhost", true),
            ("localhost:5000/x", "localhost:5000", true),
            ("127.0.0.1:5000/x", "127.0.0.1:5000", true),
            ("127.1.2.3:5000/x", "127.1.2.3:5000", true),
            ("10.0.0.1:5000/x", "10.0.0.1:5000", false),
            ("registry.example.com/x", "registry.example.com", false),
        ];
        for (input, host, plain_http) in cases {
            let got = config.endpoints(&image(input));
            assert_eq!(got.len(), 1, "{input}");
            assert_eq!(got[0].host, host, "{input}");
            assert_eq!(got[0].plain_http, plain_http, "{input}");
            assert!(!got[0].is_mirror);
        }
    }

    #[test]
    fn disabling_the_default_endpoint_keeps_only_mirrors() {
        let mut config = RegistryConfig::from_yaml(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\n",
        )
        .expect("valid");
        config.disable_default_endpoint = true;
        let got = config.endpoints(&image("busybox"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].host, "127.0.0.1:5000");
        // A registry without mirrors still has its own endpoint.
        assert_eq!(config.endpoints(&image("ghcr.io/a/b"))[0].host, "ghcr.io");
    }

    #[test]
    fn a_mirror_equal_to_the_default_endpoint_is_not_repeated() {
        let config = RegistryConfig::from_yaml(
            "mirrors:\n  \"127.0.0.1:5000\":\n    endpoint: [\"http://127.0.0.1:5000\"]\n",
        )
        .expect("valid");
        let got = config.endpoints(&image("127.0.0.1:5000/a"));
        assert_eq!(got.len(), 1);
        assert!(got[0].is_mirror);
    }

    #[test]
    fn empty_file_is_the_default() {
        for text in ["", "\n", "# nothing\n", "mirrors: {}\n"] {
            let config = RegistryConfig::from_yaml(text).expect("valid");
            assert_eq!(config.endpoints(&image("busybox")).len(), 1, "{text:?}");
        }
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let cases = [
            ("mirrors:\n  docker.io:\n    endpoints: [x]\n", "endpoints"),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
                "\"ftp\"",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"http://x/some/path\"]\n",
                "path",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"http://\"]\n",
                "no host",
            ),
            (
                "mirrors:\n  docker.io:\n    rewrite:\n      \"(\": x\n",
                "rewrite \"(\"",
            ),
            (
                "configs:\n  r:\n    auth:\n      username: a\n",
                "username and password",
            ),
            (
                "configs:\n  r:\n    auth:\n      auth: \"!!\"\n",
                "not base64",
            ),
            (
                "configs:\n  r:\n    auth:\n      identitytoken: t\n",
                "identity tokens",
            ),
            (
                "configs:\n  r:\n    tls:\n      cert_file: /c\n",
                "client certificates",
            ),
            ("configs:\n  r:\n    tls:\n      ca: /c\n", "ca"),
            ("mirrors: [1]\n", "mirrors"),
        ];
        for (text, want) in cases {
            let e = RegistryConfig::from_yaml(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn rewrite_applies_first_matching_rule_on_mirrors_only() {
        let config = RegistryConfig::from_yaml(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\n    rewrite:\n      \"^rancher/(.*)\": \"mirror/rancher/$1\"\n",
        )
        .expect("valid");
        let got = config.endpoints(&image("rancher/k3s:v1"));
        assert_eq!(got[0].repository, "mirror/rancher/k3s");
        assert_eq!(got[1].repository, "rancher/k3s");
        assert_eq!(
            config.endpoints(&image("other/k3s"))[0].repository,
            "other/k3s"
        );
    }

    #[test]
    fn loopback_hosts() {
        let cases = [
            ("localhost", true),
            ("LOCALHOST:80", true),
            ("127.0.0.1", true),
            ("127.255.0.9:5000", true),
            ("[::1]:5000", true),
            ("::1", true),
            ("128.0.0.1", false),
            ("localhost.example.com", false),
            ("docker.io", false),
            ("[::2]:5000", false),
        ];
        for (host, want) in cases {
            assert_eq!(is_loopback_host(host), want, "{host}");
        }
    }

    #[test]
    fn pull_secret_credentials_match_host_and_path() {
        let secret = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"username": "u", "password": "p"}},
                "*.example.com": {{"auth": "{}"}},
                "r.example.com/team": {{"auth": "{}"}}
            }}}}"#,
            b64("hub:1"),
            b64("wild:2"),
            b64("team:3")
        );
        let secrets = [DockerConfigJson::parse(secret.as_bytes()).expect("valid")];
        let cases = [
            ("docker.io", "library/busybox", Some("hub")),
            ("127.0.0.1:5000", "x", Some("u")),
            ("127.0.0.1:5001", "x", None),
            ("127.0.0.1", "x", None),
            ("r.example.com", "team/app", Some("team")),
            ("r.example.com", "teamx/app", Some("wild")),
            ("R.example.com", "other", Some("wild")),
            ("a.b.example.com", "x", None),
            ("example.com", "x", None),
        ];
        for (host, repository, want) in cases {
            let got = secrets[0].credentials_for(host, repository);
            assert_eq!(
                got.map(|c| c.username.as_str()),
                want,
                "{host}/{repository}"
            );
        }
        assert_eq!(
            secrets[0]
                .credentials_for("docker.io", "x")
                .map(|c| c.password.as_str()),
            Some("1")
        );
    }

    #[test]
    fn endpoint_credentials_prefer_secrets_and_never_leak_to_mirrors() {
        let config = RegistryConfig::from_yaml(YAML).expect("valid");
        let secret = format!(
            r#"{{"auths": {{"docker.io": {{"auth": "{}"}}}}}}"#,
            b64("s:x")
        );
        let secrets = [DockerConfigJson::parse(secret.as_bytes()).expect("valid")];
        let endpoints = config.endpoints(&image("busybox"));
        // The loopback mirror keeps its own configured credentials.
        assert_eq!(
            endpoints[0]
                .credentials(&secrets)
                .map(|c| c.username.as_str()),
            Some("alice")
        );
        // The https mirror has none: the docker.io secret is not sent there.
        assert_eq!(endpoints[1].credentials(&secrets), None);
        // The default endpoint takes the secret over the configured auth.
        assert_eq!(
            endpoints[2]
                .credentials(&secrets)
                .map(|c| c.username.as_str()),
            Some("s")
        );
        assert_eq!(
            endpoints[2].credentials(&[]).map(|c| c.username.as_str()),
            Some("bob")
        );
    }

    #[test]
    fn pull_secret_forms_and_errors() {
        let legacy = format!(r#"{{"r.io": {{"auth": "{}", "email": "e"}}}}"#, b64("a:b"));
        let parsed = DockerConfigJson::parse(legacy.as_bytes()).expect("legacy dockercfg");
        assert!(parsed.credentials_for("r.io", "x").is_some());
        let cases = [
            ("not json", "not JSON"),
            (r#"{"auths": {"r.io": {}}}"#, "auths.\"r.io\""),
            (
                r#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#,
                "no user:password",
            ),
            (r#"{"auths": []}"#, "expected"),
        ];
        for (text, want) in cases {
            let e = DockerConfigJson::parse(text.as_bytes())
                .expect_err(text)
                .to_string();
            assert!(e.contains(want), "{text}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
