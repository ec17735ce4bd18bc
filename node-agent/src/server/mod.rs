//! The agent's port (`--address`, `--port`; default 0.0.0.0:10250, the kubelet's): a gRPC
//! server with the `skiff.agent.v1` Agent service, whose client is the API server. It is
//! plain gRPC for now; [`serve`] is the one place the port's handler is put together, so that
//! TLS and the API server's authentication can wrap it there.
//!
//! [`AgentService`] hands each call to the module that owns it: `logs`, `exec`,
//! `port_forward`, `images`.

pub mod exec;
pub mod images;
pub mod log_files;
pub mod log_lines;
pub mod logs;
pub mod pod_socket;
pub mod port_forward;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use skiff_api::agent_pb::agent_server::{Agent, AgentServer};
use skiff_api::agent_pb::{
    ExecInput, ImportImagesChunk, ImportImagesResponse, ListImagesRequest, ListImagesResponse,
    LogsRequest, PortForwardInput,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use crate::image::ImageService;

/// The kubelet's port, which the agent takes by default.
pub const DEFAULT_PORT: u16 = 10250;

/// Binds the agent's port; an address in use is an error naming it.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr} (--address, --port): {e}"))
}

/// What the agent's calls work on.
#[derive(Clone)]
pub struct AgentService {
    logs: logs::LogService,
    exec: exec::ExecService,
    port_forward: port_forward::PortForwardService,
    images: images::ImagesService,
}

impl AgentService {
    /// The service over the agent's root directory (`--root-dir`), its image store and the
    /// shim binary that runs containers.
    pub fn new(root_dir: PathBuf, images: Arc<ImageService>, shim: PathBuf) -> AgentService {
        AgentService {
            logs: logs::LogService::new(root_dir.clone()),
            exec: exec::ExecService::new(root_dir.clone(), shim),
            port_forward: port_forward::PortForwardService::new(root_dir),
            images: images::ImagesService::new(images),
        }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = logs::LogsStream;
    type ExecStream = exec::ExecStream;
    type PortForwardStream = port_forward::PortForwardStream;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Ok(Response::new(self.logs.logs(request.into_inner()).await?))
    }

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Ok(Response::new(self.exec.exec(request.into_inner()).await?))
    }

    async fn port_forward(
        &self,
        request: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        Ok(Response::new(
            self.port_forward.port_forward(request.into_inner()).await?,
        ))
    }

    async fn import_images(
        &self,
        request: Request<Streaming<ImportImagesChunk>>,
    ) -> Result<Response<ImportImagesResponse>, Status> {
        Ok(Response::new(
            self.images.import(request.into_inner()).await?,
        ))
    }

    async fn list_images(
        &self,
        _request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(self.images.list().await?))
    }
}

/// Serves the agent's calls on `listener` until the process ends.
pub async fn serve(listener: TcpListener, service: AgentService) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving the agent's port");
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(service))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
