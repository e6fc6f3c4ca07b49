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
        let node = super::client_node(&self.node, &request);
        node.range(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.put(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.delete_range(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.txn(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.compact(request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}

