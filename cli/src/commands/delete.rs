//! `skiff delete`: by `kind name...`/`kind/name`, by `-l` selector, `--all` of a kind, or every
//! object of `-f` manifests; prints `pod "web" deleted` per object.

use skiff_api::{object, Kind};

use super::{kind_and_names, report, Ctx};
use crate::manifest;
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Resource type and names (`pods web`, `pod/web`).
    resources: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Delete every object of the kind matching this label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    all: bool,
    /// Treat "not found" as success.
    #[arg(long)]
    ignore_not_found: bool,
    /// Seconds a running pod gets to stop (-1: its own terminationGracePeriodSeconds).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grace_period: i64,
    /// Remove pods at once, without waiting for their node (same as --grace-period=0).
    #[arg(long)]
    force: bool,
    /// What happens to dependents: background (deleted after), foreground (deleted before),
    /// or orphan (kept).
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan"])]
    cascade: String,
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        for doc in manifest::read_all(&args.files)? {
            let api_version = object::api_version(&doc.object);
            let kind_name = object::kind(&doc.object);
            let kind = Kind::of(api_version, kind_name).ok_or_else(|| {
                anyhow::anyhow!(
                    "resource mapping not found for name: {:?} from {:?}: no matches for kind \
                     {kind_name:?} in version {api_version:?}",
                    object::name(&doc.object),
                    doc.source
                )
            })?;
            let ns = match object::namespace(&doc.object) {
                "" => ctx.namespace.clone(),
                ns => ns.to_string(),
            };
            targets.push((kind, ns, object::name(&doc.object).to_string()));
        }
    } else {
        for (kind, names) in kind_and_names(&args.resources)? {
            if names.is_empty() {
                if !args.all && args.selector.is_none() {
                    anyhow::bail!(
                        "resource(s) were provided, but no name was specified (use --all or -l)"
                    );
                }
                let list = ctx
                    .client
                    .list(
                        &kind,
                        Some(&ctx.namespace),
                        args.selector.as_deref().unwrap_or_default(),
                        "",
                    )
                    .await;
                match list {
                    Ok(list) => {
                        for o in list.items {
                            targets.push((
                                kind,
                                object::namespace(&o).to_string(),
                                object::name(&o).to_string(),
                            ));
                        }
                    }
                    Err(e) => {
                        report(&e);
                        return Err(Reported.into());
                    }
                }
            } else {
                for n in names {
                    targets.push((kind, ctx.namespace.clone(), n));
                }
            }
        }
        if targets.is_empty() {
            eprintln!("No resources found");
            return Ok(());
        }
    }
    let options = skiff_api::DeleteOptions {
        grace_period_seconds: Some(if args.force { 0 } else { args.grace_period }),
        propagation_policy: Some(
            match args.cascade.as_str() {
                "foreground" => "Foreground",
                "orphan" => "Orphan",
                _ => "Background",
            }
            .to_string(),
        ),
    };
    let mut failed = false;
    for (kind, ns, name) in targets {
        match ctx.client.delete_with(&kind, &ns, &name, &options).await {
            Ok(_) => println!("{} \"{name}\" deleted", crate::output::kind_ref(&kind)),
            Err(e) if args.ignore_not_found && e.reason == skiff_api::Reason::NotFound => {}
            Err(e) => {
                report(&e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}
