//! etcd's `Maintenance` service: Status, Hash, HashKV, Defragment, Alarm, Snapshot.

use std::pin::Pin;

use tonic::codegen::tokio_stream::{self, Stream};
use tonic::{Request, Response, Status};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, ResponseHeader,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::NodeHandle;

/// The version reported by Status: the etcd API level detcd implements.
pub const SERVER_VERSION: &str = "3.4.0";

/// Bytes per message of a snapshot stream (etcd's chunk size).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

type SnapshotChunks = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

/// The Maintenance service.
pub struct MaintenanceService {
    pub(super) node: NodeHandle,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let node = super::client_node(&self.node, &_request);
        let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
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
            errors: status.alarms.iter().map(|(member_id, alarm)| alarm_text(*member_id, *alarm)).collect(),
            db_size_in_use: i64::try_from(status.db_size_in_use_bytes).unwrap_or(i64::MAX),
            is_learner: status.is_learner,
        }))
    }

    /// etcd's MoveLeader (`etcdctl move-leader`, which sends it to the leader).
    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.authorize(crate::auth::Needed::Admin).await.map_err(maintenance_auth_status)?;
        node.move_leader(request.into_inner().target_id).await.map_err(to_status)?;
        let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        Ok(Response::new(MoveLeaderResponse { header: Some(header_of(&status, status.revision)) }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let node = super::client_node(&self.node, &_request);
        node.authorize(crate::auth::Needed::Admin).await.map_err(maintenance_auth_status)?;
        // The whole replicated state (keys with history, and leases), folded to 32 bits.
        let (revision, digest) = node.state_digest().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        let hash = ((digest >> 32) as u32) ^ (digest as u32).rotate_left(16);
        Ok(Response::new(HashResponse { header: Some(header_of(&status, revision)), hash }))
    }

    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.alarm(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn defragment(&self, _request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        let node = super::client_node(&self.node, &_request);
        node.authorize(crate::auth::Needed::Admin).await.map_err(maintenance_auth_status)?;
        node.defragment().await.map_err(to_status)?;
        let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        Ok(Response::new(DefragmentResponse { header: Some(header_of(&status, status.revision)) }))
    }

    type SnapshotStream = SnapshotChunks;

    /// The member's state as a client snapshot file (`storage::client_snapshot`), in
    /// chunks; the file ends with its own checksum, so `etcdctl snapshot save` writes
    /// exactly what `detcd snapshot restore` checks.
    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let node = super::client_node(&self.node, &_request);
        node.authorize(crate::auth::Needed::Admin).await.map_err(maintenance_auth_status)?;
        let (revision, bytes) = node.client_snapshot().await.map_err(to_status)?;
        let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        let header = header_of(&status, revision);
        let total = bytes.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(SnapshotResponse { header: Some(header), remaining_bytes: (total - *sent) as u64, blob: chunk.to_vec() }))
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let (revision, hash, compact_revision) = node.hash_kv(request.into_inner().revision).await.map_err(to_status)?;
        let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        Ok(Response::new(HashKvResponse { header: Some(header_of(&status, revision)), hash, compact_revision }))
    }
}

/// etcd's text for an active alarm in Status errors: "memberID:<id> alarm:<TYPE> ".
fn alarm_text(member_id: u64, alarm: i32) -> String {
    let name = AlarmType::try_from(alarm).map_or_else(|_| alarm.to_string(), |a| a.as_str_name().to_string());
    format!("memberID:{member_id} alarm:{name} ")
}

fn header_of(status: &crate::consensus::NodeStatus, revision: i64) -> ResponseHeader {
    ResponseHeader { cluster_id: status.cluster_id, member_id: status.member_id, revision, raft_term: status.term }
}

/// etcd's maintenance server refuses with its auth package's own error (gRPC code
/// Unknown, "auth: ..."), not the "etcdserver: ..." form the other services use.
fn maintenance_auth_status(error: EtcdError) -> Status {
    match error.message().strip_prefix("etcdserver: ") {
        Some(reason) if matches!(error, EtcdError::PermissionDenied | EtcdError::UserEmpty | EtcdError::InvalidAuthToken) => {
            Status::unknown(format!("auth: {reason}"))
        }
        _ => to_status(error),
    }
}
