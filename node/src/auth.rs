//! etcd's authentication and role-based access control, as replicated state: whether
//! auth is enabled, the auth revision (bumped by every change), users (password hash,
//! roles, token epoch), roles (key permissions), and the secret that signs tokens.
//!
//! Pure and deterministic like the rest of `apply`: changes arrive as applied requests,
//! checks answer from the state alone. Nothing here hashes a password (bcrypt runs at the
//! edge, away from the member's loop) or reads a clock.
//!
//! **Tokens** are signed, not stored: `hex(user).epoch.mac`, where `mac` is an
//! HMAC-SHA-256 of the user and its token epoch under the replicated secret. Every member
//! checks a token from replicated state alone, so a token works on any member and across
//! restarts, and a password change, a user's deletion or re-enabling auth (a new secret)
//! voids every token issued before. (etcd's simple tokens live in one process's memory
//! and expire after `--auth-token-ttl` of disuse; these do not expire by time.)
//!
//! **Checks**, as etcd makes them: the member that takes a request resolves its token to
//! a user and stamps the auth revision it saw ([`AuthInfo`]); the member that applies it
//! refuses it if the auth state changed since ("revision of auth store is old"), else
//! checks the permission on the state *at apply* — so a revoked permission binds every
//! request applied after the revoke. Reads are checked when they are served.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::errors::EtcdError;
use crate::pb::authpb::permission::Type as PermissionType;
use crate::pb::authpb::Permission;
use crate::pb::detcdpb::AuthInfo;
use crate::pb::etcdserverpb::{request_op, Compare, RequestOp, TxnRequest};

/// The role that may do everything (etcd's `root`).
pub const ROOT_ROLE: &str = "root";
/// The user that must exist, with [`ROOT_ROLE`], before auth can be enabled.
pub const ROOT_USER: &str = "root";
/// Bytes of the token signature kept in a token (of SHA-256's 32).
const TOKEN_MAC_BYTES: usize = 16;
/// Requests and compares walked in one txn's permission check (nested txns included);
/// more is refused (validation caps a txn far below this).
pub const TXN_CHECKED_OPS_MAX: usize = 100_000;

/// One user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// bcrypt hash of the password; empty for a user added with `--no-password`.
    pub password_hash: String,
    pub no_password: bool,
    pub roles: BTreeSet<String>,
    /// Changes with the password (and when the user is added): tokens carry it.
    pub token_epoch: u64,
}

/// One key permission of a role; a role's permissions are kept in key order (as etcd
/// lists them).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyPermission {
    pub key: Vec<u8>,
    /// Empty: the key alone; `[0]`: every key from `key` on.
    pub range_end: Vec<u8>,
    /// `authpb.Permission.Type`: READ, WRITE or READWRITE.
    pub perm_type: i32,
}

/// The replicated auth state. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, BTreeSet<KeyPermission>>,
    token_secret: Vec<u8>,
}

/// Who a client says it is: nothing, an auth token (etcd's `token` metadata), or the
/// common name of the TLS client certificate the front end verified (etcd uses it as the
/// user name when the request carries no token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    Token(String),
    CertificateName(String),
}

/// What a request needs: a permission on a key range, or the root role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Needed {
    Read { key: Vec<u8>, range_end: Vec<u8> },
    Write { key: Vec<u8>, range_end: Vec<u8> },
    Admin,
}

impl AuthStore {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub fn roles(&self) -> &BTreeMap<String, BTreeSet<KeyPermission>> {
        &self.roles
    }

    fn changed(&mut self) {
        self.revision += 1;
    }

    /// Feeds the state into a digest (members must agree on it).
    pub fn digest_into(&self, hasher: &mut crate::digest::Fnv64) {
        hasher.update(&[u8::from(self.enabled)]).update(&self.revision.to_le_bytes()).update(&self.token_secret);
        for (name, user) in &self.users {
            hasher.update(name.as_bytes()).update(&[0]).update(user.password_hash.as_bytes()).update(&user.token_epoch.to_le_bytes());
            for role in &user.roles {
                hasher.update(&[1]).update(role.as_bytes());
            }
        }
        for (name, permissions) in &self.roles {
            hasher.update(&[2]).update(name.as_bytes());
            for permission in permissions {
                hasher.update(&permission.perm_type.to_le_bytes()).update(&permission.key).update(&[0]).update(&permission.range_end);
            }
        }
    }

    // ---- changes (applied on every member alike) ----

    pub fn enable(&mut self, token_secret: &[u8]) -> Result<(), EtcdError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT_USER).ok_or(EtcdError::RootUserNotExist)?;
        if !root.roles.contains(ROOT_ROLE) {
            return Err(EtcdError::RootRoleNotExist);
        }
        assert!(!token_secret.is_empty(), "AuthEnable carries a token secret (the proposer fills it)");
        self.enabled = true;
        self.token_secret = token_secret.to_vec();
        self.changed();
        Ok(())
    }

    pub fn disable(&mut self) {
        if self.enabled {
            self.enabled = false;
            self.changed();
        }
    }

    pub fn user_add(&mut self, name: &str, password_hash: &str, no_password: bool) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(EtcdError::UserAlreadyExist);
        }
        let token_epoch = self.revision + 1;
        self.users.insert(name.to_string(), User { password_hash: password_hash.to_string(), no_password, roles: BTreeSet::new(), token_epoch });
        self.changed();
        Ok(())
    }

    pub fn user_delete(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT_USER {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(EtcdError::UserNotFound)?;
        self.changed();
        Ok(())
    }

    pub fn user_change_password(&mut self, name: &str, password_hash: &str) -> Result<(), EtcdError> {
        let epoch = self.revision + 1;
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        user.password_hash = password_hash.to_string();
        user.no_password = false;
        user.token_epoch = epoch;
        self.changed();
        Ok(())
    }

    pub fn user_grant_role(&mut self, name: &str, role: &str) -> Result<(), EtcdError> {
        if !self.users.contains_key(name) {
            return Err(EtcdError::UserNotFound);
        }
        if role != ROOT_ROLE && !self.roles.contains_key(role) {
            return Err(EtcdError::RoleNotFound);
        }
        self.users.get_mut(name).expect("checked above").roles.insert(role.to_string());
        self.changed();
        Ok(())
    }

    pub fn user_revoke_role(&mut self, name: &str, role: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        if !user.roles.remove(role) {
            return Err(EtcdError::RoleNotGranted);
        }
        self.changed();
        Ok(())
    }

    pub fn role_add(&mut self, name: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(EtcdError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_string(), BTreeSet::new());
        self.changed();
        Ok(())
    }

    pub fn role_delete(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT_ROLE {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(EtcdError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        self.changed();
        Ok(())
    }

    pub fn role_grant_permission(&mut self, name: &str, permission: &Permission) -> Result<(), EtcdError> {
        let permissions = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        // etcd replaces a permission on the same range (its type may change).
        permissions.retain(|p| !(p.key == permission.key && p.range_end == permission.range_end));
        permissions.insert(KeyPermission { perm_type: permission.perm_type, key: permission.key.clone(), range_end: permission.range_end.clone() });
        self.changed();
        Ok(())
    }

    pub fn role_revoke_permission(&mut self, name: &str, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        let permissions = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        let before = permissions.len();
        permissions.retain(|p| !(p.key == key && p.range_end == range_end));
        if permissions.len() == before {
            return Err(EtcdError::PermissionNotGranted);
        }
        self.changed();
        Ok(())
    }

    // ---- tokens ----

    fn token_mac(&self, user: &str, epoch: u64) -> [u8; 32] {
        let mut message = user.as_bytes().to_vec();
        message.push(0);
        message.extend_from_slice(&epoch.to_le_bytes());
        crate::digest::hmac_sha256(&self.token_secret, &message)
    }

    /// A token for `user`, if its token epoch is still `epoch` (the password checked
    /// was the current one).
    pub fn mint_token(&self, user: &str, epoch: u64) -> Result<String, EtcdError> {
        if !self.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        match self.users.get(user) {
            Some(record) if record.token_epoch == epoch => {}
            _ => return Err(EtcdError::AuthFailed),
        }
        let mac = self.token_mac(user, epoch);
        Ok(format!("{}.{epoch}.{}", hex(user.as_bytes()), hex(&mac[..TOKEN_MAC_BYTES])))
    }

    /// Who a request comes from, as the member taking it stamps it: `None` when auth is
    /// disabled (nothing is checked), an empty user when no credentials came (refused by
    /// the checks with "user name is empty"), the token's user, or the certificate's
    /// common name (a user of that name must exist to be permitted anything).
    pub fn resolve(&self, credentials: &Credentials) -> Result<Option<AuthInfo>, EtcdError> {
        if !self.enabled {
            return Ok(None);
        }
        let user = match credentials {
            Credentials::None => String::new(),
            Credentials::Token(token) => self.verify_token(token).ok_or(EtcdError::InvalidAuthToken)?,
            Credentials::CertificateName(name) => name.clone(),
        };
        Ok(Some(AuthInfo { user, revision: self.revision }))
    }

    fn verify_token(&self, token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let (user_hex, epoch, mac_hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let user = String::from_utf8(unhex(user_hex)?).ok()?;
        let epoch: u64 = epoch.parse().ok()?;
        let record = self.users.get(&user)?;
        if record.token_epoch != epoch {
            return None;
        }
        let expected = self.token_mac(&user, epoch);
        let given = unhex(mac_hex)?;
        // Constant time is moot for a signature checked in one comparison of fixed length,
        // but cheap.
        let same = given.len() == TOKEN_MAC_BYTES && given.iter().zip(&expected[..TOKEN_MAC_BYTES]).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same.then_some(user)
    }

    // ---- checks ----

    /// Whether `auth` may do what `needed` lists, on this state. `auth` is what the
    /// taking member stamped (`None`: auth was disabled there).
    pub fn check(&self, auth: Option<&AuthInfo>, needed: &[Needed]) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(auth) = auth else {
            // Taken while auth was disabled, applied after it was enabled.
            return Err(EtcdError::AuthOldRevision);
        };
        if auth.user.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if auth.revision < self.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        let user = self.users.get(&auth.user).ok_or(EtcdError::UserNotFound)?;
        if user.roles.contains(ROOT_ROLE) {
            return Ok(());
        }
        for need in needed {
            let allowed = match need {
                Needed::Admin => false,
                Needed::Read { key, range_end } => self.covered(user, key, range_end, PermissionType::Read),
                Needed::Write { key, range_end } => self.covered(user, key, range_end, PermissionType::Write),
            };
            if !allowed {
                return Err(EtcdError::PermissionDenied);
            }
        }
        Ok(())
    }

    /// Whether the user's roles give `wanted` on every key of `[key, range_end)` (a key
    /// alone when `range_end` is empty; every key from `key` on when it is `[0]`): the
    /// union of the permitted ranges must cover it.
    fn covered(&self, user: &User, key: &[u8], range_end: &[u8], wanted: PermissionType) -> bool {
        let mut ranges: Vec<(Vec<u8>, Bound)> = Vec::new();
        for role in &user.roles {
            for permission in self.roles.get(role).into_iter().flatten() {
                let grants = permission.perm_type == PermissionType::Readwrite as i32 || permission.perm_type == wanted as i32;
                if grants {
                    ranges.push((permission.key.clone(), end_bound(&permission.key, &permission.range_end)));
                }
            }
        }
        ranges.sort();
        let wanted_end = end_bound(key, range_end);
        let mut reached = key.to_vec();
        for (start, end) in ranges {
            if start.as_slice() > reached.as_slice() {
                break;
            }
            match end {
                Bound::Infinite => return true,
                Bound::Before(end) if end > reached => reached = end,
                Bound::Before(_) => {}
            }
            if let Bound::Before(wanted_end) = &wanted_end {
                if reached >= *wanted_end {
                    return true;
                }
            }
        }
        false
    }
}

/// The end of a key range, exclusive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bound {
    Before(Vec<u8>),
    Infinite,
}

fn end_bound(key: &[u8], range_end: &[u8]) -> Bound {
    if range_end.is_empty() {
        let mut next = key.to_vec();
        next.push(0);
        Bound::Before(next)
    } else if range_end == [0] {
        Bound::Infinite
    } else {
        Bound::Before(range_end.to_vec())
    }
}

/// What a txn needs: read on every compared range and every range op, write on every put
/// and delete (read too with `prev_kv`), nested txns included (walked with a stack).
pub fn txn_needs(txn: &TxnRequest) -> Result<Vec<Needed>, EtcdError> {
    let mut needed = Vec::new();
    let mut pending: Vec<(&[Compare], &[RequestOp], &[RequestOp])> = vec![(&txn.compare, &txn.success, &txn.failure)];
    let mut walked = 0usize;
    while let Some((compares, success, failure)) = pending.pop() {
        for compare in compares {
            needed.push(Needed::Read { key: compare.key.clone(), range_end: compare.range_end.clone() });
        }
        for op in success.iter().chain(failure) {
            walked += 1;
            if walked > TXN_CHECKED_OPS_MAX {
                return Err(EtcdError::TooManyOps);
            }
            match &op.request {
                Some(request_op::Request::RequestRange(range)) => needed.push(Needed::Read { key: range.key.clone(), range_end: range.range_end.clone() }),
                Some(request_op::Request::RequestPut(put)) => {
                    needed.push(Needed::Write { key: put.key.clone(), range_end: Vec::new() });
                    if put.prev_kv {
                        needed.push(Needed::Read { key: put.key.clone(), range_end: Vec::new() });
                    }
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    needed.push(Needed::Write { key: delete.key.clone(), range_end: delete.range_end.clone() });
                    if delete.prev_kv {
                        needed.push(Needed::Read { key: delete.key.clone(), range_end: delete.range_end.clone() });
                    }
                }
                Some(request_op::Request::RequestTxn(nested)) => pending.push((&nested.compare, &nested.success, &nested.failure)),
                None => {}
            }
        }
    }
    Ok(needed)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_alice() -> AuthStore {
        let mut store = AuthStore::default();
        store.user_add("root", "h", false).unwrap();
        store.user_grant_role("root", ROOT_ROLE).unwrap();
        store.user_add("alice", "h", false).unwrap();
        store.role_add("reader").unwrap();
        store.user_grant_role("alice", "reader").unwrap();
        let grant = |key: &[u8], end: &[u8], t: PermissionType| Permission { perm_type: t as i32, key: key.to_vec(), range_end: end.to_vec() };
        store.role_grant_permission("reader", &grant(b"foo", b"", PermissionType::Read)).unwrap();
        store.role_grant_permission("reader", &grant(b"app/", b"app0", PermissionType::Readwrite)).unwrap();
        store.role_grant_permission("reader", &grant(b"k1", b"k5", PermissionType::Write)).unwrap();
        store.role_grant_permission("reader", &grant(b"k5", b"k7", PermissionType::Write)).unwrap();
        store.enable(b"secret").unwrap();
        store
    }

    fn alice(store: &AuthStore) -> AuthInfo {
        let token = store.mint_token("alice", store.users()["alice"].token_epoch).unwrap();
        store.resolve(&Credentials::Token(token.clone())).unwrap().unwrap()
    }

    fn read(key: &[u8], end: &[u8]) -> Needed {
        Needed::Read { key: key.to_vec(), range_end: end.to_vec() }
    }

    fn write(key: &[u8], end: &[u8]) -> Needed {
        Needed::Write { key: key.to_vec(), range_end: end.to_vec() }
    }

    #[test]
    fn permissions_as_etcd_checks_them() {
        let store = store_with_alice();
        let who = alice(&store);
        assert_eq!(store.check(Some(&who), &[read(b"foo", b"")]), Ok(()));
        assert_eq!(store.check(Some(&who), &[write(b"foo", b"")]), Err(EtcdError::PermissionDenied));
        assert_eq!(store.check(Some(&who), &[write(b"app/x", b""), read(b"app/", b"app0")]), Ok(()));
        assert_eq!(store.check(Some(&who), &[read(b"", &[0])]), Err(EtcdError::PermissionDenied));
        // Two adjacent grants cover their union; a gap does not.
        assert_eq!(store.check(Some(&who), &[write(b"k2", b"k7")]), Ok(()));
        assert_eq!(store.check(Some(&who), &[write(b"k2", b"k8")]), Err(EtcdError::PermissionDenied));
        assert_eq!(store.check(Some(&who), &[Needed::Admin]), Err(EtcdError::PermissionDenied));
        let root_token = store.mint_token("root", store.users()["root"].token_epoch).unwrap();
        let root = store.resolve(&Credentials::Token(root_token.clone())).unwrap().unwrap();
        assert_eq!(store.check(Some(&root), &[Needed::Admin, write(b"", &[0])]), Ok(()));
        let nobody = store.resolve(&Credentials::None).unwrap().unwrap();
        assert_eq!(store.check(Some(&nobody), &[read(b"foo", b"")]), Err(EtcdError::UserEmpty));
    }

    #[test]
    fn a_change_after_the_stamp_refuses_the_request() {
        let mut store = store_with_alice();
        let who = alice(&store);
        store.role_revoke_permission("reader", b"foo", b"").unwrap();
        assert_eq!(store.check(Some(&who), &[read(b"foo", b"")]), Err(EtcdError::AuthOldRevision));
        let again = alice(&store);
        assert_eq!(store.check(Some(&again), &[read(b"foo", b"")]), Err(EtcdError::PermissionDenied));
        assert_eq!(store.role_revoke_permission("reader", b"foo", b""), Err(EtcdError::PermissionNotGranted));
    }

    #[test]
    fn tokens_are_signed_and_voided_by_a_password_change() {
        let mut store = store_with_alice();
        let token = store.mint_token("alice", store.users()["alice"].token_epoch).unwrap();
        assert_eq!(store.resolve(&Credentials::Token(token.clone())).unwrap().unwrap().user, "alice");
        // Another user's name with alice's signature: refused.
        let forged = format!("{}.{}", hex(b"root"), token.split_once('.').unwrap().1);
        assert_eq!(store.resolve(&Credentials::Token(forged.clone())), Err(EtcdError::InvalidAuthToken));
        assert_eq!(store.resolve(&Credentials::Token("garbage".into())), Err(EtcdError::InvalidAuthToken));
        store.user_change_password("alice", "h2").unwrap();
        assert_eq!(store.resolve(&Credentials::Token(token.clone())), Err(EtcdError::InvalidAuthToken));
        // A token for the old epoch cannot be minted after the change either.
        assert_eq!(store.mint_token("alice", 3), Err(EtcdError::AuthFailed));
    }

    #[test]
    fn root_rules() {
        let mut store = AuthStore::default();
        assert_eq!(store.enable(b"s"), Err(EtcdError::RootUserNotExist));
        store.user_add("root", "h", false).unwrap();
        assert_eq!(store.enable(b"s"), Err(EtcdError::RootRoleNotExist));
        store.role_add(ROOT_ROLE).unwrap();
        store.user_grant_role("root", ROOT_ROLE).unwrap();
        store.enable(b"s").unwrap();
        assert_eq!(store.user_delete("root"), Err(EtcdError::InvalidAuthMgmt));
        assert_eq!(store.user_revoke_role("root", ROOT_ROLE), Err(EtcdError::InvalidAuthMgmt));
        assert_eq!(store.user_add("root", "h", false), Err(EtcdError::UserAlreadyExist));
        assert_eq!(store.user_add("", "h", false), Err(EtcdError::UserEmpty));
        assert_eq!(store.user_revoke_role("root", "nosuch"), Err(EtcdError::RoleNotGranted));
        store.disable();
        assert_eq!(store.resolve(&Credentials::Token("anything".into())), Ok(None));
    }
}
