//! etcd's `Election` service (v3electionpb), on the member's own KV, lease and watch
//! API with the same recipe as `lock`: a candidate holds `name/<lease in hex>`; the
//! leader is the candidate with the oldest create revision; Proclaim and Resign act
//! only while the caller's key still has the create revision it was elected with.

use std::pin::Pin;

use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::lock::recipe_status;
use super::to_status;
use crate::recipes::{create_key, owner_key, prefix_end, prefix_of, wait_for_turn};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, watch_request, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest,
    ResignResponse,
};
use crate::server::NodeHandle;

/// Leader changes an Observe stream buffers for a slow reader.
pub const OBSERVE_RESPONSES_MAX: usize = 64;

type LeaderResponses = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

pub struct ElectionService {
    pub(super) node: NodeHandle,
}

fn not_leader() -> Status {
    recipe_status(crate::recipes::RecipeError::NotLeader)
}

async fn header(node: &NodeHandle) -> Result<crate::pb::etcdserverpb::ResponseHeader, Status> {
    crate::recipes::header(node).await.map_err(recipe_status)
}

/// Runs `op` if `leader`'s key still has the create revision it was elected with.
async fn as_leader(node: &NodeHandle, leader: &LeaderKey, op: request_op::Request) -> Result<(), Status> {
    let still = Compare {
        key: leader.key.clone(),
        target: compare::CompareTarget::Create as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(leader.rev)),
        range_end: Vec::new(),
    };
    let txn = TxnRequest { compare: vec![still], success: vec![RequestOp { request: Some(op) }], failure: Vec::new() };
    let answer = node.txn(txn).await.map_err(to_status)?;
    if answer.succeeded {
        Ok(())
    } else {
        Err(not_leader())
    }
}

/// The current leader of `name`: the candidate key with the oldest create revision,
/// and the revision the answer was read at.
async fn current_leader(node: &NodeHandle, name: &[u8]) -> Result<(Option<KeyValue>, i64), Status> {
    let prefix = prefix_of(name);
    let first = RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(&prefix),
        sort_order: range_request::SortOrder::Ascend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    };
    let answer = node.range(first).await.map_err(to_status)?;
    Ok((answer.kvs.into_iter().next(), answer.header.map_or(0, |h| h.revision)))
}

/// Sends every leader of `name` as it changes (new leader, or a new proclaimed value)
/// until the client goes away.
async fn observe(node: NodeHandle, name: Vec<u8>, sender: tokio::sync::mpsc::Sender<Result<LeaderResponse, Status>>) {
    let prefix = prefix_of(&name);
    let mut last_sent: Option<KeyValue> = None;
    loop {
        let (leader, read_at) = match current_leader(&node, &name).await {
            Ok(found) => found,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return;
            }
        };
        // Watch the leader's key (or, with no leader, the whole prefix) from after the read.
        let (key, range_end) = match &leader {
            Some(kv) => (kv.key.clone(), Vec::new()),
            None => (prefix.clone(), prefix_end(&prefix)),
        };
        if let Some(kv) = leader.filter(|kv| last_sent.as_ref() != Some(kv)) {
            let Ok(header) = header(&node).await else { return };
            if sender.send(Ok(LeaderResponse { header: Some(header), kv: Some(kv.clone()) })).await.is_err() {
                return;
            }
            last_sent = Some(kv);
        }
        let Ok(mut stream) = node.watch().await else { return };
        let create = WatchCreateRequest { key, range_end, start_revision: read_at + 1, ..Default::default() };
        if stream.request(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }).await.is_err() {
            return;
        }
        // Look again at the first change (a put of a new value, a deletion, a new
        // candidate), or when the watch is cancelled.
        loop {
            let Some(response) = stream.next().await else { return };
            if sender.is_closed() {
                return;
            }
            if response.canceled || response.events.iter().any(|e| e.r#type == EventType::Delete as i32 || e.r#type == EventType::Put as i32) {
                break;
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let CampaignRequest { name, lease, value } = request.into_inner();
        if lease == 0 {
            return Err(to_status(EtcdError::LeaseNotFound));
        }
        let prefix = prefix_of(&name);
        let key = owner_key(&prefix, lease);
        let (rev, existing) = create_key(&node, &key, lease, &value).await.map_err(recipe_status)?;
        let leader = LeaderKey { name, key: key.clone(), rev, lease };
        if existing.is_some_and(|held| held != value) {
            // A campaign resumed with another value proclaims it (as etcd's recipe).
            let put = PutRequest { key: key.clone(), value: value.into(), lease, ..Default::default() };
            as_leader(&node, &leader, request_op::Request::RequestPut(put)).await?;
        }
        if let Err(waiting_failed) = wait_for_turn(&node, &prefix, rev).await {
            let _ = node.delete_range(DeleteRangeRequest { key, ..Default::default() }).await;
            return Err(recipe_status(waiting_failed));
        }
        Ok(Response::new(CampaignResponse { header: Some(header(&node).await?), leader: Some(leader) }))
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let ProclaimRequest { leader, value } = request.into_inner();
        let leader = leader.ok_or_else(not_leader)?;
        let put = PutRequest { key: leader.key.clone(), value: value.into(), lease: leader.lease, ..Default::default() };
        as_leader(&node, &leader, request_op::Request::RequestPut(put)).await?;
        Ok(Response::new(ProclaimResponse { header: Some(header(&node).await?) }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let name = request.into_inner().name;
        match current_leader(&node, &name).await? {
            (Some(kv), _) => Ok(Response::new(LeaderResponse { header: Some(header(&node).await?), kv: Some(kv) })),
            (None, _) => Err(recipe_status(crate::recipes::RecipeError::NoLeader)),
        }
    }

    type ObserveStream = LeaderResponses;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let node = super::client_node(&self.node, &request);
        let name = request.into_inner().name;
        let (sender, receiver) = tokio::sync::mpsc::channel(OBSERVE_RESPONSES_MAX);
        tokio::spawn(observe(node.clone(), name, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let leader = request.into_inner().leader.ok_or_else(not_leader)?;
        let delete = DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
        // Resigning a key that is gone already is not an error (etcd's recipe).
        match as_leader(&node, &leader, request_op::Request::RequestDeleteRange(delete)).await {
            Err(status) if status.code() != tonic::Code::Unknown => return Err(status),
            _ => {}
        }
        Ok(Response::new(ResignResponse { header: Some(header(&node).await?) }))
    }
}
