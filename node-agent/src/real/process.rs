//! What a container runs, exactly as Kubernetes defines it: the argv from `command`/`args` over
//! the image's ENTRYPOINT/CMD, `$(VAR)` references expanded from the container's environment
//! (`$$` escapes, unknown references stay as written), the environment (the image's, then the
//! Services', then `envFrom`, then `env`, later entries winning; values from fields of the pod, configMaps and
//! secrets), and the working directory. Pure: configMaps and secrets are looked up beforehand.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Why a container's process cannot be made (reported as CreateContainerConfigError).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapMissing(String),
    #[error("secret \"{0}\" not found")]
    SecretMissing(String),
    #[error("couldn't find key {key} in {what} {namespace}/{name}")]
    KeyMissing {
        key: String,
        what: &'static str,
        namespace: String,
        name: String,
    },
    #[error("unsupported fieldPath {0}")]
    FieldPath(String),
    #[error("no command: the container names none and the image has no ENTRYPOINT or CMD")]
    NoCommand,
}

/// The data of the configMaps and secrets (decoded) a pod refers to, by name; None for one
/// that does not exist.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// The Service environment variables (`service_env`).
    pub services: Vec<(String, String)>,
}

/// What the image says about its process.
#[derive(Clone, Debug, Default)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// Expands `$(NAME)` from `vars`; `$$` stands for `$`; anything else stays as written.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        if let Some(v) = vars(name) {
                            out.push_str(&v);
                        } else {
                            out.push_str(&input[i..i + 3 + end]);
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, ConfigError> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip.into(),
        "status.hostIP" | "status.hostIPs" => host_ip.into(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                from_map(&m.labels, key)
            } else if let Some(key) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                from_map(&m.annotations, key)
            } else {
                return Err(ConfigError::FieldPath(other.into()));
            }
        }
    })
}

fn lookup<'a>(
    sources: &'a BTreeMap<String, Option<BTreeMap<String, String>>>,
    name: &str,
    optional: bool,
    missing: fn(String) -> ConfigError,
) -> Result<Option<&'a BTreeMap<String, String>>, ConfigError> {
    match sources.get(name).and_then(Option::as_ref) {
        Some(d) => Ok(Some(d)),
        None if optional => Ok(None),
        None => Err(missing(name.into())),
    }
}

/// One `configMapKeyRef` or `secretKeyRef`.
struct KeyRef<'a> {
    what: &'static str,
    namespace: &'a str,
    name: &'a str,
    key: &'a str,
    optional: bool,
}

impl KeyRef<'_> {
    /// The value, None when an optional source or key is missing.
    fn resolve(
        &self,
        sources: &BTreeMap<String, Option<BTreeMap<String, String>>>,
        missing: fn(String) -> ConfigError,
    ) -> Result<Option<String>, ConfigError> {
        let Some(data) = lookup(sources, self.name, self.optional, missing)? else {
            return Ok(None);
        };
        match data.get(self.key) {
            Some(v) => Ok(Some(v.clone())),
            None if self.optional => Ok(None),
            None => Err(ConfigError::KeyMissing {
                key: self.key.into(),
                what: self.what,
                namespace: self.namespace.into(),
                name: self.name.into(),
            }),
        }
    }
}

/// The container's environment, in order, as `NAME=value`.
pub fn environment(
    pod: &Pod,
    c: &Container,
    image: &ImageProcess,
    sources: &Sources,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = env.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut env, k.into(), v.into());
    }
    // The container's own variables for $(VAR): the Services', envFrom and env, not the
    // image's.
    let mut own: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &sources.services {
        own.insert(k.clone(), v.clone());
        set(&mut env, k.clone(), v.clone());
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &from.config_map_ref {
            lookup(
                &sources.config_maps,
                &cm.name,
                cm.optional == Some(true),
                ConfigError::ConfigMapMissing,
            )?
        } else if let Some(s) = &from.secret_ref {
            lookup(
                &sources.secrets,
                &s.name,
                s.optional == Some(true),
                ConfigError::SecretMissing,
            )?
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            own.insert(format!("{prefix}{k}"), v.clone());
            set(&mut env, format!("{prefix}{k}"), v.clone());
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let vars = |n: &str| own.get(n).cloned();
            expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, pod_ip, host_ip)?
            } else if let Some(r) = &from.config_map_key_ref {
                let key = KeyRef {
                    what: "configmap",
                    namespace: &namespace,
                    name: &r.name,
                    key: &r.key,
                    optional: r.optional == Some(true),
                };
                match key.resolve(&sources.config_maps, ConfigError::ConfigMapMissing)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                let key = KeyRef {
                    what: "secret",
                    namespace: &namespace,
                    name: &r.name,
                    key: &r.key,
                    optional: r.optional == Some(true),
                };
                match key.resolve(&sources.secrets, ConfigError::SecretMissing)? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                // resourceFieldRef: filled by the caller, which knows the limits; empty here.
                String::new()
            }
        } else {
            String::new()
        };
        own.insert(e.name.clone(), value.clone());
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// The argv: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD; `$(VAR)`
/// expanded from `env`.
pub fn argv(
    c: &Container,
    image: &ImageProcess,
    env: &[(String, String)],
) -> Result<Vec<String>, ConfigError> {
    let vars = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let x = |v: &Vec<String>| v.iter().map(|s| expand(s, &vars)).collect::<Vec<_>>();
    let argv = match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => [x(cmd), x(args)].concat(),
        (Some(cmd), None) => x(cmd),
        (None, Some(args)) => [image.entrypoint.clone(), x(args)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    };
    if argv.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    Ok(argv)
}

/// The working directory: the container's, the image's, or `/`.
pub fn working_dir(c: &Container, image: &ImageProcess) -> String {
    c.working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector,
    };

    fn vars(n: &str) -> Option<String> {
        (n == "A").then(|| "x".to_string())
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let cases = [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$(A", "$(A"),
            ("$", "$"),
            ("a$b", "a$b"),
            ("é$(A)é", "éxé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            ..Default::default()
        }
    }

    #[test]
    fn argv_combines_command_and_args_with_the_image() {
        let c = |command: Option<&[&str]>, args: Option<&[&str]>| Container {
            command: command.map(|v| v.iter().map(|s| s.to_string()).collect()),
            args: args.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let env = vec![("A".to_string(), "x".to_string())];
        let i = image();
        assert_eq!(
            argv(&c(None, None), &i, &env).expect("argv"),
            ["/entry", "default"]
        );
        assert_eq!(
            argv(&c(Some(&["sh"]), None), &i, &env).expect("argv"),
            ["sh"]
        );
        assert_eq!(
            argv(&c(None, Some(&["$(A)"])), &i, &env).expect("argv"),
            ["/entry", "x"]
        );
        assert_eq!(
            argv(&c(Some(&["sh", "-c"]), Some(&["echo $(A)"])), &i, &env).expect("argv"),
            ["sh", "-c", "echo x"]
        );
        assert_eq!(
            argv(&c(None, None), &ImageProcess::default(), &env),
            Err(ConfigError::NoCommand)
        );
    }

    #[test]
    fn environment_layers_image_env_from_and_env() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-1".into());
        pod.metadata.namespace = Some("default".into());
        let env = |name: &str, value: Option<&str>, from: Option<EnvVarSource>| EnvVar {
            name: name.into(),
            value: value.map(str::to_string),
            value_from: from,
        };
        let c = Container {
            env: Some(vec![
                env("A", Some("own"), None),
                env("B", Some("$(A)-$(PATH)"), None),
                env(
                    "POD",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                env(
                    "IP",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                env(
                    "CM",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
            ]),
            ..Default::default()
        };
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "cfg".into(),
            Some([("k".to_string(), "v".to_string())].into()),
        );
        let got = environment(&pod, &c, &image(), &sources, "10.0.0.5", "192.168.0.1")
            .expect("environment");
        let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("A"), Some("own"), "env wins over the image");
        assert_eq!(
            get("B"),
            Some("own-$(PATH)"),
            "only the container's own variables expand"
        );
        assert_eq!(get("POD"), Some("web-1"));
        assert_eq!(get("IP"), Some("10.0.0.5"));
        assert_eq!(get("CM"), Some("v"));

        sources
            .config_maps
            .insert("cfg".into(), Some(BTreeMap::new()));
        let err = environment(&pod, &c, &image(), &sources, "", "").expect_err("key missing");
        assert_eq!(
            err.to_string(),
            "couldn't find key k in configmap default/cfg"
        );
        sources.config_maps.insert("cfg".into(), None);
        let err = environment(&pod, &c, &image(), &sources, "", "").expect_err("map missing");
        assert_eq!(err.to_string(), "configmap \"cfg\" not found");
    }
}
