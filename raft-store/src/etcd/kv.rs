//! etcd's KV service: Range (linearizable unless `serializable`), Put, DeleteRange, Txn, Compact.

use tonic::{Request, Response, Status};

use super::{check_size, complete, status_of, Shared};
use crate::error::StoreError;
use crate::machine::command::{Command, CommandResult};
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::*;

pub struct KvService {
    pub replica: Shared,
}

impl KvService {
    async fn write(&self, cmd: Command) -> Result<CommandResult, Status> {
        self.replica.write(cmd).await.map_err(status_of)
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("unexpected result for {what}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        if !req.serializable {
            self.replica.linearize().await.map_err(status_of)?;
        }
        let mut resp = self.replica.sm.read().range(&req).map_err(status_of)?;
        complete(&self.replica, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        match self.write(Command::Put(req)).await? {
            CommandResult::Put(mut r) => {
                complete(&self.replica, &mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        match self.write(Command::DeleteRange(req)).await? {
            CommandResult::DeleteRange(mut r) => {
                complete(&self.replica, &mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        match self.write(Command::Txn(req)).await? {
            CommandResult::Txn(mut r) => {
                complete(&self.replica, &mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        let (rev, physical) = (req.revision, req.physical);
        match self.write(Command::Compact(req)).await? {
            CommandResult::Compact(mut r) => {
                if physical {
                    // As etcd: answer once this replica's database no longer holds what was
                    // compacted.
                    let mut done = self.replica.sm.compactor.physically_compacted();
                    let wait = done.wait_for(|d| *d >= rev);
                    tokio::time::timeout(crate::replica::REQUEST_TIMEOUT, wait)
                        .await
                        .map_err(|_| status_of(StoreError::Timeout))?
                        .map_err(|_| status_of(StoreError::Timeout))?;
                }
                complete(&self.replica, &mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected("compact")),
        }
    }
}
