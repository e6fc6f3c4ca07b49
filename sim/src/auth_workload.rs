//! The auth workload. An operator sets up etcd's auth as operators do — `root` with the
//! root role, a role `writer` that may read and write under `auth/`, a user `alice`
//! holding it — and enables it; from then on every other client of the run sends root's
//! token (`MemberSlot::client_token`). The operator then alternates revoking and granting
//! `writer`'s permission, each change retried until its outcome is definite, while
//! alice's clients write under `auth/` through random members, authenticating again when
//! their token is refused. The record feeds `auth_checker` (no write succeeds inside a
//! revoked interval).
//!
//! Passwords: the member never hashes or checks one (the gRPC front end does, with
//! bcrypt); the simulator stores a stand-in hash and checks it itself, as the front end
//! would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::errors::EtcdError;
use detcd_node::pb::authpb::permission::Type as PermissionType;
use detcd_node::pb::authpb::{Permission, UserAddOptions};
use detcd_node::pb::detcdpb::{AuthEnable, LoginInfoRequest, TokenRequest};
use detcd_node::pb::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest, PutRequest,
};
use detcd_node::NodeHandle;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::auth_checker::{PermissionChange, PermittedWrite, UNKNOWN_OUTCOME_SEQ};
use crate::cluster::Cluster;

/// Where alice may write while her permission is granted.
pub const AUTH_PREFIX: &str = "auth/";
const AUTH_PREFIX_END: &str = "auth0";
const ROOT_USER: &str = "root";
const ROOT_PASSWORD: &str = "root-password";
const USER: &str = "alice";
const USER_PASSWORD: &str = "alice-password";
const ROLE: &str = "writer";
/// Attempts of one setup step or one permission change before the operator gives up.
pub const AUTH_STEP_ATTEMPTS_MAX: usize = 100;
/// Writes one of alice's clients attempts at most.
pub const AUTH_WRITES_PER_CLIENT_MAX: u64 = 100_000;

/// The simulator's stand-in for bcrypt (see the module documentation).
fn stand_in_hash(password: &str) -> String {
    format!("sim-hash:{password}")
}

/// One request of the operator's.
#[derive(Clone, Debug)]
enum Step {
    UserAdd(&'static str, &'static str),
    GrantRole(&'static str, &'static str),
    RoleAdd(&'static str),
    GrantWrite,
    RevokeWrite,
    Enable(Vec<u8>),
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::UserAdd(..) => "user add",
            Step::GrantRole(..) => "grant role",
            Step::RoleAdd(_) => "role add",
            Step::GrantWrite => "grant",
            Step::RevokeWrite => "revoke",
            Step::Enable(_) => "auth enable",
        }
    }
}

async fn send(handle: &NodeHandle, step: &Step) -> Result<(), EtcdError> {
    match step {
        Step::UserAdd(name, password) => handle
            .user_add(AuthUserAddRequest {
                name: name.to_string(),
                hashed_password: stand_in_hash(password),
                options: Some(UserAddOptions { no_password: false }),
                ..Default::default()
            })
            .await
            .map(drop),
        Step::GrantRole(user, role) => handle.user_grant_role(AuthUserGrantRoleRequest { user: user.to_string(), role: role.to_string() }).await.map(drop),
        Step::RoleAdd(name) => handle.role_add(AuthRoleAddRequest { name: name.to_string() }).await.map(drop),
        Step::GrantWrite => {
            let perm = Permission { perm_type: PermissionType::Readwrite as i32, key: AUTH_PREFIX.into(), range_end: AUTH_PREFIX_END.into() };
            handle.role_grant_permission(AuthRoleGrantPermissionRequest { name: ROLE.into(), perm: Some(perm) }).await.map(drop)
        }
        Step::RevokeWrite => handle
            .role_revoke_permission(AuthRoleRevokePermissionRequest { role: ROLE.into(), key: AUTH_PREFIX.into(), range_end: AUTH_PREFIX_END.into() })
            .await
            .map(drop),
        Step::Enable(secret) => handle.auth_enable(AuthEnable { token_secret: secret.clone() }).await.map(drop),
    }
}

/// Errors that say the step's effect is in place (it was applied before). An enable
/// sent without a token is refused with "user name is empty" only once auth is on (it
/// is an admin request, as in etcd): an earlier attempt whose answer was lost took effect.
fn already_done(step: &Step, error: &EtcdError) -> bool {
    matches!(
        (step, error),
        (Step::UserAdd(..), EtcdError::UserAlreadyExist)
            | (Step::RoleAdd(_), EtcdError::RoleAlreadyExist)
            | (Step::RevokeWrite, EtcdError::PermissionNotGranted)
            | (Step::Enable(_), EtcdError::UserEmpty)
    )
}

/// A running member's handle with `token`.
fn some_member(cluster: &Cluster, rng: &mut ChaCha8Rng, token: Option<&str>) -> Option<(u64, NodeHandle)> {
    let slot = &cluster.members[rng.gen_range(0..cluster.members.len())];
    slot.handle_without_token().map(|(handle, _)| (slot.member_id(), handle.with_token(token.map(str::to_string))))
}

/// Sends `step` until its outcome is definite: `Ok((first invocation, definite answer))`
/// in history sequence numbers, or `Err(first invocation, if any)` if it never became
/// definite (or the run stopped: the faults stay until every client is done) — then an
/// attempt may still take effect, at any time after that invocation.
async fn until_definite(
    cluster: &Cluster,
    rng: &mut ChaCha8Rng,
    timeout: Duration,
    token: Option<&str>,
    step: &Step,
    stop: &AtomicBool,
) -> Result<(u64, u64), Option<u64>> {
    let mut invoked_seq = None;
    for _ in 0..AUTH_STEP_ATTEMPTS_MAX {
        if stop.load(Ordering::SeqCst) {
            return Err(invoked_seq);
        }
        if let Some((_, handle)) = some_member(cluster, rng, token) {
            let seq = cluster.world.auth_seq(&format!("invoke {step:?}"));
            invoked_seq.get_or_insert(seq);
            if let Ok(answer) = tokio::time::timeout(timeout, send(&handle, step)).await {
                let first = invoked_seq.expect("set above");
                match answer {
                    Ok(()) => return Ok((first, cluster.world.auth_seq(&format!("done {step:?}")))),
                    Err(error) if already_done(step, &error) => return Ok((first, cluster.world.auth_seq(&format!("done {step:?}")))),
                    Err(error) => cluster.world.count(&format!("auth: operator's {} refused: {error}", step.name())),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..=200))).await;
    }
    Err(invoked_seq)
}

/// Authenticates `user` through a random member: its token.
async fn authenticate(cluster: &Cluster, rng: &mut ChaCha8Rng, timeout: Duration, user: &str, password: &str) -> Option<String> {
    let (_, handle) = some_member(cluster, rng, None)?;
    let login = tokio::time::timeout(timeout, handle.auth_login_info(LoginInfoRequest { name: user.into() })).await.ok()?.ok()?;
    if login.hashed_password != stand_in_hash(password) {
        return None;
    }
    let answer = tokio::time::timeout(timeout, handle.auth_token(TokenRequest { name: user.into(), token_epoch: login.token_epoch })).await.ok()?.ok()?;
    Some(answer.token)
}

/// The liveness phase's operator step (the network is healed): if the auth operator
/// stopped after its enable may have taken effect but before handing root's token out,
/// every tokenless request would be refused ("user name is empty") — log in as root and
/// hand the token to every client, as an operator would. Nothing to do otherwise, or
/// while root cannot log in (auth never got enabled: requests need no token).
pub async fn finish_abandoned_setup(cluster: &Cluster, attempt: u64) {
    if !cluster.auth_token_missing.load(Ordering::SeqCst) {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(attempt ^ 0x6175_7468_6c69_7665);
    let Some(token) = authenticate(cluster, &mut rng, Duration::from_millis(2000), ROOT_USER, ROOT_PASSWORD).await else { return };
    if let Some(slot) = cluster.members.first() {
        *slot.client_token.lock().expect("token lock") = Some(token);
    }
    cluster.auth_token_missing.store(false, Ordering::SeqCst);
    cluster.world.event("auth", None, "liveness: root logged in; every client sends root's token".into());
}

/// The operator: sets auth up, enables it, hands root's token to every client, then
/// alternates revoke and grant until `stop`.
pub async fn run_auth_operator(cluster: Arc<Cluster>, stop: Arc<AtomicBool>, timeout_ms: u64, seed: u64, enabled: Arc<AtomicBool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6175_7468_6f70_2121);
    let timeout = Duration::from_millis(timeout_ms);
    let mut secret = vec![0u8; 32];
    rng.fill_bytes(&mut secret);
    let setup = [
        Step::UserAdd(ROOT_USER, ROOT_PASSWORD),
        Step::GrantRole(ROOT_USER, "root"),
        Step::RoleAdd(ROLE),
        Step::GrantWrite,
        Step::UserAdd(USER, USER_PASSWORD),
        Step::GrantRole(USER, ROLE),
        Step::Enable(secret),
    ];
    for step in &setup {
        if until_definite(&cluster, &mut rng, timeout, None, step, &stop).await.is_err() {
            if matches!(step, Step::Enable(_)) {
                // Its answer was lost, not its effect: auth may be on.
                cluster.auth_token_missing.store(true, Ordering::SeqCst);
            }
            cluster.world.event("auth", None, format!("gave up setting auth up at {}", step.name()));
            return;
        }
    }
    let mut root_token = None;
    for _ in 0..AUTH_STEP_ATTEMPTS_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        root_token = authenticate(&cluster, &mut rng, timeout, ROOT_USER, ROOT_PASSWORD).await;
        if root_token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(root_token) = root_token else {
        cluster.auth_token_missing.store(true, Ordering::SeqCst);
        cluster.world.event("auth", None, "root could not authenticate".into());
        return;
    };
    // One token cell, shared by every slot.
    if let Some(slot) = cluster.members.first() {
        *slot.client_token.lock().expect("token lock") = Some(root_token.clone());
    }
    cluster.world.event("auth", None, "auth enabled; every client sends root's token".into());
    // The permission starts granted (set up above): the first change is a revoke.
    cluster.world.record_permission_change(PermissionChange { granted: true, invoked_seq: 0, completed_seq: 0 });
    enabled.store(true, Ordering::SeqCst);
    let mut granted = true;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..=1000))).await;
        let step = if granted { Step::RevokeWrite } else { Step::GrantWrite };
        let (invoked_seq, completed_seq) = match until_definite(&cluster, &mut rng, timeout, Some(&root_token), &step, &stop).await {
            Ok(definite) => definite,
            Err(invoked_seq) => {
                // An outcome never known: recorded as such (a grant may have taken effect
                // from its first invocation on), and no further changes.
                if let Some(invoked_seq) = invoked_seq {
                    cluster.world.record_permission_change(PermissionChange { granted: !granted, invoked_seq, completed_seq: UNKNOWN_OUTCOME_SEQ });
                }
                cluster.world.event("auth", None, format!("gave up on {step:?}; no further permission changes"));
                return;
            }
        };
        granted = !granted;
        cluster.world.record_permission_change(PermissionChange { granted, invoked_seq, completed_seq });
    }
}

/// One of alice's clients: writes unique values under `auth/<client>/` until `stop`.
pub async fn run_auth_client(client: u64, cluster: Arc<Cluster>, stop: Arc<AtomicBool>, timeout_ms: u64, seed: u64, enabled: Arc<AtomicBool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x616c_6963_6521);
    let timeout = Duration::from_millis(timeout_ms);
    let mut token: Option<String> = None;
    for n in 0..AUTH_WRITES_PER_CLIENT_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..=150))).await;
        if !enabled.load(Ordering::SeqCst) {
            continue;
        }
        if token.is_none() {
            token = authenticate(&cluster, &mut rng, timeout, USER, USER_PASSWORD).await;
            continue;
        }
        let Some((member, handle)) = some_member(&cluster, &mut rng, token.as_deref()) else { continue };
        let key = format!("{AUTH_PREFIX}{client}/{n}");
        let invoked_seq = cluster.world.auth_seq(&format!("invoke put {key}"));
        let put = PutRequest { key: key.clone().into_bytes(), value: format!("{client}-{n}").into_bytes().into(), ..Default::default() };
        match tokio::time::timeout(timeout, handle.put(put)).await {
            Ok(Ok(answer)) => {
                let completed_seq = cluster.world.auth_seq(&format!("done put {key}"));
                let revision = answer.header.map_or(0, |h| h.revision);
                cluster.world.record_permitted_write(PermittedWrite { client, member, key, revision, invoked_seq, completed_seq });
            }
            Ok(Err(EtcdError::PermissionDenied | EtcdError::AuthOldRevision)) => cluster.world.record_write_refused(),
            Ok(Err(EtcdError::InvalidAuthToken)) => token = None,
            _ => {}
        }
    }
}
