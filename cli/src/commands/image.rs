//! `skiff image`: images on the nodes, for clusters without a registry (as `k3s ctr images
//! import` and `crictl images` on each node). `import` sends tarballs (docker-archive as
//! `docker save` writes them, or OCI image layouts) through the API server to the agents of
//! the nodes named (default: every node); `ls` lists what nodes hold; `build-example` writes
//! the project's example image (Debian's busybox-static answering its hostname over HTTP on
//! port 8080) as an OCI layout tarball.

use std::path::PathBuf;

use skiff_api::agent_pb::ImageInfo;
use skiff_api::{example_image, object};

use super::{kind_named, report, Ctx};
use crate::output::grid;
use crate::Reported;

/// The name `build-example` gives the example image (a tag other than `latest`, so that
/// pods use it from the node without trying a registry).
pub const EXAMPLE_NAME: &str = "skiff.local/example:1.0";

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Import image tarballs (docker-archive or OCI layout) onto nodes.
    Import {
        /// Tarballs to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The node to import onto (repeatable; default: every node).
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// List the images on the nodes.
    #[command(alias = "list")]
    Ls {
        /// Only this node's images.
        #[arg(long)]
        node: Option<String>,
    },
    /// Write the example image as an OCI layout tarball.
    BuildExample {
        /// Where to write it.
        #[arg(short = 'o', long, default_value = "skiff-example.tar")]
        output: PathBuf,
        /// The statically linked busybox to put in it (Debian's `busybox-static`).
        #[arg(long, default_value = example_image::DEFAULT_BUSYBOX)]
        busybox: PathBuf,
        /// The image's name.
        #[arg(long, default_value = EXAMPLE_NAME)]
        name: String,
    },
}

fn failed(e: &skiff_api::ApiError) -> anyhow::Error {
    report(e);
    Reported.into()
}

/// Splits a normalised name into repository and tag (`busybox@sha256:…` has no tag).
fn repository_and_tag(name: &str) -> (String, String) {
    if let Some((repo, _digest)) = name.split_once('@') {
        return (repo.to_string(), "<none>".to_string());
    }
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (name.to_string(), "<none>".to_string()),
    }
}

/// Bytes as crictl prints image sizes (`4.26MB`).
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.3}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.3}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.3}kB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}

/// The short image ID crictl shows: 13 hex digits of the config digest.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(13).collect()
}

/// The rows of `image ls`, one per name (an image with none shows `<none>`). Pure.
pub fn rows(images: &[ImageInfo]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for i in images {
        let names: Vec<String> = if i.names.is_empty() {
            vec!["<none>".into()]
        } else {
            i.names.clone()
        };
        for name in names {
            let (repo, tag) = repository_and_tag(&name);
            rows.push(vec![
                i.node.clone(),
                repo,
                tag,
                short_id(&i.id),
                size(i.size),
            ]);
        }
    }
    rows.sort();
    rows
}

pub async fn run(ctx: &Ctx, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Import { files, nodes } => {
            let nodes = if nodes.is_empty() {
                let all = ctx
                    .client
                    .list(&kind_named("nodes")?, None, "", "")
                    .await
                    .map_err(|e| failed(&e))?;
                let names: Vec<String> = all
                    .items
                    .iter()
                    .map(|n| object::name(n).to_string())
                    .collect();
                if names.is_empty() {
                    anyhow::bail!("the cluster has no nodes to import images onto");
                }
                names
            } else {
                nodes.clone()
            };
            for file in files {
                for node in &nodes {
                    let imported = ctx
                        .client
                        .import_images(node, file)
                        .await
                        .map_err(|e| failed(&e))?;
                    for image in imported {
                        let names = if image.names.is_empty() {
                            image.id.clone()
                        } else {
                            image.names.join(", ")
                        };
                        println!("imported {names} ({}) on node {node}", image.id);
                    }
                }
            }
            Ok(())
        }
        Command::Ls { node } => {
            let images = ctx
                .client
                .list_images(node.as_deref())
                .await
                .map_err(|e| failed(&e))?;
            let header = ["NODE", "IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
            print!("{}", grid(&header, &rows(&images)));
            Ok(())
        }
        Command::BuildExample {
            output,
            busybox,
            name,
        } => {
            let bytes = example_image::oci_archive(busybox, name)?;
            std::fs::write(output, &bytes)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", output.display()))?;
            println!("wrote {name} to {}", output.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_list_as_crictl_lists_them() {
        let image = ImageInfo {
            node: "n1".into(),
            names: vec![
                "docker.io/library/busybox:1.36".into(),
                "skiff.local/example@sha256:abcd".into(),
            ],
            id: "sha256:0123456789abcdef".into(),
            digest: "sha256:ff".into(),
            size: 1_234_567,
            created: String::new(),
        };
        assert_eq!(
            rows(&[image]),
            vec![
                vec![
                    "n1".to_string(),
                    "docker.io/library/busybox".into(),
                    "1.36".into(),
                    "0123456789abc".into(),
                    "1.235MB".into(),
                ],
                vec![
                    "n1".to_string(),
                    "skiff.local/example".into(),
                    "<none>".into(),
                    "0123456789abc".into(),
                    "1.235MB".into(),
                ],
            ]
        );
        assert_eq!(
            repository_and_tag("localhost:5000/app"),
            ("localhost:5000/app".into(), "<none>".into())
        );
    }
}
