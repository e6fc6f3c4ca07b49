//! etcd's `Cluster` service: MemberList from the member's view of the configuration and
//! what each member published through raft; MemberAdd, MemberRemove, MemberUpdate and
//! MemberPromote through the consensus loop (`consensus::membership`), answered once
//! the change is applied here, with the member list after it. A linearizable MemberList
//! (etcd 3.5) first waits for this member to catch up with the leader's commit index.

use tonic::{Request, Response, Status};

use super::to_status;
use crate::apply::MemberRequest;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::server::NodeHandle;

pub struct ClusterService {
    pub(super) node: NodeHandle,
}

impl ClusterService {
    /// The header (as etcd's cluster server: no revision) and the member list now.
    async fn members(&self) -> Result<(ResponseHeader, Vec<Member>), Status> {
        let (status, members) = self.node.member_list().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        let header = ResponseHeader { cluster_id: status.cluster_id, member_id: status.member_id, revision: 0, raft_term: status.term };
        Ok((header, members))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            // etcd 3.5's linearizable member list: this member first catches up with
            // the leader's commit index (a linearizable read does exactly that).
            let probe = crate::pb::etcdserverpb::RangeRequest { key: vec![0], ..Default::default() };
            self.node.range(probe).await.map_err(to_status)?;
        }
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberListResponse { header: Some(header), members }))
    }

    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let request = request.into_inner();
        let change = MemberRequest::Add { peer_urls: request.peer_ur_ls, is_learner: request.is_learner };
        let member = self.node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberAddResponse { header: Some(header), member: Some(member), members }))
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let change = MemberRequest::Remove { id: request.into_inner().id };
        self.node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberRemoveResponse { header: Some(header), members }))
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let change = MemberRequest::Update { id: request.id, peer_urls: request.peer_ur_ls };
        self.node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberUpdateResponse { header: Some(header), members }))
    }

    async fn member_promote(&self, request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        let change = MemberRequest::Promote { id: request.into_inner().id };
        self.node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberPromoteResponse { header: Some(header), members }))
    }
}
