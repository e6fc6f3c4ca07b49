//! etcd's coordination recipes — the lock and the election — on a member's own KV,
//! lease and watch calls (`NodeHandle`), as etcd's Lock and Election services run the
//! client-side recipes against their own server. A lock or candidate for `name` is the
//! key `name/<lease in hex>`; the holder (leader) is the key with the oldest create
//! revision under `name/`; a waiter watches the key just ahead of it until it is
//! deleted (unlock, resign, revoke or expiry). Used by `grpc::lock`/`grpc::election`
//! in production and by the simulator's lock clients, so both run the same code.

use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, watch_request, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, WatchCreateRequest, WatchRequest,
};
use crate::pb::mvccpb::event::EventType;
use crate::server::NodeHandle;

/// TTL of the lease granted for a Lock request that names none (etcd's session default).
pub const LOCK_SESSION_TTL_SECS: i64 = 60;
/// Keys ahead of a waiter it waits for, one after another, before it gives up (bounds
/// one acquisition's loop).
pub const LOCK_WAIT_ROUNDS_MAX: usize = 1_000_000;

/// Why a recipe step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipeError {
    Etcd(EtcdError),
    /// etcd's `election: not leader`.
    NotLeader,
    /// etcd's `election: no leader`.
    NoLeader,
    /// The key was deleted between the txn that found it and reading it back.
    KeyVanished,
    WaitedTooLong,
    /// etcd's `mutex: session is expired`: the waiter's own key went (its lease ended)
    /// while it waited.
    SessionExpired,
}

impl RecipeError {
    pub fn message(&self) -> &str {
        match self {
            RecipeError::Etcd(error) => error.message(),
            RecipeError::NotLeader => "election: not leader",
            RecipeError::NoLeader => "election: no leader",
            RecipeError::KeyVanished => "the key vanished while it was created",
            RecipeError::WaitedTooLong => "waited for the lock too many times",
            RecipeError::SessionExpired => "mutex: session is expired",
        }
    }
}

impl From<EtcdError> for RecipeError {
    fn from(error: EtcdError) -> Self {
        RecipeError::Etcd(error)
    }
}

/// A lock held: its key and that key's create revision, and the revision at which the
/// member confirmed no older key was left (the acquisition point).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLock {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub acquired_revision: i64,
}

/// The range end of every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `name` followed by `/`.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// The key a lock or candidate with `lease` holds under `prefix`.
pub fn owner_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The response header of this member now.
pub async fn header(node: &NodeHandle) -> Result<ResponseHeader, RecipeError> {
    let status = node.status().await.ok_or(EtcdError::Stopped)?;
    Ok(ResponseHeader { cluster_id: status.cluster_id, member_id: status.member_id, revision: status.revision, raft_term: status.term })
}

/// Creates `key` holding `value` with `lease` unless it exists: (its create revision,
/// the value it held if it existed).
pub async fn create_key(node: &NodeHandle, key: &[u8], lease: i64, value: &[u8]) -> Result<(i64, Option<Vec<u8>>), RecipeError> {
    let absent = Compare {
        key: key.to_vec(),
        target: compare::CompareTarget::Create as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        range_end: Vec::new(),
    };
    let put = PutRequest { key: key.to_vec(), value: value.to_vec().into(), lease, ..Default::default() };
    let put = RequestOp { request: Some(request_op::Request::RequestPut(put)) };
    let get = RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: key.to_vec(), ..Default::default() })) };
    let answer = node.txn(TxnRequest { compare: vec![absent], success: vec![put], failure: vec![get] }).await?;
    if answer.succeeded {
        return Ok((answer.header.map_or(0, |h| h.revision), None));
    }
    let existing = answer.responses.into_iter().find_map(|r| match r.response {
        Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
        _ => None,
    });
    existing.map(|kv| (kv.create_revision, Some(kv.value.to_vec()))).ok_or(RecipeError::KeyVanished)
}

/// Waits until `key` (watched from revision `from`) is deleted; `false` if the watch
/// was cancelled (compacted past `from`: the caller looks again).
pub async fn wait_for_delete(node: &NodeHandle, key: &[u8], from: i64) -> Result<bool, RecipeError> {
    let mut stream = node.watch().await?;
    let create = WatchCreateRequest { key: key.to_vec(), start_revision: from, ..Default::default() };
    stream.request(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }).await?;
    loop {
        let Some(response) = stream.next().await else { return Err(EtcdError::Stopped.into()) };
        if response.canceled {
            return Ok(false);
        }
        if response.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
            return Ok(true);
        }
    }
}

/// Waits until no key under `prefix` was created before `own_revision` (the recipe's
/// `waitDeletes`); the revision at which a linearizable range found none.
pub async fn wait_for_turn(node: &NodeHandle, prefix: &[u8], own_revision: i64) -> Result<i64, RecipeError> {
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
        let answer = node.range(ahead).await?;
        let read_at = answer.header.map_or(0, |h| h.revision);
        let Some(previous) = answer.kvs.into_iter().next() else { return Ok(read_at) };
        wait_for_delete(node, &previous.key, read_at + 1).await?;
    }
    Err(RecipeError::WaitedTooLong)
}

/// Acquires the lock `name` for `lease` (see the module documentation). On a failure
/// while waiting, the key is deleted again so that it holds the lock for nobody.
pub async fn lock(node: &NodeHandle, name: &[u8], lease: i64) -> Result<HeldLock, RecipeError> {
    lock_with(node, name, lease, false).await
}

/// [`lock`], with the simulator's planted bug `lock-skips-the-wait` when `skip_wait`.
pub async fn lock_with(node: &NodeHandle, name: &[u8], lease: i64, skip_wait: bool) -> Result<HeldLock, RecipeError> {
    let prefix = prefix_of(name);
    let key = owner_key(&prefix, lease);
    let (create_revision, _) = create_key(node, &key, lease, b"").await?;
    let waited = if skip_wait { Ok(create_revision) } else { wait_for_turn(node, &prefix, create_revision).await };
    if let Err(waiting_failed) = waited {
        let _ = node.delete_range(DeleteRangeRequest { key, ..Default::default() }).await;
        return Err(waiting_failed);
    }
    // As etcd's mutex: the own key must still be there (its lease may have ended while
    // it waited). No older key can appear later, so this read is the acquisition point.
    let own = node.range(RangeRequest { key: key.clone(), ..Default::default() }).await?;
    let still_held = own.kvs.first().is_some_and(|kv| kv.create_revision == create_revision);
    if !still_held {
        return Err(RecipeError::SessionExpired);
    }
    let acquired_revision = own.header.map_or(0, |h| h.revision);
    Ok(HeldLock { key, create_revision, acquired_revision })
}
