//! `skiff rollout`: the rollouts of Deployments, as kubectl does them. `status` follows a
//! Deployment until its rollout finishes (kubectl's status viewer, message for message);
//! `history` lists the revisions its ReplicaSets record, or one revision's pod template; `undo`
//! copies an earlier ReplicaSet's template back into the Deployment; `restart` stamps the
//! template with the time so that every pod is replaced; `pause` and `resume` set spec.paused.
//!
//! The decisions are pure functions of the objects read (tested below); the async functions
//! only read, write (with the resourceVersion read, again after a conflict) and print.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use skiff_api::deployments::{unhashed, CHANGE_CAUSE, REVISION};
use skiff_api::{object, ApiError, Kind, Reason};

use super::describe::{indent, map_lines};
use super::{kind_and_names, kind_named, report, Ctx};
use crate::output::kind_ref;
use crate::Reported;

/// The template annotation `restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Writes tried before a conflict is reported.
const ATTEMPTS: usize = 5;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Show the status of a rollout, waiting until it finishes.
    Status(StatusArgs),
    /// List the revisions of a rollout, or show the pod template of one (--revision).
    History(HistoryArgs),
    /// Roll back to the previous revision, or to --to-revision.
    Undo(UndoArgs),
    /// Replace every pod, by stamping the pod template with the current time.
    Restart(Targets),
    /// Hold rollouts: template changes wait until the deployment is resumed.
    Pause(Targets),
    /// Let a paused deployment roll out again.
    Resume(Targets),
}

#[derive(clap::Args, Debug)]
pub struct Targets {
    /// The deployments: `deployment/web` or `deployment web db`.
    #[arg(required = true)]
    resources: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The deployment: `deployment/web` or `deployment web`.
    #[arg(required = true)]
    resources: Vec<String>,
    /// Wait until the rollout finishes; `--watch=false` prints the status once.
    #[arg(
        short = 'w',
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    watch: bool,
    /// Give up after this long (`30s`, `2m`, `1h30m`); 0 waits forever.
    #[arg(long, default_value = "0", value_parser = parse_timeout)]
    timeout: Duration,
    /// Fail unless the deployment is at this revision (0: whichever it is at).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    revision: i64,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The deployments: `deployment/web` or `deployment web`.
    #[arg(required = true)]
    resources: Vec<String>,
    /// Show the pod template of this revision.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    revision: i64,
}

#[derive(clap::Args, Debug)]
pub struct UndoArgs {
    /// The deployments: `deployment/web` or `deployment web`.
    #[arg(required = true)]
    resources: Vec<String>,
    /// The revision to go back to (0: the one before the newest).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    to_revision: i64,
}

/// `--timeout`: Go-style durations as kubectl takes them (`30s`, `2m`, `1h30m`, `500ms`), or
/// `0` for none.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("invalid duration {text:?} (use e.g. 30s, 2m, 1h30m): {e}"))?;
    if d.is_negative() {
        return Err(format!("invalid duration {text:?}: must not be negative"));
    }
    Duration::try_from(d).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// The Deployment names the arguments give; any other kind is refused.
fn deployment_names(resources: &[String]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for (kind, n) in kind_and_names(resources)? {
        if kind.kind != "Deployment" {
            bail!("rollout is not supported for {}", kind.plural);
        }
        if n.is_empty() {
            bail!("resource(s) were provided, but no name was specified");
        }
        names.extend(n);
    }
    Ok(names)
}

fn int(v: &Value, path: &str) -> i64 {
    object::field(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn is_paused(d: &Value) -> bool {
    object::field(d, "spec.paused").and_then(Value::as_bool) == Some(true)
}

/// The revision annotation of a Deployment or ReplicaSet: None when absent, an error when it
/// is not a number.
fn revision_of(obj: &Value) -> anyhow::Result<Option<i64>> {
    match object::annotations(obj).get(REVISION) {
        None => Ok(None),
        Some(r) => r.trim().parse().map(Some).map_err(|_| {
            anyhow!(
                "{} {:?} has an invalid {REVISION} annotation {r:?}",
                object::kind(obj),
                object::name(obj)
            )
        }),
    }
}

/// Where a rollout stands: kubectl's message, and whether the rollout is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub message: String,
    pub done: bool,
}

/// kubectl's DeploymentStatusViewer: the status of `d`'s rollout, or an error when it can no
/// longer finish (progress deadline exceeded) or is not at `revision` (when not 0).
pub fn rollout_status(d: &Value, revision: i64) -> anyhow::Result<Progress> {
    let name = object::name(d);
    if revision > 0 {
        let running = revision_of(d)
            .map_err(|e| anyhow!("cannot get the revision of deployment {name:?}: {e}"))?
            .unwrap_or(0);
        if running != revision {
            bail!(
                "desired revision ({revision}) is different from the running revision ({running})"
            );
        }
    }
    let waiting = |what: String| Progress {
        message: format!("Waiting for deployment {name:?} rollout to finish: {what}..."),
        done: false,
    };
    if int(d, "metadata.generation") > int(d, "status.observedGeneration") {
        return Ok(Progress {
            message: "Waiting for deployment spec update to be observed...".into(),
            done: false,
        });
    }
    let timed_out = object::field(d, "status.conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
        })
        .is_some_and(|c| {
            c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
        });
    if timed_out {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let updated = int(d, "status.updatedReplicas");
    let replicas = int(d, "status.replicas");
    let available = int(d, "status.availableReplicas");
    if let Some(wanted) = object::field(d, "spec.replicas").and_then(Value::as_i64) {
        if updated < wanted {
            return Ok(waiting(format!(
                "{updated} out of {wanted} new replicas have been updated"
            )));
        }
    }
    if replicas > updated {
        return Ok(waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        )));
    }
    if available < updated {
        return Ok(waiting(format!(
            "{available} of {updated} updated replicas are available"
        )));
    }
    Ok(Progress {
        message: format!("deployment {name:?} successfully rolled out"),
        done: true,
    })
}

/// The ReplicaSets among `sets` that `d` controls: same namespace, and a controller
/// ownerReference carrying `d`'s uid.
pub fn owned_replica_sets<'a>(d: &Value, sets: &'a [Value]) -> Vec<&'a Value> {
    let uid = object::meta_str(d, "uid");
    if uid.is_empty() {
        return Vec::new();
    }
    sets.iter()
        .filter(|rs| object::namespace(rs) == object::namespace(d))
        .filter(|rs| {
            object::field(rs, "metadata.ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r.get("controller").and_then(Value::as_bool) == Some(true)
                            && r.get("uid").and_then(Value::as_str) == Some(uid)
                    })
                })
        })
        .collect()
}

/// Revision → ReplicaSet, in revision order. ReplicaSets without a readable revision
/// annotation are not part of the history.
pub fn history<'a>(sets: &[&'a Value]) -> BTreeMap<i64, &'a Value> {
    sets.iter()
        .filter_map(|rs| revision_of(rs).ok().flatten().map(|r| (r, *rs)))
        .collect()
}

/// kubectl's history table: `REVISION  CHANGE-CAUSE`, one row per revision, `<none>` for a
/// revision without a change-cause.
pub fn history_table(history: &BTreeMap<i64, &Value>) -> String {
    let rows: Vec<(String, String)> = history
        .iter()
        .map(|(r, rs)| {
            let cause = object::annotations(rs)
                .get(CHANGE_CAUSE)
                .filter(|c| !c.is_empty())
                .cloned()
                .unwrap_or_else(|| "<none>".into());
            (r.to_string(), cause)
        })
        .collect();
    let width = rows
        .iter()
        .map(|(r, _)| r.len())
        .chain(std::iter::once("REVISION".len()))
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = format!("{:<width$}CHANGE-CAUSE\n", "REVISION");
    for (r, cause) in rows {
        out.push_str(&format!("{r:<width$}{cause}\n"));
    }
    out
}

/// A revision's pod template as `history --revision` shows it: the ReplicaSet's template, with
/// the ReplicaSet's change-cause among its annotations (as kubectl shows it).
pub fn revision_template(rs: &Value) -> Value {
    let mut template = object::field(rs, "spec.template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(cause) = object::annotations(rs).get(CHANGE_CAUSE) {
        object::set_in(
            &mut template,
            &["metadata", "annotations", CHANGE_CAUSE],
            json!(cause),
        );
    }
    template
}

/// `Title:  value` with the value at column 16 once indented, like describe's fields.
fn line(out: &mut String, title: &str, value: &str) {
    out.push_str(&format!("{title:<14}{value}\n"));
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One container of a template, kubectl-describe style.
fn container_text(c: &Value) -> String {
    let mut out = String::new();
    line(&mut out, "Image:", &object::field_string(c, "image"));
    let ports: Vec<String> = c
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let protocol = match object::field_string(p, "protocol") {
                        s if s.is_empty() => "TCP".to_string(),
                        s => s,
                    };
                    format!("{}/{protocol}", object::field_string(p, "containerPort"))
                })
                .collect()
        })
        .unwrap_or_default();
    match ports.as_slice() {
        [] => {}
        [one] => line(&mut out, "Port:", one),
        many => line(&mut out, "Ports:", &many.join(", ")),
    }
    for (title, field) in [("Command:", "command"), ("Args:", "args")] {
        let items = strings(c.get(field));
        if !items.is_empty() {
            out.push_str(&format!("{title}\n"));
            out.push_str(&indent(&items.join("\n")));
        }
    }
    for (title, field) in [
        ("Limits:", "resources.limits"),
        ("Requests:", "resources.requests"),
    ] {
        let map = object::string_map(object::field(c, field));
        if !map.is_empty() {
            out.push_str(&format!("{title}\n"));
            for (k, v) in map {
                out.push_str(&format!("  {k}:  {v}\n"));
            }
        }
    }
    let env = c
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if env.is_empty() {
        line(&mut out, "Environment:", "<none>");
    } else {
        out.push_str("Environment:\n");
        for e in &env {
            out.push_str(&format!(
                "  {}:  {}\n",
                object::field_string(e, "name"),
                env_value(e)
            ));
        }
    }
    for from in c
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let source = if let Some(cm) = from.get("configMapRef") {
            format!("{}  ConfigMap", object::field_string(cm, "name"))
        } else if let Some(s) = from.get("secretRef") {
            format!("{}  Secret", object::field_string(s, "name"))
        } else {
            "<unknown source>".into()
        };
        line(&mut out, "Environment From:", &source);
    }
    out
}

/// An env entry's value, or where it comes from, as kubectl describe puts it.
fn env_value(e: &Value) -> String {
    if let Some(v) = e.get("value").and_then(Value::as_str) {
        return v.to_string();
    }
    let from = |path: &str| object::field(e, path);
    if let Some(r) = from("valueFrom.configMapKeyRef") {
        return format!(
            "<set to the key '{}' of config map '{}'>",
            object::field_string(r, "key"),
            object::field_string(r, "name")
        );
    }
    if let Some(r) = from("valueFrom.secretKeyRef") {
        return format!(
            "<set to the key '{}' in secret '{}'>",
            object::field_string(r, "key"),
            object::field_string(r, "name")
        );
    }
    if let Some(r) = from("valueFrom.fieldRef") {
        let version = match object::field_string(r, "apiVersion") {
            v if v.is_empty() => "v1".to_string(),
            v => v,
        };
        return format!("({version}:{})", object::field_string(r, "fieldPath"));
    }
    if let Some(r) = from("valueFrom.resourceFieldRef") {
        return format!("({})", object::field_string(r, "resource"));
    }
    String::new()
}

/// kubectl's "Pod Template:" block: labels, annotations, containers (image, ports, command,
/// resources, environment) and volumes.
pub fn pod_template_text(template: &Value) -> String {
    let mut body = String::new();
    body.push_str(&map_lines("Labels:", &object::labels(template)));
    body.push_str(&map_lines("Annotations:", &object::annotations(template)));
    for (title, field) in [
        ("Init Containers:", "spec.initContainers"),
        ("Containers:", "spec.containers"),
    ] {
        let containers = object::field(template, field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if containers.is_empty() && field == "spec.initContainers" {
            continue;
        }
        body.push_str(&format!("{title}\n"));
        for c in &containers {
            body.push_str(&format!(" {}:\n", object::field_string(c, "name")));
            body.push_str(&indent(&container_text(c)));
        }
    }
    let volumes = object::field(template, "spec.volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if volumes.is_empty() {
        line(&mut body, "Volumes:", "<none>");
    } else {
        body.push_str("Volumes:\n");
        for v in &volumes {
            let source = v
                .as_object()
                .and_then(|m| m.keys().find(|k| k.as_str() != "name").cloned())
                .unwrap_or_else(|| "<unknown>".into());
            body.push_str(&format!(
                " {}:  {source}\n",
                object::field_string(v, "name")
            ));
        }
    }
    format!("Pod Template:\n{}", indent(&body))
}

/// The revision `undo` goes back to and its ReplicaSet: `to` when given (not 0), else the
/// newest revision but one (kubectl's choice).
pub fn rollback_source<'a>(
    d: &Value,
    history: &BTreeMap<i64, &'a Value>,
    to: i64,
) -> anyhow::Result<(i64, &'a Value)> {
    if to > 0 {
        return history
            .get(&to)
            .map(|rs| (to, *rs))
            .ok_or_else(|| anyhow!("unable to find specified revision {to} in history"));
    }
    history
        .iter()
        .rev()
        .nth(1)
        .map(|(r, rs)| (*r, *rs))
        .ok_or_else(|| {
            anyhow!(
                "no rollout history found for deployment {:?}",
                object::name(d)
            )
        })
}

/// What `undo` does to a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollback {
    /// The template already is that of the revision: nothing to write.
    AlreadyAt(i64),
    /// The Deployment with the revision's template (and change-cause), to be written.
    To(i64, Value),
}

/// kubectl's rollback of `d` to revision `to` (0: the previous one), given ReplicaSets of its
/// namespace: the revision's template without its hash label replaces `d`'s, and `d`'s
/// change-cause becomes the ReplicaSet's (or goes, when it has none). Paused Deployments are
/// refused.
pub fn rollback(d: &Value, sets: &[Value], to: i64) -> anyhow::Result<Rollback> {
    let owned = owned_replica_sets(d, sets);
    let history = history(&owned);
    let (revision, rs) = rollback_source(d, &history, to)?;
    let name = object::name(d);
    if is_paused(d) {
        bail!(
            "you cannot rollback a paused deployment; resume it first with 'skiff rollout \
             resume deployment/{name}' and try again"
        );
    }
    let template = object::field(rs, "spec.template")
        .map(unhashed)
        .ok_or_else(|| anyhow!("replica set {:?} has no pod template", object::name(rs)))?;
    let current = object::field(d, "spec.template")
        .map(unhashed)
        .unwrap_or(Value::Null);
    if template == current {
        return Ok(Rollback::AlreadyAt(revision));
    }
    let mut next = d.clone();
    next["spec"]["template"] = template;
    let mut annotations = object::annotations(d);
    match object::annotations(rs).get(CHANGE_CAUSE) {
        Some(cause) => {
            annotations.insert(CHANGE_CAUSE.into(), cause.clone());
        }
        None => {
            annotations.remove(CHANGE_CAUSE);
        }
    }
    object::set_meta(&mut next, "annotations", json!(annotations));
    Ok(Rollback::To(revision, next))
}

/// `d` with its template stamped `restartedAt` = `now`; paused Deployments are refused.
pub fn restarted(d: &Value, now: &str) -> anyhow::Result<Value> {
    if is_paused(d) {
        bail!("can't restart paused deployment (run rollout resume first)");
    }
    let mut next = d.clone();
    if !next.get("spec").is_some_and(Value::is_object) {
        bail!("deployment {:?} has no spec", object::name(d));
    }
    let template = next["spec"]
        .as_object_mut()
        .map(|s| s.entry("template").or_insert_with(|| json!({})));
    let Some(template) = template.filter(|t| t.is_object()) else {
        bail!("deployment {:?} has no pod template", object::name(d));
    };
    object::set_in(
        template,
        &["metadata", "annotations", RESTARTED_AT],
        json!(now),
    );
    Ok(next)
}

/// `d` with spec.paused = `paused`, or None when it already is.
pub fn with_paused(d: &Value, paused: bool) -> Option<Value> {
    if is_paused(d) == paused {
        return None;
    }
    let mut next = d.clone();
    next["spec"]["paused"] = json!(paused);
    Some(next)
}

/// What a change to one Deployment came to.
enum Change {
    /// Write this object, then print the message.
    Write(Value, String),
    /// Nothing to write; print the message.
    Keep(String),
}

/// Reads Deployment `name`, lets `decide` change it (or refuse), and writes it back with the
/// resourceVersion read, reading again when someone else wrote in between. Returns the line to
/// print.
async fn change_deployment(
    ctx: &Ctx,
    kind: &Kind,
    name: &str,
    decide: impl Fn(&Value) -> anyhow::Result<Change>,
) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let d = ctx.client.get(kind, &ctx.namespace, name).await?;
        let (next, message) = match decide(&d)? {
            Change::Keep(message) => return Ok(message),
            Change::Write(next, message) => (next, message),
        };
        match ctx.client.update(&next, &ctx.namespace).await {
            Ok(_) => return Ok(message),
            Err(e) if e.reason == Reason::Conflict => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .unwrap_or_else(|| ApiError::new(Reason::Conflict, "too many conflicts"))
        .into())
}

/// Reports a failure as kubectl would: API errors as `Error from server (...)`, others as
/// `error: ...`.
fn report_failure(e: &anyhow::Error) {
    if e.downcast_ref::<Reported>().is_some() {
        return;
    }
    match e.downcast_ref::<ApiError>() {
        Some(api) => report(api),
        None => eprintln!("error: {e:#}"),
    }
}

/// Runs `one` for every named Deployment, printing its line or its failure; fails at the end
/// when any did.
async fn each<F, Fut>(resources: &[String], one: F) -> anyhow::Result<()>
where
    F: Fn(Kind, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let names = deployment_names(resources)?;
    let kind = kind_named("deployments")?;
    let mut failed = false;
    for name in names {
        match one(kind, name).await {
            Ok(out) => print!("{out}"),
            Err(e) => {
                report_failure(&e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, command: &Command) -> anyhow::Result<()> {
    let result = match command {
        Command::Status(args) => status(ctx, args).await,
        Command::History(args) => {
            each(&args.resources, |kind, name| {
                show_history(ctx, kind, name, args.revision)
            })
            .await
        }
        Command::Undo(args) => {
            each(&args.resources, |kind, name| {
                undo(ctx, kind, name, args.to_revision)
            })
            .await
        }
        Command::Restart(args) => {
            each(&args.resources, |kind, name| restart(ctx, kind, name)).await
        }
        Command::Pause(args) => {
            each(&args.resources, |kind, name| pause(ctx, kind, name, true)).await
        }
        Command::Resume(args) => {
            each(&args.resources, |kind, name| pause(ctx, kind, name, false)).await
        }
    };
    result.map_err(|e| {
        if e.downcast_ref::<ApiError>().is_some() {
            report_failure(&e);
            Reported.into()
        } else {
            e
        }
    })
}

async fn status(ctx: &Ctx, args: &StatusArgs) -> anyhow::Result<()> {
    let names = deployment_names(&args.resources)?;
    let [name] = names.as_slice() else {
        bail!("rollout status takes exactly one deployment");
    };
    let kind = kind_named("deployments")?;
    // A missing Deployment is an error at once, not something to wait for.
    let d = ctx.client.get(&kind, &ctx.namespace, name).await?;
    if !args.watch {
        println!("{}", rollout_status(&d, args.revision)?.message);
        return Ok(());
    }
    let follow = follow(ctx, &kind, name, args.revision);
    if args.timeout.is_zero() {
        return follow.await;
    }
    match tokio::time::timeout(args.timeout, follow).await {
        Ok(result) => result,
        Err(_) => bail!("timed out waiting for the condition"),
    }
}

/// Watches Deployment `name` (its current state first) and prints each new status message
/// until the rollout is done or fails.
async fn follow(ctx: &Ctx, kind: &Kind, name: &str, revision: i64) -> anyhow::Result<()> {
    let selector = format!("metadata.name={name}");
    let mut last = String::new();
    loop {
        // From "": ADDED for the Deployment as it is, then its changes; the watch resumes by
        // itself on another replica, and starts over here when its start was compacted away.
        let mut watch = ctx
            .client
            .watch(kind, Some(&ctx.namespace), "", &selector, "");
        while let Some(ev) = watch.next().await? {
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => {
                    let progress = rollout_status(&ev.object, revision)?;
                    if progress.message != last {
                        println!("{}", progress.message);
                        last = progress.message;
                    }
                    if progress.done {
                        return Ok(());
                    }
                }
                "DELETED" => bail!("deployment {name:?} was deleted while waiting for its rollout"),
                "ERROR" if ev.object.get("code").and_then(Value::as_i64) == Some(410) => break,
                "ERROR" => bail!(
                    "watch ended: {}",
                    ev.object
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                ),
                _ => {}
            }
        }
    }
}

async fn show_history(
    ctx: &Ctx,
    kind: Kind,
    name: String,
    revision: i64,
) -> anyhow::Result<String> {
    let d = ctx.client.get(&kind, &ctx.namespace, &name).await?;
    let rs_kind = kind_named("replicasets")?;
    let sets = ctx
        .client
        .list(&rs_kind, Some(&ctx.namespace), "", "")
        .await?
        .items;
    let owned = owned_replica_sets(&d, &sets);
    let history = history(&owned);
    let what = format!("{}/{name}", kind_ref(&kind));
    if revision > 0 {
        let rs = history
            .get(&revision)
            .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
        return Ok(format!(
            "{what} with revision #{revision}\n{}",
            pod_template_text(&revision_template(rs))
        ));
    }
    if history.is_empty() {
        return Ok(format!("{what}\nNo rollout history found.\n"));
    }
    Ok(format!("{what}\n{}", history_table(&history)))
}

async fn undo(ctx: &Ctx, kind: Kind, name: String, to: i64) -> anyhow::Result<String> {
    let rs_kind = kind_named("replicasets")?;
    let sets = ctx
        .client
        .list(&rs_kind, Some(&ctx.namespace), "", "")
        .await?
        .items;
    let what = format!("{}/{name}", kind_ref(&kind));
    change_deployment(ctx, &kind, &name, |d| {
        Ok(match rollback(d, &sets, to)? {
            Rollback::AlreadyAt(r) => Change::Keep(format!(
                "{what} skipped rollback (current template already matches revision {r})\n"
            )),
            Rollback::To(_, next) => Change::Write(next, format!("{what} rolled back\n")),
        })
    })
    .await
}

async fn restart(ctx: &Ctx, kind: Kind, name: String) -> anyhow::Result<String> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let what = format!("{}/{name}", kind_ref(&kind));
    change_deployment(ctx, &kind, &name, |d| {
        Ok(Change::Write(
            restarted(d, &now)?,
            format!("{what} restarted\n"),
        ))
    })
    .await
}

async fn pause(ctx: &Ctx, kind: Kind, name: String, paused: bool) -> anyhow::Result<String> {
    let what = format!("{}/{name}", kind_ref(&kind));
    change_deployment(ctx, &kind, &name, |d| {
        Ok(match (with_paused(d, paused), paused) {
            (Some(next), true) => Change::Write(next, format!("{what} paused\n")),
            (Some(next), false) => Change::Write(next, format!("{what} resumed\n")),
            (None, true) => Change::Keep(format!("{what} already paused\n")),
            (None, false) => Change::Keep(format!("{what} is not paused\n")),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::deployments::HASH_LABEL;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-1",
                         "generation": 2, "resourceVersion": "40",
                         "annotations": {REVISION: "3", "team": "a"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "web:3"}]}}
            },
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                       "readyReplicas": 3, "availableReplicas": 3}
        })
    }

    /// A ReplicaSet of `owner` (a uid) at `revision` running `image`.
    fn replica_set(owner: &str, revision: &str, image: &str, cause: Option<&str>) -> Value {
        let hash = format!("h{revision}");
        let mut annotations = json!({REVISION: revision});
        if let Some(c) = cause {
            annotations[CHANGE_CAUSE] = json!(c);
        }
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("web-{hash}"), "namespace": "default",
                         "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "web", "uid": owner, "controller": true}]},
            "spec": {"template": {"metadata": {"labels": {"app": "web", HASH_LABEL: hash}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}
        })
    }

    fn message(d: &Value) -> String {
        rollout_status(d, 0).unwrap().message
    }

    #[test]
    fn status_messages_follow_kubectls_viewer() {
        let mut d = deployment();
        assert_eq!(
            rollout_status(&d, 0).unwrap(),
            Progress {
                message: "deployment \"web\" successfully rolled out".into(),
                done: true
            }
        );
        d["status"]["availableReplicas"] = json!(1);
        assert_eq!(
            message(&d),
            "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available..."
        );
        d["status"]["replicas"] = json!(5);
        assert_eq!(
            message(&d),
            "Waiting for deployment \"web\" rollout to finish: 2 old replicas are pending termination..."
        );
        d["status"]["updatedReplicas"] = json!(1);
        assert_eq!(
            message(&d),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert!(!rollout_status(&d, 0).unwrap().done);
        d["status"]["conditions"] = json!([
            {"type": "Available", "status": "False", "reason": "ProgressDeadlineExceeded"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ]);
        let e = rollout_status(&d, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "deployment \"web\" exceeded its progress deadline"
        );
        // A spec change not yet seen by the controller comes before everything else.
        d["metadata"]["generation"] = json!(3);
        assert_eq!(
            message(&d),
            "Waiting for deployment spec update to be observed..."
        );
        // No status at all: nothing observed yet.
        let mut fresh = deployment();
        fresh.as_object_mut().unwrap().remove("status");
        assert_eq!(
            message(&fresh),
            "Waiting for deployment spec update to be observed..."
        );
    }

    #[test]
    fn status_without_spec_replicas_skips_the_updated_count_check() {
        let mut d = deployment();
        d["spec"].as_object_mut().unwrap().remove("replicas");
        d["status"]["updatedReplicas"] = json!(0);
        d["status"]["replicas"] = json!(0);
        d["status"]["availableReplicas"] = json!(0);
        assert!(rollout_status(&d, 0).unwrap().done);
    }

    #[test]
    fn status_can_be_pinned_to_a_revision() {
        let d = deployment();
        assert!(rollout_status(&d, 3).unwrap().done);
        let e = rollout_status(&d, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "desired revision (2) is different from the running revision (3)"
        );
        let mut bad = deployment();
        bad["metadata"]["annotations"][REVISION] = json!("three");
        let e = rollout_status(&bad, 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot get the revision of deployment \"web\""),
            "{e}"
        );
        // Without a pin, the annotation is not looked at.
        assert!(rollout_status(&bad, 0).unwrap().done);
    }

    #[test]
    fn history_lists_the_controlled_sets_by_revision() {
        let d = deployment();
        let mut not_controller = replica_set("d-1", "7", "web:7", None);
        not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
        let mut elsewhere = replica_set("d-1", "8", "web:8", None);
        elsewhere["metadata"]["namespace"] = json!("other");
        let mut unrevised = replica_set("d-1", "9", "web:9", None);
        unrevised["metadata"]["annotations"] = json!({});
        let sets = vec![
            replica_set("d-1", "10", "web:10", Some("skiff apply -f web.yaml")),
            replica_set("d-1", "2", "web:2", None),
            replica_set("other-uid", "5", "web:5", None),
            not_controller,
            elsewhere,
            unrevised,
            replica_set("d-1", "3", "web:3", Some("")),
        ];
        let owned = owned_replica_sets(&d, &sets);
        assert_eq!(owned.len(), 4);
        let history = history(&owned);
        assert_eq!(history.keys().copied().collect::<Vec<_>>(), [2, 3, 10]);
        assert_eq!(
            history_table(&history),
            "REVISION  CHANGE-CAUSE\n\
             2         <none>\n\
             3         <none>\n\
             10        skiff apply -f web.yaml\n"
        );
        // A Deployment without a uid (never stored) owns nothing.
        let mut anonymous = deployment();
        anonymous["metadata"].as_object_mut().unwrap().remove("uid");
        assert!(owned_replica_sets(&anonymous, &sets).is_empty());
    }

    #[test]
    fn a_revisions_template_reads_like_kubectls() {
        let mut rs = replica_set("d-1", "2", "web:2", Some("rolled by hand"));
        rs["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]);
        rs["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
            {"name": "MODE", "value": "fast"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ]);
        let text = pod_template_text(&revision_template(&rs));
        assert_eq!(
            text,
            "Pod Template:\n\
             \x20 Labels:       app=web\n\
             \x20               pod-template-hash=h2\n\
             \x20 Annotations:  kubernetes.io/change-cause=rolled by hand\n\
             \x20 Containers:\n\
             \x20  c:\n\
             \x20   Image:        web:2\n\
             \x20   Ports:        80/TCP, 53/UDP\n\
             \x20   Environment:\n\
             \x20     MODE:  fast\n\
             \x20     POD:  (v1:metadata.name)\n\
             \x20     KEY:  <set to the key 'k' in secret 's'>\n\
             \x20 Volumes:      <none>\n"
        );
    }

    #[test]
    fn undo_goes_to_the_previous_revision_without_the_hash_label() {
        let d = deployment();
        let sets = vec![
            replica_set("d-1", "1", "web:1", Some("first")),
            replica_set("d-1", "3", "web:3", None),
            replica_set("d-1", "2", "web:2", Some("second")),
        ];
        let Rollback::To(revision, next) = rollback(&d, &sets, 0).unwrap() else {
            panic!("expected a rollback");
        };
        assert_eq!(revision, 2);
        assert_eq!(
            next["spec"]["template"],
            json!({"metadata": {"labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "c", "image": "web:2"}]}})
        );
        assert_eq!(next["metadata"]["annotations"][CHANGE_CAUSE], "second");
        // Other annotations stay, and the write carries the resourceVersion that was read.
        assert_eq!(next["metadata"]["annotations"]["team"], "a");
        assert_eq!(next["metadata"]["annotations"][REVISION], "3");
        assert_eq!(next["metadata"]["resourceVersion"], "40");
        assert_eq!(next["spec"]["replicas"], 3);

        // An explicit revision; a revision without a change-cause removes the Deployment's.
        let mut caused = d.clone();
        caused["metadata"]["annotations"][CHANGE_CAUSE] = json!("third");
        let sets = vec![
            replica_set("d-1", "1", "web:1", None),
            replica_set("d-1", "2", "web:2", Some("second")),
            replica_set("d-1", "3", "web:3", None),
        ];
        let Rollback::To(1, next) = rollback(&caused, &sets, 1).unwrap() else {
            panic!("expected a rollback to 1");
        };
        assert_eq!(
            next["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:1"
        );
        assert!(next["metadata"]["annotations"].get(CHANGE_CAUSE).is_none());
    }

    #[test]
    fn undo_skips_refuses_and_explains() {
        let d = deployment();
        let sets = vec![
            replica_set("d-1", "1", "web:1", None),
            replica_set("d-1", "2", "web:3", None),
            replica_set("d-1", "3", "web:3", None),
        ];
        // Revision 2 has the current template (the hash label does not count).
        assert_eq!(rollback(&d, &sets, 0).unwrap(), Rollback::AlreadyAt(2));
        assert_eq!(
            rollback(&d, &sets, 7).unwrap_err().to_string(),
            "unable to find specified revision 7 in history"
        );
        let only = vec![replica_set("d-1", "3", "web:3", None)];
        assert_eq!(
            rollback(&d, &only, 0).unwrap_err().to_string(),
            "no rollout history found for deployment \"web\""
        );
        let foreign = vec![
            replica_set("x", "1", "web:1", None),
            replica_set("x", "2", "web:2", None),
        ];
        assert!(rollback(&d, &foreign, 0).is_err());
        let mut paused = d.clone();
        paused["spec"]["paused"] = json!(true);
        assert_eq!(
            rollback(&paused, &sets, 1).unwrap_err().to_string(),
            "you cannot rollback a paused deployment; resume it first with 'skiff rollout \
             resume deployment/web' and try again"
        );
    }

    #[test]
    fn restart_stamps_the_template_unless_paused() {
        let d = deployment();
        let next = restarted(&d, "2025-01-02T03:04:05Z").unwrap();
        assert_eq!(
            next["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2025-01-02T03:04:05Z"
        );
        assert_eq!(next["spec"]["template"]["metadata"]["labels"]["app"], "web");
        let mut paused = d.clone();
        paused["spec"]["paused"] = json!(true);
        assert_eq!(
            restarted(&paused, "now").unwrap_err().to_string(),
            "can't restart paused deployment (run rollout resume first)"
        );
        let mut bare = d.clone();
        bare["spec"]["template"]["metadata"] = Value::Null;
        let next = restarted(&bare, "t").unwrap();
        assert_eq!(
            next["spec"]["template"]["metadata"],
            json!({"annotations": {RESTARTED_AT: "t"}})
        );
    }

    #[test]
    fn pause_and_resume_change_only_what_differs() {
        let d = deployment();
        let paused = with_paused(&d, true).unwrap();
        assert_eq!(paused["spec"]["paused"], true);
        assert!(with_paused(&paused, true).is_none());
        assert!(with_paused(&d, false).is_none());
        assert_eq!(
            with_paused(&paused, false).unwrap()["spec"]["paused"],
            false
        );
    }

    #[test]
    fn timeouts_read_like_go_durations() {
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("soon").unwrap_err().contains("\"soon\""));
        assert!(parse_timeout("-5s").is_err());
    }

    #[test]
    fn only_deployments_roll_out() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for form in [
            &["deployment/web"][..],
            &["deployments", "web"],
            &["deploy", "web"],
            &["deployments.apps/web"],
        ] {
            assert_eq!(deployment_names(&args(form)).unwrap(), ["web"], "{form:?}");
        }
        assert_eq!(
            deployment_names(&args(&["configmap/x"]))
                .unwrap_err()
                .to_string(),
            "rollout is not supported for configmaps"
        );
        assert!(deployment_names(&args(&["deploy"]))
            .unwrap_err()
            .to_string()
            .contains("no name was specified"));
        assert!(deployment_names(&args(&["widgets/x"]))
            .unwrap_err()
            .to_string()
            .contains("doesn't have a resource type \"widgets\""));
    }

    #[test]
    fn the_command_line_parses_like_kubectls() {
        use clap::Parser;
        let parse = |a: &[&str]| crate::Cli::try_parse_from(a.iter().copied());
        let cli = parse(&[
            "skiff",
            "rollout",
            "status",
            "deploy/web",
            "--watch=false",
            "--timeout=30s",
            "--revision=2",
            "-n",
            "prod",
        ])
        .unwrap();
        let crate::Command::Rollout(Command::Status(args)) = cli.command else {
            panic!("not rollout status");
        };
        assert!(!args.watch);
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert_eq!(args.revision, 2);
        assert_eq!(cli.namespace.as_deref(), Some("prod"));
        // A bare --watch/-w does not swallow the resource.
        let cli = parse(&["skiff", "rollout", "status", "-w", "deployment", "web"]).unwrap();
        let crate::Command::Rollout(Command::Status(args)) = cli.command else {
            panic!("not rollout status");
        };
        assert!(args.watch);
        assert_eq!(args.resources, ["deployment", "web"]);
        assert_eq!(args.timeout, Duration::ZERO);
        let cli = parse(&["skiff", "rollout", "undo", "deploy/web", "--to-revision=3"]).unwrap();
        let crate::Command::Rollout(Command::Undo(args)) = cli.command else {
            panic!("not rollout undo");
        };
        assert_eq!(args.to_revision, 3);
        assert!(parse(&["skiff", "rollout", "status", "deploy/web", "--timeout=soon"]).is_err());
        assert!(parse(&["skiff", "rollout", "history", "deploy/web", "--revision=-1"]).is_err());
        assert!(parse(&["skiff", "rollout", "pause"]).is_err());
    }
}
