//! etcd's `Cluster` service: MemberList from the member's view of the configuration and
//! what each member published through raft. Changing the membership (add, remove,
//! update, promote) is not implemented yet: those calls fail with a clear error.

use tonic::{Request, Response, Status};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::server::NodeHandle;

pub struct ClusterService {
    pub(super) node: NodeHandle,
}

fn membership_changes_unsupported() -> Status {
    Status::unimplemented("detcd: membership changes (member add, remove, update, promote) are not supported yet")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let (status, members) = self.node.member_list().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        // As etcd's cluster server: no revision in the header.
        let header = ResponseHeader { cluster_id: status.cluster_id, member_id: status.member_id, revision: 0, raft_term: status.term };
        Ok(Response::new(MemberListResponse { header: Some(header), members }))
    }

    async fn member_add(&self, _request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(membership_changes_unsupported())
    }

    async fn member_remove(&self, _request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(membership_changes_unsupported())
    }

    async fn member_update(&self, _request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(membership_changes_unsupported())
    }

    async fn member_promote(&self, _request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(membership_changes_unsupported())
    }
}
