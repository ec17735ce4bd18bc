//! `skiff edit`: the object as YAML in $EDITOR (else `vi`). As kubectl does, what was changed
//! (a JSON merge patch from the object as shown to the object as saved) is applied to the live
//! object, so changes others made meanwhile to other fields (a controller writing status or an
//! annotation) are kept; a field changed by both is the editor's. Changing resourceVersion in
//! the editor asks for the object to be unchanged since then (a conflict otherwise).

use std::process::Command;

use super::{kind_and_names, report, Ctx};
use crate::output::{kind_ref, yaml};
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The object: `deployment/web` or `deployment web`.
    #[arg(required = true)]
    resources: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    let targets = kind_and_names(&args.resources)?;
    let [(kind, names)] = targets.as_slice() else {
        anyhow::bail!("edit takes one resource type");
    };
    let [name] = names.as_slice() else {
        anyhow::bail!("edit takes exactly one object name");
    };
    let obj = match ctx.client.get(kind, &ctx.namespace, name).await {
        Ok(o) => o,
        Err(e) => {
            report(&e);
            return Err(Reported.into());
        }
    };
    let original = yaml(&obj)?;
    let dir = std::env::temp_dir().join(format!("skiff-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{name}.yaml", kind.plural));
    std::fs::write(&path, &original)?;
    let editor = std::env::var("SKIFF_EDITOR")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()?;
    let edited = std::fs::read_to_string(&path)?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        anyhow::bail!("the editor exited with {status}; nothing was changed");
    }
    if edited == original {
        eprintln!("Edit cancelled, no changes made.");
        return Ok(());
    }
    let docs = crate::manifest::parse(&edited, "the edited file")?;
    let [doc] = docs.as_slice() else {
        anyhow::bail!("the edited file must hold exactly one object");
    };
    let patch = skiff_api::merge::diff(&obj, &doc.object);
    if patch.as_object().is_some_and(|p| p.is_empty()) {
        eprintln!("Edit cancelled, no changes made.");
        return Ok(());
    }
    let result = super::modify::read_modify_write(ctx, kind, name, |live| {
        skiff_api::merge::merge(live, &patch);
        Ok(())
    })
    .await;
    match result {
        Ok(_) => {
            println!("{}/{name} edited", kind_ref(kind));
            Ok(())
        }
        Err(e) => {
            report(&e);
            Err(Reported.into())
        }
    }
}
