//! etcd's `Auth` service. The member keeps users, roles and permissions as replicated
//! state (`crate::auth`); this front end does what must not run on the member's loop or
//! needs the operating system: bcrypt (`--bcrypt-cost`) on a blocking thread — passwords
//! are hashed here before UserAdd and UserChangePassword are proposed, and checked here
//! for Authenticate — and the token-signing secret AuthEnable sets, drawn from the OS.

use rand::RngCore;
use tonic::{Request, Response, Status};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::detcdpb::{AuthEnable, LoginInfoRequest, TokenRequest};
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::*;
use crate::server::NodeHandle;

/// etcd's `--bcrypt-cost` bounds (bcrypt's own).
pub const BCRYPT_COST_MIN: u32 = 4;
pub const BCRYPT_COST_MAX: u32 = 31;
/// Bytes of the token-signing secret.
const TOKEN_SECRET_BYTES: usize = 32;

/// The Auth service.
pub struct AuthService {
    pub(super) node: NodeHandle,
    pub(super) bcrypt_cost: u32,
}

impl AuthService {
    /// bcrypt of `password` on a blocking thread (tens of milliseconds at cost 10).
    async fn hash_password(&self, password: String) -> Result<String, Status> {
        let cost = self.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("bcrypt: {e}")))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let mut token_secret = vec![0u8; TOKEN_SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut token_secret);
        node.auth_enable(AuthEnable { token_secret }).await.map(Response::new).map_err(to_status)
    }

    async fn auth_disable(&self, request: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.auth_disable(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.auth_status(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    /// Two steps around the password check: the user's hash and token epoch (a
    /// linearizable read), bcrypt here, then a token for that epoch — so a password
    /// changed meanwhile gives no token for the old one.
    async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let login = self.node.auth_login_info(LoginInfoRequest { name: request.name.clone() }).await.map_err(to_status)?;
        if login.no_password {
            return Err(to_status(EtcdError::AuthFailed));
        }
        let (password, hash) = (request.password, login.hashed_password);
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if !matches {
            return Err(to_status(EtcdError::AuthFailed));
        }
        let token = TokenRequest { name: request.name, token_epoch: login.token_epoch };
        self.node.auth_token(token).await.map(Response::new).map_err(to_status)
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let mut add = request.into_inner();
        let no_password = add.options.is_some_and(|options| options.no_password);
        add.hashed_password = if no_password { String::new() } else { self.hash_password(std::mem::take(&mut add.password)).await? };
        add.password.clear();
        node.user_add(add).await.map(Response::new).map_err(to_status)
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.user_get(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.user_list(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.user_delete(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        let mut change = request.into_inner();
        change.hashed_password = self.hash_password(std::mem::take(&mut change.password)).await?;
        node.user_change_password(change).await.map(Response::new).map_err(to_status)
    }

    async fn user_grant_role(&self, request: Request<AuthUserGrantRoleRequest>) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.user_grant_role(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn user_revoke_role(&self, request: Request<AuthUserRevokeRoleRequest>) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.user_revoke_role(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.role_add(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.role_get(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.role_list(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn role_delete(&self, request: Request<AuthRoleDeleteRequest>) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.role_delete(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.role_grant_permission(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let node = super::client_node(&self.node, &request);
        node.role_revoke_permission(request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}
