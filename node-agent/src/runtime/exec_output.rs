//! A command run in a container to its end with its output kept, as the kubelet runs exec
//! probes and exec lifecycle hooks: no stdin, no terminal, stdout and stderr together (the
//! first [`MAX_OUTPUT`] bytes), and a deadline after which the command is ended and the run
//! counts as timed out.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::containers::Containers;
use super::exec::{ExecCommand, ExecError, ExecIo, ExecProcess, TERMINATE_GRACE};

/// Output kept from one run (the kubelet keeps 10 KiB of a probe's).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    /// It exited with this code; its output.
    Exited { code: i32, output: String },
    /// It was still running at the deadline and was ended.
    TimedOut,
}

async fn read_some(mut from: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Runs `command` in container `id` of `containers`, for at most `timeout`.
pub async fn run(
    containers: &Containers,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<Ran, ExecError> {
    let exec = ExecCommand {
        container_dir: containers.container_dir(id),
        id: id.to_string(),
        command: command.to_vec(),
        stdin: false,
        tty: false,
        size: None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut process, io) = ExecProcess::start(containers.shim_binary(), &exec, timeout).await?;
    let (stdout, stderr) = match io {
        ExecIo::Pipes { stdout, stderr, .. } => (stdout, stderr),
        ExecIo::Tty(_) => unreachable!("no terminal was asked for"),
    };
    let outputs = async {
        let (out, err) = tokio::join!(read_some(stdout, MAX_OUTPUT), read_some(stderr, MAX_OUTPUT));
        let code = process.wait().await;
        (out, err, code)
    };
    match tokio::time::timeout_at(deadline, outputs).await {
        Ok((mut out, err, code)) => {
            out.extend_from_slice(&err);
            out.truncate(MAX_OUTPUT);
            Ok(Ran::Exited {
                code: code?,
                output: String::from_utf8_lossy(&out).into_owned(),
            })
        }
        Err(_) => {
            process.terminate(TERMINATE_GRACE).await;
            Ok(Ran::TimedOut)
        }
    }
}
