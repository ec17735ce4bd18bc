//! `Client::port_forward`: one TCP connection to a port of a running pod through the API
//! (`skiff.v1` PortForward), as `kubectl port-forward` opens one per local connection. The
//! replica that answers reads the pod and relays the node agent's PortForward both ways; the
//! agent makes the connection inside the pod's network namespace. Bytes and the end of
//! writing go in through a [`PortForwardSession`]'s sender; bytes and the pod side's end of
//! writing come out of it.

use tokio::sync::mpsc;

use crate::agent_pb::port_forward_input::Input;
use crate::agent_pb::port_forward_output::Output;
use crate::agent_pb::{PortForwardInput, PortForwardOutput, PortForwardRequest};
use crate::client::Client;
use crate::error::ApiError;
use crate::streams;

/// What comes from the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortForwardEvent {
    Data(Vec<u8>),
    /// The pod side sends nothing more (it may still read).
    Closed,
}

/// What goes to the pod.
#[derive(Clone, Debug)]
pub struct PortForwardSender {
    tx: mpsc::Sender<PortForwardInput>,
}

impl PortForwardSender {
    async fn send(&self, input: Input) -> bool {
        self.tx
            .send(PortForwardInput { input: Some(input) })
            .await
            .is_ok()
    }

    /// Bytes for the pod; false once the connection is gone.
    pub async fn data(&self, data: Vec<u8>) -> bool {
        self.send(Input::Data(data)).await
    }

    /// Nothing more to send: the pod side reads end of file and may still answer.
    pub async fn close_write(&self) -> bool {
        self.send(Input::CloseWrite(true)).await
    }
}

/// A connection to a pod's port. Dropping it closes the connection.
pub struct PortForwardSession {
    pub input: PortForwardSender,
    output: tonic::Streaming<PortForwardOutput>,
}

impl PortForwardSession {
    /// What the pod sent next; None once both sides are done.
    pub async fn next(&mut self) -> Result<Option<PortForwardEvent>, ApiError> {
        loop {
            match self.output.message().await {
                Ok(Some(out)) => match out.output {
                    Some(Output::Data(b)) => return Ok(Some(PortForwardEvent::Data(b))),
                    Some(Output::CloseWrite(_)) => return Ok(Some(PortForwardEvent::Closed)),
                    None => continue,
                },
                Ok(None) => return Ok(None),
                Err(status) => return Err(streams::broken(&status)),
            }
        }
    }
}

impl Client {
    /// Connects to `request`'s port of its pod (namespace, pod, port; the uid is the server's
    /// to fill). Errors that come before the connection is made (no such pod, one not
    /// running, nothing listening on the port) are returned here.
    pub async fn port_forward(
        &self,
        request: PortForwardRequest,
    ) -> Result<PortForwardSession, ApiError> {
        let start = PortForwardInput {
            input: Some(Input::Start(request)),
        };
        let (tx, output) = streams::open(self, start, |mut c, input| async move {
            c.port_forward(input).await
        })
        .await?;
        Ok(PortForwardSession {
            input: PortForwardSender { tx },
            output,
        })
    }
}
