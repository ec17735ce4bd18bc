//! `Client::exec`: a command in a running container through the API (`skiff.v1` Exec), as
//! `kubectl exec` runs it. The replica that answers reads the pod and relays the node agent's
//! Exec both ways. Input (stdin bytes, terminal sizes, end of stdin) goes in through an
//! [`ExecSession`]'s sender; output and the exit code come out of it.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent_pb::exec_input::Input;
use crate::agent_pb::exec_output::Output;
use crate::agent_pb::{ExecInput, ExecOutput, ExecRequest, TerminalSize};
use crate::client::Client;
use crate::error::{ApiError, Reason};

/// Input messages buffered before sending waits.
const INPUT_BUFFER: usize = 16;

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
                Err(status) => {
                    let err = ApiError::from_status(&status);
                    // A broken stream is not a reason to try elsewhere: say what happened.
                    return Err(if err.reason == Reason::Unavailable {
                        ApiError::new(Reason::Internal, err.message)
                    } else {
                        err
                    });
                }
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
        // Each attempt gets its own input channel with the request first; the caller's input
        // goes only to the attempt that started, so nothing is lost to one that failed.
        let current: Arc<Mutex<Option<mpsc::Sender<ExecInput>>>> = Arc::default();
        let output = self
            .call(|mut c| {
                let (tx, rx) = mpsc::channel(INPUT_BUFFER);
                let start = ExecInput {
                    input: Some(Input::Start(request.clone())),
                };
                let _ = tx.try_send(start);
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
                async move { c.exec(ReceiverStream::new(rx)).await }
            })
            .await?;
        let tx = current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| ApiError::new(Reason::Internal, "exec: no input channel"))?;
        Ok(ExecSession {
            input: ExecInputSender { tx },
            output,
        })
    }
}
