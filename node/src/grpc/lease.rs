//! etcd's `Lease` service: grant, revoke, the keep-alive stream, time-to-live, list.

use std::pin::Pin;

use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::server::NodeHandle;

/// Keep-alive answers buffered per stream before the stream waits for its client.
pub const LEASE_KEEP_ALIVE_RESPONSES_MAX: usize = 64;

/// The Lease service.
pub struct LeaseService {
    pub(super) node: NodeHandle,
}

type KeepAliveResponses = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.lease_grant(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.lease_revoke(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    type LeaseKeepAliveStream = KeepAliveResponses;

    /// Each request renews its lease and is answered in order on the stream. A renewal
    /// whose outcome is unknown (no leader, leader changed, timeout) goes unanswered
    /// and the stream stays open — clients send the next keep-alive within a third of
    /// the TTL anyway; etcd ends the stream instead and its clients reopen it, which
    /// some clients (the `etcd-client` crate) do not. Any other error ends the stream.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let node = super::client_node(&self.node, &request);
        Ok(Response::new(Box::pin(keep_alive_answers(node.clone(), request.into_inner()))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.lease_time_to_live(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn lease_leases(&self, request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.lease_leases(request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}

/// The keep-alive stream's work, for gRPC and the JSON gateway alike: each request from
/// `incoming` renews its lease and is answered in order (see `lease_keep_alive`).
pub(super) fn keep_alive_answers<S>(node: NodeHandle, mut incoming: S) -> ReceiverStream<Result<LeaseKeepAliveResponse, Status>>
where
    S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(LEASE_KEEP_ALIVE_RESPONSES_MAX);
    tokio::spawn(async move {
        loop {
            let keep_alive = match incoming.next().await {
                Some(Ok(keep_alive)) => keep_alive,
                // etcd ends the stream with the receive error (see `watch::WatchOutgoing`).
                Some(Err(status)) => {
                    let _ = sender.send(Err(super::front::etcd_receive_error(status))).await;
                    return;
                }
                None => return,
            };
            let answer = match node.lease_keep_alive(keep_alive).await {
                Err(error) if error.outcome_unknown() || error == EtcdError::NoLeader => continue,
                answer => answer.map_err(to_status),
            };
            let failed = answer.is_err();
            if sender.send(answer).await.is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}
