//! `skiff describe`: an object's identity, labels and annotations, the main facts of its kind,
//! its spec and status, and the Events that name it.

use serde_json::Value;
use skiff_api::{object, Kind};

use super::{kind_and_names, report, Ctx};
use crate::output::{age, yaml};
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Resource type and names: `pod web`, `deploy/web`.
    #[arg(required = true)]
    resources: Vec<String>,
}

/// `Title:        k=v` lines, one per entry (the title on the first), or `<none>`.
pub(super) fn map_lines(title: &str, map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return format!("{title:<14}<none>\n");
    }
    let mut out = String::new();
    for (i, (k, v)) in map.iter().enumerate() {
        let head = if i == 0 { title } else { "" };
        out.push_str(&format!("{head:<14}{k}={v}\n"));
    }
    out
}

/// Every line of `text` indented by two spaces.
pub(super) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The description of one object and its events.
pub fn describe(kind: &Kind, obj: &Value, events: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(&format!("{:<14}{}\n", "Name:", object::name(obj)));
    if kind.namespaced {
        out.push_str(&format!("{:<14}{}\n", "Namespace:", object::namespace(obj)));
    }
    out.push_str(&map_lines("Labels:", &object::labels(obj)));
    let mut annotations = object::annotations(obj);
    annotations.remove("skiff.io/last-applied-configuration");
    out.push_str(&map_lines("Annotations:", &annotations));
    out.push_str(&format!(
        "{:<14}{}\n",
        "Created:",
        object::meta_str(obj, "creationTimestamp")
    ));
    let deleting = object::meta_str(obj, "deletionTimestamp");
    if !deleting.is_empty() {
        out.push_str(&format!("{:<14}{deleting}\n", "Deleting:"));
    }
    if let Some(spec) = obj.get("spec") {
        out.push_str("Spec:\n");
        out.push_str(&indent(&yaml(spec)?));
    }
    if let Some(status) = obj.get("status") {
        out.push_str("Status:\n");
        out.push_str(&indent(&yaml(status)?));
    }
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        out.push_str("Data:\n");
        for (k, v) in data {
            let shown = if kind.kind == "Secret" {
                format!("{} bytes", v.as_str().map(str::len).unwrap_or(0))
            } else {
                v.as_str().unwrap_or_default().to_string()
            };
            out.push_str(&format!("  {k}: {shown}\n"));
        }
    }
    if events.is_empty() {
        out.push_str("Events:       <none>\n");
    } else {
        out.push_str("Events:\n");
        out.push_str("  Type    Reason    Age    From    Message\n");
        for e in events {
            let when = match object::field_string(e, "lastTimestamp").as_str() {
                "" => age(object::meta_str(e, "creationTimestamp")),
                t => age(t),
            };
            out.push_str(&format!(
                "  {}  {}  {}  {}  {}\n",
                object::field_string(e, "type"),
                object::field_string(e, "reason"),
                when,
                object::field_string(e, "source.component"),
                object::field_string(e, "message"),
            ));
        }
    }
    Ok(out)
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    let events_kind = Kind::named("events").expect("Event is served");
    let mut failed = false;
    let mut first = true;
    for (kind, names) in kind_and_names(&args.resources)? {
        let objects = if names.is_empty() {
            match ctx.client.list(&kind, Some(&ctx.namespace), "", "").await {
                Ok(l) => l.items,
                Err(e) => {
                    report(&e);
                    failed = true;
                    continue;
                }
            }
        } else {
            let mut v = Vec::new();
            for n in &names {
                match ctx.client.get(&kind, &ctx.namespace, n).await {
                    Ok(o) => v.push(o),
                    Err(e) => {
                        report(&e);
                        failed = true;
                    }
                }
            }
            v
        };
        for obj in objects {
            let selector = format!(
                "involvedObject.kind={},involvedObject.name={}",
                kind.kind,
                object::name(&obj)
            );
            let events = ctx
                .client
                .list(
                    &events_kind,
                    Some(object::namespace(&obj))
                        .filter(|n| !n.is_empty())
                        .or(Some(&ctx.namespace)),
                    "",
                    &selector,
                )
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            if !first {
                println!();
            }
            first = false;
            print!("{}", describe(&kind, &obj, &events)?);
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}
