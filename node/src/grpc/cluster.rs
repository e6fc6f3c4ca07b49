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

/// How long a follower waits for the leader when it forwards a MemberPromote.
pub const PROMOTE_FORWARD_TIMEOUT_MS: u64 = 5000;

impl ClusterService {
    /// Sends a MemberPromote to the leader's client URL (as it published it) and passes
    /// its answer on.
    async fn promote_on_leader(&self, request: MemberPromoteRequest) -> Result<Response<MemberPromoteResponse>, Status> {
        use crate::pb::etcdserverpb::cluster_client::ClusterClient;
        let (status, members) = self.node.member_list().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
        if status.leader_id == 0 {
            return Err(to_status(EtcdError::NoLeader));
        }
        let url = members
            .iter()
            .find(|m| m.id == status.leader_id)
            .and_then(|m| m.client_ur_ls.first().cloned())
            .ok_or_else(|| to_status(EtcdError::NotLeader))?;
        let forward = async move {
            let mut client = ClusterClient::connect(url.clone()).await.map_err(|e| Status::unavailable(format!("etcdserver: cannot reach the leader at {url}: {e}")))?;
            client.member_promote(request).await
        };
        tokio::time::timeout(std::time::Duration::from_millis(PROMOTE_FORWARD_TIMEOUT_MS), forward)
            .await
            .map_err(|_| to_status(EtcdError::Timeout))?
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        if request.into_inner().linearizable {
            // etcd 3.5's linearizable member list: this member first catches up with
            // the leader's commit index (a linearizable read does exactly that).
            // (The auth status: a linearizable read that needs no permission.)
            node.auth_status(crate::pb::etcdserverpb::AuthStatusRequest {}).await.map_err(to_status)?;
        }
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberListResponse { header: Some(header), members }))
    }

    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let request = request.into_inner();
        let change = MemberRequest::Add { peer_urls: request.peer_ur_ls, is_learner: request.is_learner };
        let member = node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberAddResponse { header: Some(header), member: Some(member), members }))
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let change = MemberRequest::Remove { id: request.into_inner().id };
        node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberRemoveResponse { header: Some(header), members }))
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let request = request.into_inner();
        let change = MemberRequest::Update { id: request.id, peer_urls: request.peer_ur_ls };
        node.change_membership(change).await.map_err(to_status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberUpdateResponse { header: Some(header), members }))
    }

    async fn member_promote(&self, request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let request = request.into_inner();
        match node.change_membership(MemberRequest::Promote { id: request.id }).await {
            Ok(_) => {}
            // Only the leader knows whether the learner caught up: ask it, as etcd does.
            Err(EtcdError::NotLeader) => return self.promote_on_leader(request).await,
            Err(error) => return Err(to_status(error)),
        }
        let (header, members) = self.members().await?;
        Ok(Response::new(MemberPromoteResponse { header: Some(header), members }))
    }
}
