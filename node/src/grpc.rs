//! etcd's gRPC API (tonic) in front of a [`NodeHandle`]. Production only: the simulator
//! drives the same handle directly.

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use crate::errors::{EtcdError, GrpcCode};
use crate::pb::etcdserverpb::kv_server::{Kv, KvServer};
use crate::pb::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
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

/// The version reported by Status: the etcd API level detcd implements.
pub const SERVER_VERSION: &str = "3.4.0";

/// The Maintenance service (Status so far).
pub struct MaintenanceService {
    node: NodeHandle,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        let db_size = i64::try_from(status.db_size_bytes).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: Some(ResponseHeader {
                cluster_id: status.cluster_id,
                member_id: status.member_id,
                revision: status.revision,
                raft_term: status.term,
            }),
            version: SERVER_VERSION.to_string(),
            db_size,
            leader: status.leader_id,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }
}

/// Binds the client address now, so a busy port fails start-up instead of a later task.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpIncoming> {
    Ok(TcpIncoming::bind(addr)?.with_nodelay(Some(true)))
}

/// Serves the client API on a bound listener until the process ends.
pub async fn serve(incoming: TcpIncoming, node: NodeHandle, max_request_bytes: usize) -> Result<(), tonic::transport::Error> {
    let kv = KvServer::new(KvService { node: node.clone() })
        .max_decoding_message_size(max_request_bytes + GRPC_OVERHEAD_BYTES)
        .max_encoding_message_size(usize::MAX);
    let maintenance = MaintenanceServer::new(MaintenanceService { node: node.clone() });
    tonic::transport::Server::builder().add_service(kv).add_service(maintenance).serve_with_incoming(incoming).await
}
