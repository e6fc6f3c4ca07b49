//! etcd's `Lock` service (v3lockpb) over `recipes::lock`: the lock `name` is held by the
//! key `name/<lease in hex>` with the oldest create revision among the keys under
//! `name/`; a waiter watches the key just before its own until it is deleted (by
//! Unlock, a revoke, or its lease expiring).

use tonic::{Request, Response, Status};

use super::to_status;
use crate::pb::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest};
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::recipes::{self, RecipeError, LOCK_SESSION_TTL_SECS};
use crate::server::NodeHandle;

pub struct LockService {
    pub(super) node: NodeHandle,
}

/// The gRPC status of a recipe failure (etcd answers the election errors as Unknown).
pub(super) fn recipe_status(error: RecipeError) -> Status {
    match error {
        RecipeError::Etcd(error) => to_status(error),
        RecipeError::NotLeader | RecipeError::NoLeader => Status::unknown(error.message()),
        RecipeError::KeyVanished | RecipeError::WaitedTooLong => Status::internal(error.message()),
        RecipeError::SessionExpired => Status::failed_precondition(error.message()),
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let LockRequest { name, lease } = request.into_inner();
        let lease = if lease == 0 {
            let granted = node.lease_grant(LeaseGrantRequest { ttl: LOCK_SESSION_TTL_SECS, id: 0 }).await.map_err(to_status)?;
            granted.id
        } else {
            lease
        };
        let held = recipes::lock(&node, &name, lease).await.map_err(recipe_status)?;
        let header = recipes::header(&node).await.map_err(recipe_status)?;
        Ok(Response::new(LockResponse { header: Some(header), key: held.key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let key = request.into_inner().key;
        let deleted = node.delete_range(DeleteRangeRequest { key, ..Default::default() }).await.map_err(to_status)?;
        Ok(Response::new(UnlockResponse { header: deleted.header }))
    }
}
