//! Reading manifests for `apply -f`/`create -f`/`delete -f`: a file, every `.yaml`/`.yml`/
//! `.json` file of a directory (sorted), or `-` for stdin; YAML with several documents, or JSON;
//! `kind: List` expands to its items. Every document remembers where it came from, for messages.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub object: Value,
}

fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("the path {:?} does not exist", path.display().to_string()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses the text of one source into objects.
pub fn parse(text: &str, source: &str) -> anyhow::Result<Vec<Document>> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .with_context(|| format!("error parsing {source}: invalid JSON"))?;
        match v {
            Value::Array(items) => items,
            other => vec![other],
        }
    } else {
        serde_saphyr::from_multiple::<Value>(text)
            .map_err(|e| anyhow::anyhow!("error parsing {source}: {e}"))?
    };
    let mut docs = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        match v {
            Value::Null => continue,
            Value::Object(ref m) if m.is_empty() => continue,
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                for item in m
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    docs.push(Document {
                        source: source.to_string(),
                        object: item,
                    });
                }
            }
            Value::Object(_) => docs.push(Document {
                source: source.to_string(),
                object: v,
            }),
            other => bail!(
                "error parsing {source}: document {} is not an object but {}",
                i + 1,
                match other {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "something else",
                }
            ),
        }
    }
    Ok(docs)
}

/// Every object of every `-f` argument, in order.
pub fn read_all(paths: &[String]) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for p in paths {
        if p == "-" {
            let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
            docs.extend(parse(&text, "STDIN")?);
            continue;
        }
        for file in files_of(Path::new(p))? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            docs.extend(parse(&text, &file.display().to_string())?);
        }
    }
    if docs.is_empty() {
        bail!("no objects passed to apply");
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_expand() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Service\n    metadata: {name: b}\n    spec:\n      ports: [{port: 80}]\n";
        let docs = parse(text, "f.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].object["metadata"]["name"], "a");
        assert_eq!(docs[1].object["spec"]["ports"][0]["port"], 80);
    }

    #[test]
    fn json_is_accepted_and_bad_yaml_names_the_file() {
        let docs = parse(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        let e = parse("kind: Pod\n  bad: [unclosed\n", "bad.yaml").unwrap_err();
        assert!(e.to_string().contains("bad.yaml"), "{e}");
        let e = parse("- a\n- b\n", "l.yaml").unwrap_err();
        assert!(e.to_string().contains("not an object"), "{e}");
    }
}
