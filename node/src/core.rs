//! The member's protocol core: raft, the WAL, snapshots and the MVCC store, driven by
//! `tick`, `step` and `submit`, with time passed in as an argument.
//!
//! The core owns no task, socket or timer. The async shell (`server`) calls it; tests and
//! the simulator can call it directly. Its disk and network I/O goes through the `env`
//! seam only.
//!
//! The order that makes raft safe is written once, in [`NodeCore::handle_ready`]:
//! persist (snapshot, entries, hard state; one fsync for the whole batch) → send →
//! apply → advance. A client is answered only from the apply step, so nothing is
//! acknowledged before it is committed, and nothing is committed by this member's vote
//! before it is durable here.

use std::collections::BTreeMap;

use prost::Message as _;
use protobuf::Message as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use crate::env::{DiskError, Env, NodeEvent, Role};
use crate::errors::EtcdError;
use crate::mvcc::Mvcc;
use crate::pb::detcdpb::{internal_request, InternalRequest};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::storage::{MemberMeta, NodeStorage, SnapshotStore};
use crate::validate;
use crate::wal::{Wal, WalError};

/// Committed entries kept in memory behind a snapshot so slow followers catch up from
/// the log instead of needing a whole snapshot (etcd keeps 5000).
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
/// Request ids remembered per proposer to apply each client request at most once
/// (the network may deliver a forwarded proposal twice, and raft would commit both).
pub const APPLIED_REQUEST_IDS_PER_PROPOSER_MAX: usize = 8192;
/// Proposals and reads waiting at once before new ones are refused ("too many requests").
pub const PENDING_REQUESTS_MAX: usize = 16 * 1024;
/// A read batch with no answer after this many ticks is asked again (raft-rs drops read
/// requests silently when there is no leader or the leader has not committed in its term).
pub const READ_INDEX_RETRY_TICKS: u64 = 3;

/// Bugs planted on purpose, to prove the simulator finds them. They exist only in
/// simulator builds (`--cfg madsim`); a production binary cannot contain them.
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// Write the WAL but skip the fsync, so clients are acknowledged before durability.
    AckBeforeFsync,
    /// Serve linearizable reads from local state, without ReadIndex.
    LocalLinearizableRead,
    /// Persist the hard state without the vote, so a restarted member can vote twice.
    ForgetVote,
    /// Apply (and acknowledge) entries on the leader as soon as it persisted them.
    ApplyBeforeCommit,
    /// Accept append messages from a leader of an older term.
    AcceptStaleTerm,
}

#[cfg(madsim)]
impl PlantedBug {
    pub const ALL: [PlantedBug; 5] = [
        PlantedBug::AckBeforeFsync,
        PlantedBug::LocalLinearizableRead,
        PlantedBug::ForgetVote,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::AcceptStaleTerm,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::LocalLinearizableRead => "local-linearizable-read",
            PlantedBug::ForgetVote => "forget-vote",
            PlantedBug::ApplyBeforeCommit => "apply-before-commit",
            PlantedBug::AcceptStaleTerm => "accept-stale-term",
        }
    }

    pub fn parse(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// How a member is configured (from flags in production, from the scenario in the
/// simulator).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Member ids of the cluster's first voters (used only when the data dir is new).
    pub initial_voters: Vec<u64>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub max_wals: usize,
    pub max_snapshots: usize,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How long a client request may wait for commit or read index before timing out.
    pub request_timeout_ms: u64,
    pub wal_segment_bytes_max: u64,
    /// Applied entries kept in memory behind a snapshot for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Simulator builds only: a bug to plant in this member.
    #[cfg(madsim)]
    pub planted_bug: Option<PlantedBug>,
}

impl NodeConfig {
    /// etcd's defaults for everything but identity.
    pub fn with_defaults(member_id: u64, cluster_id: u64, initial_voters: Vec<u64>) -> Self {
        Self {
            member_id,
            cluster_id,
            initial_voters,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 100_000,
            max_wals: 5,
            max_snapshots: 5,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            request_timeout_ms: 7000,
            wal_segment_bytes_max: crate::wal::WAL_SEGMENT_BYTES_MAX,
            snapshot_catchup_entries: SNAPSHOT_CATCHUP_ENTRIES,
            #[cfg(madsim)]
            planted_bug: None,
        }
    }

    fn election_tick(&self) -> usize {
        (self.election_timeout_ms / self.heartbeat_interval_ms.max(1)).max(2) as usize
    }
}

/// A client request, in etcd's own message types.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

/// The answer to a [`Request`], with its header filled in.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

pub type Responder = oneshot::Sender<Result<Response, EtcdError>>;

/// A member's view of itself, for status endpoints, tests and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub member_id: u64,
    pub cluster_id: u64,
    pub term: u64,
    pub role: Role,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub kv_hash: u32,
    pub db_size_bytes: u64,
    pub fsyncs: u64,
    pub entries_persisted: u64,
}

/// Why a member cannot start or must stop. Disk failures during operation are fatal:
/// the member stops rather than acknowledge anything it could not make durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatalError {
    Disk(DiskError),
    Wal(WalError),
    Raft(String),
    Snapshot(String),
    /// The data dir belongs to another member or cluster.
    WrongDataDir(String),
}

impl std::fmt::Display for FatalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FatalError::Disk(e) => write!(f, "{e}"),
            FatalError::Wal(e) => write!(f, "{e}"),
            FatalError::Raft(e) => write!(f, "raft: {e}"),
            FatalError::Snapshot(e) => write!(f, "snapshot: {e}"),
            FatalError::WrongDataDir(e) => write!(f, "data dir: {e}"),
        }
    }
}

impl std::error::Error for FatalError {}

impl From<DiskError> for FatalError {
    fn from(e: DiskError) -> Self {
        FatalError::Disk(e)
    }
}

impl From<WalError> for FatalError {
    fn from(e: WalError) -> Self {
        FatalError::Wal(e)
    }
}

impl From<raft::Error> for FatalError {
    fn from(e: raft::Error) -> Self {
        FatalError::Raft(e.to_string())
    }
}

/// The most recent request ids applied per proposer: replicated state (it lives in
/// snapshots), so every member skips the same duplicate entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedRequests {
    per_proposer: BTreeMap<u64, (std::collections::VecDeque<u64>, std::collections::BTreeSet<u64>)>,
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

/// The replicated state machine's bytes in a raft snapshot.
fn encode_state(mvcc: &Mvcc, applied_requests: &AppliedRequests) -> Vec<u8> {
    bincode::serialize(&(mvcc.encode(), applied_requests)).expect("state encodes")
}

fn decode_state(bytes: &[u8]) -> Result<(Mvcc, AppliedRequests), FatalError> {
    let (mvcc_bytes, applied_requests): (Vec<u8>, AppliedRequests) =
        bincode::deserialize(bytes).map_err(|e| FatalError::Snapshot(e.to_string()))?;
    let mvcc = Mvcc::decode(&mvcc_bytes).map_err(FatalError::Snapshot)?;
    Ok((mvcc, applied_requests))
}

struct PendingRequest {
    request: Request,
    responder: Responder,
    deadline_ms: u64,
}

struct ReadBatch {
    reads: Vec<PendingRequest>,
    issued_at_tick: u64,
}

/// FNV-1a, 64 bit: a stable digest (the same on every build and platform).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn role_of(state: StateRole) -> Role {
    match state {
        StateRole::Follower => Role::Follower,
        StateRole::PreCandidate => Role::PreCandidate,
        StateRole::Candidate => Role::Candidate,
        StateRole::Leader => Role::Leader,
    }
}

/// The member's state machine. See the module documentation.
pub struct NodeCore {
    config: NodeConfig,
    env: Env,
    raw: RawNode<NodeStorage>,
    storage: NodeStorage,
    wal: Wal,
    snapshots: SnapshotStore,
    mvcc: Mvcc,
    applied_requests: AppliedRequests,
    applied_index: u64,
    last_snapshot_index: u64,
    rng: ChaCha8Rng,
    ticks: u64,
    proposals: BTreeMap<u64, PendingRequest>,
    reads_unissued: Vec<PendingRequest>,
    reads_in_flight: BTreeMap<u64, ReadBatch>,
    /// Reads whose read index is known, waiting for apply to reach it.
    reads_ready: Vec<(u64, PendingRequest)>,
    next_read_ctx: u64,
    last_role: Option<(Role, u64, u64)>,
    fsyncs: u64,
    entries_persisted: u64,
}

impl NodeCore {
    /// Opens (or creates) the member's state from its disks and starts raft.
    pub fn open(config: NodeConfig, env: Env) -> Result<NodeCore, FatalError> {
        assert!(config.member_id != 0, "member id 0 is reserved by raft");
        assert!(config.heartbeat_interval_ms > 0, "heartbeat interval must be positive");
        let meta = match MemberMeta::load(env.data_disk.as_ref())? {
            Some(meta) => {
                if meta.member_id != config.member_id || meta.cluster_id != config.cluster_id {
                    return Err(FatalError::WrongDataDir(format!(
                        "it belongs to member {:016x} of cluster {:016x}, not member {:016x} of cluster {:016x}",
                        meta.member_id, meta.cluster_id, config.member_id, config.cluster_id
                    )));
                }
                meta
            }
            None => {
                let meta = MemberMeta {
                    cluster_id: config.cluster_id,
                    member_id: config.member_id,
                    initial_voters: config.initial_voters.clone(),
                };
                meta.save(env.data_disk.as_ref())?;
                meta
            }
        };

        let snapshots = SnapshotStore::new(env.data_disk.clone());
        let loaded = snapshots.load_newest()?;
        let snapshot = loaded.snapshot;
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        let (wal, replayed) = Wal::open(env.wal_disk.clone(), snapshot_index, config.wal_segment_bytes_max)?;

        let mut conf_state = ConfState::default();
        conf_state.set_voters(meta.initial_voters.clone());
        let (mvcc, applied_requests) = match &snapshot {
            Some(s) => decode_state(s.get_data())?,
            None => (Mvcc::new(), AppliedRequests::default()),
        };
        let snapshot_term = snapshot.as_ref().map_or(0, |s| s.get_metadata().term);
        let storage = NodeStorage::recover(conf_state, snapshot, &replayed.entries, replayed.hard_state)?;

        let raft_config = raft::Config {
            id: config.member_id,
            election_tick: config.election_tick(),
            heartbeat_tick: 1,
            applied: snapshot_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage.clone(), &logger)?;

        let mut core = NodeCore {
            rng: ChaCha8Rng::seed_from_u64(env.seed),
            config,
            env,
            raw,
            storage,
            wal,
            snapshots,
            mvcc,
            applied_requests,
            applied_index: snapshot_index,
            last_snapshot_index: snapshot_index,
            ticks: 0,
            proposals: BTreeMap::new(),
            reads_unissued: Vec::new(),
            reads_in_flight: BTreeMap::new(),
            reads_ready: Vec::new(),
            next_read_ctx: 1,
            last_role: None,
            fsyncs: 0,
            entries_persisted: 0,
        };
        core.override_election_timeout();
        // The only voter needs nobody's vote: lead at once instead of after a timeout.
        let voters = core.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(core.config.member_id) {
            core.campaign();
        }
        if snapshot_index > 0 {
            core.observe(NodeEvent::SnapshotInstalled { index: snapshot_index, term: snapshot_term });
        }
        Ok(core)
    }

    pub fn member_id(&self) -> u64 {
        self.config.member_id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Whether `bug` is planted in this member (always false outside the simulator).
    #[cfg(madsim)]
    fn planted(&self, bug: PlantedBug) -> bool {
        self.config.planted_bug == Some(bug)
    }

    fn observe(&self, event: NodeEvent) {
        self.env.observer.on_event(self.config.member_id, event);
    }

    /// raft-rs draws a new election timeout from the OS random generator whenever it
    /// resets its election timer (which always zeroes `election_elapsed`). Replace every
    /// such draw with one from the member's seeded generator, so a simulated run depends
    /// on its seed only. Redrawing after a heartbeat also zeroed the timer is harmless.
    fn override_election_timeout(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let election_tick = self.config.election_tick();
            let timeout = self.rng.gen_range(election_tick..2 * election_tick);
            self.raw.raft.set_randomized_election_timeout(timeout);
        }
    }

    /// One heartbeat interval passed on this member's clock.
    pub fn tick(&mut self, now_ms: u64) {
        self.ticks += 1;
        self.raw.tick();
        self.override_election_timeout();
        self.retry_stale_reads();
        self.expire_requests(now_ms);
    }

    /// A message from a peer.
    pub fn step(&mut self, #[allow(unused_mut)] mut message: Message) {
        #[cfg(madsim)]
        if self.planted(PlantedBug::AcceptStaleTerm)
            && message.get_msg_type() == raft::eraftpb::MessageType::MsgAppend
            && message.term > 0
            && message.term < self.raw.raft.term
        {
            message.term = self.raw.raft.term;
        }
        // Messages from unknown peers or stale terms are refused by raft; nothing to do.
        let _ = self.raw.step(message);
        self.override_election_timeout();
    }

    /// Accepts a client request. The answer goes to `responder` now (bad input,
    /// serializable reads) or once the request is committed and applied, or read-indexed.
    pub fn submit(&mut self, request: Request, responder: Responder, now_ms: u64) {
        if let Err(error) = self.check(&request) {
            let _ = responder.send(Err(error));
            return;
        }
        let pending_count = self.proposals.len() + self.reads_unissued.len() + self.reads_ready.len();
        if pending_count >= PENDING_REQUESTS_MAX {
            let _ = responder.send(Err(EtcdError::TooManyRequests));
            return;
        }
        let deadline_ms = now_ms.saturating_add(self.config.request_timeout_ms);
        let pending = PendingRequest { request, responder, deadline_ms };
        #[cfg(madsim)]
        if self.planted(PlantedBug::LocalLinearizableRead) && !matches!(pending.request, Request::Put(_) | Request::DeleteRange(_) | Request::Compact(_)) {
            let read_only = match &pending.request {
                Request::Txn(txn) => validate::txn_is_read_only(txn),
                _ => true,
            };
            if read_only {
                let result = self.execute_read(&pending.request);
                let _ = pending.responder.send(result);
                return;
            }
        }
        match &pending.request {
            Request::Range(range) if range.serializable => {
                let result = self.execute_read(&pending.request);
                let _ = pending.responder.send(result);
            }
            Request::Range(_) => self.reads_unissued.push(pending),
            Request::Txn(txn) if validate::txn_is_read_only(txn) => self.reads_unissued.push(pending),
            _ => self.propose(pending),
        }
    }

    fn check(&self, request: &Request) -> Result<(), EtcdError> {
        match request {
            Request::Range(r) => validate::check_range(r),
            Request::Put(p) => validate::check_put(p),
            Request::DeleteRange(d) => validate::check_delete_range(d),
            Request::Txn(t) => validate::check_txn(t, self.config.max_txn_ops),
            Request::Compact(_) => Ok(()),
        }
    }

    fn propose(&mut self, pending: PendingRequest) {
        let op = match &pending.request {
            Request::Put(p) => internal_request::Op::Put(p.clone()),
            Request::DeleteRange(d) => internal_request::Op::DeleteRange(d.clone()),
            Request::Txn(t) => internal_request::Op::Txn(t.clone()),
            Request::Compact(c) => internal_request::Op::Compaction(c.clone()),
            Request::Range(_) => unreachable!("reads are never proposed"),
        };
        let request_id = loop {
            let candidate: u64 = self.rng.gen();
            if candidate != 0 && !self.proposals.contains_key(&candidate) {
                break candidate;
            }
        };
        let internal = InternalRequest { proposer: self.config.member_id, request_id, op: Some(op) };
        let data = internal.encode_to_vec();
        if data.len() > self.config.max_request_bytes {
            let _ = pending.responder.send(Err(EtcdError::RequestTooLarge));
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = pending.responder.send(Err(EtcdError::NoLeader));
            return;
        }
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                self.proposals.insert(request_id, pending);
            }
            Err(_) => {
                let _ = pending.responder.send(Err(EtcdError::NoLeader));
            }
        }
    }

    /// Sends one ReadIndex request for every read that arrived since the last one.
    pub fn issue_reads(&mut self) {
        if self.reads_unissued.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_unissued);
        self.issue_read_batch(ReadBatch { reads, issued_at_tick: self.ticks });
    }

    fn issue_read_batch(&mut self, mut batch: ReadBatch) {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        batch.issued_at_tick = self.ticks;
        self.raw.read_index(ctx.to_le_bytes().to_vec());
        self.reads_in_flight.insert(ctx, batch);
    }

    fn retry_stale_reads(&mut self) {
        let stale: Vec<u64> = self
            .reads_in_flight
            .iter()
            .filter(|(_, batch)| self.ticks - batch.issued_at_tick >= READ_INDEX_RETRY_TICKS)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            let batch = self.reads_in_flight.remove(&ctx).expect("stale ctx listed above");
            self.issue_read_batch(batch);
        }
    }

    fn expire_requests(&mut self, now_ms: u64) {
        let expired: Vec<u64> =
            self.proposals.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
        for id in expired {
            let pending = self.proposals.remove(&id).expect("expired id listed above");
            let _ = pending.responder.send(Err(EtcdError::Timeout));
        }
        let mut kept_batches = BTreeMap::new();
        for (ctx, mut batch) in std::mem::take(&mut self.reads_in_flight) {
            let (expired, kept): (Vec<_>, Vec<_>) = batch.reads.into_iter().partition(|r| r.deadline_ms <= now_ms);
            for read in expired {
                let _ = read.responder.send(Err(EtcdError::Timeout));
            }
            if !kept.is_empty() {
                batch.reads = kept;
                kept_batches.insert(ctx, batch);
            }
        }
        self.reads_in_flight = kept_batches;
        let (expired, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_ready).into_iter().partition(|(_, r)| r.deadline_ms <= now_ms);
        for (_, read) in expired {
            let _ = read.responder.send(Err(EtcdError::Timeout));
        }
        self.reads_ready = kept;
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.config.cluster_id,
            member_id: self.config.member_id,
            revision: self.mvcc.current_revision(),
            raft_term: self.raw.raft.term,
        }
    }

    fn execute_read(&mut self, request: &Request) -> Result<Response, EtcdError> {
        match request {
            Request::Range(range) => {
                let mut response = self.mvcc.range(range)?;
                response.header = Some(self.header());
                Ok(Response::Range(response))
            }
            Request::Txn(txn) => {
                let mut response = self.mvcc.txn(txn)?;
                response.header = Some(self.header());
                Ok(Response::Txn(response))
            }
            _ => unreachable!("only ranges and read-only txns are served as reads"),
        }
    }

    /// Handles everything raft has produced, in the one order that is safe:
    /// persist → send → apply → advance. Returns an error only for a failure that
    /// must stop the member (it could not make raft state durable).
    pub fn handle_ready(&mut self) -> Result<(), FatalError> {
        if !self.raw.has_ready() {
            self.serve_ready_reads();
            return Ok(());
        }
        let mut ready = self.raw.ready();

        // 1. Persist: snapshot, entries and hard state, then one sync for all of it.
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        if !ready.entries().is_empty() {
            self.wal.append_entries(ready.entries())?;
            self.storage.append(ready.entries())?;
            self.entries_persisted += ready.entries().len() as u64;
        }
        if let Some(hard_state) = ready.hs() {
            #[allow(unused_mut)]
            let mut persisted = hard_state.clone();
            #[cfg(madsim)]
            if self.planted(PlantedBug::ForgetVote) {
                persisted.vote = 0;
            }
            self.wal.append_hard_state(&persisted)?;
            self.storage.set_hard_state(hard_state.clone());
        }
        // raft needs a sync only for new entries, term or vote (etcd's MustSync); a
        // commit-only hard state is written and becomes durable with the next sync.
        #[allow(unused_mut)]
        let mut must_sync = ready.must_sync() || !ready.snapshot().is_empty();
        #[cfg(madsim)]
        if self.planted(PlantedBug::AckBeforeFsync) {
            must_sync = false;
        }
        if must_sync {
            if self.wal.sync()? {
                self.fsyncs += 1;
            }
            if let Some(hard_state) = ready.hs().filter(|hs| hs.vote != 0) {
                self.observe(NodeEvent::VotePersisted { term: hard_state.term, vote: hard_state.vote });
            }
            if let Some(last) = ready.entries().last() {
                self.observe(NodeEvent::EntriesPersisted { last_index: last.index });
            }
        } else {
            self.wal.write_without_sync()?;
        }
        #[cfg(madsim)]
        if self.planted(PlantedBug::ApplyBeforeCommit) && self.raw.raft.state == StateRole::Leader {
            let early: Vec<Entry> = ready.entries().to_vec();
            if early.first().is_some_and(|e| e.index == self.applied_index + 1) {
                self.apply_entries(early)?;
            }
        }

        // 2. Send.
        self.env.transport.send(ready.take_messages());
        self.env.transport.send(ready.take_persisted_messages());
        if let Some(soft_state) = ready.ss() {
            self.note_role(role_of(soft_state.raft_state), soft_state.leader_id);
        }
        for read_state in ready.take_read_states() {
            let ctx = u64::from_le_bytes(read_state.request_ctx.as_slice().try_into().unwrap_or([0; 8]));
            if let Some(batch) = self.reads_in_flight.remove(&ctx) {
                self.reads_ready.extend(batch.reads.into_iter().map(|r| (read_state.index, r)));
            }
        }

        // 3. Apply what is committed.
        self.apply_entries(ready.take_committed_entries())?;

        // 4. Advance, then the same steps for what advancing released.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit);
        }
        self.env.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();

        self.serve_ready_reads();
        self.maybe_snapshot()?;
        Ok(())
    }

    fn note_role(&mut self, role: Role, leader_id: u64) {
        let term = self.raw.raft.term;
        let previous_leader = self.last_role.map(|(_, leader, _)| leader);
        if previous_leader.is_some_and(|previous| previous != leader_id && previous != raft::INVALID_ID) {
            self.on_leader_lost();
        }
        if self.last_role != Some((role, leader_id, term)) {
            self.last_role = Some((role, leader_id, term));
            self.observe(NodeEvent::RoleChanged { term, role, leader_id });
        }
    }

    /// The leader this member knew is gone. As etcd does, pending proposals fail with
    /// "leader changed" (their outcome is unknown: the old leader may have replicated
    /// them) so clients retry now instead of waiting for a timeout, and in-flight reads
    /// ask the new leader.
    fn on_leader_lost(&mut self) {
        for (_, pending) in std::mem::take(&mut self.proposals) {
            let _ = pending.responder.send(Err(EtcdError::LeaderChanged));
        }
        for (_, batch) in std::mem::take(&mut self.reads_in_flight) {
            self.reads_unissued.extend(batch.reads);
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), FatalError> {
        let index = snapshot.get_metadata().index;
        let term = snapshot.get_metadata().term;
        let (mvcc, applied_requests) = decode_state(snapshot.get_data())?;
        self.snapshots.save(&snapshot)?;
        self.wal.append_snapshot_mark(index, term)?;
        self.storage.apply_snapshot(snapshot)?;
        self.mvcc = mvcc;
        self.applied_requests = applied_requests;
        self.applied_index = index;
        self.last_snapshot_index = index;
        self.snapshots.purge(self.config.max_snapshots)?;
        self.observe(NodeEvent::SnapshotInstalled { index, term });
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), FatalError> {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            assert_eq!(entry.index, self.applied_index + 1, "committed entries are applied in order, without gaps");
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if !entry.data.is_empty() {
                        self.apply_request(&entry.data);
                    }
                }
                EntryType::EntryConfChange => {
                    let mut change = ConfChange::default();
                    change.merge_from_bytes(&entry.data).map_err(|e| FatalError::Raft(e.to_string()))?;
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.storage.set_conf_state(conf_state);
                }
                EntryType::EntryConfChangeV2 => {
                    let mut change = ConfChangeV2::default();
                    change.merge_from_bytes(&entry.data).map_err(|e| FatalError::Raft(e.to_string()))?;
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.storage.set_conf_state(conf_state);
                }
            }
            self.applied_index = entry.index;
            self.observe(NodeEvent::Applied { index: entry.index, term: entry.term, digest: fnv1a64(&entry.data) });
        }
        Ok(())
    }

    fn apply_request(&mut self, data: &[u8]) {
        // Every member decodes the same bytes: an undecodable entry is a bug, not input.
        let internal = InternalRequest::decode(data).expect("a committed entry holds an InternalRequest");
        if !self.applied_requests.first_time(internal.proposer, internal.request_id) {
            // A second copy of a proposal the network delivered twice: already applied.
            return;
        }
        let result = match internal.op {
            Some(internal_request::Op::Put(put)) => self.mvcc.put(&put).map(Response::Put),
            Some(internal_request::Op::DeleteRange(delete)) => Ok(Response::DeleteRange(self.mvcc.delete_range(&delete))),
            Some(internal_request::Op::Txn(txn)) => self.mvcc.txn(&txn).map(Response::Txn),
            Some(internal_request::Op::Compaction(compaction)) => {
                self.mvcc.compact(&compaction).map(|()| Response::Compact(CompactionResponse::default()))
            }
            None => panic!("a committed InternalRequest has no operation"),
        };
        if internal.proposer != self.config.member_id {
            return;
        }
        let Some(pending) = self.proposals.remove(&internal.request_id) else { return };
        let header = Some(self.header());
        let result = result.map(|mut response| {
            match &mut response {
                Response::Put(r) => r.header = header,
                Response::DeleteRange(r) => r.header = header,
                Response::Txn(r) => r.header = header,
                Response::Compact(r) => r.header = header,
                Response::Range(r) => r.header = header,
            }
            response
        });
        let _ = pending.responder.send(result);
    }

    fn serve_ready_reads(&mut self) {
        if self.reads_ready.is_empty() {
            return;
        }
        let applied = self.applied_index;
        let (servable, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_ready).into_iter().partition(|(index, _)| *index <= applied);
        self.reads_ready = waiting;
        for (_, read) in servable {
            let result = self.execute_read(&read.request);
            let _ = read.responder.send(result);
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), FatalError> {
        if self.applied_index < self.last_snapshot_index + self.config.snapshot_count {
            return Ok(());
        }
        let index = self.applied_index;
        let term = self.storage.entry_term(index)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(encode_state(&self.mvcc, &self.applied_requests).into());
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        self.snapshots.save(&snapshot)?;
        let compact_index = index.saturating_sub(self.config.snapshot_catchup_entries).max(1);
        self.storage.set_snapshot(snapshot, compact_index)?;
        self.last_snapshot_index = index;
        self.wal.release(index, self.config.max_wals)?;
        self.snapshots.purge(self.config.max_snapshots)?;
        Ok(())
    }

    /// A summary of the member's state.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            member_id: self.config.member_id,
            cluster_id: self.config.cluster_id,
            term: self.raw.raft.term,
            role: role_of(self.raw.raft.state),
            leader_id: self.raw.raft.leader_id,
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.applied_index,
            revision: self.mvcc.current_revision(),
            compact_revision: self.mvcc.compact_revision(),
            kv_hash: self.mvcc.hash_kv(0),
            db_size_bytes: self.mvcc.approximate_bytes(),
            fsyncs: self.fsyncs,
            entries_persisted: self.entries_persisted,
        }
    }

    /// Makes this member start a real election now, skipping pre-vote (the simulator's
    /// split-vote fault: several members doing this at one instant split the vote).
    pub fn campaign(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            self.raw.raft.campaign(raft::CAMPAIGN_ELECTION);
        }
        self.override_election_timeout();
    }

    /// Names of the WAL segments on disk, oldest first.
    pub fn wal_segments(&self) -> Vec<String> {
        self.wal.segment_names()
    }

    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }
}
