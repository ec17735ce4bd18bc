//! Pod networking through CNI, the standard plugin interface: the network configuration list
//! (the first `*.conflist` in `--cni-conf-dir`, or Skiff's default written there: a `skiff0`
//! bridge with the node's pod CIDR, host-local addresses under the root directory, portmap for
//! hostPorts), the plugins run for a pod's namespace in order on ADD and in reverse on DEL, and
//! the pod's address read from the result. The result of each ADD is kept so DEL hands the
//! plugins what ADD gave them, as the spec asks.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The CNI version Skiff's default configuration speaks.
pub const CNI_VERSION: &str = "1.0.0";
/// The file name of Skiff's default configuration.
pub const DEFAULT_CONFLIST: &str = "10-skiff.conflist";
/// The bridge pods are attached to by default.
pub const BRIDGE: &str = "skiff0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI configuration {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("no CNI configuration in {0} (a *.conflist file)")]
    NoConfig(PathBuf),
    #[error("CNI plugin {plugin} ({command}) failed: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI: {0}")]
    Io(#[from] std::io::Error),
}

/// Skiff's default network configuration list for a node whose pods take `pod_cidr`. The
/// bridge masquerades pods' outgoing traffic only when `ip_masq` (the agent's service proxy,
/// when it runs, masquerades just what leaves the cluster network instead, so that traffic
/// between pods on different nodes keeps its source address).
pub fn default_conflist(pod_cidr: &str, ipam_dir: &Path, ip_masq: bool) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": "skiff",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": ip_masq,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

/// One hostPort mapping, as the portmap plugin takes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host_i_p: String,
}

/// The configuration one plugin of `list` is given: its own object plus the list's version and
/// name, the previous plugin's result, and the runtime values for the capabilities it asks for.
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    prev_result: Option<&Value>,
    port_mappings: &[PortMapping],
) -> Value {
    let mut config = plugin.clone();
    config["cniVersion"] = list["cniVersion"].clone();
    config["name"] = list["name"].clone();
    if let Some(prev) = prev_result {
        config["prevResult"] = prev.clone();
    }
    let wants_ports = plugin
        .get("capabilities")
        .and_then(|c| c.get("portMappings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if wants_ports && !port_mappings.is_empty() {
        config["runtimeConfig"] = json!({ "portMappings": port_mappings });
    }
    config
}

/// The first IPv4 address (without its prefix length) in a CNI result.
pub fn result_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result.get("ips")?.as_array()?.iter().find_map(|ip| {
        let addr = ip.get("address")?.as_str()?;
        addr.split('/').next()?.parse().ok()
    })
}

/// What a plugin said went wrong: the `msg` and `details` of its error object, or its output.
fn plugin_error(stdout: &[u8], stderr: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    match parsed {
        Some(v) if v.get("msg").is_some() => {
            let msg = v["msg"].as_str().unwrap_or_default();
            match v.get("details").and_then(Value::as_str) {
                Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                _ => msg.to_string(),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
            text.trim().to_string()
        }
    }
}

/// The node's CNI setup: where configurations and plugins are, and where results are kept.
#[derive(Clone, Debug)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// Results of ADD, one file per pod, and host-local's address files.
    pub state_dir: PathBuf,
}

/// What a pod's network got.
#[derive(Clone, Debug)]
pub struct Attached {
    pub ip: std::net::Ipv4Addr,
    pub result: Value,
}

impl Cni {
    /// Writes Skiff's default configuration for `pod_cidr` unless the directory already holds
    /// a configuration list (a user's own plugin, or ours from before with the same CIDR).
    pub fn ensure_default(&self, pod_cidr: &str, ip_masq: bool) -> Result<(), CniError> {
        std::fs::create_dir_all(&self.conf_dir)?;
        let ours = self.conf_dir.join(DEFAULT_CONFLIST);
        let wanted = default_conflist(pod_cidr, &self.state_dir.join("networks"), ip_masq);
        if let Ok((path, _)) = self.load() {
            if path != ours {
                tracing::info!(config = %path.display(), "using the CNI configuration found");
                return Ok(());
            }
        }
        let text = serde_json::to_vec_pretty(&wanted).map_err(std::io::Error::other)?;
        let tmp = ours.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &ours)?;
        Ok(())
    }

    /// Whether the pod network is (or will be, once written) Skiff's default: no other
    /// configuration list comes first.
    pub fn default_in_use(&self) -> bool {
        match self.load() {
            Ok((path, _)) => path == self.conf_dir.join(DEFAULT_CONFLIST),
            Err(_) => true,
        }
    }

    /// The configuration list in use: the first `*.conflist` by name.
    pub fn load(&self) -> Result<(PathBuf, Value), CniError> {
        let mut lists: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map_err(|_| CniError::NoConfig(self.conf_dir.clone()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        lists.sort();
        let path = lists
            .into_iter()
            .next()
            .ok_or_else(|| CniError::NoConfig(self.conf_dir.clone()))?;
        let bad = |message: String| CniError::Config {
            path: path.clone(),
            message,
        };
        let text = std::fs::read(&path)?;
        let list: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if !list.get("plugins").is_some_and(Value::is_array) {
            return Err(bad("has no \"plugins\" list".into()));
        }
        if list.get("name").and_then(Value::as_str).is_none() {
            return Err(bad("has no \"name\"".into()));
        }
        Ok((path, list))
    }

    fn result_file(&self, id: &str) -> PathBuf {
        self.state_dir.join("results").join(format!("{id}.json"))
    }

    async fn exec(
        &self,
        command: &'static str,
        id: &str,
        netns: &Path,
        ifname: &str,
        config: &Value,
    ) -> Result<Value, CniError> {
        let plugin = config
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if plugin.is_empty() || plugin.contains('/') {
            return Err(CniError::Plugin {
                plugin,
                command,
                message: "a plugin needs a plain \"type\" name".into(),
            });
        }
        let binary = self.bin_dir.join(&plugin);
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CniError::Plugin {
                plugin: plugin.clone(),
                command,
                message: format!("cannot run {}: {e}", binary.display()),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let bytes = serde_json::to_vec(config).map_err(std::io::Error::other)?;
            stdin.write_all(&bytes).await?;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            return Err(CniError::Plugin {
                plugin,
                command,
                message: plugin_error(&out.stdout, &out.stderr),
            });
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| CniError::Plugin {
            plugin,
            command,
            message: format!("unreadable result: {e}"),
        })
    }

    /// Attaches the namespace of pod `id` (its uid) to the network: loopback up, then every
    /// plugin of the list in order.
    pub async fn add(
        &self,
        id: &str,
        netns: &Path,
        port_mappings: &[PortMapping],
    ) -> Result<Attached, CniError> {
        let lo = json!({"cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback"});
        self.exec("ADD", id, netns, "lo", &lo).await?;
        let (_, list) = self.load()?;
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            let config = plugin_config(&list, plugin, prev.as_ref(), port_mappings);
            let result = self.exec("ADD", id, netns, "eth0", &config).await?;
            if !result.is_null() {
                prev = Some(result);
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let file = self.result_file(id);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            &file,
            serde_json::to_vec(&result).map_err(std::io::Error::other)?,
        )?;
        let ip = result_ipv4(&result).ok_or_else(|| CniError::Plugin {
            plugin: list["name"].as_str().unwrap_or_default().into(),
            command: "ADD",
            message: "the result has no IPv4 address".into(),
        })?;
        Ok(Attached { ip, result })
    }

    /// The address an earlier ADD gave pod `id`, if its result is kept.
    pub fn attached(&self, id: &str) -> Option<Attached> {
        let result: Value =
            serde_json::from_slice(&std::fs::read(self.result_file(id)).ok()?).ok()?;
        Some(Attached {
            ip: result_ipv4(&result)?,
            result,
        })
    }

    /// Detaches pod `id`: every plugin in reverse order, given what ADD returned. Works when the
    /// namespace is already gone (plugins then release addresses and host-side state only).
    pub async fn del(
        &self,
        id: &str,
        netns: &Path,
        port_mappings: &[PortMapping],
    ) -> Result<(), CniError> {
        let (_, list) = self.load()?;
        let prev = self.attached(id).map(|a| a.result);
        let plugins: Vec<&Value> = list["plugins"].as_array().into_iter().flatten().collect();
        for plugin in plugins.into_iter().rev() {
            let config = plugin_config(&list, plugin, prev.as_ref(), port_mappings);
            self.exec("DEL", id, netns, "eth0", &config).await?;
        }
        match std::fs::remove_file(self.result_file(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plugin_gets_the_list_name_version_previous_result_and_its_capabilities() {
        let list = default_conflist("10.244.1.0/24", Path::new("/var/lib/x/networks"), true);
        let plugins = list["plugins"].as_array().expect("plugins");
        assert_eq!(
            plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        let first = plugin_config(&list, &plugins[0], None, &[]);
        assert_eq!(first["cniVersion"], CNI_VERSION);
        assert_eq!(first["name"], "skiff");
        assert!(first.get("prevResult").is_none());
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_i_p: String::new(),
        }];
        let prev = json!({"ips": [{"address": "10.244.1.5/24"}]});
        let bridge = plugin_config(&list, &plugins[0], Some(&prev), &ports);
        assert!(
            bridge.get("runtimeConfig").is_none(),
            "bridge did not ask for ports"
        );
        let portmap = plugin_config(&list, &plugins[1], Some(&prev), &ports);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
        assert_eq!(result_ipv4(&prev), Some("10.244.1.5".parse().expect("ip")));
        assert_eq!(result_ipv4(&json!({"ips": []})), None);
    }

    #[test]
    fn plugin_errors_read_as_their_message() {
        let out = br#"{"code": 7, "msg": "failed to allocate", "details": "range full"}"#;
        assert_eq!(plugin_error(out, b""), "failed to allocate: range full");
        assert_eq!(plugin_error(b"", b"boom\n"), "boom");
    }
}
