//! `Client::exec`: a command in a running container through the API (`skiff.v1` Exec), as
//! `kubectl exec` runs it. The replica that answers reads the pod and relays the node agent's
//! Exec both ways. Input (stdin bytes, terminal sizes, end of stdin) goes in through an
//! [`ExecSession`]'s sender; output and the exit code come out of it.

use tokio::sync::mpsc;

use crate::agent_pb::exec_input::Input;
use crate::agent_pb::exec_output::Output;
use crate::agent_pb::{ExecInput, ExecOutput, ExecRequest, TerminalSize};
use crate::client::Client;
use crate::error::ApiError;
use crate::streams;

/// What comes out of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended with this code (128 + N when signal N killed it); the last event.
    Exit(i32),
}

/// What goes into a command.
#[derive(Clone, Debug)]
pub struct ExecInputSender {
    tx: mpsc::Sender<ExecInput>,
}

impl ExecInputSender {
    async fn send(&self, input: Input) -> bool {
        self.tx.send(ExecInput { input: Some(input) }).await.is_ok()
    }

    /// Bytes for the command's stdin; false once the command is gone.
    pub async fn stdin(&self, data: Vec<u8>) -> bool {
        self.send(Input::Stdin(data)).await
    }

    /// The terminal's new size (tty sessions).
    pub async fn resize(&self, width: u32, height: u32) -> bool {
        self.send(Input::Resize(TerminalSize { width, height }))
            .await
    }

    /// The end of stdin: the command reads end of file.
    pub async fn close_stdin(&self) -> bool {
        self.send(Input::CloseStdin(true)).await
    }
}

/// A running command: its output and the way to send it input. Dropping it ends the command.
pub struct ExecSession {
    pub input: ExecInputSender,
    output: tonic::Streaming<ExecOutput>,
}

impl ExecSession {
    /// The next output, or the exit code; None if the stream ended without one.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ApiError> {
        loop {
            match self.output.message().await {
                Ok(Some(out)) => match out.output {
                    Some(Output::Stdout(b)) => return Ok(Some(ExecEvent::Stdout(b))),
                    Some(Output::Stderr(b)) => return Ok(Some(ExecEvent::Stderr(b))),
                    Some(Output::ExitCode(c)) => return Ok(Some(ExecEvent::Exit(c))),
                    None => continue,
                },
                Ok(None) => return Ok(None),
                Err(status) => return Err(streams::broken(&status)),
            }
        }
    }
}

impl Client {
    /// Starts `request`'s command (namespace, pod, container, command, stdin, tty, size; the
    /// uid and container ID are the server's to fill). Errors that come before the command
    /// runs (no such pod, a container to name, one not running, a command that cannot start)
    /// are returned here.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecSession, ApiError> {
        let start = ExecInput {
            input: Some(Input::Start(request)),
        };
        let (tx, output) = streams::open(
            self,
            start,
            |mut c, input| async move { c.exec(input).await },
        )
        .await?;
        Ok(ExecSession {
            input: ExecInputSender { tx },
            output,
        })
    }
}
