//! Commands that change one field of live objects: `scale` (spec.replicas) and `label`. Each
//! reads the object, changes it and updates it with its resourceVersion, reading again when
//! someone else changed it in between.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::{ApiError, Kind, Reason};

use super::{kind_and_names, report, Ctx};
use crate::output::kind_ref;
use crate::Reported;

const ATTEMPTS: usize = 5;

/// Reads, changes with `change` (which may refuse), and writes back; retries on conflicts.
pub(super) async fn read_modify_write(
    ctx: &Ctx,
    kind: &Kind,
    name: &str,
    change: impl Fn(&mut Value) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut obj = ctx.client.get(kind, &ctx.namespace, name).await?;
        change(&mut obj)?;
        match ctx.client.update(&obj, &ctx.namespace).await {
            Ok(_) => return Ok(()),
            Err(e) if e.reason == Reason::Conflict => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::new(Reason::Conflict, "too many conflicts")))
}

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// What to scale: `deployment/web`, `deployment web`, `rs/frontend`, `sts/db`.
    #[arg(required = true)]
    resources: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    replicas: i64,
}

pub async fn scale(ctx: &Ctx, args: &ScaleArgs) -> anyhow::Result<()> {
    if args.replicas < 0 {
        anyhow::bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let mut failed = false;
    for (kind, names) in kind_and_names(&args.resources)? {
        if !matches!(kind.kind, "Deployment" | "ReplicaSet" | "StatefulSet") {
            anyhow::bail!(
                "cannot scale {}: only deployments, replicasets and statefulsets",
                kind.resource()
            );
        }
        if names.is_empty() {
            anyhow::bail!("resource(s) were provided, but no name was specified");
        }
        for name in names {
            let replicas = args.replicas;
            let result = read_modify_write(ctx, &kind, &name, |obj| {
                obj["spec"]["replicas"] = replicas.into();
                Ok(())
            })
            .await;
            match result {
                Ok(()) => println!("{}/{name} scaled", kind_ref(&kind)),
                Err(e) => {
                    report(&e);
                    failed = true;
                }
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// The objects, then the changes: `pods web app=v2 tier-` (`key-` removes a label).
    #[arg(required = true)]
    args: Vec<String>,
    /// Allow changing a label that already has a value.
    #[arg(long)]
    overwrite: bool,
}

/// Splits `label` arguments into objects and label changes (None = remove).
fn split_label_args(args: &[String]) -> (Vec<String>, BTreeMap<String, Option<String>>) {
    let mut objects = Vec::new();
    let mut changes = BTreeMap::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            changes.insert(k.to_string(), Some(v.to_string()));
        } else if let Some(k) = a.strip_suffix('-') {
            changes.insert(k.to_string(), None);
        } else {
            objects.push(a.clone());
        }
    }
    (objects, changes)
}

pub async fn label(ctx: &Ctx, args: &LabelArgs) -> anyhow::Result<()> {
    let (objects, changes) = split_label_args(&args.args);
    if changes.is_empty() {
        anyhow::bail!("at least one label update is required");
    }
    for (k, v) in &changes {
        skiff_api::selector::check_label_key(k).map_err(|e| anyhow::anyhow!(e))?;
        if let Some(v) = v {
            skiff_api::selector::check_label_value(v)
                .map_err(|e| anyhow::anyhow!("invalid label value {k}={v}: {e}"))?;
        }
    }
    let mut failed = false;
    for (kind, names) in kind_and_names(&objects)? {
        for name in names {
            let overwrite = args.overwrite;
            let changes = changes.clone();
            let result = read_modify_write(ctx, &kind, &name, move |obj| {
                let meta = skiff_api::object::metadata_mut(obj)
                    .ok_or_else(|| ApiError::bad_request("object has no metadata"))?;
                let labels = meta
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                let Some(labels) = labels.as_object_mut() else {
                    return Err(ApiError::bad_request("metadata.labels is not a map"));
                };
                for (k, v) in &changes {
                    match v {
                        Some(v) => {
                            if let Some(old) = labels.get(k).and_then(Value::as_str) {
                                if old != v && !overwrite {
                                    return Err(ApiError::bad_request(format!(
                                        "'{k}' already has a value ({old}), and --overwrite is false"
                                    )));
                                }
                            }
                            labels.insert(k.clone(), v.clone().into());
                        }
                        None => {
                            labels.remove(k);
                        }
                    }
                }
                Ok(())
            })
            .await;
            match result {
                Ok(()) => println!("{}/{name} labeled", kind_ref(&kind)),
                Err(e) => {
                    if e.reason == Reason::BadRequest {
                        eprintln!("error: {}", e.message);
                    } else {
                        report(&e);
                    }
                    failed = true;
                }
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments_split_into_objects_and_changes() {
        let args: Vec<String> = ["pods", "web", "app=v2", "tier-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (objects, changes) = split_label_args(&args);
        assert_eq!(objects, ["pods", "web"]);
        assert_eq!(changes["app"], Some("v2".to_string()));
        assert_eq!(changes["tier"], None);
    }
}
