//! etcd's gRPC API (tonic) in front of a [`NodeHandle`]. Production only: the simulator
//! drives the same handle directly.

use std::net::SocketAddr;

use tonic::{Code, Request, Response, Status};

use crate::errors::{EtcdError, GrpcCode};
use crate::pb::etcdserverpb::kv_server::{Kv, KvServer};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::NodeHandle;

/// Room for gRPC framing above `--max-request-bytes` (etcd allows the same 512 KiB).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Maps an etcd error to the gRPC status clients match on.
pub fn to_status(error: EtcdError) -> Status {
    let code = match error.code() {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::OutOfRange => Code::OutOfRange,
        GrpcCode::ResourceExhausted => Code::ResourceExhausted,
        GrpcCode::NotFound => Code::NotFound,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
        GrpcCode::Unavailable => Code::Unavailable,
        GrpcCode::DataLoss => Code::DataLoss,
    };
    Status::new(code, error.message())
}

/// The KV service.
pub struct KvService {
    node: NodeHandle,
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

/// Serves the client API on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, node: NodeHandle, max_request_bytes: usize) -> Result<(), tonic::transport::Error> {
    let kv = KvServer::new(KvService { node })
        .max_decoding_message_size(max_request_bytes + GRPC_OVERHEAD_BYTES)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder().add_service(kv).serve(addr).await
}
