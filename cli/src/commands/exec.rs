//! `skiff exec`: a command in a running container, as `kubectl exec` runs it. The API server
//! relays the node agent's Exec; this side passes stdin (`-i`), puts the local terminal in raw
//! mode and follows its size (`-t`), prints the output and leaves with the command's exit
//! code (kubectl's `command terminated with exit code N` on stderr).

use std::io::Write;
use std::os::fd::AsFd;

use nix::sys::termios::{self, SetArg, Termios};
use serde_json::Value;
use skiff_api::agent_pb::{ExecRequest, TerminalSize};
use skiff_api::exec::{ExecEvent, ExecInputSender};
use skiff_api::object;
use tokio::io::AsyncReadExt;

use super::{kind_named, pod_target, report, Ctx};
use crate::{ExitWith, Reported};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod (`web`, `pod/web`), or a workload or Service whose pod to use
    /// (`deployment/web`, `svc/web`, …).
    target: String,
    /// The container (default: the pod's `kubectl.kubernetes.io/default-container`, else its
    /// first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Run the command on a terminal (with -i and a terminal as stdin).
    #[arg(short = 't', long)]
    tty: bool,
    /// Print nothing but the command's own output.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// How long to wait for a pod of the workload or Service to exist.
    #[arg(long, default_value = "1m", value_parser = super::pod_target::parse_timeout)]
    pod_running_timeout: std::time::Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// The container kubectl picks when none is named: the default-container annotation, else
/// the first; the note it prints when there was a choice. Pure.
pub fn default_container(pod: &Value) -> Option<(String, Option<String>)> {
    let names: Vec<String> = object::field(pod, "spec.containers")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let annotated = object::field(pod, "metadata.annotations")
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .and_then(Value::as_str)
        .filter(|c| names.iter().any(|n| n == c));
    let chosen = annotated.map(String::from).or(names.first().cloned())?;
    let note = (annotated.is_none() && names.len() > 1).then(|| {
        format!(
            "Defaulted container \"{chosen}\" out of: {}",
            names.join(", ")
        )
    });
    Some((chosen, note))
}

/// The local terminal in raw mode, put back as it was when dropped.
struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    fn enter() -> anyhow::Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The local terminal's size (columns, rows), if stdout or stdin is one.
fn terminal_size() -> Option<TerminalSize> {
    for fd in [1, 0] {
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
        let rc = unsafe { nix::libc::ioctl(fd, nix::libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_col > 0 {
            return Some(TerminalSize {
                width: ws.ws_col.into(),
                height: ws.ws_row.into(),
            });
        }
    }
    None
}

/// Copies stdin to the command until it ends, then says so.
async fn pump_stdin(input: ExecInputSender) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                input.close_stdin().await;
                return;
            }
            Ok(n) => {
                if !input.stdin(buf[..n].to_vec()).await {
                    return;
                }
            }
        }
    }
}

/// Sends the terminal's new size each time it changes.
async fn follow_size(input: ExecInputSender) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        if let Some(size) = terminal_size() {
            if !input.resize(size.width, size.height).await {
                return;
            }
        }
    }
}

pub async fn run(ctx: &Ctx, args: &Args) -> anyhow::Result<()> {
    if args.command.is_empty() {
        anyhow::bail!("you must specify at least one command for the container");
    }
    let pod = pod_target::pod(ctx, &args.target, "exec into", args.pod_running_timeout).await?;
    let container = match &args.container {
        Some(c) => c.clone(),
        None => {
            let p = ctx
                .client
                .get(&kind_named("pods")?, &ctx.namespace, &pod)
                .await
                .map_err(|e| {
                    report(&e);
                    anyhow::Error::from(Reported)
                })?;
            match default_container(&p) {
                Some((c, note)) => {
                    if let Some(note) = note.filter(|_| !args.quiet) {
                        eprintln!("{note}");
                    }
                    c
                }
                None => String::new(),
            }
        }
    };
    let stdin_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let tty = args.tty && args.stdin && stdin_is_terminal;
    if args.tty && !tty && !args.quiet {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let request = ExecRequest {
        namespace: ctx.namespace.clone(),
        pod,
        container,
        command: args.command.clone(),
        stdin: args.stdin,
        tty,
        size: if tty { terminal_size() } else { None },
        ..Default::default()
    };
    let mut session = ctx.client.exec(request).await.map_err(|e| {
        report(&e);
        anyhow::Error::from(Reported)
    })?;
    let raw = if tty {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    if args.stdin {
        tokio::spawn(pump_stdin(session.input.clone()));
    }
    if tty {
        tokio::spawn(follow_size(session.input.clone()));
    }
    let code = loop {
        match session.next().await {
            Ok(Some(ExecEvent::Stdout(b))) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&b).and_then(|_| out.flush());
            }
            Ok(Some(ExecEvent::Stderr(b))) => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&b).and_then(|_| err.flush());
            }
            Ok(Some(ExecEvent::Exit(code))) => break code,
            Ok(None) => {
                drop(raw);
                anyhow::bail!("the command's stream ended without its exit code");
            }
            Err(e) => {
                drop(raw);
                report(&e);
                return Err(Reported.into());
            }
        }
    };
    drop(raw);
    if code == 0 {
        return Ok(());
    }
    if !args.quiet {
        eprintln!("command terminated with exit code {code}");
    }
    Err(ExitWith(code.clamp(1, 255) as u8).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_picked_as_kubectl_picks_it() {
        let pod = |annotations: Value| {
            json!({"metadata": {"name": "p", "annotations": annotations},
                   "spec": {"containers": [{"name": "app"}, {"name": "side"}]}})
        };
        assert_eq!(
            default_container(&pod(json!({}))),
            Some((
                "app".into(),
                Some("Defaulted container \"app\" out of: app, side".into())
            ))
        );
        assert_eq!(
            default_container(&pod(
                json!({"kubectl.kubernetes.io/default-container": "side"})
            )),
            Some(("side".into(), None))
        );
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(default_container(&one), Some(("a".into(), None)));
    }
}
