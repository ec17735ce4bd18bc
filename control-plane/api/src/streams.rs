//! What the client's two-way calls (`Exec`, `PortForward`) share: opening the call on the
//! replica that answers, with the request as the first input, and what a stream that breaks
//! afterwards means to the caller.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::Client;
use crate::error::{ApiError, Reason};
use crate::pb::api_client::ApiClient;

/// Input messages buffered before sending waits.
const INPUT_BUFFER: usize = 16;

/// Opens a two-way call with `start` as its first input; `call` makes the call on one
/// replica's client with the input stream given. Returns the sender of further input and the
/// output. Each attempt gets an input channel of its own with `start` first; the caller's
/// input goes only to the attempt that answered, so nothing is lost to one that failed.
pub(crate) async fn open<I, O, F, Fut>(
    client: &Client,
    start: I,
    call: F,
) -> Result<(mpsc::Sender<I>, tonic::Streaming<O>), ApiError>
where
    I: Clone,
    F: Fn(ApiClient<Channel>, ReceiverStream<I>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<O>>, tonic::Status>>,
{
    let current: Arc<Mutex<Option<mpsc::Sender<I>>>> = Arc::default();
    let output = client
        .call(|c| {
            let (tx, rx) = mpsc::channel(INPUT_BUFFER);
            let _ = tx.try_send(start.clone());
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
            call(c, ReceiverStream::new(rx))
        })
        .await?;
    let tx = current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| ApiError::new(Reason::Internal, "no input channel"))?;
    Ok((tx, output))
}

/// What a stream's failure after it started means: a broken stream is not a reason to try
/// elsewhere, so Unavailable becomes Internal, with what happened as its message.
pub(crate) fn broken(status: &tonic::Status) -> ApiError {
    let err = ApiError::from_status(status);
    if err.reason == Reason::Unavailable {
        ApiError::new(Reason::Internal, err.message)
    } else {
        err
    }
}
