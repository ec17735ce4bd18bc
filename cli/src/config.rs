//! Where the CLI connects: `--endpoints a,b,c`, else `SKIFF_ENDPOINTS`, else the current (or
//! `--context`) context of the config file (`~/.skiff/config`, or `--config`/`SKIFF_CONFIG`):
//!
//! ```yaml
//! current-context: lab
//! contexts:
//!   - name: lab
//!     endpoints: [10.0.0.1:2379, 10.0.0.2:2379, 10.0.0.3:2379]
//!     namespace: dev        # optional default namespace
//! ```
//!
//! With none of these, 127.0.0.1:2379 (the embedded default of `skiff-server`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<Context>,
}

#[derive(Debug, Deserialize, Clone)]
struct Context {
    name: String,
    endpoints: Vec<String>,
    namespace: Option<String>,
}

/// Endpoints and the default namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub namespace: String,
}

pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".skiff").join("config"))
}

fn read_file(path: &Path) -> anyhow::Result<Option<File>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_saphyr::from_str(&text)
            .map(Some)
            .with_context(|| format!("config file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
    }
}

/// Resolves the target from the flags (already merged with their environment variables).
pub fn resolve(
    endpoints: Option<&str>,
    context: Option<&str>,
    namespace: Option<&str>,
    config: Option<&Path>,
) -> anyhow::Result<Target> {
    let file_path = config.map(Path::to_path_buf).or_else(default_path);
    let file = match &file_path {
        Some(p) => read_file(p)?,
        None => None,
    };
    let chosen: Option<Context> = match (&file, context) {
        (Some(f), Some(name)) => Some(
            f.contexts
                .iter()
                .find(|c| c.name == name)
                .cloned()
                .ok_or_else(|| anyhow!("context {name:?} not found in the config file"))?,
        ),
        (None, Some(name)) => bail!("context {name:?} given but there is no config file"),
        (Some(f), None) => match &f.current_context {
            Some(name) => Some(
                f.contexts
                    .iter()
                    .find(|c| &c.name == name)
                    .cloned()
                    .ok_or_else(|| anyhow!("current-context {name:?} is not among the contexts"))?,
            ),
            None => None,
        },
        (None, None) => None,
    };
    let endpoints: Vec<String> = match endpoints {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => chosen
            .as_ref()
            .map(|c| c.endpoints.clone())
            .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]),
    };
    if endpoints.is_empty() {
        bail!("no endpoints: --endpoints was given empty");
    }
    let namespace = namespace
        .map(String::from)
        .or_else(|| chosen.and_then(|c| c.namespace))
        .unwrap_or_else(|| "default".to_string());
    Ok(Target {
        endpoints,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_config_file_contexts() {
        let dir = std::env::temp_dir().join(format!("skiff-cli-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "current-context: a\ncontexts:\n  - name: a\n    endpoints: [h1:1, h2:2]\n    namespace: dev\n  - name: b\n    endpoints: [h3:3]\n",
        )
        .unwrap();
        let t = resolve(None, None, None, Some(&path)).unwrap();
        assert_eq!(t.endpoints, ["h1:1", "h2:2"]);
        assert_eq!(t.namespace, "dev");
        let t = resolve(None, Some("b"), None, Some(&path)).unwrap();
        assert_eq!(t.endpoints, ["h3:3"]);
        assert_eq!(t.namespace, "default");
        let t = resolve(Some("x:1,y:2"), None, Some("prod"), Some(&path)).unwrap();
        assert_eq!(t.endpoints, ["x:1", "y:2"]);
        assert_eq!(t.namespace, "prod");
        let e = resolve(None, Some("c"), None, Some(&path)).unwrap_err();
        assert!(e.to_string().contains("\"c\""), "{e}");
        let none = dir.join("missing");
        let t = resolve(None, None, None, Some(&none)).unwrap();
        assert_eq!(t.endpoints, [DEFAULT_ENDPOINT]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
