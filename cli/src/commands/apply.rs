//! `skiff apply -f` and `skiff create -f`: every object of the manifests, in order; each result
//! printed as kubectl does (`deployment.apps/web configured`); failures reported and counted.

use serde_json::Value;
use skiff_api::{object, ApiError, Kind, Reason};

use super::{report, Ctx};
use crate::manifest;
use crate::output::kind_ref;
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest file, directory, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Output: `name` prints only kind/name.
    #[arg(short = 'o', long)]
    output: Option<String>,
}

fn check_namespace(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    let theirs = object::namespace(obj);
    if ctx.namespace_flag && !theirs.is_empty() && theirs != ctx.namespace {
        return Err(ApiError::new(
            Reason::BadRequest,
            format!(
                "the namespace from the provided object \"{theirs}\" does not match the \
                 namespace \"{}\". You must pass '--namespace={theirs}' to perform this \
                 operation.",
                ctx.namespace
            ),
        ));
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, args: &Args, apply: bool) -> anyhow::Result<()> {
    let docs = manifest::read_all(&args.files)?;
    let mut failed = false;
    for doc in docs {
        let verb = if apply { "applying" } else { "creating" };
        let result = match check_namespace(ctx, &doc.object) {
            Err(e) => Err(e),
            Ok(()) if apply => ctx.client.apply(&doc.object, &ctx.namespace).await,
            Ok(()) => ctx.client.create(&doc.object, &ctx.namespace).await,
        };
        match result {
            Ok(w) => {
                let kind = Kind::of(object::api_version(&w.object), object::kind(&w.object));
                let what = match kind {
                    Some(k) => format!("{}/{}", kind_ref(&k), object::name(&w.object)),
                    None => object::name(&w.object).to_string(),
                };
                if args.output.as_deref() == Some("name") {
                    println!("{what}");
                } else {
                    println!("{what} {}", w.outcome);
                }
            }
            Err(e) => {
                failed = true;
                let e = ApiError::new(
                    e.reason,
                    format!("error when {verb} \"{}\": {}", doc.source, e.message),
                );
                report(&e);
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}
