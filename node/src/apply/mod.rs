//! The replicated state machine: a pure `apply(request) -> (response, events)` over one
//! struct that holds everything replicated — the MVCC store and the request-dedup window
//! today; the lessor, alarms, auth and members as they land.
//!
//! It knows nothing of raft, disks or clients: the consensus loop hands it the bytes of
//! each committed entry in order and routes what comes out (the answer to the waiting
//! client, the change events for watchers). Every member applying the same entries ends
//! in the same bytes, so its encoding is what raft snapshots carry.
//!
//! Adding a request type means: a variant in [`Request`]/[`Response`] and in
//! `detcd.proto`'s `InternalRequest`, and one arm in [`StateMachine::apply_op`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::errors::EtcdError;
use crate::mvcc::Mvcc;
use crate::pb::detcdpb::{internal_request, InternalRequest};
use crate::pb::etcdserverpb::{
    alarm_request, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseCheckpointResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
    AuthDisableRequest, AuthDisableResponse, AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest,
    AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse, AuthRoleRevokePermissionRequest,
    AuthRoleRevokePermissionResponse, AuthStatusRequest, AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse, AuthUserListRequest,
    AuthUserListResponse, AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateResponse,
};
use crate::auth::{AuthStore, Needed};
use crate::pb::detcdpb::AuthInfo;
use crate::pb::mvccpb::Event;

/// Request ids remembered per proposer to apply each client request at most once
/// (the network may deliver a forwarded proposal twice, and raft would commit both).
pub const APPLIED_REQUEST_IDS_PER_PROPOSER_MAX: usize = 8192;
/// Version byte in front of the state machine's snapshot encoding (4: without the
/// corruption check's hash reports; 5: without the removed members; 6: without auth;
/// all still read).
pub const STATE_ENCODING_VERSION: u8 = 7;
/// A member's name and URLs: the peer URLs from the configuration change that added it
/// (or the initial cluster), name and client URLs once it published them through raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// What a raft configuration change does to the replicated member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberTableChange {
    Added { id: u64, peer_urls: Vec<String> },
    Removed { id: u64 },
    Promoted { id: u64 },
}

/// Hash checks whose reports are kept for comparison (the oldest go first).
pub const HASH_CHECKS_KEPT_MAX: usize = 16;
/// Reports kept per hash check.
pub const HASH_REPORTS_PER_CHECK_MAX: usize = 64;

/// One corruption check (see [`StateMachine::apply_hash_report`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCheckState {
    /// Voters when the check was asked for: a majority of them agreeing sets the reference.
    voters: u32,
    /// The hash a majority reported, once one did.
    agreed: Option<u32>,
    /// Every report so far: (member, hash).
    reports: Vec<(u64, u32)>,
}

/// A client request, in etcd's own message types.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    /// One keep-alive of the keep-alive stream.
    LeaseKeepAlive(LeaseKeepAliveRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases(LeaseLeasesRequest),
    /// GET is served from this member's state; ACTIVATE/DEACTIVATE go through raft.
    Alarm(AlarmRequest),
    /// A change of the cluster's membership (etcd's Cluster service).
    Member(MemberRequest),
    /// etcd's Auth service (and the two steps of Authenticate).
    Auth(AuthRequest),
}

/// An Auth service request. Changes go through raft; the rest are linearizable reads.
/// Passwords arrive hashed (`hashedPassword`): bcrypt runs before the member sees them.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthRequest {
    Enable(crate::pb::detcdpb::AuthEnable),
    Disable(AuthDisableRequest),
    Status(AuthStatusRequest),
    UserAdd(AuthUserAddRequest),
    UserGet(AuthUserGetRequest),
    UserList(AuthUserListRequest),
    UserDelete(AuthUserDeleteRequest),
    UserChangePassword(AuthUserChangePasswordRequest),
    UserGrantRole(AuthUserGrantRoleRequest),
    UserRevokeRole(AuthUserRevokeRoleRequest),
    RoleAdd(AuthRoleAddRequest),
    RoleGet(AuthRoleGetRequest),
    RoleList(AuthRoleListRequest),
    RoleDelete(AuthRoleDeleteRequest),
    RoleGrantPermission(AuthRoleGrantPermissionRequest),
    RoleRevokePermission(AuthRoleRevokePermissionRequest),
    LoginInfo(crate::pb::detcdpb::LoginInfoRequest),
    Token(crate::pb::detcdpb::TokenRequest),
}

/// The answer to an [`AuthRequest`].
#[derive(Clone, Debug, PartialEq)]
pub enum AuthResponse {
    Enable(AuthEnableResponse),
    Disable(AuthDisableResponse),
    Status(AuthStatusResponse),
    UserAdd(AuthUserAddResponse),
    UserGet(AuthUserGetResponse),
    UserList(AuthUserListResponse),
    UserDelete(AuthUserDeleteResponse),
    UserChangePassword(AuthUserChangePasswordResponse),
    UserGrantRole(AuthUserGrantRoleResponse),
    UserRevokeRole(AuthUserRevokeRoleResponse),
    RoleAdd(AuthRoleAddResponse),
    RoleGet(AuthRoleGetResponse),
    RoleList(AuthRoleListResponse),
    RoleDelete(AuthRoleDeleteResponse),
    RoleGrantPermission(AuthRoleGrantPermissionResponse),
    RoleRevokePermission(AuthRoleRevokePermissionResponse),
    LoginInfo(crate::pb::detcdpb::LoginInfo),
    Token(AuthenticateResponse),
}

impl AuthResponse {
    fn set_header(&mut self, header: Option<ResponseHeader>) {
        match self {
            AuthResponse::Enable(r) => r.header = header,
            AuthResponse::Disable(r) => r.header = header,
            AuthResponse::Status(r) => r.header = header,
            AuthResponse::UserAdd(r) => r.header = header,
            AuthResponse::UserGet(r) => r.header = header,
            AuthResponse::UserList(r) => r.header = header,
            AuthResponse::UserDelete(r) => r.header = header,
            AuthResponse::UserChangePassword(r) => r.header = header,
            AuthResponse::UserGrantRole(r) => r.header = header,
            AuthResponse::UserRevokeRole(r) => r.header = header,
            AuthResponse::RoleAdd(r) => r.header = header,
            AuthResponse::RoleGet(r) => r.header = header,
            AuthResponse::RoleList(r) => r.header = header,
            AuthResponse::RoleDelete(r) => r.header = header,
            AuthResponse::RoleGrantPermission(r) => r.header = header,
            AuthResponse::RoleRevokePermission(r) => r.header = header,
            AuthResponse::Token(r) => r.header = header,
            AuthResponse::LoginInfo(_) => {}
        }
    }
}

/// A membership change. Add, remove and promote are raft configuration changes
/// (proposed by the consensus loop, which owns raft's configuration); update changes
/// only the replicated member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRequest {
    Add { peer_urls: Vec<String>, is_learner: bool },
    Remove { id: u64 },
    Update { id: u64, peer_urls: Vec<String> },
    Promote { id: u64 },
}

/// The answer to a [`Request`], with its header filled in.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
    /// The leader's own checkpoint proposals (no client waits for it).
    LeaseCheckpoint(LeaseCheckpointResponse),
    /// A member's own proposal no client waits for (hash reports, member attributes).
    Internal,
    Alarm(AlarmResponse),
    /// A membership change was applied: the member it added, removed, updated or
    /// promoted, as it is now.
    Member(crate::pb::etcdserverpb::Member),
    Auth(AuthResponse),
}

impl Response {
    /// Sets the header of whichever response this is.
    pub fn set_header(&mut self, header: ResponseHeader) {
        let header = Some(header);
        match self {
            Response::Range(r) => r.header = header,
            Response::Put(r) => r.header = header,
            Response::DeleteRange(r) => r.header = header,
            Response::Txn(r) => r.header = header,
            Response::Compact(r) => r.header = header,
            Response::LeaseGrant(r) => r.header = header,
            Response::LeaseRevoke(r) => r.header = header,
            Response::LeaseKeepAlive(r) => r.header = header,
            Response::LeaseTimeToLive(r) => r.header = header,
            Response::LeaseLeases(r) => r.header = header,
            Response::LeaseCheckpoint(r) => r.header = header,
            Response::Internal | Response::Member(_) => {}
            Response::Alarm(r) => r.header = header,
            Response::Auth(r) => r.set_header(header),
        }
    }
}

impl Request {
    /// The replicated form of a write; `None` for a plain read (never replicated).
    pub fn to_internal_op(&self) -> Option<internal_request::Op> {
        match self {
            Request::Put(p) => Some(internal_request::Op::Put(p.clone())),
            Request::DeleteRange(d) => Some(internal_request::Op::DeleteRange(d.clone())),
            Request::Txn(t) => Some(internal_request::Op::Txn(t.clone())),
            Request::Compact(c) => Some(internal_request::Op::Compaction(*c)),
            Request::LeaseGrant(g) => Some(internal_request::Op::LeaseGrant(*g)),
            Request::LeaseRevoke(r) => Some(internal_request::Op::LeaseRevoke(*r)),
            Request::LeaseKeepAlive(k) => Some(internal_request::Op::LeaseRenew(*k)),
            Request::Alarm(a) if a.action != alarm_request::AlarmAction::Get as i32 => Some(internal_request::Op::Alarm(*a)),
            Request::Member(MemberRequest::Update { id, peer_urls }) => Some(internal_request::Op::UpdateMember(crate::pb::etcdserverpb::Member {
                id: *id,
                peer_ur_ls: peer_urls.clone(),
                ..Default::default()
            })),
            // Configuration changes are not normal entries (see `MemberRequest`).
            Request::Member(_) => None,
            Request::Auth(auth) => auth.to_internal_op(),
            Request::Range(_) | Request::LeaseTimeToLive(_) | Request::LeaseLeases(_) | Request::Alarm(_) => None,
        }
    }
}

impl AuthRequest {
    /// The replicated form of an auth change; `None` for an auth read.
    fn to_internal_op(&self) -> Option<internal_request::Op> {
        use internal_request::Op;
        match self {
            AuthRequest::Enable(r) => Some(Op::AuthEnable(r.clone())),
            AuthRequest::Disable(r) => Some(Op::AuthDisable(*r)),
            // The plain password never enters the log: only its hash.
            AuthRequest::UserAdd(r) => Some(Op::AuthUserAdd(AuthUserAddRequest { password: String::new(), ..r.clone() })),
            AuthRequest::UserDelete(r) => Some(Op::AuthUserDelete(r.clone())),
            AuthRequest::UserChangePassword(r) => {
                Some(Op::AuthUserChangePassword(AuthUserChangePasswordRequest { password: String::new(), ..r.clone() }))
            }
            AuthRequest::UserGrantRole(r) => Some(Op::AuthUserGrantRole(r.clone())),
            AuthRequest::UserRevokeRole(r) => Some(Op::AuthUserRevokeRole(r.clone())),
            AuthRequest::RoleAdd(r) => Some(Op::AuthRoleAdd(r.clone())),
            AuthRequest::RoleDelete(r) => Some(Op::AuthRoleDelete(r.clone())),
            AuthRequest::RoleGrantPermission(r) => Some(Op::AuthRoleGrantPermission(r.clone())),
            AuthRequest::RoleRevokePermission(r) => Some(Op::AuthRoleRevokePermission(r.clone())),
            AuthRequest::Status(_)
            | AuthRequest::UserGet(_)
            | AuthRequest::UserList(_)
            | AuthRequest::RoleGet(_)
            | AuthRequest::RoleList(_)
            | AuthRequest::LoginInfo(_)
            | AuthRequest::Token(_) => None,
        }
    }
}

/// What a replicated operation needs of its user when auth is enabled: `None` for the
/// operations etcd does not check (compaction, lease grants and renewals) and for a
/// member's own proposals (lease expiry and checkpoints, hash checks, publication).
fn op_needs(op: &internal_request::Op, store: &Mvcc) -> Option<Result<Vec<Needed>, EtcdError>> {
    use internal_request::Op;
    let write = |key: &[u8], range_end: &[u8]| Needed::Write { key: key.to_vec(), range_end: range_end.to_vec() };
    let read = |key: &[u8], range_end: &[u8]| Needed::Read { key: key.to_vec(), range_end: range_end.to_vec() };
    Some(Ok(match op {
        Op::Put(put) => {
            let mut needed = vec![write(&put.key, &[])];
            if put.prev_kv {
                needed.push(read(&put.key, &[]));
            }
            needed
        }
        Op::DeleteRange(delete) => {
            let mut needed = vec![write(&delete.key, &delete.range_end)];
            if delete.prev_kv {
                needed.push(read(&delete.key, &delete.range_end));
            }
            needed
        }
        Op::Txn(txn) => return Some(crate::auth::txn_needs(txn)),
        // etcd: revoking a lease deletes its keys, so it needs write on each of them.
        Op::LeaseRevoke(revoke) => store.leases().get(revoke.id).map(|lease| lease.keys.iter().map(|key| write(key, &[])).collect()).unwrap_or_default(),
        Op::Alarm(_)
        | Op::UpdateMember(_)
        | Op::AuthEnable(_)
        | Op::AuthDisable(_)
        | Op::AuthUserAdd(_)
        | Op::AuthUserDelete(_)
        | Op::AuthUserChangePassword(_)
        | Op::AuthUserGrantRole(_)
        | Op::AuthUserRevokeRole(_)
        | Op::AuthRoleAdd(_)
        | Op::AuthRoleDelete(_)
        | Op::AuthRoleGrantPermission(_)
        | Op::AuthRoleRevokePermission(_) => vec![Needed::Admin],
        Op::Compaction(_)
        | Op::LeaseGrant(_)
        | Op::LeaseRenew(_)
        | Op::LeaseCheckpoint(_)
        | Op::LeaseExpire(_)
        | Op::HashCheck(_)
        | Op::HashReport(_)
        | Op::PublishMember(_) => return None,
    }))
}

/// The most recent request ids applied per proposer: replicated state (it lives in
/// snapshots), so every member skips the same duplicate entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequests {
    per_proposer: BTreeMap<u64, (VecDeque<u64>, BTreeSet<u64>)>,
}

impl AppliedRequests {
    /// Records `(proposer, request_id)`; false if it was applied before.
    fn first_time(&mut self, proposer: u64, request_id: u64) -> bool {
        let (order, ids) = self.per_proposer.entry(proposer).or_default();
        if !ids.insert(request_id) {
            return false;
        }
        order.push_back(request_id);
        if order.len() > APPLIED_REQUEST_IDS_PER_PROPOSER_MAX {
            let oldest = order.pop_front().expect("non-empty");
            ids.remove(&oldest);
        }
        true
    }
}

/// A change to a lease, for the member's lease clock (which keeps deadlines) and for
/// observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl_secs: i64 },
    Renewed { id: i64, ttl_secs: i64 },
    /// Revoked by a client, or (`expired`) by the leader's expiry proposal; `revision`
    /// is the store's revision after it (its keys were deleted at that revision, if any).
    Ended { id: i64, expired: bool, revision: i64 },
}

/// What applying one committed entry produced.
#[derive(Debug, Default)]
pub struct Applied {
    /// Lease changes, in order.
    pub lease_changes: Vec<LeaseChange>,
    /// For the member that proposed it: `(proposer, request_id, result)`. `None` for an
    /// entry that was not a client request, a duplicate, or invalid.
    pub answer: Option<(u64, u64, Result<Response, EtcdError>)>,
    /// Every key change, in order, all at the store's new revision.
    pub events: Vec<Event>,
    /// The entry was not a valid request and changed nothing (the same on every member).
    pub invalid: bool,
    /// A hash check: what this member must hash and report back through raft (`None`
    /// if the revision is compacted away). The walk is left to the caller, to run on a
    /// frozen copy away from the loop ([`HashToReport::run`]).
    pub hash_to_report: Option<HashToReport>,
    /// The member table may have changed (a member published itself or was updated).
    pub members_changed: bool,
}

/// A hash the corruption check asked for: a frozen (copy-on-write) copy of the store
/// at the check's revision, and what the report must name.
#[derive(Debug)]
pub struct HashToReport {
    store: Mvcc,
    revision: i64,
    compact_revision: i64,
    nonce: u64,
}

impl HashToReport {
    /// Walks the store: the report, to be sent with this member's id filled in.
    pub fn run(self) -> crate::pb::detcdpb::HashReport {
        crate::pb::detcdpb::HashReport {
            revision: self.revision,
            member_id: 0,
            hash: self.store.hash_kv(self.revision),
            compact_revision: self.compact_revision,
            nonce: self.nonce,
        }
    }
}

/// See [`StateMachine::encoding`].
pub struct StateEncoding<'a> {
    state: &'a StateMachine,
    store_len: usize,
    total_len: usize,
}

impl crate::storage::SnapshotData for StateEncoding<'_> {
    fn len(&self) -> usize {
        self.total_len
    }

    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let state = self.state;
        let (members, removed_members) = state.encoded_member_table();
        let rest = (&state.applied_requests, &state.alarms, &state.hash_checks, members, removed_members, &state.auth);
        let to_io = |e: bincode::Error| match *e {
            bincode::ErrorKind::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        };
        out.write_all(&[STATE_ENCODING_VERSION])?;
        out.write_all(&(self.store_len as u64).to_le_bytes())?;
        bincode::serialize_into(&mut *out, &state.mvcc).map_err(to_io)?;
        bincode::serialize_into(&mut *out, &rest).map_err(to_io)
    }
}

/// Everything replicated. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateMachine {
    mvcc: Mvcc,
    applied_requests: AppliedRequests,
    /// Active alarms: (member that raised it, `AlarmType`). While NOSPACE is among them,
    /// writes that add data are refused (etcd's capped applier).
    alarms: BTreeSet<(u64, i32)>,
    /// The corruption check, per (revision, compaction point, nonce) checked: the reports and,
    /// once a majority of voters agree, their hash. A member whose report differs from
    /// it gets a CORRUPT alarm.
    hash_checks: BTreeMap<(i64, i64, u64), HashCheckState>,
    /// Every member of the configuration, by member id: peer URLs from the change that
    /// added it, name and client URLs once it published them.
    members: BTreeMap<u64, MemberAttributes>,
    /// Members removed from the cluster: their ids are never used again, and what they
    /// publish or send is refused.
    removed_members: BTreeSet<u64>,
    /// Users, roles and whether auth is enabled (`crate::auth`).
    auth: AuthStore,
    /// Bugs planted in the state machine (simulator builds only).
    #[cfg(madsim)]
    planted: StatePlantedBugs,
}

/// The state machine's planted bugs (see `consensus::planted`); all false by default.
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatePlantedBugs {
    /// `lease-expiry-races-renewal`.
    pub expiry_races_renewal: bool,
    /// `nospace-ignored-at-apply`.
    pub nospace_ignored: bool,
    /// `create-revision-survives-delete`.
    pub create_revision_survives_delete: bool,
    /// `lease-ttl-differs-between-members`: seconds added to a granted TTL when it is
    /// recorded (not when it is answered).
    pub lease_ttl_extra_secs: i64,
    /// `tombstone-compacted-at-its-revision`.
    pub tombstone_compacted_at_its_revision: bool,
    /// `hash-counts-compacted-records`.
    pub hash_counts_compacted_records: bool,
    /// `duplicate-proposals-applied`.
    pub duplicates_applied: bool,
    /// `corrupt-check-ignores-mismatch`.
    pub corrupt_check_ignores_mismatch: bool,
    /// `member-attributes-applied-locally-only`: this member's id (it applies only its
    /// own attributes).
    pub members_published_locally_only: Option<u64>,
    /// `member-table-not-in-snapshot`.
    pub member_table_not_in_snapshot: bool,
    /// `publish-overwrites-peer-urls`.
    pub publish_overwrites_peer_urls: bool,
    /// `auth-checked-at-proposer-only`: applying a request skips its permission check
    /// (the proposing member checked it against its own, possibly older, state).
    pub auth_checked_at_proposer_only: bool,
}

/// Whether a replicated request changes keys or leases (refused under CORRUPT, as etcd's
/// corrupt applier refuses puts, deletes, txns, compactions, lease grants and revokes).
fn changes_data(op: &internal_request::Op) -> bool {
    matches!(
        op,
        internal_request::Op::Put(_)
            | internal_request::Op::DeleteRange(_)
            | internal_request::Op::Txn(_)
            | internal_request::Op::Compaction(_)
            | internal_request::Op::LeaseGrant(_)
            | internal_request::Op::LeaseRevoke(_)
    )
}

/// Whether a replicated request can make the store bigger (refused under NOSPACE):
/// puts, txns with a put on either branch, lease grants.
fn adds_data(op: &internal_request::Op) -> bool {
    match op {
        internal_request::Op::Put(_) | internal_request::Op::LeaseGrant(_) => true,
        internal_request::Op::Txn(txn) => crate::validate::txn_has_put(txn),
        _ => false,
    }
}

/// Why a request's bytes cannot be a replicated request.
pub fn decode_internal(data: &[u8]) -> Result<InternalRequest, String> {
    checked_internal(InternalRequest::decode(data))
}

/// [`decode_internal`] from a log entry's own buffer: a put's value is a slice of it,
/// not a copy, so the store and the raft log share the value's bytes.
pub fn decode_internal_shared(data: bytes::Bytes) -> Result<InternalRequest, String> {
    checked_internal(InternalRequest::decode(data))
}

fn checked_internal(decoded: Result<InternalRequest, prost::DecodeError>) -> Result<InternalRequest, String> {
    let internal = decoded.map_err(|e| format!("does not decode: {e}"))?;
    if internal.op.is_none() {
        return Err("holds no operation".into());
    }
    if internal.request_id == 0 {
        return Err("has request id 0".into());
    }
    Ok(internal)
}

impl StateMachine {
    pub fn new() -> Self {
        Self {
            mvcc: Mvcc::new(),
            applied_requests: AppliedRequests::default(),
            alarms: BTreeSet::new(),
            hash_checks: BTreeMap::new(),
            members: BTreeMap::new(),
            removed_members: BTreeSet::new(),
            auth: AuthStore::default(),
            #[cfg(madsim)]
            planted: StatePlantedBugs::default(),
        }
    }

    /// A state holding `store` and nothing else replicated (a migration from etcd).
    pub fn from_store(store: Mvcc) -> Self {
        Self { mvcc: store, ..Self::new() }
    }

    /// The member table of a new cluster (bootstrap, restore): these members with their
    /// peer URLs, nobody removed.
    pub fn set_initial_members(&mut self, peer_urls_by_member: &BTreeMap<u64, Vec<String>>) {
        self.members = peer_urls_by_member
            .iter()
            .map(|(id, peer_urls)| (*id, MemberAttributes { peer_urls: peer_urls.clone(), ..MemberAttributes::default() }))
            .collect();
        self.removed_members.clear();
    }

    /// A raft configuration change was applied (the consensus loop applied it to raft
    /// first): the member table follows. Adding a member records its peer URLs (a
    /// learner promoted keeps its entry); removing one forgets it for good.
    pub fn apply_member_change(&mut self, change: &MemberTableChange) {
        match change {
            MemberTableChange::Added { id, peer_urls } => {
                assert!(!self.removed_members.contains(id), "a removed member id is never added again (checked before proposing)");
                self.members.entry(*id).or_default().peer_urls = peer_urls.clone();
            }
            MemberTableChange::Removed { id } => {
                self.members.remove(id);
                self.removed_members.insert(*id);
            }
            MemberTableChange::Promoted { .. } => {}
        }
    }

    /// The member table as snapshots carry it.
    fn encoded_member_table(&self) -> (&BTreeMap<u64, MemberAttributes>, &BTreeSet<u64>) {
        #[cfg(madsim)]
        if self.planted.member_table_not_in_snapshot {
            static NO_MEMBERS: BTreeMap<u64, MemberAttributes> = BTreeMap::new();
            static NONE_REMOVED: BTreeSet<u64> = BTreeSet::new();
            return (&NO_MEMBERS, &NONE_REMOVED);
        }
        (&self.members, &self.removed_members)
    }

    /// Ids of members removed from the cluster.
    pub fn removed_members(&self) -> &BTreeSet<u64> {
        &self.removed_members
    }

    #[cfg(madsim)]
    pub fn plant(&mut self, planted: StatePlantedBugs) {
        self.planted = planted;
        self.mvcc.plant(planted.create_revision_survives_delete, planted.tombstone_compacted_at_its_revision);
        self.mvcc.hash_counts_compacted_records = planted.hash_counts_compacted_records;
    }

    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    /// The simulator's memory-corruption fault (see `Mvcc::corrupt_live_value_for_simulation`).
    #[cfg(madsim)]
    pub fn corrupt_memory_for_simulation(&mut self, prefix: &[u8]) -> Option<Vec<u8>> {
        self.mvcc.corrupt_live_value_for_simulation(prefix)
    }

    /// Planted bug `snapshot-skips-leased-keys`: a copy without the keys attached to a
    /// lease (as if they were not worth backing up).
    #[cfg(madsim)]
    pub fn with_leased_keys_deleted(&self) -> StateMachine {
        let mut copy = self.clone();
        let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        let leased: Vec<Vec<u8>> = copy.mvcc.range(&all).map(|r| r.kvs).unwrap_or_default().into_iter().filter(|kv| kv.lease != 0).map(|kv| kv.key).collect();
        for key in leased {
            copy.mvcc.delete_range(&DeleteRangeRequest { key, ..Default::default() });
        }
        copy
    }

    #[cfg(test)]
    pub(crate) fn mvcc_mut_for_tests(&mut self) -> &mut Mvcc {
        &mut self.mvcc
    }

    /// A digest of everything replicated that clients can observe — the live keys, the
    /// revisions, the leases and the alarms — cheap enough to take after every applied
    /// entry (a pass over the leases; the key space is digested incrementally). Members
    /// that applied the same entries must agree on it. The history of old revisions is
    /// compared by the change events instead, the request-dedup window not at all.
    pub fn applied_state_digest(&self) -> u64 {
        let mut hasher = crate::digest::Fnv64::default();
        hasher
            .update(&self.mvcc.live_digest().to_le_bytes())
            .update(&self.mvcc.current_revision().to_le_bytes())
            .update(&self.mvcc.compact_revision().to_le_bytes())
            .update(&self.mvcc.leases().hash().to_le_bytes());
        for (member_id, alarm) in &self.alarms {
            hasher.update(&member_id.to_le_bytes()).update(&alarm.to_le_bytes());
        }
        for (member_id, attributes) in &self.members {
            hasher.update(&member_id.to_le_bytes()).update(attributes.name.as_bytes());
            for url in attributes.peer_urls.iter().chain(&attributes.client_urls) {
                hasher.update(&[0]).update(url.as_bytes());
            }
        }
        self.auth.digest_into(&mut hasher);
        for member_id in &self.removed_members {
            hasher.update(&[1]).update(&member_id.to_le_bytes());
        }
        hasher.finish()
    }

    /// Applies the bytes of one committed normal entry. Deterministic: the same bytes
    /// give the same state and output on every member. Bytes that are not a valid
    /// request (only a faulty peer could have proposed them) change nothing.
    pub fn apply(&mut self, data: bytes::Bytes) -> Applied {
        let Ok(internal) = decode_internal_shared(data) else {
            return Applied { invalid: true, ..Applied::default() };
        };
        #[allow(unused_mut)]
        let mut first_time = self.applied_requests.first_time(internal.proposer, internal.request_id);
        #[cfg(madsim)]
        if self.planted.duplicates_applied {
            first_time = true;
        }
        if !first_time {
            // A second copy of a proposal the network delivered twice: already applied.
            return Applied::default();
        }
        let mut events = Vec::new();
        let mut lease_changes = Vec::new();
        let op = internal.op.expect("decode_internal checked the operation");
        if let internal_request::Op::HashCheck(check) = &op {
            // Checked at a log position: the same revision checked again after a
            // compaction is another check (the history kept differs).
            let compact_revision = self.mvcc.compact_revision();
            self.hash_checks
                .entry((check.revision, compact_revision, check.nonce))
                .or_insert_with(|| HashCheckState { voters: check.voters.max(1), ..HashCheckState::default() });
            while self.hash_checks.len() > HASH_CHECKS_KEPT_MAX {
                self.hash_checks.pop_first();
            }
            let mvcc = &self.mvcc;
            let covered = check.revision >= compact_revision && check.revision <= mvcc.current_revision();
            let hash_to_report = covered.then(|| HashToReport {
                store: mvcc.clone(),
                revision: check.revision,
                compact_revision,
                nonce: check.nonce,
            });
            return Applied { hash_to_report, ..Applied::default() };
        }
        let members_changed = matches!(op, internal_request::Op::PublishMember(_) | internal_request::Op::UpdateMember(_));
        #[allow(unused_mut)]
        let mut check_at_apply = true;
        #[cfg(madsim)]
        if self.planted.auth_checked_at_proposer_only {
            check_at_apply = false;
        }
        let permitted = match op_needs(&op, &self.mvcc) {
            Some(needed) if check_at_apply => needed.and_then(|needed| self.auth.check(internal.auth.as_ref(), &needed)),
            _ => Ok(()),
        };
        let result = match permitted {
            Ok(()) => self.apply_op(op, &mut events, &mut lease_changes),
            Err(denied) => Err(denied),
        };
        Applied {
            answer: Some((internal.proposer, internal.request_id, result)),
            events,
            lease_changes,
            invalid: false,
            hash_to_report: None,
            members_changed,
        }
    }

    /// Every member of the configuration and what it published, by member id.
    pub fn members(&self) -> &BTreeMap<u64, MemberAttributes> {
        &self.members
    }

    /// Whether a CORRUPT alarm is active: every write is refused.
    pub fn corrupt(&self) -> bool {
        self.alarms.iter().any(|(_, alarm)| *alarm == AlarmType::Corrupt as i32)
    }

    /// A hash report for a check. Once a majority of the voters reported one hash, it
    /// is the reference: every member that reported another gets a CORRUPT alarm, now or
    /// when its report comes. (etcd compares with the leader's hash, so a leader whose
    /// own state is damaged blames its healthy followers; a majority does not.) A
    /// member's second report for a check (a replay after restart) and reports for a
    /// check no longer kept are ignored.
    fn apply_hash_report(&mut self, report: &crate::pb::detcdpb::HashReport) {
        let Some(check) = self.hash_checks.get_mut(&(report.revision, report.compact_revision, report.nonce)) else { return };
        if check.reports.iter().any(|(member, _)| *member == report.member_id) || check.reports.len() >= HASH_REPORTS_PER_CHECK_MAX {
            return;
        }
        check.reports.push((report.member_id, report.hash));
        let mismatched: Vec<u64> = match check.agreed {
            Some(agreed) => (agreed != report.hash).then_some(report.member_id).into_iter().collect(),
            None => {
                let majority = check.voters as usize / 2 + 1;
                let agreeing = check.reports.iter().filter(|(_, hash)| *hash == report.hash).count();
                if agreeing >= majority {
                    check.agreed = Some(report.hash);
                    check.reports.iter().filter(|(_, hash)| *hash != report.hash).map(|(member, _)| *member).collect()
                } else {
                    Vec::new()
                }
            }
        };
        #[cfg(madsim)]
        if self.planted.corrupt_check_ignores_mismatch {
            return;
        }
        for member in mismatched {
            self.alarms.insert((member, AlarmType::Corrupt as i32));
        }
    }

    /// Whether `report` was applied: `None` if its check is not kept (any more), else
    /// whether the check holds the reporting member's report.
    pub fn hash_report_applied(&self, report: &crate::pb::detcdpb::HashReport) -> Option<bool> {
        let check = self.hash_checks.get(&(report.revision, report.compact_revision, report.nonce))?;
        Some(check.reports.iter().any(|(member, _)| *member == report.member_id))
    }

    /// Whether a NOSPACE alarm is active.
    pub fn no_space(&self) -> bool {
        self.alarms.iter().any(|(_, alarm)| *alarm == AlarmType::Nospace as i32)
    }

    /// Active alarms, for Alarm GET and Status.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.iter().map(|(member_id, alarm)| AlarmMember { member_id: *member_id, alarm: *alarm }).collect()
    }

    fn apply_op(
        &mut self,
        op: internal_request::Op,
        events: &mut Vec<Event>,
        lease_changes: &mut Vec<LeaseChange>,
    ) -> Result<Response, EtcdError> {
        #[cfg(madsim)]
        let capped = self.no_space() && !self.planted.nospace_ignored;
        #[cfg(not(madsim))]
        let capped = self.no_space();
        if capped && adds_data(&op) {
            // etcd's capped applier: every member refuses alike, from replicated state.
            return Err(EtcdError::NoSpace);
        }
        if self.corrupt() && changes_data(&op) {
            // etcd's corrupt applier: no write while a member's state is in doubt.
            return Err(EtcdError::Corrupt);
        }
        match op {
            internal_request::Op::Alarm(alarm) => {
                // As etcd: the answer lists the alarm that changed (none if nothing did).
                let key = (alarm.member_id, alarm.alarm);
                let changed = if alarm.action == alarm_request::AlarmAction::Activate as i32 && alarm.alarm != AlarmType::None as i32 {
                    self.alarms.insert(key);
                    true
                } else if alarm.action == alarm_request::AlarmAction::Deactivate as i32 {
                    let removed = self.alarms.remove(&key);
                    if removed && alarm.alarm == AlarmType::Corrupt as i32 {
                        // The operator repaired the member: reports it made before (a
                        // check still waiting for its majority, or a report still on its
                        // way) say nothing of its state now. A check kept across the
                        // repair alarmed the repaired member again with its old report
                        // (simulator seed 954 of memory-corruption). New checks follow.
                        self.hash_checks.clear();
                    }
                    removed
                } else {
                    false
                };
                let alarms = if changed { vec![AlarmMember { member_id: key.0, alarm: key.1 }] } else { Vec::new() };
                Ok(Response::Alarm(AlarmResponse { header: None, alarms }))
            }
            internal_request::Op::LeaseGrant(grant) => {
                #[allow(unused_mut)]
                let mut recorded_ttl_secs = grant.ttl;
                #[cfg(madsim)]
                {
                    recorded_ttl_secs += self.planted.lease_ttl_extra_secs;
                }
                self.mvcc.lease_grant(grant.id, recorded_ttl_secs)?;
                lease_changes.push(LeaseChange::Granted { id: grant.id, ttl_secs: grant.ttl });
                Ok(Response::LeaseGrant(LeaseGrantResponse { id: grant.id, ttl: grant.ttl, ..Default::default() }))
            }
            internal_request::Op::LeaseRevoke(revoke) => {
                self.mvcc.lease_revoke(revoke.id, events)?;
                let revision = self.mvcc.current_revision();
                lease_changes.push(LeaseChange::Ended { id: revoke.id, expired: false, revision });
                Ok(Response::LeaseRevoke(LeaseRevokeResponse::default()))
            }
            internal_request::Op::LeaseExpire(expire) => {
                // Void if the lease is already gone (revoked, or expired by an earlier
                // proposal) or was renewed after the leader decided it expired.
                #[allow(unused_mut)]
                let mut current = self.mvcc.leases().get(expire.id).map(|lease| lease.renewals);
                #[cfg(madsim)]
                if self.planted.expiry_races_renewal {
                    current = current.map(|_| expire.renewals);
                }
                if current == Some(expire.renewals) && self.mvcc.lease_revoke(expire.id, events).is_ok() {
                    let revision = self.mvcc.current_revision();
                    lease_changes.push(LeaseChange::Ended { id: expire.id, expired: true, revision });
                }
                Ok(Response::LeaseRevoke(LeaseRevokeResponse::default()))
            }
            internal_request::Op::LeaseRenew(renew) => {
                // etcd answers a keep-alive of an unknown lease with TTL 0 (clients report
                // "requested lease not found").
                let ttl = self.mvcc.lease_renew(renew.id).unwrap_or(0);
                if ttl > 0 {
                    lease_changes.push(LeaseChange::Renewed { id: renew.id, ttl_secs: ttl });
                }
                Ok(Response::LeaseKeepAlive(LeaseKeepAliveResponse { id: renew.id, ttl, ..Default::default() }))
            }
            internal_request::Op::HashCheck(_) => unreachable!("hash checks are answered in apply"),
            internal_request::Op::HashReport(report) => {
                self.apply_hash_report(&report);
                Ok(Response::Internal)
            }
            internal_request::Op::PublishMember(member) => {
                #[cfg(madsim)]
                if self.planted.members_published_locally_only.is_some_and(|own| own != member.id) {
                    return Ok(Response::Internal);
                }
                // A removed member's late publication is refused: it is gone for good.
                if self.removed_members.contains(&member.id) {
                    return Ok(Response::Internal);
                }
                // etcd's split: a member publishes its name and client URLs; its peer URLs
                // belong to the configuration (added with it, changed by MemberUpdate) and
                // are taken from the publication only for a member the table lacks.
                #[cfg(madsim)]
                let published_peer_urls = member.peer_ur_ls.clone();
                let attributes = self.members.entry(member.id).or_insert_with(|| MemberAttributes { peer_urls: member.peer_ur_ls, ..MemberAttributes::default() });
                #[cfg(madsim)]
                if self.planted.publish_overwrites_peer_urls {
                    attributes.peer_urls = published_peer_urls;
                }
                attributes.name = member.name;
                attributes.client_urls = member.client_ur_ls;
                Ok(Response::Internal)
            }
            internal_request::Op::UpdateMember(update) => {
                let Some(attributes) = self.members.get_mut(&update.id) else { return Err(EtcdError::MemberNotFound) };
                if update.peer_ur_ls.is_empty() {
                    return Err(EtcdError::MemberBadUrls);
                }
                attributes.peer_urls = update.peer_ur_ls.clone();
                Ok(Response::Member(crate::pb::etcdserverpb::Member {
                    id: update.id,
                    name: attributes.name.clone(),
                    peer_ur_ls: attributes.peer_urls.clone(),
                    client_ur_ls: attributes.client_urls.clone(),
                    is_learner: false,
                }))
            }
            internal_request::Op::AuthEnable(enable) => {
                self.auth.enable(&enable.token_secret)?;
                Ok(Response::Auth(AuthResponse::Enable(AuthEnableResponse::default())))
            }
            internal_request::Op::AuthDisable(_) => {
                self.auth.disable();
                Ok(Response::Auth(AuthResponse::Disable(AuthDisableResponse::default())))
            }
            internal_request::Op::AuthUserAdd(add) => {
                let no_password = add.options.is_some_and(|options| options.no_password);
                self.auth.user_add(&add.name, &add.hashed_password, no_password)?;
                Ok(Response::Auth(AuthResponse::UserAdd(AuthUserAddResponse::default())))
            }
            internal_request::Op::AuthUserDelete(delete) => {
                self.auth.user_delete(&delete.name)?;
                Ok(Response::Auth(AuthResponse::UserDelete(AuthUserDeleteResponse::default())))
            }
            internal_request::Op::AuthUserChangePassword(change) => {
                self.auth.user_change_password(&change.name, &change.hashed_password)?;
                Ok(Response::Auth(AuthResponse::UserChangePassword(AuthUserChangePasswordResponse::default())))
            }
            internal_request::Op::AuthUserGrantRole(grant) => {
                self.auth.user_grant_role(&grant.user, &grant.role)?;
                Ok(Response::Auth(AuthResponse::UserGrantRole(AuthUserGrantRoleResponse::default())))
            }
            internal_request::Op::AuthUserRevokeRole(revoke) => {
                self.auth.user_revoke_role(&revoke.name, &revoke.role)?;
                Ok(Response::Auth(AuthResponse::UserRevokeRole(AuthUserRevokeRoleResponse::default())))
            }
            internal_request::Op::AuthRoleAdd(add) => {
                self.auth.role_add(&add.name)?;
                Ok(Response::Auth(AuthResponse::RoleAdd(AuthRoleAddResponse::default())))
            }
            internal_request::Op::AuthRoleDelete(delete) => {
                self.auth.role_delete(&delete.role)?;
                Ok(Response::Auth(AuthResponse::RoleDelete(AuthRoleDeleteResponse::default())))
            }
            internal_request::Op::AuthRoleGrantPermission(grant) => {
                let permission = grant.perm.clone().unwrap_or_default();
                self.auth.role_grant_permission(&grant.name, &permission)?;
                Ok(Response::Auth(AuthResponse::RoleGrantPermission(AuthRoleGrantPermissionResponse::default())))
            }
            internal_request::Op::AuthRoleRevokePermission(revoke) => {
                self.auth.role_revoke_permission(&revoke.role, &revoke.key, &revoke.range_end)?;
                Ok(Response::Auth(AuthResponse::RoleRevokePermission(AuthRoleRevokePermissionResponse::default())))
            }
            internal_request::Op::LeaseCheckpoint(checkpoint) => {
                for one in &checkpoint.checkpoints {
                    self.mvcc.lease_checkpoint(one.id, one.remaining_ttl);
                }
                Ok(Response::LeaseCheckpoint(LeaseCheckpointResponse::default()))
            }
            internal_request::Op::Put(put) => self.mvcc.apply_put(&put, events).map(Response::Put),
            internal_request::Op::DeleteRange(delete) => {
                Ok(Response::DeleteRange(self.mvcc.apply_delete_range(&delete, events)))
            }
            internal_request::Op::Txn(txn) => self.mvcc.apply_txn(&txn, events).map(Response::Txn),
            internal_request::Op::Compaction(compaction) => {
                // Removal of what it drops happens in steps on the loop (`compact_step`).
                self.mvcc.compact_deferred(&compaction).map(|()| Response::Compact(CompactionResponse::default()))
            }
        }
    }

    /// See [`Mvcc::defragment`]: memory only, no change to the replicated state.
    /// Removes records the compaction point dropped from at most `keys_max` keys (see
    /// `mvcc::compaction`); whether work remains.
    pub fn compact_step(&mut self, keys_max: usize) -> bool {
        self.mvcc.compact_step(keys_max)
    }

    pub fn defragment(&mut self) {
        self.mvcc.defragment();
    }

    /// Serves a read (a range, or a txn that writes nothing) from the current state.
    pub fn read(&mut self, request: &Request) -> Result<Response, EtcdError> {
        match request {
            Request::Range(range) => self.mvcc.range(range).map(Response::Range),
            // A txn without writes changes nothing: no revision, no event.
            Request::Txn(txn) => self.mvcc.txn(txn).map(Response::Txn),
            Request::Alarm(_) => Ok(Response::Alarm(AlarmResponse { header: None, alarms: self.alarms() })),
            Request::Auth(auth) => self.read_auth(auth).map(Response::Auth),
            other => panic!("not a key-value read: {other:?}"),
        }
    }

    /// The auth reads (linearizable: served once ReadIndex caught up, like key reads).
    fn read_auth(&self, request: &AuthRequest) -> Result<AuthResponse, EtcdError> {
        use crate::pb::authpb::Permission;
        let auth = &self.auth;
        Ok(match request {
            AuthRequest::Status(_) => {
                AuthResponse::Status(AuthStatusResponse { header: None, enabled: auth.enabled(), auth_revision: auth.revision() })
            }
            AuthRequest::UserGet(get) => {
                let user = auth.users().get(&get.name).ok_or(EtcdError::UserNotFound)?;
                AuthResponse::UserGet(AuthUserGetResponse { header: None, roles: user.roles.iter().cloned().collect() })
            }
            AuthRequest::UserList(_) => AuthResponse::UserList(AuthUserListResponse { header: None, users: auth.users().keys().cloned().collect() }),
            AuthRequest::RoleGet(get) => {
                // etcd lists the root role although no one added it; it holds no key
                // permissions (it may do everything).
                let permissions = match auth.roles().get(&get.role) {
                    Some(permissions) => permissions.iter().collect(),
                    None if get.role == crate::auth::ROOT_ROLE => Vec::new(),
                    None => return Err(EtcdError::RoleNotFound),
                };
                let perm = permissions
                    .into_iter()
                    .map(|p| Permission { perm_type: p.perm_type, key: p.key.clone(), range_end: p.range_end.clone() })
                    .collect();
                AuthResponse::RoleGet(AuthRoleGetResponse { header: None, perm })
            }
            AuthRequest::RoleList(_) => AuthResponse::RoleList(AuthRoleListResponse { header: None, roles: auth.roles().keys().cloned().collect() }),
            AuthRequest::LoginInfo(login) => {
                if !auth.enabled() {
                    return Err(EtcdError::AuthNotEnabled);
                }
                let user = auth.users().get(&login.name).ok_or(EtcdError::AuthFailed)?;
                AuthResponse::LoginInfo(crate::pb::detcdpb::LoginInfo {
                    hashed_password: user.password_hash.clone(),
                    no_password: user.no_password,
                    token_epoch: user.token_epoch,
                })
            }
            AuthRequest::Token(token) => {
                AuthResponse::Token(AuthenticateResponse { header: None, token: auth.mint_token(&token.name, token.token_epoch)? })
            }
            other => panic!("not an auth read: {other:?}"),
        })
    }

    /// Planted bug `auth-checked-at-proposer-only`: the check the applying members
    /// should make, made once by the member taking the request, on its own state.
    #[cfg(madsim)]
    pub fn check_proposal_for_planted_bug(&self, auth: Option<&AuthInfo>, request: &Request) -> Result<(), EtcdError> {
        match request.to_internal_op().and_then(|op| op_needs(&op, &self.mvcc)) {
            Some(needed) => self.auth.check(auth, &needed?),
            None => Ok(()),
        }
    }

    /// The replicated auth state.
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// Whether `auth` may make this request now (reads, membership changes, admin
    /// requests served without raft). Writes are checked again when applied.
    pub fn check_request(&self, auth: Option<&AuthInfo>, request: &Request) -> Result<(), EtcdError> {
        let read = |key: &[u8], range_end: &[u8]| Needed::Read { key: key.to_vec(), range_end: range_end.to_vec() };
        let needed = match request {
            Request::Range(range) => vec![read(&range.key, &range.range_end)],
            Request::Txn(txn) => crate::auth::txn_needs(txn)?,
            Request::Member(_) => vec![Needed::Admin],
            Request::Auth(AuthRequest::UserGet(get)) if auth.is_some_and(|a| a.user == get.name) => Vec::new(),
            Request::Auth(AuthRequest::RoleGet(get))
                if auth.is_some_and(|a| self.auth.users().get(&a.user).is_some_and(|user| user.roles.contains(&get.role))) =>
            {
                Vec::new()
            }
            Request::Auth(AuthRequest::UserGet(_) | AuthRequest::UserList(_) | AuthRequest::RoleGet(_) | AuthRequest::RoleList(_)) => {
                vec![Needed::Admin]
            }
            // Authenticate, auth status, leases, alarms: no permission (as etcd).
            _ => return Ok(()),
        };
        if needed.is_empty() && auth.is_some_and(|a| !a.user.is_empty()) {
            return Ok(());
        }
        self.auth.check(auth, &needed)
    }

    /// The bytes a raft snapshot carries: a version byte, then the state.
    ///
    /// The layout is bincode's of `(Vec<u8>, ...)` with the store's own encoding as the
    /// first element; it is written in place (length, then the store straight into the
    /// one buffer, sized beforehand), never through a nested copy.
    pub fn encode(&self) -> Vec<u8> {
        use crate::storage::SnapshotData;
        let encoding = self.encoding();
        let mut bytes = Vec::with_capacity(encoding.total_len);
        encoding.write_to(&mut bytes).expect("encodes to memory");
        assert_eq!(bytes.len(), encoding.total_len, "the state's encoding has the length computed for it");
        bytes
    }

    /// [`StateMachine::encode`]'s bytes as [`SnapshotData`]: sized once, then written
    /// to any writer (a snapshot file is hashed, then written, without holding them).
    pub fn encoding(&self) -> StateEncoding<'_> {
        let (members, removed_members) = self.encoded_member_table();
        let rest = (&self.applied_requests, &self.alarms, &self.hash_checks, members, removed_members, &self.auth);
        let store_len = self.mvcc.encoded_len();
        let rest_len = usize::try_from(bincode::serialized_size(&rest).expect("state sizes")).expect("fits in memory");
        StateEncoding { state: self, store_len, total_len: 1 + 8 + store_len + rest_len }
    }

    /// Restores the state from [`StateMachine::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        type Version4 = (Vec<u8>, AppliedRequests, BTreeSet<(u64, i32)>);
        // The store's bytes are borrowed from `bytes`, not copied.
        type Version5<'a> =
            (&'a [u8], AppliedRequests, BTreeSet<(u64, i32)>, BTreeMap<(i64, i64, u64), HashCheckState>, BTreeMap<u64, MemberAttributes>);
        type Version6<'a> = (
            &'a [u8],
            AppliedRequests,
            BTreeSet<(u64, i32)>,
            BTreeMap<(i64, i64, u64), HashCheckState>,
            BTreeMap<u64, MemberAttributes>,
            BTreeSet<u64>,
        );
        type Version7<'a> = (
            &'a [u8],
            AppliedRequests,
            BTreeSet<(u64, i32)>,
            BTreeMap<(i64, i64, u64), HashCheckState>,
            BTreeMap<u64, MemberAttributes>,
            BTreeSet<u64>,
            AuthStore,
        );
        let (mvcc_bytes, applied_requests, alarms, hash_checks, members, removed, auth): Version7 = match bytes.first() {
            Some(&STATE_ENCODING_VERSION) => bincode::deserialize(&bytes[1..]).map_err(|e| e.to_string())?,
            Some(6) => {
                let (mvcc, applied, alarms, checks, members, removed): Version6 = bincode::deserialize(&bytes[1..]).map_err(|e| e.to_string())?;
                (mvcc, applied, alarms, checks, members, removed, AuthStore::default())
            }
            Some(5) => {
                let (mvcc, applied, alarms, checks, members): Version5 = bincode::deserialize(&bytes[1..]).map_err(|e| e.to_string())?;
                (mvcc, applied, alarms, checks, members, BTreeSet::new(), AuthStore::default())
            }
            Some(4) => {
                let (mvcc, applied, alarms): Version4 = bincode::deserialize(&bytes[1..]).map_err(|e| e.to_string())?;
                let store = Mvcc::decode(&mvcc)?;
                return Ok(Self::from_parts(store, applied, alarms, BTreeMap::new(), BTreeMap::new(), BTreeSet::new(), AuthStore::default()));
            }
            Some(other) => return Err(format!("state encoding version {other} is not {STATE_ENCODING_VERSION}")),
            None => return Err("empty state".into()),
        };
        Ok(Self::from_parts(Mvcc::decode(mvcc_bytes)?, applied_requests, alarms, hash_checks, members, removed, auth))
    }

    fn from_parts(
        mvcc: Mvcc,
        applied_requests: AppliedRequests,
        alarms: BTreeSet<(u64, i32)>,
        hash_checks: BTreeMap<(i64, i64, u64), HashCheckState>,
        members: BTreeMap<u64, MemberAttributes>,
        removed_members: BTreeSet<u64>,
        auth: AuthStore,
    ) -> Self {
        Self {
            mvcc,
            applied_requests,
            alarms,
            hash_checks,
            members,
            removed_members,
            auth,
            #[cfg(madsim)]
            planted: StatePlantedBugs::default(),
        }
    }
}
