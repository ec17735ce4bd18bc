//! The agent's port (`--address`, `--port`; default 0.0.0.0:10250, the kubelet's): a gRPC
//! server with the `skiff.agent.v1` Agent service, whose client is the API server. It is
//! plain gRPC for now; [`serve`] is the one place the port's handler is put together, so that
//! TLS and the API server's authentication can wrap it there.

pub mod log_files;
pub mod log_lines;
pub mod logs;

use std::net::SocketAddr;
use std::path::PathBuf;

use skiff_api::agent_pb::agent_server::AgentServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The kubelet's port, which the agent takes by default.
pub const DEFAULT_PORT: u16 = 10250;

/// Binds the agent's port; an address in use is an error naming it.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr} (--address, --port): {e}"))
}

/// Serves the agent's calls on `listener` until the process ends; files are read under
/// `root_dir` (the agent's `--root-dir`).
pub async fn serve(listener: TcpListener, root_dir: PathBuf) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving the agent's port");
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(logs::LogService::new(root_dir)))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
