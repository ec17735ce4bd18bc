//! etcd's Watch service: each bidirectional stream becomes a `watch::session::Session` task.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};
use crate::watch::session::Session;

/// Responses buffered per stream before a slow client holds its session back.
const STREAM_BUFFER: usize = 256;

pub struct WatchService {
    pub replica: Shared,
    /// How often watchers that asked for progress notifications get one (etcd: 10 minutes).
    pub progress_every: Duration,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let session = Session::new(self.replica.clone(), tx);
        tokio::spawn(session.run(request.into_inner(), self.progress_every));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
