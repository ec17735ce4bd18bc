//! `skiff get`: tables per kind (`-o wide`), `-o yaml|json|name|jsonpath=TEMPLATE`, by name
//! or by selectors, in one namespace or all (`-A`).

use serde_json::Value;

use super::{kind_and_names, report, Ctx};
use crate::jsonpath::Template;
use crate::output;
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Resource type and optional names: `pods`, `pods web db`, `pod/web`, `pods,services`.
    #[arg(required = true)]
    resources: Vec<String>,
    /// Output format: wide, yaml, json, name, or jsonpath=TEMPLATE (kubectl's JSONPath).
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// Label selector (`app=web,tier in (a,b)`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector (`spec.nodeName=n1,status.phase!=Running`).
    #[arg(long)]
    field_selector: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// After listing, keep printing changes until interrupted.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Add a LABELS column to tables.
    #[arg(long)]
    show_labels: bool,
}

/// A table, with a LABELS column when asked for.
fn table(kind: &skiff_api::Kind, objects: &[Value], args: &Args, wide: bool) -> String {
    let base = output::table(kind, objects, wide, args.all_namespaces);
    if !args.show_labels {
        return base;
    }
    let lines: Vec<&str> = base.lines().collect();
    let width = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut out = format!("{:<width$}   LABELS\n", lines[0]);
    for (line, obj) in lines[1..].iter().zip(objects) {
        let labels = skiff_api::object::labels(obj)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let labels = if labels.is_empty() {
            "<none>".to_string()
        } else {
            labels
        };
        out.push_str(&format!("{line:<width$}   {labels}\n"));
    }
    out
}

/// Prints each change after the list, as `kubectl get -w` does: table rows without the header,
/// or one document/name per change.
async fn watch(
    ctx: &Ctx,
    args: &Args,
    kind: &skiff_api::Kind,
    from: &str,
    template: Option<&Template>,
) -> anyhow::Result<()> {
    let format = args.output.as_deref().unwrap_or("");
    let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
    let mut w = ctx.client.watch(
        kind,
        ns,
        args.selector.as_deref().unwrap_or_default(),
        args.field_selector.as_deref().unwrap_or_default(),
        from,
    );
    while let Some(ev) = w.next().await? {
        match ev.kind.as_str() {
            "BOOKMARK" => continue,
            "ERROR" => anyhow::bail!(
                "watch ended: {}",
                ev.object["message"].as_str().unwrap_or("error")
            ),
            _ => {}
        }
        if let Some(t) = template {
            render(t, &ev.object)?;
            use std::io::Write;
            std::io::stdout().flush()?;
            continue;
        }
        match format {
            "" | "wide" => {
                let table =
                    output::table(kind, &[ev.object], format == "wide", args.all_namespaces);
                for line in table.lines().skip(1) {
                    println!("{line}");
                }
            }
            "name" => println!("{}", output::name_ref(kind, &ev.object)),
            "json" => println!("{}", serde_json::to_string_pretty(&ev.object)?),
            _ => print!("---\n{}", output::yaml(&ev.object)?),
        }
    }
    Ok(())
}

/// The template of `-o jsonpath=TEMPLATE` (quotes around it dropped, as kubectl drops them),
/// None for another format; a template that does not parse is an error naming it.
fn jsonpath_template(format: &str) -> anyhow::Result<Option<Template>> {
    let Some(text) = format.strip_prefix("jsonpath=") else {
        return Ok(None);
    };
    let text = ['\'', '"']
        .iter()
        .find_map(|q| text.strip_prefix(*q).and_then(|t| t.strip_suffix(*q)))
        .unwrap_or(text);
    Template::parse(text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("error parsing jsonpath {text}, {e}"))
}

fn render(template: &Template, value: &Value) -> anyhow::Result<()> {
    let text = template
        .render(value)
        .map_err(|e| anyhow::anyhow!("error executing jsonpath: {e}"))?;
    print!("{text}");
    Ok(())
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    let format = args.output.as_deref().unwrap_or("");
    let template = jsonpath_template(format)?;
    let format = if template.is_some() {
        "jsonpath"
    } else {
        format
    };
    if !["", "wide", "yaml", "json", "name", "jsonpath"].contains(&format) {
        anyhow::bail!(
            "unable to match a printer suitable for the output format \"{format}\", allowed \
             formats are: json,jsonpath,name,wide,yaml"
        );
    }
    if args.watch {
        let kinds = kind_and_names(&args.resources)?;
        let [(kind, names)] = kinds.as_slice() else {
            anyhow::bail!("you may only specify a single resource type with --watch");
        };
        if !names.is_empty() {
            anyhow::bail!(
                "watching by name is not supported yet; use --field-selector metadata.name=<name>"
            );
        }
        let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
        let list = ctx
            .client
            .list(
                kind,
                ns,
                args.selector.as_deref().unwrap_or_default(),
                args.field_selector.as_deref().unwrap_or_default(),
            )
            .await;
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                report(&e);
                return Err(Reported.into());
            }
        };
        match format {
            "" | "wide" if !list.items.is_empty() => {
                print!("{}", table(kind, &list.items, args, format == "wide"))
            }
            "name" => list
                .items
                .iter()
                .for_each(|o| println!("{}", output::name_ref(kind, o))),
            "json" => {
                for o in &list.items {
                    println!("{}", serde_json::to_string_pretty(o)?);
                }
            }
            "yaml" => {
                for o in &list.items {
                    print!("---\n{}", output::yaml(o)?);
                }
            }
            "jsonpath" => {
                if let Some(t) = &template {
                    for o in &list.items {
                        render(t, o)?;
                    }
                }
            }
            _ => {}
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        return watch(ctx, args, kind, &list.resource_version, template.as_ref()).await;
    }
    let mut failed = false;
    let mut shown: Vec<Value> = Vec::new();
    let mut resource_version = String::new();
    let mut printed_table = false;
    for (kind, names) in kind_and_names(&args.resources)? {
        let mut objects = Vec::new();
        if names.is_empty() {
            let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
            match ctx
                .client
                .list(
                    &kind,
                    ns,
                    args.selector.as_deref().unwrap_or_default(),
                    args.field_selector.as_deref().unwrap_or_default(),
                )
                .await
            {
                Ok(list) => {
                    objects = list.items;
                    resource_version = list.resource_version;
                }
                Err(e) => {
                    report(&e);
                    failed = true;
                    continue;
                }
            }
        } else {
            for name in &names {
                match ctx.client.get(&kind, &ctx.namespace, name).await {
                    Ok(o) => objects.push(o),
                    Err(e) => {
                        report(&e);
                        failed = true;
                    }
                }
            }
        }
        match format {
            "" | "wide" => {
                if objects.is_empty() {
                    continue;
                }
                if printed_table {
                    println!();
                }
                print!("{}", table(&kind, &objects, args, format == "wide"));
                printed_table = true;
            }
            "name" => {
                for o in &objects {
                    println!("{}", output::name_ref(&kind, o));
                }
            }
            _ => shown.extend(objects),
        }
    }
    match format {
        "yaml" | "json" | "jsonpath" => {
            // One object asked for by name prints as itself; anything else as a List.
            let requested = kind_and_names(&args.resources)?;
            let single = shown.len() == 1 && requested.len() == 1 && requested[0].1.len() == 1;
            let value = if single {
                shown.pop().unwrap_or_default()
            } else {
                output::list_object(shown, &resource_version)
            };
            if let Some(t) = &template {
                render(t, &value)?;
            } else if format == "json" {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", output::yaml(&value)?);
            }
        }
        "" | "wide" if !printed_table && !failed => {
            if args.all_namespaces {
                eprintln!("No resources found");
            } else {
                eprintln!("No resources found in {} namespace.", ctx.namespace);
            }
        }
        _ => {}
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}
