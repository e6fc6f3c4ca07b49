//! etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.

use tonic::{Request, Response, Status};

use super::to_status;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::NodeHandle;

/// The KV service.
pub struct KvService {
    pub(super) node: NodeHandle,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.node.range(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.node.put(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        self.node.delete_range(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.node.txn(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        self.node.compact(request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}

