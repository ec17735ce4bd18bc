//! `skiff logs`: a container's output, as `kubectl logs` prints it. The API server picks the
//! container and relays the node agent's stream; this prints it as it comes. A pod is named
//! (`web`, `pod/web`), found through a workload (`deployment/web`, also replicaset, statefulset,
//! daemonset and job: one of its pods, the way kubectl picks it), or selected with `-l` (each
//! matching pod, lines prefixed `[pod/NAME/CONTAINER]` when there are several).

use std::io::Write;

use skiff_api::{object, ApiError, Kind, LogOptions};

use super::{pod_target, report, Ctx};
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod (`web`, `pod/web`), or a workload or Service whose pod to read
    /// (`deployment/web`, `replicaset/…`, `statefulset/…`, `daemonset/…`, `job/…`, `svc/…`).
    target: Option<String>,
    /// The container (as `-c`).
    container_arg: Option<String>,
    /// The container (default: the pod's only one).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep printing lines as they are written, until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Lines from the end to show (-1: all; with a selector the default is 10).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Only lines newer than this duration (`5s`, `2m`, `3h`).
    #[arg(long)]
    since: Option<String>,
    /// Only lines written at or after this RFC 3339 time.
    #[arg(long)]
    since_time: Option<String>,
    /// The previous run of the container (after it restarted).
    #[arg(short = 'p', long)]
    previous: bool,
    /// Start each line with its RFC 3339 time.
    #[arg(long)]
    timestamps: bool,
    /// Stop after this many bytes of each log.
    #[arg(long)]
    limit_bytes: Option<i64>,
    /// The pods whose logs to print, by label selector (`app=web`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Start each line with `[pod/NAME/CONTAINER]` (the default with several pods).
    #[arg(long)]
    prefix: bool,
    /// Every container of the pod(s), init containers first.
    #[arg(long)]
    all_containers: bool,
    /// Most logs followed at once with a selector.
    #[arg(long, default_value_t = 5)]
    max_log_requests: usize,
    /// How long to wait for a pod of the workload or Service to exist.
    #[arg(long, default_value = "20s", value_parser = super::pod_target::parse_timeout)]
    pod_running_timeout: std::time::Duration,
}

/// A Go-style duration (`90s`, `5m`, `1h30m`) in whole seconds, rounded up, as kubectl sends
/// `--since`.
pub fn since_seconds(text: &str) -> Result<i64, String> {
    let d: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid argument {text:?} for \"--since\" flag: not a duration"))?;
    if d.is_negative() || d.is_zero() {
        return Err("--since must be greater than 0".into());
    }
    let secs = d.as_secs() + i64::from(d.subsec_nanos() > 0);
    Ok(secs)
}

/// The options sent for each log, checked as kubectl checks them.
pub fn options(args: &Args, container: Option<String>) -> Result<LogOptions, String> {
    if args.since.is_some() && args.since_time.is_some() {
        return Err("at most one of --since-time or --since may be specified".into());
    }
    if args.tail < -1 {
        return Err("--tail must be greater than or equal to -1".into());
    }
    if args.limit_bytes.is_some_and(|n| n <= 0) {
        return Err("--limit-bytes must be greater than 0".into());
    }
    if let Some(t) = &args.since_time {
        t.parse::<jiff::Timestamp>()
            .map_err(|_| format!("--since-time: {t:?} is not an RFC 3339 time"))?;
    }
    let tail = match (args.tail, args.selector.is_some()) {
        (-1, true) => Some(10),
        (-1, false) => None,
        (n, _) => Some(n),
    };
    Ok(LogOptions {
        container,
        follow: args.follow,
        previous: args.previous,
        tail_lines: tail,
        since_seconds: args.since.as_deref().map(since_seconds).transpose()?,
        since_time: args.since_time.clone(),
        timestamps: args.timestamps,
        limit_bytes: args.limit_bytes,
    })
}

fn pods_kind() -> Kind {
    Kind::named("pods").expect("Pod is served")
}

/// The pods to read: (name, and whether several were asked for).
async fn pods(ctx: &Ctx, args: &Args) -> anyhow::Result<Vec<String>> {
    let list = |selector: String| async move {
        ctx.client
            .list(&pods_kind(), Some(&ctx.namespace), &selector, "")
            .await
    };
    if let Some(selector) = &args.selector {
        let found = list(selector.clone()).await.map_err(|e| failed(&e))?;
        let mut names: Vec<String> = found
            .items
            .iter()
            .map(|p| object::name(p).to_string())
            .collect();
        names.sort();
        return Ok(names);
    }
    let target = args.target.as_deref().unwrap_or_default();
    Ok(vec![
        pod_target::pod(ctx, target, "get the logs from", args.pod_running_timeout).await?,
    ])
}

/// Reports an API error as kubectl does; the exit status is left to set.
fn failed(e: &ApiError) -> anyhow::Error {
    report(e);
    Reported.into()
}

/// Writes to stdout at once (a follower may read it line by line); false once stdout is gone
/// (a closed pipe ends the command quietly).
fn emit(bytes: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).is_ok()
}

/// Cuts a stream into lines, each started with a prefix.
struct Prefixed {
    prefix: String,
    pending: Vec<u8>,
}

impl Prefixed {
    fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in data {
            self.pending.push(b);
            if b == b'\n' {
                out.extend_from_slice(self.prefix.as_bytes());
                out.append(&mut self.pending);
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.as_bytes().to_vec();
        out.append(&mut self.pending);
        out.push(b'\n');
        out
    }
}

/// Prints one pod's log; Ok(false) if it failed (reported already).
async fn print_one(
    client: skiff_api::Client,
    namespace: String,
    pod: String,
    options: LogOptions,
    prefix: bool,
) -> bool {
    let mut stream = match client.logs(&namespace, &pod, &options).await {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return false;
        }
    };
    let mut lines = prefix.then(|| Prefixed {
        prefix: format!(
            "[pod/{pod}/{}] ",
            options.container.as_deref().unwrap_or_default()
        ),
        pending: Vec::new(),
    });
    loop {
        match stream.next().await {
            Ok(Some(data)) => {
                let data = match lines.as_mut() {
                    Some(l) => l.push(&data),
                    None => data,
                };
                if !emit(&data) {
                    return true;
                }
            }
            Ok(None) => {
                if let Some(l) = lines.as_mut() {
                    emit(&l.finish());
                }
                return true;
            }
            Err(e) => {
                report(&e);
                return false;
            }
        }
    }
}

/// Every container of the pod, init containers first, as kubectl's `--all-containers` reads
/// them.
async fn all_containers_of(ctx: &Ctx, pod: &str) -> Vec<String> {
    let Ok(p) = ctx.client.get(&pods_kind(), &ctx.namespace, pod).await else {
        return Vec::new();
    };
    [
        "spec.initContainers",
        "spec.containers",
        "spec.ephemeralContainers",
    ]
    .iter()
    .filter_map(|path| object::field(&p, path).and_then(|v| v.as_array()))
    .flatten()
    .filter_map(|c| c["name"].as_str().map(String::from))
    .collect()
}

/// The container named for the prefix: `-c`, or the pod's only one.
async fn container_of(ctx: &Ctx, pod: &str, asked: Option<&String>) -> Option<String> {
    if let Some(c) = asked {
        return Some(c.clone());
    }
    let p = ctx
        .client
        .get(&pods_kind(), &ctx.namespace, pod)
        .await
        .ok()?;
    let containers = object::field(&p, "spec.containers")?.as_array()?;
    match containers.as_slice() {
        [only] => only["name"].as_str().map(String::from),
        _ => None,
    }
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    if args.target.is_some() && args.selector.is_some() {
        anyhow::bail!("only a selector (-l) or a POD name is allowed");
    }
    if args.target.is_none() && args.selector.is_none() {
        anyhow::bail!(
            "expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\n\
             POD or TYPE/NAME is a required argument for the logs command"
        );
    }
    let container = match (&args.container, &args.container_arg) {
        (Some(_), Some(_)) => {
            anyhow::bail!("only one of -c or an inline [CONTAINER] arg is allowed")
        }
        (c, a) => c.clone().or_else(|| a.clone()),
    };
    if args.all_containers && container.is_some() {
        anyhow::bail!("--all-containers=true should not be specified with container name");
    }
    let options = options(args, container.clone()).map_err(anyhow::Error::msg)?;
    let pods = pods(ctx, args).await?;
    if pods.is_empty() {
        eprintln!("No resources found in {} namespace.", ctx.namespace);
        return Ok(());
    }
    // One log per pod, or per container of each pod with --all-containers.
    let mut logs: Vec<(String, Option<String>)> = Vec::new();
    for pod in pods {
        let all = if args.all_containers {
            all_containers_of(ctx, &pod).await
        } else {
            Vec::new()
        };
        if !all.is_empty() {
            for c in all {
                logs.push((pod.clone(), Some(c)));
            }
        } else {
            logs.push((pod, None));
        }
    }
    let prefix = args.prefix || logs.len() > 1;
    if args.follow && logs.len() > args.max_log_requests {
        anyhow::bail!(
            "you are attempting to follow {} log streams, but maximum allowed concurrency is {}, \
             use --max-log-requests to increase the limit",
            logs.len(),
            args.max_log_requests
        );
    }
    let mut ok = true;
    let mut followers = tokio::task::JoinSet::new();
    for (pod, each) in logs {
        let mut options = options.clone();
        if each.is_some() {
            options.container = each;
        } else if prefix {
            options.container = container_of(ctx, &pod, container.as_ref()).await;
        }
        let job = print_one(
            ctx.client.clone(),
            ctx.namespace.clone(),
            pod,
            options,
            prefix,
        );
        if args.follow {
            followers.spawn(job);
        } else {
            ok &= job.await;
        }
    }
    while let Some(done) = followers.join_next().await {
        ok &= done.unwrap_or(false);
    }
    if ok {
        Ok(())
    } else {
        Err(Reported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Cli::parse_from(std::iter::once("logs").chain(argv.iter().copied())).args
    }

    #[test]
    fn since_takes_go_durations_in_whole_seconds() {
        let cases = [
            ("5m", Ok(300)),
            ("1h30m", Ok(5400)),
            ("1.5s", Ok(2)),
            ("90s", Ok(90)),
        ];
        for (text, want) in cases {
            assert_eq!(since_seconds(text), want, "{text}");
        }
        assert!(since_seconds("soon").is_err());
        assert!(since_seconds("0s").is_err());
    }

    #[test]
    fn flags_become_options_as_kubectl_sends_them() {
        let o = options(&args(&["web", "--tail", "1", "--timestamps", "-p"]), None).expect("ok");
        assert_eq!(o.tail_lines, Some(1));
        assert!(o.timestamps && o.previous && !o.follow);
        let all = options(&args(&["web"]), None).expect("ok");
        assert_eq!(all.tail_lines, None);
        let selected = options(&args(&["-l", "app=web"]), None).expect("ok");
        assert_eq!(selected.tail_lines, Some(10), "a selector shows 10 lines");
        let since = options(&args(&["web", "--since", "2m"]), None).expect("ok");
        assert_eq!(since.since_seconds, Some(120));
        for bad in [
            &[
                "web",
                "--since",
                "1m",
                "--since-time",
                "2026-12-04T10:00:00Z",
            ][..],
            &["web", "--tail", "-2"],
            &["web", "--limit-bytes", "0"],
            &["web", "--since-time", "yesterday"],
        ] {
            assert!(options(&args(bad), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixed_lines() {
        let mut p = Prefixed {
            prefix: "[pod/a/c] ".into(),
            pending: Vec::new(),
        };
        assert_eq!(p.push(b"one\ntw"), b"[pod/a/c] one\n");
        assert_eq!(p.push(b"o\n"), b"[pod/a/c] two\n");
        assert!(p.finish().is_empty());
        p.push(b"cut");
        assert_eq!(p.finish(), b"[pod/a/c] cut\n");
    }
}
