//! `skiff cordon`, `uncordon` and `drain`: mark a node (un)schedulable, and move its pods away
//! (each deleted so that its controller recreates it elsewhere), as kubectl does.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_api::{object, ApiError, DeleteOptions, Kind, Reason};

use super::{report, Ctx};
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct CordonArgs {
    /// Node names.
    #[arg(required = true)]
    nodes: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// Node names.
    #[arg(required = true)]
    nodes: Vec<String>,
    /// Also delete pods no controller manages (they are not recreated anywhere).
    #[arg(long)]
    force: bool,
    /// Leave DaemonSet pods (a DaemonSet would put them back at once).
    #[arg(long)]
    ignore_daemonsets: bool,
    /// Seconds each pod gets to stop (-1: its own terminationGracePeriodSeconds).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grace_period: i64,
    /// How long to wait for the pods to be gone, in seconds (0: do not wait).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn nodes_kind() -> Kind {
    Kind::named("nodes").expect("Node is served")
}

/// Sets spec.unschedulable on `name`; true if it changed.
async fn set_unschedulable(ctx: &Ctx, name: &str, value: bool) -> Result<bool, ApiError> {
    let kind = nodes_kind();
    for _ in 0..5 {
        let mut node = ctx.client.get(&kind, "", name).await?;
        let now = object::field(&node, "spec.unschedulable").and_then(Value::as_bool) == Some(true);
        if now == value {
            return Ok(false);
        }
        node["spec"]["unschedulable"] = value.into();
        match ctx.client.update(&node, "").await {
            Ok(_) => return Ok(true),
            Err(e) if e.reason == Reason::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        Reason::Conflict,
        format!("node {name} kept changing"),
    ))
}

async fn cordon_all(ctx: &Ctx, nodes: &[String], value: bool) -> anyhow::Result<()> {
    let verb = if value { "cordoned" } else { "uncordoned" };
    let mut failed = false;
    for name in nodes {
        match set_unschedulable(ctx, name, value).await {
            Ok(true) => println!("node/{name} {verb}"),
            Ok(false) => println!("node/{name} already {verb}"),
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

pub async fn cordon(ctx: &Ctx, args: &CordonArgs, value: bool) -> anyhow::Result<()> {
    cordon_all(ctx, &args.nodes, value).await
}

fn controller_kind(pod: &Value) -> Option<String> {
    object::field(pod, "metadata.ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("kind"))
        .and_then(Value::as_str)
        .map(String::from)
}

pub async fn drain(ctx: &Ctx, args: &DrainArgs) -> anyhow::Result<()> {
    cordon_all(ctx, &args.nodes, true).await?;
    let pods = Kind::named("pods").expect("Pod is served");
    for node in &args.nodes {
        let list = ctx
            .client
            .list(&pods, None, "", &format!("spec.nodeName={node}"))
            .await;
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                report(&e);
                return Err(Reported.into());
            }
        };
        let mut evict = Vec::new();
        let mut unmanaged = Vec::new();
        let mut daemons = Vec::new();
        for p in list.items {
            match controller_kind(&p).as_deref() {
                Some("DaemonSet") => daemons.push(p),
                Some(_) => evict.push(p),
                None => unmanaged.push(p),
            }
        }
        let name_list = |ps: &[Value]| {
            ps.iter()
                .map(|p| format!("{}/{}", object::namespace(p), object::name(p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut problems = Vec::new();
        if !unmanaged.is_empty() && !args.force {
            problems.push(format!(
                "cannot delete Pods that declare no controller (use --force to override): {}",
                name_list(&unmanaged)
            ));
        }
        if !daemons.is_empty() && !args.ignore_daemonsets {
            problems.push(format!(
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {}",
                name_list(&daemons)
            ));
        }
        if !problems.is_empty() {
            eprintln!(
                "error: unable to drain node {node:?} due to error: {}",
                problems.join("; ")
            );
            return Err(Reported.into());
        }
        if args.force {
            evict.extend(unmanaged);
        }
        let options = DeleteOptions {
            grace_period_seconds: Some(args.grace_period),
            propagation_policy: None,
        };
        for p in &evict {
            match ctx
                .client
                .delete_with(&pods, object::namespace(p), object::name(p), &options)
                .await
            {
                Ok(_) => println!("pod/{} evicted", object::name(p)),
                Err(e) if e.reason == Reason::NotFound => {}
                Err(e) => {
                    report(&e);
                    return Err(Reported.into());
                }
            }
        }
        if args.timeout > 0 && !evict.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(args.timeout);
            let evicted: Vec<(String, String)> = evict
                .iter()
                .map(|p| {
                    (
                        object::namespace(p).to_string(),
                        object::name(p).to_string(),
                    )
                })
                .collect();
            loop {
                let mut left = 0;
                for (ns, name) in &evicted {
                    if ctx.client.get(&pods, ns, name).await.is_ok() {
                        left += 1;
                    }
                }
                if left == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!("error: timed out waiting for {left} pod(s) to leave node {node}");
                    return Err(Reported.into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        println!("node/{node} drained");
    }
    Ok(())
}
