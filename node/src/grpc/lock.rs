//! etcd's `Lock` service (v3lockpb), on the member's own KV, lease and watch API, as
//! etcd's server runs the client-side mutex recipe against itself: the lock `name` is
//! held by the key `name/<lease in hex>` with the oldest create revision among the keys
//! under `name/`; a waiter watches the key just before its own until it is deleted (by
//! Unlock, a revoke, or its lease expiring).

use tonic::{Request, Response, Status};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, watch_request, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
    RangeRequest, RequestOp, ResponseHeader, TxnRequest, WatchCreateRequest, WatchRequest,
};
use crate::pb::mvccpb::event::EventType;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::server::NodeHandle;

/// TTL of the lease granted for a Lock request that names none (etcd's session default).
pub const LOCK_SESSION_TTL_SECS: i64 = 60;
/// Keys ahead of a waiter it checks before it waits again (bounds one wait's loop).
pub const LOCK_WAIT_ROUNDS_MAX: usize = 1_000_000;

pub struct LockService {
    pub(super) node: NodeHandle,
}

/// The range end of every key that starts with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The response header of this member now.
pub(super) async fn header(node: &NodeHandle) -> Result<ResponseHeader, Status> {
    let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
    Ok(ResponseHeader { cluster_id: status.cluster_id, member_id: status.member_id, revision: status.revision, raft_term: status.term })
}

/// `name/` followed by `lease` in hex: the key a lock or election candidate holds.
pub(super) fn owner_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name` followed by `/`.
pub(super) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Creates `key` holding `value` with `lease` unless it exists: (its create revision,
/// the value it held if it existed).
pub(super) async fn create_key(node: &NodeHandle, key: &[u8], lease: i64, value: &[u8]) -> Result<(i64, Option<Vec<u8>>), Status> {
    let absent = Compare {
        key: key.to_vec(),
        target: compare::CompareTarget::Create as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        range_end: Vec::new(),
    };
    let put = PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
    let put = RequestOp { request: Some(request_op::Request::RequestPut(put)) };
    let get = RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: key.to_vec(), ..Default::default() })) };
    let answer = node.txn(TxnRequest { compare: vec![absent], success: vec![put], failure: vec![get] }).await.map_err(to_status)?;
    if answer.succeeded {
        return Ok((answer.header.map_or(0, |h| h.revision), None));
    }
    let existing = answer.responses.into_iter().find_map(|r| match r.response {
        Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
        _ => None,
    });
    existing.map(|kv| (kv.create_revision, Some(kv.value))).ok_or_else(|| Status::internal("the key vanished while it was created"))
}

/// Waits until `key` (watched from revision `from`) is deleted; `false` if the watch
/// was cancelled (compacted past `from`: the caller looks again).
pub(super) async fn wait_for_delete(node: &NodeHandle, key: &[u8], from: i64) -> Result<bool, Status> {
    let mut stream = node.watch().await.map_err(to_status)?;
    let create = WatchCreateRequest { key: key.to_vec(), start_revision: from, ..Default::default() };
    stream.request(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }).await.map_err(to_status)?;
    loop {
        let Some(response) = stream.next().await else { return Err(to_status(EtcdError::Stopped)) };
        if response.canceled {
            return Ok(false);
        }
        if response.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
            return Ok(true);
        }
    }
}

/// Waits until no key under `prefix` was created before `own_revision` (the recipe's
/// `waitDeletes`).
pub(super) async fn wait_for_turn(node: &NodeHandle, prefix: &[u8], own_revision: i64) -> Result<(), Status> {
    for _ in 0..LOCK_WAIT_ROUNDS_MAX {
        let ahead = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            max_create_revision: own_revision - 1,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            limit: 1,
            ..Default::default()
        };
        let answer = node.range(ahead).await.map_err(to_status)?;
        let Some(previous) = answer.kvs.into_iter().next() else { return Ok(()) };
        let from = answer.header.map_or(0, |h| h.revision) + 1;
        wait_for_delete(node, &previous.key, from).await?;
    }
    Err(Status::internal("waited for the lock too many times"))
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let LockRequest { name, lease } = request.into_inner();
        let lease = if lease == 0 {
            let granted = self.node.lease_grant(LeaseGrantRequest { ttl: LOCK_SESSION_TTL_SECS, id: 0 }).await.map_err(to_status)?;
            granted.id
        } else {
            lease
        };
        let prefix = prefix_of(&name);
        let key = owner_key(&prefix, lease);
        let (own_revision, _) = create_key(&self.node, &key, lease, b"").await?;
        if let Err(waiting_failed) = wait_for_turn(&self.node, &prefix, own_revision).await {
            // Leave no key behind that would hold the lock for nobody.
            let _ = self.node.delete_range(DeleteRangeRequest { key: key.clone(), ..Default::default() }).await;
            return Err(waiting_failed);
        }
        Ok(Response::new(LockResponse { header: Some(header(&self.node).await?), key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let key = request.into_inner().key;
        let deleted = self.node.delete_range(DeleteRangeRequest { key, ..Default::default() }).await.map_err(to_status)?;
        Ok(Response::new(UnlockResponse { header: deleted.header }))
    }
}
