//! The consensus loop: raft, the WAL and snapshots, driven by `tick`, `step` and
//! `submit`, with time passed in as an argument. It knows nothing of keys, leases or
//! users — committed entries go to the state machine (`apply`) as bytes, and what comes
//! back is routed to the waiting client.
//!
//! The loop owns no task, socket or timer. The async shell (`server`) calls it; tests and
//! the simulator can call it directly. Its disk and network I/O goes through the `env`
//! seam only.
//!
//! The order that makes raft safe is written once, in [`NodeCore::handle_ready`]:
//! (a leader's own appends, a follower's forwarded requests, and answers from entries
//! already committed and durable here may go first) → persist (snapshot, entries, hard
//! state; one fsync for the whole batch) → send → apply → advance. The shell may take it
//! in two steps (`begin_ready`: what may go first; `finish_ready`: the rest) and let its
//! other tasks run between them, so that what went first is on the wire before the fsync
//! blocks the thread. A client is answered only from an apply step, so nothing is
//! acknowledged before it is committed, and nothing is committed by this member's vote
//! before it is durable here. A loop turn's client proposals reach raft as one message.
//!
//! Helpers, each in its own file: [`proposals`] (ids, deadlines, byte accounting,
//! leader lost), [`read_index`] (contexts, retry, wait for apply), [`snapshotter`]
//! (every crash-ordering rule of snapshots), [`peer_messages`] (what a peer may
//! propose), [`fatal`] (why a member stops), [`planted`] (the simulator's canaries).

pub mod auto_compaction;
pub mod config;
pub mod fatal;
pub mod keep_alive_forward;
pub mod lease_clock;
pub mod membership;
pub mod peer_messages;
#[cfg(madsim)]
pub mod planted;
pub mod proposals;
pub mod read_index;
pub mod snapshotter;

use std::sync::Arc;

use prost::Message as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};

pub use self::config::NodeConfig;
pub use self::fatal::FatalError;
#[cfg(madsim)]
pub use self::planted::PlantedBug;
pub use self::proposals::Responder;
use self::keep_alive_forward::{ForwardedKeepAlives, KeepAliveAnswers, KeepAliveMessage};
use self::proposals::{PendingRequest, Proposals};
use self::read_index::{PeerReadContexts, ReadIndex};
use self::lease_clock::{LeaseClock, LEASE_TTL_SECS_MAX};
use self::snapshotter::{SnapshotSaved, Snapshotter};
use crate::apply::{Request, Response, StateMachine};
use crate::env::{Env, NodeEvent, Role};
use crate::errors::EtcdError;
use crate::pb::detcdpb::{internal_request, InternalRequest, LeaseExpiry};
use crate::pb::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseLeasesResponse, LeaseStatus,
    LeaseTimeToLiveResponse, ResponseHeader,
};
use crate::pb::mvccpb::Event;
use crate::storage::wal::Wal;
use crate::storage::{MemberMeta, NodeStorage, SnapshotStore};
use crate::validate;

/// A member's view of itself, for status endpoints, tests and the simulator. Cheap to
/// produce (no walk over the store; see [`NodeCore::hash_kv`] for the digest).
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
    /// etcd's DB SIZE: the most the store held since the last defragment (compaction
    /// alone does not give space back, as etcd's file does not shrink until defrag).
    pub db_size_bytes: u64,
    /// etcd's "in use": what the store holds now.
    pub db_size_in_use_bytes: u64,
    pub fsyncs: u64,
    pub entries_persisted: u64,
    /// Peer messages refused before raft saw them (see `peer_messages`).
    pub peer_messages_refused: u64,
    /// Read-index requests of other members refused as delivered again (see
    /// `read_index::PeerReadContexts`).
    pub peer_reads_refused: u64,
    /// Committed entries that were not valid requests and changed nothing.
    pub invalid_entries_applied: u64,
    /// Active alarms: (member that raised it, `AlarmType` number).
    pub alarms: Vec<(u64, i32)>,
    /// Times this member saw the leader change to another member (etcd's
    /// `leader_changes_seen_total`).
    pub leader_changes_seen: u64,
    /// Client proposals waiting for commit now, and failed so far (timed out or the
    /// leader lost).
    pub proposals_pending: u64,
    pub proposals_failed: u64,
    /// Live keys in the store.
    pub live_keys: u64,
    /// This member is a learner (receives the log, does not vote).
    pub is_learner: bool,
    /// The longest turn of the member's loop so far (from waking to the end of handling
    /// raft's Ready and publishing to watchers), on the env's clock: how long the member
    /// stopped answering peers and clients at most.
    pub loop_turn_longest_ms: u64,
    /// The same without the turn's WAL fsync (the group commit every write waits for
    /// anyway): the loop's own work — applying, snapshot and compaction steps, reads.
    pub loop_turn_longest_without_sync_ms: u64,
}

/// Hash reports (corruption check) waiting for the next tick to be proposed.
pub const HASH_REPORTS_PENDING_MAX: usize = 16;
/// Hash reports this member proposed and has not yet seen applied (each proposed again
/// every [`HASH_REPORT_RETRY_MS`] until it is, or its check is no longer kept).
pub const HASH_REPORTS_UNCONFIRMED_MAX: usize = 16;
/// How long a member waits to see its hash report applied before proposing it again: a
/// follower's proposal travels to the leader once, and a lost one left its check
/// without a majority (simulator seed 1611 of memory-corruption: six checks in a row
/// each missed one report on a network dropping 24% of messages, and the damage went
/// unflagged for longer than four check intervals).
pub const HASH_REPORT_RETRY_MS: u64 = 500;

pub use crate::digest::fnv1a64;

/// Whether a follower's message may leave before its Ready's sync: the client requests it
/// forwards to the leader (a proposal, a read-index request) carry no vote, term or log
/// position of its own, so nothing about them depends on what this member has persisted.
/// Sent after the sync, a forwarded proposal waited a whole fsync whenever the follower
/// had entries of its own to persist — under load, nearly always.
fn forwarded_before_sync(message_type: MessageType) -> bool {
    matches!(message_type, MessageType::MsgPropose | MessageType::MsgReadIndex)
}

fn role_of(state: StateRole) -> Role {
    match state {
        StateRole::Follower => Role::Follower,
        StateRole::PreCandidate => Role::PreCandidate,
        StateRole::Candidate => Role::Candidate,
        StateRole::Leader => Role::Leader,
    }
}

/// Client proposals stepped into raft as one message (see [`NodeCore::flush_proposals`]):
/// at most this many entries, and at most [`PROPOSAL_BATCH_BYTES_MAX`] of their data
/// (an append carries no more: etcd's `maxSizePerMsg`).
pub const PROPOSAL_BATCH_ENTRIES_MAX: usize = 1024;
pub const PROPOSAL_BATCH_BYTES_MAX: usize = config::RAFT_APPEND_BYTES_MAX as usize;

/// Keys whose compacted records are removed per loop turn (see `mvcc::compaction`).
/// 16,384 took 3.9 ms alone (criterion: `one removal step ... with a frozen copy`, 1M
/// keys) and 8-9 ms in a loop turn under a 64-client load (instrumented run): half of
/// that keeps a turn well under 10 ms; an idle member removes a million keys' records
/// in ~12 s of ticks.
pub const COMPACTION_KEYS_PER_TURN_MAX: usize = 8192;

/// Log entries an own snapshot lets go of per loop turn (see `NodeStorage::compact_step`).
pub const LOG_COMPACT_ENTRIES_PER_TURN_MAX: u64 = 4096;

/// The least a leader may keep of the log, in entries behind what is applied, for a
/// follower being caught up from a snapshot (`NodeCore::log_kept_from`; an unstretched
/// interval and its catch-up entries when that is more): etcd's default catch-up
/// entries. In the simulator members snapshot every few dozen entries and a snapshot job
/// may wait 400 ms: the interval alone let go of fresh snapshots before they were made.
pub const LOG_KEPT_FOR_SNAPSHOT_ENTRIES_MIN: u64 = 5000;

/// A frozen copy of the store to hash at a revision, see [`NodeCore::hash_kv_job`].
pub struct HashKvJob {
    revision: i64,
    store: crate::mvcc::Mvcc,
}

impl HashKvJob {
    /// (revision covered, hash, compaction point).
    pub fn run(self) -> (i64, u32, i64) {
        (self.revision, self.store.hash_kv(self.revision), self.store.compact_revision())
    }
}

/// The member's consensus loop. See the module documentation.
pub struct NodeCore {
    config: NodeConfig,
    env: Env,
    raw: RawNode<NodeStorage>,
    storage: NodeStorage,
    wal: Wal,
    snapshotter: Snapshotter,
    state: StateMachine,
    applied_index: u64,
    rng: ChaCha8Rng,
    ticks: u64,
    proposals: Proposals,
    reads: ReadIndex,
    last_role: Option<(Role, u64, u64)>,
    fsyncs: u64,
    loop_turn_longest_ms: u64,
    loop_turn_longest_without_sync_ms: u64,
    /// WAL sync time in the current loop turn.
    turn_sync_ms: u64,
    leader_changes_seen: u64,
    entries_persisted: u64,
    /// (term, instant on this member's clock) of the latest read-index round this member
    /// asked as leader that a quorum answered: its leadership was confirmed then.
    leadership_confirmed: Option<(u64, u64)>,
    peer_messages_refused: u64,
    /// Read-index requests of other members admitted once each (see `read_index`).
    peer_read_contexts: PeerReadContexts,
    peer_reads_refused: u64,
    /// This follower's keep-alives waiting on the leader, and this leader's renewals of
    /// other members' (see `keep_alive_forward`).
    keep_alives_forwarded: ForwardedKeepAlives,
    keep_alive_answers: KeepAliveAnswers,
    /// Client requests to propose once raft's current Ready is advanced: `Some` only in
    /// `handle_ready`'s window between `ready()` and `advance()`, where raft-rs must take
    /// no new entry (`advance` expects the log's last unstable entry to be the Ready's,
    /// else it panics). A keep-alive served with the reads of step 0 whose lease was
    /// already expiring turned into a proposal there and brought the leader down (the
    /// simulator found it: move-leader seed 2475, with committed entries handed out in
    /// small batches).
    proposals_held: Option<Vec<PendingRequest>>,
    /// A Ready whose first step is done (`begin_ready`: the leader's messages and a
    /// follower's forwards handed to the transport, what was already committed answered)
    /// and whose persisting, syncing and applying wait for `finish_ready`.
    ready_begun: Option<raft::Ready>,
    /// The begun Ready's messages that must wait for its sync (everything a follower or
    /// candidate says but its forwarded requests: see [`forwarded_before_sync`]).
    messages_after_sync: Vec<Message>,
    /// This loop turn's client proposals, not yet given to raft: their entries, their
    /// request ids (already in `proposals`) and their bytes.
    proposal_batch: Vec<Entry>,
    proposal_batch_ids: Vec<u64>,
    proposal_batch_bytes: usize,
    invalid_entries_applied: u64,
    /// The change feed for watchers: `(revision, events)` of every applied write that
    /// changed something, kept only once a consumer asked for it (`enable_change_feed`)
    /// and drained by it after every Ready.
    change_feed: Option<Vec<(i64, Vec<Event>)>>,
    /// A snapshot was installed since the consumer last looked: the revisions it jumped
    /// over are not in the feed.
    change_feed_gap: bool,
    /// A MoveLeader waiting for its target to lead: (target, deadline, answer).
    leader_transfer: Option<(u64, u64, tokio::sync::oneshot::Sender<Result<(), EtcdError>>)>,
    /// Where snapshot jobs report back, and where the loop picks their results up.
    snapshots_saved: (std::sync::mpsc::Sender<SnapshotSaved>, std::sync::mpsc::Receiver<SnapshotSaved>),
    /// Where spare-segment jobs report (see `tend_spare_segment`).
    spares_prepared: (std::sync::mpsc::Sender<crate::storage::wal::SparePrepared>, std::sync::mpsc::Receiver<crate::storage::wal::SparePrepared>),
    /// Where removal jobs report a disk error.
    removals_failed: (std::sync::mpsc::Sender<crate::env::DiskError>, std::sync::mpsc::Receiver<crate::env::DiskError>),
    /// Planted bug `snapshot-not-frozen`: a started snapshot whose state is read later.
    #[cfg(madsim)]
    late_snapshot_job: Option<snapshotter::SnapshotJob>,
    lease_clock: LeaseClock,
    /// The most the store held since the last defragment (see `NodeStatus::db_size_bytes`).
    db_size_high_water_bytes: u64,
    auto_compactor: auto_compaction::AutoCompactor,
    /// When the leader next checkpoints lease TTLs (member clock, ms).
    next_lease_checkpoint_ms: u64,
    /// When the leader next runs the corruption check.
    next_corrupt_check_ms: u64,
    /// Hash reports computed on the worker, proposed at the next tick (proposing while a
    /// Ready is handled would give a follower messages raft does not expect after
    /// `advance`); at most `HASH_REPORTS_PENDING_MAX` per tick.
    hash_reports_done: (
        std::sync::mpsc::Sender<crate::pb::detcdpb::HashReport>,
        std::sync::mpsc::Receiver<crate::pb::detcdpb::HashReport>,
    ),
    /// Reports proposed but not yet seen applied, with when each is proposed again.
    hash_reports_unconfirmed: Vec<(crate::pb::detcdpb::HashReport, u64)>,
    /// A configuration change was applied in this Ready: the commit index covering it is
    /// made durable before the Ready ends (see `handle_ready`, step 5).
    configuration_applied_unsynced: bool,
    /// ... and the answers to its proposer, sent once it is.
    member_answers_unsynced: Vec<(proposals::Responder, Response)>,
    /// When this member next (re)publishes its attributes, if they are not in yet.
    next_publish_ms: u64,
    /// This member applied its own removal: the tick at which it did (see `membership`).
    leaving_since_tick: Option<u64>,
    /// The removed members the transport is told of: only removals whose commit is
    /// durable here (the transport's removal notice lets a removed member stop).
    transport_removed: std::collections::BTreeSet<u64>,
    /// When each peer's last message reached raft here (see `membership`'s started
    /// check).
    peers_heard_ms: std::collections::BTreeMap<u64, u64>,
}

/// Revisions the change feed holds before its consumer drains it; beyond this the feed
/// is cleared and marked as a gap (watchers then catch up from history).
pub const CHANGE_FEED_REVISIONS_MAX: usize = 64 * 1024;

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
            None if config.initial_voters.is_empty() => {
                // Joining a running cluster: no configuration until the leader's
                // snapshot brings one (with this member in it).
                let meta = MemberMeta { cluster_id: config.cluster_id, member_id: config.member_id, initial_voters: Vec::new() };
                meta.save(env.data_disk.as_ref())?;
                meta
            }
            None => {
                // A first member of a new cluster: the first configuration and member
                // table as a snapshot at index 1 (see `write_first_state`).
                assert!(config.initial_voters.contains(&config.member_id), "a first member is one of the first voters");
                let members = config
                    .initial_voters
                    .iter()
                    .map(|id| (*id, config.initial_peer_urls.get(id).cloned().unwrap_or_default()))
                    .collect();
                let plan = crate::storage::client_snapshot::RestorePlan { cluster_id: config.cluster_id, member_id: config.member_id, members };
                crate::storage::client_snapshot::write_first_state(
                    &mut StateMachine::new(),
                    &plan,
                    env.data_disk.clone(),
                    env.wal_disk.clone(),
                    config.wal_segment_bytes_max,
                )?;
                MemberMeta::load(env.data_disk.as_ref())?.expect("the identity was just written")
            }
        };

        #[allow(unused_mut)]
        let mut files = SnapshotStore::new(env.data_disk.clone());
        #[cfg(madsim)]
        files.plant_crc_unchecked(config.planted_bug == Some(PlantedBug::SnapshotCrcUnchecked));
        let files = Arc::new(files);
        files.remove_stray_temps()?;
        let loaded = files.load_newest()?;
        let snapshot = loaded.snapshot;
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        let (wal, replayed) = Wal::open_with(
            env.wal_disk.clone(),
            snapshot_index,
            config.wal_segment_bytes_max,
            #[cfg(madsim)]
            crate::storage::wal::WalPlantedBugs::new(
                config.planted_bug == Some(PlantedBug::CutWithoutSync),
                config.planted_bug == Some(PlantedBug::TornByLengthOnly),
                config.planted_bug == Some(PlantedBug::WalReadErrorIsEmpty),
                config.planted_bug == Some(PlantedBug::SpareHoldsStaleBytes),
            ),
        )?;
        if replayed.snapshot_mark_index > snapshot_index {
            return Err(FatalError::Snapshot(format!(
                "the WAL starts from a snapshot at index {}, but the newest intact snapshot file is at index {} \
                 (damaged: {:?}); the entries between them are gone, so this member cannot recover on its own",
                replayed.snapshot_mark_index, snapshot_index, loaded.skipped_damaged
            )));
        }
        // The same loss when the WAL no longer holds the snapshot's mark (the segment that
        // had it was released) and nothing after it: its hard state commits entries that
        // neither an intact snapshot file nor the WAL holds (raft-rs would panic on it;
        // disk-faults seed 5109 of a sweep).
        let last_index = replayed.entries.last().map_or(snapshot_index, |entry| entry.index);
        let commit_index = replayed.hard_state.as_ref().map_or(0, |hard_state| hard_state.commit);
        if commit_index > last_index {
            return Err(FatalError::Snapshot(format!(
                "the WAL's commit index is {commit_index}, but the newest intact snapshot file and the WAL reach only index \
                 {last_index} (damaged: {:?}); the entries between them are gone, so this member cannot recover on its own",
                loaded.skipped_damaged
            )));
        }

        let mut conf_state = ConfState::default();
        conf_state.set_voters(meta.initial_voters.clone());
        let state = match &snapshot {
            Some(s) => StateMachine::decode(s.get_data()).map_err(FatalError::Snapshot)?,
            None => StateMachine::new(),
        };
        let snapshot_term = snapshot.as_ref().map_or(0, |s| s.get_metadata().term);
        // raft starts from the snapshot's configuration; a configuration change in the
        // log after it (committed or not) may say otherwise.
        let configuration_is_latest = replayed.entries.iter().all(|e| e.get_entry_type() == EntryType::EntryNormal);
        // The log holds up to a snapshot interval and the catch-up entries kept behind
        // it, plus what arrives while a snapshot is written (as much again, at most; a
        // stretched interval compacts the log without a snapshot, see `maybe_snapshot`).
        let log_entries_reserved = usize::try_from(config.snapshot_count.saturating_mul(2).saturating_add(config.snapshot_catchup_entries)).unwrap_or(usize::MAX);
        #[allow(unused_mut)]
        let mut storage =
            NodeStorage::recover(conf_state, snapshot.as_ref(), &replayed.entries, replayed.hard_state, files.clone(), env.worker.clone(), log_entries_reserved)?;
        #[cfg(madsim)]
        {
            storage.planted_snapshot_predates_new_member = config.planted_bug == Some(PlantedBug::SnapshotPredatesNewMember);
            storage.planted_snapshot_behind_compacted_log = config.planted_bug == Some(PlantedBug::SnapshotBehindCompactedLog);
            storage.planted_loaded_snapshot_must_be_newest = config.planted_bug == Some(PlantedBug::LoadedSnapshotMustBeNewest);
        }
        drop(snapshot);

        let raft_config = raft::Config {
            id: config.member_id,
            election_tick: config.election_tick(),
            heartbeat_tick: 1,
            applied: snapshot_index,
            max_size_per_msg: config.tunables.raft_append_bytes_max,
            max_inflight_msgs: config.tunables.raft_inflight_appends_max,
            max_committed_size_per_ready: config.tunables.raft_committed_bytes_per_ready_max,
            max_uncommitted_size: config.uncommitted_bytes_max,
            check_quorum: true,
            pre_vote: config.pre_vote,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage.clone(), &logger)?;

        let mut rng = ChaCha8Rng::seed_from_u64(env.seed);
        #[allow(unused_mut)]
        let mut reads = ReadIndex::new(config.member_id, rng.gen());
        let (member_id, incarnation_nonce) = (config.member_id, reads.incarnation_nonce());
        #[cfg(madsim)]
        if config.planted_bug == Some(PlantedBug::ReuseReadContexts) {
            reads.plant_reuse_contexts();
        }
        #[allow(unused_mut)]
        let mut snapshotter = Snapshotter::new(
            files,
            snapshot_index,
            config.snapshot_count,
            config.tunables.snapshot_interval_stretch_max.max(1),
            config.snapshot_catchup_entries,
            config.max_snapshots,
        );
        #[cfg(madsim)]
        {
            snapshotter.release_before_sync = config.planted_bug == Some(PlantedBug::ReleaseBeforeSnapshotSync);
            snapshotter.save_errors_ignored = config.planted_bug == Some(PlantedBug::SnapshotSaveErrorIgnored);
        }
        let auto_compaction_mode = config.auto_compaction;
        let mut core = NodeCore {
            rng,
            config,
            env,
            raw,
            storage,
            wal,
            snapshotter,
            state,
            applied_index: snapshot_index,
            ticks: 0,
            proposals: Proposals::default(),
            reads,
            last_role: None,
            fsyncs: 0,
            entries_persisted: 0,
            leadership_confirmed: None,
            leader_changes_seen: 0,
            loop_turn_longest_ms: 0,
            loop_turn_longest_without_sync_ms: 0,
            turn_sync_ms: 0,
            peer_messages_refused: 0,
            peer_read_contexts: PeerReadContexts::default(),
            peer_reads_refused: 0,
            keep_alives_forwarded: ForwardedKeepAlives::new(member_id, incarnation_nonce),
            keep_alive_answers: KeepAliveAnswers::default(),
            proposals_held: None,
            ready_begun: None,
            messages_after_sync: Vec::new(),
            proposal_batch: Vec::new(),
            proposal_batch_ids: Vec::new(),
            proposal_batch_bytes: 0,
            invalid_entries_applied: 0,
            change_feed: None,
            change_feed_gap: false,
            snapshots_saved: std::sync::mpsc::channel(),
            spares_prepared: std::sync::mpsc::channel(),
            leader_transfer: None,
            removals_failed: std::sync::mpsc::channel(),
            #[cfg(madsim)]
            late_snapshot_job: None,
            lease_clock: LeaseClock::default(),
            db_size_high_water_bytes: 0,
            auto_compactor: auto_compaction::AutoCompactor::new(auto_compaction_mode),
            next_lease_checkpoint_ms: 0,
            next_corrupt_check_ms: 0,
            hash_reports_done: std::sync::mpsc::channel(),
            hash_reports_unconfirmed: Vec::new(),
            configuration_applied_unsynced: false,
            member_answers_unsynced: Vec::new(),
            next_publish_ms: 0,
            leaving_since_tick: None,
            transport_removed: std::collections::BTreeSet::new(),
            peers_heard_ms: std::collections::BTreeMap::new(),
        };
        #[cfg(madsim)]
        {
            core.lease_clock.ignore_renewals = core.config.planted_bug == Some(PlantedBug::LeaseRenewIgnored);
            core.state.plant(core.state_planted_bugs());
        }
        core.override_election_timeout();
        // What the member recovered from its disks is durable.
        core.transport_removed = core.state.removed_members().clone();
        core.tell_transport_peers();
        // The only voter needs nobody's vote: lead at once instead of after a timeout —
        // only if no configuration change follows in the log. A member the snapshot shows
        // alone, with another added (or itself removed) after it, led at once in a term
        // the cluster's leader already held: two leaders in one term (a removed member
        // restarted from its disk; simulator seed 1455 of membership-chaos).
        let voters = core.raw.raft.prs().conf().voters().ids();
        if configuration_is_latest && voters.len() == 1 && voters.contains(core.config.member_id) {
            core.campaign();
        }
        if snapshot_index > 0 {
            core.observe(NodeEvent::SnapshotInstalled { index: snapshot_index, term: snapshot_term });
        }
        core.observe(NodeEvent::Recovered {
            torn_tail_cut: replayed.torn_tail_truncated_at.is_some(),
            damaged_snapshots_skipped: loaded.skipped_damaged.len(),
        });
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

    /// The planted bugs that live in the state machine, for a new or restored one.
    #[cfg(madsim)]
    fn state_planted_bugs(&self) -> crate::apply::StatePlantedBugs {
        crate::apply::StatePlantedBugs {
            expiry_races_renewal: self.planted(PlantedBug::LeaseExpiryRacesRenewal),
            nospace_ignored: self.planted(PlantedBug::NospaceIgnoredAtApply),
            create_revision_survives_delete: self.planted(PlantedBug::CreateRevisionSurvivesDelete),
            lease_ttl_extra_secs: i64::from(self.planted(PlantedBug::LeaseTtlDiffersBetweenMembers) && self.config.member_id % 2 == 1),
            tombstone_compacted_at_its_revision: self.planted(PlantedBug::TombstoneCompactedAtItsRevision),
            hash_counts_compacted_records: self.planted(PlantedBug::HashCountsCompactedRecords),
            duplicates_applied: self.planted(PlantedBug::DuplicateProposalsApplied),
            corrupt_check_ignores_mismatch: self.planted(PlantedBug::CorruptCheckIgnoresMismatch),
            members_published_locally_only: self.planted(PlantedBug::MemberAttributesAppliedLocallyOnly).then_some(self.config.member_id),
            member_table_not_in_snapshot: self.planted(PlantedBug::MemberTableNotInSnapshot),
            publish_overwrites_peer_urls: self.planted(PlantedBug::PublishOverwritesPeerUrls),
            auth_checked_at_proposer_only: self.planted(PlantedBug::AuthCheckedAtProposerOnly),
        }
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
        self.reads.retry_stale(&mut self.raw, self.ticks, self.env.clock.now_ms());
        self.proposals.expire(now_ms);
        self.reads.expire(now_ms);
        // Lease deadlines are set and checked on one clock: the member's clock seam.
        self.expire_leases(self.env.clock.now_ms());
        self.auto_compact(self.env.clock.now_ms());
        self.check_for_corruption(self.env.clock.now_ms());
        self.publish_member(self.env.clock.now_ms());
        self.check_leader_transfer(self.env.clock.now_ms());
        self.probe_while_leaving();
        self.follow_up_forwarded_keep_alives(now_ms);
    }

    /// What this member publishes about itself.
    fn own_attributes(&self) -> crate::apply::MemberAttributes {
        crate::apply::MemberAttributes {
            name: self.config.name.clone(),
            peer_urls: self.config.peer_urls.clone(),
            client_urls: self.config.client_urls.clone(),
        }
    }

    /// Publishes this member's name and URLs through raft until the replicated member
    /// list holds them (once per start, as etcd publishes its attributes).
    fn publish_member(&mut self, now_ms: u64) {
        if self.config.name.is_empty() || now_ms < self.next_publish_ms || self.raw.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let own = self.own_attributes();
        // Peer URLs are the configuration's (MemberUpdate changes them), not published.
        #[allow(unused_mut)]
        let mut published = self.state.members().get(&self.config.member_id).is_some_and(|m| m.name == own.name && m.client_urls == own.client_urls);
        #[cfg(madsim)]
        if self.planted(PlantedBug::PublishOverwritesPeerUrls) {
            published = self.state.members().get(&self.config.member_id) == Some(&own);
        }
        if published {
            return;
        }
        self.next_publish_ms = now_ms + self.config.election_timeout_ms.max(1);
        let member = crate::pb::etcdserverpb::Member {
            id: self.config.member_id,
            name: own.name,
            peer_ur_ls: own.peer_urls,
            client_ur_ls: own.client_urls,
            is_learner: false,
        };
        self.propose_internal(internal_request::Op::PublishMember(member));
    }

    /// The leader asks every member, through raft, to hash its key space at the current
    /// revision (see `apply::StateMachine::apply_hash_report`).
    fn check_for_corruption(&mut self, now_ms: u64) {
        for _ in 0..HASH_REPORTS_PENDING_MAX {
            let Ok(report) = self.hash_reports_done.1.try_recv() else { break };
            if self.hash_reports_unconfirmed.len() == HASH_REPORTS_UNCONFIRMED_MAX {
                self.hash_reports_unconfirmed.remove(0);
            }
            self.hash_reports_unconfirmed.push((report.clone(), now_ms + HASH_REPORT_RETRY_MS));
            self.propose_internal(internal_request::Op::HashReport(report));
        }
        // A report is kept until it is applied (or its check is gone), and proposed
        // again while it is not.
        let state = &self.state;
        self.hash_reports_unconfirmed.retain(|(report, _)| state.hash_report_applied(report) == Some(false));
        let mut again = Vec::new();
        for (report, retry_ms) in &mut self.hash_reports_unconfirmed {
            if now_ms >= *retry_ms {
                *retry_ms = now_ms + HASH_REPORT_RETRY_MS;
                again.push(report.clone());
            }
        }
        for report in again {
            self.propose_internal(internal_request::Op::HashReport(report));
        }
        let interval_ms = self.config.corrupt_check_interval_ms;
        if interval_ms == 0 || !self.decides_lease_expiry() {
            return;
        }
        if self.next_corrupt_check_ms == 0 {
            // A new leader waits one interval: its followers may still be catching up.
            self.next_corrupt_check_ms = now_ms + interval_ms;
        }
        if now_ms >= self.next_corrupt_check_ms {
            self.next_corrupt_check_ms = now_ms + interval_ms;
            let revision = self.state.mvcc().current_revision();
            let nonce = self.rng.gen();
            let voters = u32::try_from(self.raw.raft.prs().conf().voters().ids().len()).unwrap_or(u32::MAX);
            let check = crate::pb::detcdpb::HashCheck { revision, leader_id: self.config.member_id, voters, nonce };
            self.propose_internal(internal_request::Op::HashCheck(check));
        }
    }

    /// The leader compacts history as `--auto-compaction-*` asks, through raft.
    fn auto_compact(&mut self, now_ms: u64) {
        if !self.decides_lease_expiry() {
            self.auto_compactor.reset();
            return;
        }
        let mvcc = self.state.mvcc();
        if let Some(revision) = self.auto_compactor.due(now_ms, mvcc.current_revision(), mvcc.compact_revision()) {
            let compaction = crate::pb::etcdserverpb::CompactionRequest { revision, physical: false };
            self.propose_internal(internal_request::Op::Compaction(compaction));
        }
    }

    /// Whether this member decides lease expiry now: the leader only.
    fn decides_lease_expiry(&self) -> bool {
        // A new leader acts on leases only once it applied an entry of its own term:
        // until then its state may lack an expiry or revoke an earlier leader committed
        // (the simulator found a keep-alive answered by a restarted leader 14 ms into its
        // term for a lease whose expiry was committed before it crashed).
        self.lease_clock.is_leader()
            && self.raw.raft.state == StateRole::Leader
            && self.raw.raft.raft_log.term(self.applied_index).is_ok_and(|term| term == self.raw.raft.term)
    }

    /// The leader proposes a revoke for every lease that expired on its clock (bounded
    /// per tick), and checkpoints remaining TTLs when that is enabled.
    fn expire_leases(&mut self, now_ms: u64) {
        if !self.decides_lease_expiry() {
            return;
        }
        for id in self.lease_clock.take_expired(now_ms) {
            let renewals = self.state.mvcc().leases().get(id).map_or(0, |lease| lease.renewals);
            self.propose_internal(internal_request::Op::LeaseExpire(LeaseExpiry { id, renewals }));
        }
        if self.config.lease_checkpoint_enabled && now_ms >= self.next_lease_checkpoint_ms {
            self.next_lease_checkpoint_ms = now_ms + self.config.lease_checkpoint_interval_ms.max(1);
            let checkpoints: Vec<LeaseCheckpoint> = self
                .lease_clock
                .checkpoints(now_ms)
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            if !checkpoints.is_empty() {
                self.propose_internal(internal_request::Op::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }));
            }
        }
    }

    /// Proposes a write of the member's own (no client waits for it). Dropped silently
    /// if raft refuses it: the next tick proposes again.
    fn propose_internal(&mut self, op: internal_request::Op) {
        let request_id = self.proposals.new_id(&mut self.rng);
        let internal = InternalRequest { proposer: self.config.member_id, request_id, op: Some(op), auth: None };
        assert!(self.proposals_held.is_none(), "an internal proposal between raft's ready() and advance()");
        let _ = self.raw.propose(Vec::new(), internal.encode_to_vec());
    }

    /// A message from a peer. A message no peer may send (see `peer_messages`) is
    /// refused before raft sees it.
    pub fn step(&mut self, #[allow(unused_mut)] mut message: Message) {
        // The transport answered it already if this member removed the sender.
        if membership::is_membership_probe(&message) {
            return;
        }
        if let Some(keep_alive_message) = keep_alive_forward::decode(&message) {
            match keep_alive_message {
                Ok(KeepAliveMessage::Forward(forward)) => self.renew_forwarded(message.from, forward),
                Ok(KeepAliveMessage::Answer(answer)) => self.on_keep_alive_answer(message.from, answer),
                Err(_) => self.peer_messages_refused += 1,
            }
            return;
        }
        if peer_messages::check_peer_message(&message).is_err() {
            self.peer_messages_refused += 1;
            return;
        }
        #[cfg(madsim)]
        if self.planted(PlantedBug::AcceptStaleTerm)
            && message.get_msg_type() == MessageType::MsgAppend
            && message.term > 0
            && message.term < self.raw.raft.term
        {
            message.term = self.raw.raft.term;
        }
        if message.get_msg_type() == MessageType::MsgReadIndex && !self.admits_peer_read(&message) {
            self.peer_reads_refused += 1;
            self.observe(NodeEvent::PeerReadRefused { from: message.from });
            return;
        }
        // A vote refused to a candidate of a higher term does not restart this follower's
        // election timer (raft §5.2: it restarts on hearing from a leader or granting a
        // vote). raft-rs restarts it on every higher term, so a member whose log was
        // behind, campaigning without pre-vote again and again, kept the up-to-date member
        // of a cluster of two from ever campaigning: no leader for 31 s (grow-and-shrink
        // seed 6033, the two members' pre-vote settings differing).
        let raft = &self.raw.raft;
        let timer_before_vote = (message.get_msg_type() == MessageType::MsgRequestVote
            && message.term > raft.term
            && raft.state == StateRole::Follower)
            .then(|| (message.from, raft.election_elapsed, raft.randomized_election_timeout()));
        self.peers_heard_ms.insert(message.from, self.env.clock.now_ms());
        // Messages from unknown peers or stale terms are refused by raft; nothing to do.
        let _ = self.raw.step(message);
        if let Some((candidate, elapsed, timeout)) = timer_before_vote {
            let raft = &mut self.raw.raft;
            if raft.state == StateRole::Follower && raft.vote != candidate {
                raft.election_elapsed = elapsed;
                raft.set_randomized_election_timeout(timeout);
            }
        }
        self.override_election_timeout();
    }

    /// Whether raft may see another member's read-index request (see
    /// `read_index::PeerReadContexts`).
    fn admits_peer_read(&mut self, message: &Message) -> bool {
        #[cfg(madsim)]
        if self.planted(PlantedBug::ReuseReadContexts) || self.planted(PlantedBug::ReadIndexDuplicatesAdmitted) {
            // Contexts of the planted kind are not the members' own; duplicates pass.
            return true;
        }
        let ctx = message.entries.first().map_or(&[][..], |entry| entry.data.as_ref());
        self.peer_read_contexts.admit(message.from, ctx)
    }

    /// Accepts a client request. The answer goes to `responder` now (bad input,
    /// serializable reads) or once the request is committed and applied, or read-indexed.
    pub fn submit(&mut self, request: Request, responder: Responder, now_ms: u64) {
        self.submit_with_credentials(request, &crate::auth::Credentials::None, responder, now_ms);
    }

    /// Whether entries this member holds durably are committed but not applied yet: raft
    /// hands them out in batches (`Tunables::raft_committed_bytes_per_ready_max`), so
    /// after a long backlog (a restart, a catch-up) the loop turns again at once instead
    /// of waiting for its next event.
    /// False whenever raft has no Ready to hand out, so the loop never spins on it.
    pub fn has_committed_unapplied(&self) -> bool {
        let log = &self.raw.raft.raft_log;
        log.has_next_entries_since(self.applied_index) && self.raw.has_ready()
    }

    /// At start: applies everything known committed before the member serves anything,
    /// so that a restarted member never answers from a state older than one it
    /// acknowledged — over as many Readies as raft's batches need (at least one entry
    /// each, so at most one per entry of the log, plus the first: a cluster of one
    /// commits its whole log again there, its commits having come with raft's
    /// `LightReady`, which is not written to the WAL).
    pub fn apply_committed_backlog(&mut self) -> Result<(), FatalError> {
        let readies_max = self.raw.raft.raft_log.last_index().saturating_sub(self.applied_index) + 2;
        for _ in 0..readies_max {
            self.handle_ready()?;
            if !self.has_committed_unapplied() {
                break;
            }
        }
        Ok(())
    }

    /// One turn of the member's loop took `took_ms` (see `NodeStatus::loop_turn_longest_ms`).
    pub fn note_loop_turn(&mut self, took_ms: u64) {
        self.loop_turn_longest_ms = self.loop_turn_longest_ms.max(took_ms);
        let without_sync_ms = took_ms.saturating_sub(std::mem::take(&mut self.turn_sync_ms));
        self.loop_turn_longest_without_sync_ms = self.loop_turn_longest_without_sync_ms.max(without_sync_ms);
    }

    /// Whether the client with `token` may do what `needed` lists, on this member's
    /// applied auth state (maintenance requests and watch creation, served without raft).
    pub fn authorize(&self, credentials: &crate::auth::Credentials, needed: &[crate::auth::Needed]) -> Result<(), EtcdError> {
        let auth = self.state.auth().resolve(credentials)?;
        self.state.auth().check(auth.as_ref(), needed)
    }

    /// [`NodeCore::submit`] for a client with credentials (an auth token, a certificate's
    /// name, or none): they are resolved to a user here, on the state this member
    /// applied, and the request carries that user and auth revision to be checked where
    /// it is served or applied.
    pub fn submit_with_credentials(
        &mut self,
        #[allow(unused_mut)] mut request: Request,
        credentials: &crate::auth::Credentials,
        responder: Responder,
        now_ms: u64,
    ) {
        #[allow(unused_mut)]
        let mut refuse_as_removed = self.is_leaving();
        #[cfg(madsim)]
        if self.planted(PlantedBug::RemovedMemberKeepsServing) {
            refuse_as_removed = false;
        }
        if refuse_as_removed {
            let _ = responder.send(Err(EtcdError::StoppedBeforeProposal));
            return;
        }
        if let Err(error) = self.check(&request) {
            let _ = responder.send(Err(error));
            return;
        }
        let auth = match self.state.auth().resolve(credentials) {
            Ok(auth) => auth,
            Err(error) => {
                let _ = responder.send(Err(error));
                return;
            }
        };
        if matches!(request, Request::Member(_)) {
            // Membership changes are raft configuration changes, not applied requests:
            // their permission is checked here (and is refused without the root role).
            if let Err(denied) = self.state.check_request(auth.as_ref(), &request) {
                let _ = responder.send(Err(denied));
                return;
            }
        }
        #[cfg(madsim)]
        if self.planted(PlantedBug::AuthCheckedAtProposerOnly) {
            if let Err(denied) = self.state.check_proposal_for_planted_bug(auth.as_ref(), &request) {
                let _ = responder.send(Err(denied));
                return;
            }
        }
        if let Request::LeaseGrant(grant) = &mut request {
            // The proposer fixes what every member must apply alike: the id (etcd's
            // server picks one when the client gives 0) and the TTL raised to the minimum.
            if grant.id == 0 {
                grant.id = (self.rng.gen::<u64>() >> 1).max(1) as i64;
            }
            grant.ttl = grant.ttl.max(self.config.lease_ttl_secs_min());
        }
        let size_bytes = request_size_bytes(&request);
        if self.exceeds_quota(&request, size_bytes) {
            let _ = responder.send(Err(EtcdError::NoSpace));
            return;
        }
        if self.proposals.bytes() + self.reads.bytes() + self.keep_alives_forwarded.bytes() + size_bytes > self.config.pending_request_bytes_max {
            let _ = responder.send(Err(EtcdError::TooManyRequests));
            return;
        }
        let deadline_ms = now_ms.saturating_add(self.config.request_timeout_ms);
        let pending = PendingRequest { request, responder, deadline_ms, size_bytes, auth };
        #[cfg(madsim)]
        if self.planted(PlantedBug::LocalLinearizableRead) && is_read(&pending.request) {
            self.serve_read(pending);
            return;
        }
        match &pending.request {
            Request::LeaseKeepAlive(_) => self.keep_alive(pending),
            Request::Member(crate::apply::MemberRequest::Update { .. }) => self.propose(pending),
            Request::Member(_) => self.propose_member_change(pending),
            Request::Range(range) if range.serializable => self.serve_read(pending),
            request if is_read(request) => self.reads.push(pending),
            _ => self.propose(pending),
        }
    }

    /// etcd's quota: a request that adds data while the store (DB SIZE) plus the
    /// request would pass `--quota-backend-bytes` is refused, and this member raises the
    /// NOSPACE alarm through raft (once) so that every member refuses such writes.
    fn exceeds_quota(&mut self, request: &Request, size_bytes: usize) -> bool {
        use crate::pb::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
        let adds_data = match request {
            Request::Put(_) | Request::LeaseGrant(_) => true,
            Request::Txn(txn) => validate::txn_has_put(txn),
            _ => false,
        };
        if !adds_data {
            return false;
        }
        let db_size = self.db_size_high_water_bytes.max(self.state.mvcc().approximate_bytes());
        if db_size.saturating_add(size_bytes as u64) <= self.config.quota_backend_bytes {
            return false;
        }
        if !self.state.no_space() && self.raw.raft.leader_id != raft::INVALID_ID {
            let alarm = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.config.member_id,
                alarm: AlarmType::Nospace as i32,
            };
            self.propose_internal(internal_request::Op::Alarm(alarm));
        }
        true
    }

    /// Whether this leader may renew leases in memory now: it is the only voter, or a
    /// quorum confirmed its leadership (a read-index round it asked in this term) less
    /// than half an election timeout ago. A successor is elected no sooner than that
    /// confirmation (a quorum member then followed this leader; only a transfer's forced
    /// campaign skips the election timeout) and promotes every lease to now + election
    /// timeout + TTL, beyond any renewal made within an election timeout of it; the half
    /// left is margin for clock drift. Without it a deposed leader that had not noticed
    /// (cut off from its followers while a leadership transfer restarted its check-quorum
    /// timer) answered keep-alives the real leader never heard of, and the lease expired
    /// before the TTL it had promised (the simulator's sweep beyond CI's seeds found it;
    /// etcd guards its keep-alives the same way, `ensureLeadership`).
    fn leadership_confirmed_recently(&self, now_ms: u64) -> bool {
        if self.raw.raft.prs().conf().voters().ids().len() <= 1 {
            return true;
        }
        #[cfg(madsim)]
        if self.planted(PlantedBug::KeepAliveOnUnconfirmedLeader) {
            return true;
        }
        let term = self.raw.raft.term;
        self.leadership_confirmed
            .is_some_and(|(confirmed_term, at_ms)| confirmed_term == term && now_ms < at_ms.saturating_add(self.config.election_timeout_ms / 2))
    }

    /// A keep-alive: a leader whose leadership a quorum confirmed recently renews it in
    /// memory and answers now; a leader without such a confirmation first waits for a
    /// read-index round (`serve_read` brings it back here); a follower that knows its
    /// leader forwards it there (`keep_alive_forward`); anywhere else, or when the fast
    /// path declines, the renewal goes through raft.
    fn keep_alive(&mut self, pending: PendingRequest) {
        let Request::LeaseKeepAlive(keep_alive) = &pending.request else { panic!("not a keep-alive: {:?}", pending.request) };
        let id = keep_alive.id;
        let leader = self.raw.raft.leader_id;
        let forwards = self.config.tunables.forward_keep_alives;
        if forwards && self.raw.raft.state == StateRole::Follower && leader != raft::INVALID_ID && leader != self.config.member_id {
            match self.keep_alives_forwarded.forward(pending, id, leader, self.env.clock.now_ms()) {
                Ok(forward) => {
                    let _ = self.env.transport.send(vec![forward]);
                    #[cfg(madsim)]
                    if self.planted(PlantedBug::ForwardedKeepAliveAnsweredAtOnce) {
                        self.answer_forwarded_at_once(id);
                    }
                }
                Err(pending) => self.propose(pending),
            }
            return;
        }
        if self.decides_lease_expiry() && !self.leadership_confirmed_recently(self.env.clock.now_ms()) {
            self.reads.push(pending);
            return;
        }
        match self.renew_on_leader(id) {
            Some(response) => {
                let _ = pending.responder.send(Ok(response));
            }
            None => self.propose(pending),
        }
    }

    /// A follower's forwarded keep-alive (see `keep_alive_forward`), renewed as this
    /// leader renews its own clients' keep-alives: the answer goes back once the
    /// renewal has an outcome — at once, after a read-index round, or once applied
    /// through raft. Declined unless this member leads and `from` is a member.
    fn renew_forwarded(&mut self, from: u64, forward: crate::pb::detcdpb::KeepAliveForward) {
        let own_id = self.config.member_id;
        let conf = self.raw.raft.prs().conf();
        let is_member = conf.voters().contains(from) || conf.learners().contains(&from);
        let admitted = if self.raw.raft.state == StateRole::Leader && is_member {
            self.keep_alive_answers.admit(own_id, from, &forward)
        } else {
            Err(KeepAliveAnswers::declined(own_id, from, &forward))
        };
        if let Err(declined) = admitted {
            let _ = self.env.transport.send(vec![declined]);
            return;
        }
        let (responder, outcome) = tokio::sync::oneshot::channel();
        let request = Request::LeaseKeepAlive(crate::pb::etcdserverpb::LeaseKeepAliveRequest { id: forward.lease_id });
        let size_bytes = request_size_bytes(&request);
        let deadline_ms = self.env.clock.now_ms().saturating_add(self.config.request_timeout_ms);
        self.keep_alive_answers.wait(from, &forward, outcome);
        self.keep_alive(PendingRequest { request, responder, deadline_ms, size_bytes, auth: None });
        self.send_keep_alive_answers();
    }

    /// Sends the answers to forwarded keep-alives whose renewal has an outcome.
    fn send_keep_alive_answers(&mut self) {
        if self.keep_alive_answers.is_empty() {
            return;
        }
        let answers = self.keep_alive_answers.ready_answers(self.config.member_id);
        if !answers.is_empty() {
            let _ = self.env.transport.send(answers);
        }
    }

    /// The leader answered a keep-alive this follower forwarded: the client gets the
    /// leader's renewal, or — not renewed there — the renewal goes through raft.
    fn on_keep_alive_answer(&mut self, from: u64, answer: crate::pb::detcdpb::KeepAliveAnswer) {
        let Some(pending) = self.keep_alives_forwarded.take_answered(from, &answer) else { return };
        if !answer.renewed {
            self.propose(pending);
            return;
        }
        let Request::LeaseKeepAlive(keep_alive) = &pending.request else { panic!("forwarded a {:?}", pending.request) };
        let mut response = Response::LeaseKeepAlive(crate::pb::etcdserverpb::LeaseKeepAliveResponse { header: None, id: keep_alive.id, ttl: answer.ttl });
        response.set_header(self.header());
        let _ = pending.responder.send(Ok(response));
    }

    /// Each tick: forwarded keep-alives past their deadline fail; those sent to a member
    /// that no longer leads go to the new leader (or through raft); those unanswered for
    /// an election timeout are renewed through raft; renewals of other members'
    /// keep-alives that completed are answered.
    fn follow_up_forwarded_keep_alives(&mut self, now_ms: u64) {
        let leader = self.raw.raft.leader_id;
        let follow_up = self.keep_alives_forwarded.follow_up(now_ms, leader, self.config.election_timeout_ms);
        for pending in follow_up.expired {
            pending.fail(EtcdError::Timeout);
        }
        for pending in follow_up.orphaned {
            self.keep_alive(pending);
        }
        for pending in follow_up.unanswered {
            self.propose(pending);
        }
        self.send_keep_alive_answers();
    }

    /// Planted: the follower answers the keep-alive it just forwarded with its own
    /// state's TTL, whatever becomes of the forward.
    #[cfg(madsim)]
    fn answer_forwarded_at_once(&mut self, id: i64) {
        let Some(pending) = self.keep_alives_forwarded.take_newest() else { return };
        let ttl = self.state.mvcc().leases().get(id).map_or(0, |lease| lease.ttl_secs);
        let mut response = Response::LeaseKeepAlive(crate::pb::etcdserverpb::LeaseKeepAliveResponse { header: None, id, ttl });
        response.set_header(self.header());
        let _ = pending.responder.send(Ok(response));
    }

    /// The leader's fast path for a keep-alive (see `lease_clock`): renewed in memory and
    /// answered now. `None` when it must go through raft instead: this member is not
    /// the leader, an expiry of the lease is already under way (the raft renewal then
    /// either voids it or finds the lease gone), or a checkpoint is recorded (the raft
    /// renewal clears it, so a new leader never uses a stale remaining TTL).
    fn renew_on_leader(&mut self, id: i64) -> Option<Response> {
        if !self.decides_lease_expiry() || self.lease_clock.is_expiring(id) {
            return None;
        }
        let ttl = match self.state.mvcc().leases().get(id) {
            Some(lease) if lease.checkpoint_remaining_secs > 0 => return None,
            Some(lease) => lease.ttl_secs,
            // As etcd: an unknown lease keeps alive with TTL 0.
            None => 0,
        };
        if ttl > 0 {
            let now_ms = self.env.clock.now_ms();
            self.lease_clock.renew_locally(id, ttl, now_ms);
        }
        let mut response = Response::LeaseKeepAlive(crate::pb::etcdserverpb::LeaseKeepAliveResponse { header: None, id, ttl });
        response.set_header(self.header());
        Some(response)
    }

    fn check(&self, request: &Request) -> Result<(), EtcdError> {
        // As etcd: a learner serves serializable reads (and status, member list) only;
        // membership changes may be sent to any member.
        let serializable_read = matches!(request, Request::Range(range) if range.serializable);
        if !serializable_read && !matches!(request, Request::Member(_)) && self.raw.raft.prs().conf().learners().contains(&self.config.member_id) {
            return Err(EtcdError::NotSupportedForLearner);
        }
        match request {
            Request::Range(r) => validate::check_range(r),
            Request::Put(p) => validate::check_put(p),
            Request::DeleteRange(d) => validate::check_delete_range(d),
            Request::Txn(t) => validate::check_txn(t, self.config.max_txn_ops),
            Request::LeaseGrant(g) if g.ttl > LEASE_TTL_SECS_MAX => Err(EtcdError::LeaseTtlTooLarge),
            Request::LeaseGrant(g) if g.id < 0 => Err(EtcdError::LeaseNotFound),
            Request::Member(m) => self.check_member_request(m),
            Request::Auth(_) => Ok(()),
            Request::Compact(_)
            | Request::Alarm(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::LeaseKeepAlive(_)
            | Request::LeaseTimeToLive(_)
            | Request::LeaseLeases(_) => Ok(()),
        }
    }

    fn propose(&mut self, pending: PendingRequest) {
        if let Some(held) = self.proposals_held.as_mut() {
            held.push(pending);
            return;
        }
        let op = pending.request.to_internal_op().expect("reads are never proposed");
        let request_id = self.proposals.new_id(&mut self.rng);
        let internal = InternalRequest { proposer: self.config.member_id, request_id, op: Some(op), auth: pending.auth.clone() };
        let data = internal.encode_to_vec();
        if data.len() > self.config.max_request_bytes {
            pending.fail(EtcdError::RequestTooLarge);
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            pending.fail(EtcdError::NoLeader);
            return;
        }
        self.proposal_batch_bytes += data.len();
        let mut entry = Entry::default();
        entry.data = data.into();
        self.proposal_batch.push(entry);
        self.proposal_batch_ids.push(request_id);
        self.proposals.insert(request_id, pending);
        if self.proposal_batch.len() >= PROPOSAL_BATCH_ENTRIES_MAX || self.proposal_batch_bytes >= PROPOSAL_BATCH_BYTES_MAX {
            self.flush_proposals();
        }
    }

    /// Steps this turn's client proposals into raft as one message. One proposal a
    /// message made a leader send an append to every follower for each (raft-rs
    /// broadcasts on every proposal it takes), and a follower forward each on its own;
    /// a batch is one append, or one forward. raft takes or refuses the batch whole.
    fn flush_proposals(&mut self) {
        if self.proposal_batch.is_empty() {
            return;
        }
        assert!(self.proposals_held.is_none(), "proposals flushed between raft's ready() and advance()");
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.config.member_id;
        message.entries = std::mem::take(&mut self.proposal_batch).into();
        self.proposal_batch_bytes = 0;
        let ids = std::mem::take(&mut self.proposal_batch_ids);
        let refusal = match self.raw.step(message) {
            Ok(()) => return,
            // raft refuses proposals beyond its uncommitted-bytes limit, and while a
            // leader transfer is under way.
            Err(raft::Error::ProposalDropped) if self.raw.raft.state == StateRole::Leader => EtcdError::TooManyRequests,
            Err(_) => EtcdError::NoLeader,
        };
        for id in ids {
            if let Some(pending) = self.proposals.remove(id) {
                pending.fail(refusal.clone());
            }
        }
    }

    /// Sends one ReadIndex request for every read that arrived since the last one.
    pub fn issue_reads(&mut self) {
        self.reads.issue(&mut self.raw, self.ticks, self.env.clock.now_ms());
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.config.cluster_id,
            member_id: self.config.member_id,
            revision: self.state.mvcc().current_revision(),
            raft_term: self.raw.raft.term,
        }
    }

    fn serve_read(&mut self, read: PendingRequest) {
        if matches!(read.request, Request::LeaseKeepAlive(_)) {
            // A keep-alive that waited for a read-index round (see `keep_alive`).
            self.keep_alive(read);
            return;
        }
        let header = self.header();
        if let Err(denied) = self.state.check_request(read.auth.as_ref(), &read.request) {
            read.fail(denied);
            return;
        }
        if let Request::Range(range) = &read.request {
            if is_large_range(range) {
                // A read that may copy a large part of the store runs on the worker over
                // a frozen copy of the store as applied now (copy-on-write: cheap), so
                // the loop does not stop for it.
                let store = self.state.mvcc().clone();
                let range = range.clone();
                let responder = read.responder;
                self.env.worker.run(Box::new(move || {
                    let result = store.range(&range).map(|response| {
                        let mut response = Response::Range(response);
                        response.set_header(header);
                        response
                    });
                    let _ = responder.send(result);
                }));
                return;
            }
        }
        let result = match &read.request {
            Request::LeaseTimeToLive(_) | Request::LeaseLeases(_) => Ok(self.read_leases(&read.request)),
            request => self.state.read(request),
        };
        let result = result.map(|mut response| {
            response.set_header(header);
            response
        });
        let _ = read.responder.send(result);
    }

    /// Lease reads: what the replicated state knows, with remaining TTLs from this
    /// member's lease clock. An unknown lease has TTL -1, as etcd answers.
    fn read_leases(&self, request: &Request) -> Response {
        let lessor = self.state.mvcc().leases();
        match request {
            Request::LeaseTimeToLive(ask) => match lessor.get(ask.id) {
                Some(lease) => Response::LeaseTimeToLive(LeaseTimeToLiveResponse {
                    header: None,
                    id: ask.id,
                    ttl: self.lease_clock.remaining_secs(ask.id, lease.ttl_secs, self.env.clock.now_ms()),
                    granted_ttl: lease.ttl_secs,
                    keys: if ask.keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
                }),
                None => Response::LeaseTimeToLive(LeaseTimeToLiveResponse { header: None, id: ask.id, ttl: -1, granted_ttl: 0, keys: Vec::new() }),
            },
            Request::LeaseLeases(_) => Response::LeaseLeases(LeaseLeasesResponse {
                header: None,
                leases: lessor.ids().map(|(id, _)| LeaseStatus { id }).collect(),
            }),
            other => panic!("not a lease read: {other:?}"),
        }
    }

    /// Handles everything raft has produced (see [`Self::handle_raft_ready`]), then
    /// answers the other members' forwarded keep-alives it renewed.
    pub fn handle_ready(&mut self) -> Result<(), FatalError> {
        self.begin_ready()?;
        self.finish_ready()
    }

    /// The first step of handling what raft has produced (the whole order is
    /// `handle_raft_ready`'s): takes the Ready, hands the leader's messages and a
    /// follower's forwarded requests to the transport and answers what was already
    /// committed. Returns whether messages or answers went out ahead of a sync: the shell
    /// then lets its other tasks run before `finish_ready` — the peers' writers and the
    /// clients' handlers, woken from this task, would otherwise wait on this thread for
    /// the fsync, and a follower's sync would start only after the leader's (a trace of
    /// three members with one client showed it, one put in two).
    /// Returns an error only for a failure that must stop the member.
    pub fn begin_ready(&mut self) -> Result<bool, FatalError> {
        assert!(self.ready_begun.is_none(), "a Ready begun before the last one finished");
        if self.must_stop_removed() {
            return Err(FatalError::Removed);
        }
        self.flush_proposals();
        if !self.raw.has_ready() {
            self.serve_ready_reads();
            // Work spread over loop turns (compaction's removal, log compaction, a
            // finished snapshot job) goes on while the member is idle too: a compaction
            // applied just before the writes stopped gave its memory back only at the
            // next write.
            self.maybe_snapshot()?;
            return Ok(false);
        }
        let mut ready = self.raw.ready();
        self.proposals_held = Some(Vec::new());

        // 0. A leader's messages (appends, heartbeats) may leave before its own entries
        //    are durable — raft-rs gives them only to a leader, which counts its own
        //    vote for an entry only once `advance` reports it persisted (raft thesis
        //    §10.2.1) — so the leader's fsync overlaps its followers'. What a follower or
        //    candidate says waits for the sync (`take_persisted_messages`), but for the
        //    requests it forwards to the leader, which state no fact of its log.
        let mut messages = ready.take_messages();
        let (forwarded, after_sync): (Vec<Message>, Vec<Message>) =
            ready.take_persisted_messages().into_iter().partition(|m| forwarded_before_sync(m.get_msg_type()));
        messages.extend(forwarded);
        self.messages_after_sync = after_sync;
        let mut went_before_sync = !messages.is_empty();
        self.send(messages);
        // Every member answers what is already committed before it syncs this Ready's
        // new entries: raft-rs hands out only entries both committed and persisted here
        // by earlier Readies, so they are durable on a majority and the answers need not
        // wait for this sync — the clients' next requests then join the batch being
        // synced instead of the one after it. On a follower under load nearly every
        // Ready brings new entries with the commit index, so its clients waited a whole
        // sync for each answer; applying first delays its acknowledgement by the
        // apply's time (microseconds an entry), not by a sync.
        if ready.snapshot().is_empty() {
            let committed = ready.take_committed_entries();
            went_before_sync |= !committed.is_empty();
            self.apply_entries(committed)?;
            self.serve_ready_reads();
        }
        let must_sync = ready.must_sync();
        self.ready_begun = Some(ready);
        Ok(went_before_sync && must_sync)
    }

    /// The rest of the Ready `begin_ready` took (nothing if it took none), then the
    /// answers to the other members' forwarded keep-alives it renewed.
    pub fn finish_ready(&mut self) -> Result<(), FatalError> {
        let finished = match self.ready_begun.take() {
            Some(ready) => self.handle_raft_ready(ready),
            None => Ok(()),
        };
        self.send_keep_alive_answers();
        finished
    }

    /// Handles everything raft has produced, in the one order that is safe:
    /// (0. what may go first — a leader's sends, a follower's forwards, answers from what
    /// was already committed — in `begin_ready`) persist → send →
    /// apply → advance. Returns an error only for a failure that must stop the member
    /// (it could not make raft state durable).
    fn handle_raft_ready(&mut self, mut ready: raft::Ready) -> Result<(), FatalError> {
        // 1. Persist: snapshot, entries and hard state, then one sync for all of it.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.state = self.snapshotter.install_received(&snapshot, &self.storage, &mut self.wal)?;
            #[cfg(madsim)]
            self.state.plant(self.state_planted_bugs());
            self.applied_index = snapshot.get_metadata().index;
            self.change_feed_gap = true;
            if let Some(feed) = self.change_feed.as_mut() {
                feed.clear();
            }
            self.lease_clock.retain_existing(self.state.mvcc().leases());
            self.tell_transport_peers();
            self.observe(NodeEvent::SnapshotInstalled {
                index: snapshot.get_metadata().index,
                term: snapshot.get_metadata().term,
            });
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
        if self.planted(PlantedBug::AckBeforeFsync)
            || (self.planted(PlantedBug::FollowerAcksBeforeFsync) && self.raw.raft.state != StateRole::Leader)
        {
            must_sync = false;
        }
        if must_sync {
            let sync_start_ms = self.env.clock.now_ms();
            if self.wal.sync()? {
                self.fsyncs += 1;
            }
            self.turn_sync_ms += self.env.clock.now_ms().saturating_sub(sync_start_ms);
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

        // 2. Send what had to wait for the sync.
        assert!(ready.persisted_messages().is_empty(), "begin_ready takes every message of the Ready");
        let after_sync = std::mem::take(&mut self.messages_after_sync);
        self.send(after_sync);
        for read_state in ready.take_read_states() {
            let confirmation = self.reads.on_read_state(&read_state.request_ctx, read_state.index);
            let term = self.raw.raft.term;
            if let Some(confirmed) = confirmation.filter(|c| c.issued_as_leader_in_term == Some(term) && self.raw.raft.state == StateRole::Leader) {
                let latest_ms = self.leadership_confirmed.filter(|(t, _)| *t == term).map_or(0, |(_, ms)| ms);
                self.leadership_confirmed = Some((term, latest_ms.max(confirmed.issued_at_ms)));
            }
        }

        // 3. Apply what is committed; only then act on a change of leader, so proposals
        //    this Ready commits are answered instead of failed as unknown.
        self.apply_entries(ready.take_committed_entries())?;
        if let Some(soft_state) = ready.ss() {
            self.note_role(role_of(soft_state.raft_state), soft_state.leader_id);
        }

        // 4. Advance, then the same steps for what advancing released; then propose what
        //    turned into a proposal before raft could take it.
        let held = self.proposals_held.take().expect("held since ready()");
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        for pending in held {
            self.propose(pending);
        }

        // 5. A configuration change applied: the commit index covering it is made durable
        //    now, not with the next write (a commit-only hard state is not synced). raft
        //    starts from the snapshot's configuration and re-applies only what the WAL
        //    says is committed: the last member of a cluster of two, having lost that
        //    hard state in a power loss after the other's removal, came back waiting for
        //    the removed member's vote — for good (simulator seed 190 of grow-and-shrink).
        //    Only then is the change's proposer answered and does the transport learn of
        //    a removal: an operator stops a removed member once answered, the transport's
        //    notice lets it stop itself, and a member that loses the commit index in a
        //    power loss needs the removed member's vote again (membership-chaos seed
        //    6800: the removed member of a cluster of two heard it from the leader's
        //    transport, which had applied the removal but lost power before the sync).
        //    A snapshot installed in step 1 was synced there.
        if std::mem::take(&mut self.configuration_applied_unsynced) {
            let hard_state = self.raw.raft.hard_state();
            self.wal.append_hard_state(&hard_state)?;
            self.storage.set_hard_state(hard_state);
            if self.wal.sync()? {
                self.fsyncs += 1;
            }
        }
        for (responder, response) in self.member_answers_unsynced.drain(..) {
            let _ = responder.send(Ok(response));
        }
        if self.transport_removed != *self.state.removed_members() {
            self.transport_removed = self.state.removed_members().clone();
            self.tell_transport_peers();
        }

        self.serve_ready_reads();
        self.check_leader_transfer(self.env.clock.now_ms());
        self.maybe_snapshot()?;
        self.tend_spare_segment();
        Ok(())
    }

    /// Hands messages to the transport and tells raft what it could not deliver: a peer
    /// whose messages were dropped is unreachable, and a snapshot is reported finished
    /// once handed over (raft then probes; a follower that did not get it is sent it
    /// again) or failed if it was dropped — never left pending until the leader changes.
    fn send(&mut self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let snapshot_targets: Vec<u64> =
            messages.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot).map(|m| m.to).collect();
        let unreachable = self.env.transport.send(messages);
        for peer in &unreachable {
            self.raw.report_unreachable(*peer);
        }
        for peer in snapshot_targets {
            let status = if unreachable.contains(&peer) { SnapshotStatus::Failure } else { SnapshotStatus::Finish };
            self.raw.report_snapshot(peer, status);
        }
    }

    fn note_role(&mut self, role: Role, leader_id: u64) {
        let term = self.raw.raft.term;
        let previous_leader = self.last_role.map(|(_, leader, _)| leader);
        if leader_id != raft::INVALID_ID && previous_leader != Some(leader_id) {
            self.leader_changes_seen += 1;
        }
        if previous_leader.is_some_and(|previous| previous != leader_id && previous != raft::INVALID_ID) {
            self.on_leader_lost();
        }
        if self.last_role != Some((role, leader_id, term)) {
            self.last_role = Some((role, leader_id, term));
            self.observe(NodeEvent::RoleChanged { term, role, leader_id });
        }
        if role == Role::Leader && !self.lease_clock.is_leader() {
            let now_ms = self.env.clock.now_ms();
            self.lease_clock.promote(self.state.mvcc().leases(), now_ms, self.config.election_timeout_ms);
            self.next_lease_checkpoint_ms = now_ms + self.config.lease_checkpoint_interval_ms;
            self.next_corrupt_check_ms = 0;
        } else if role != Role::Leader && self.lease_clock.is_leader() {
            self.lease_clock.demote();
        }
    }

    /// The leader this member knew is gone. As etcd does, pending proposals fail with
    /// "leader changed" (their outcome is unknown: the old leader may have replicated
    /// them) so clients retry now instead of waiting for a timeout, and in-flight reads
    /// ask the new leader.
    fn on_leader_lost(&mut self) {
        // The proposals may still commit under the next leader: their outcome is unknown.
        #[cfg(madsim)]
        if self.planted(PlantedBug::LeaderLostReportedAsRefused) {
            self.proposals.fail_all(EtcdError::NoLeader);
        }
        self.proposals.fail_all(EtcdError::LeaderChanged);
        self.reads.on_leader_lost();
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
                        self.apply_request(entry.index, &entry.data);
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let v2 = entry.get_entry_type() == EntryType::EntryConfChangeV2;
                    self.apply_conf_change_entry(entry.index, &entry.data, v2)?;
                    self.configuration_applied_unsynced = true;
                }
            }
            self.applied_index = entry.index;
            self.snapshotter.note_applied(entry.data.len());
            // The digests of the entry and of the state after it cost a pass over the
            // entry's bytes (at 4 KiB values, 12% of a restart's time in a profile) and
            // over the leases: only for observers that compare members (the simulator).
            let compared = self.env.observer.wants_changes();
            let digest = compared.then(|| fnv1a64(&entry.data));
            let state_digest = compared.then(|| self.state.applied_state_digest());
            self.observe(NodeEvent::Applied { index: entry.index, term: entry.term, digest, state_digest });
        }
        Ok(())
    }

    /// The members with a CORRUPT alarm, in id order.
    fn corrupt_members(&self) -> Vec<u64> {
        let corrupt = crate::pb::etcdserverpb::AlarmType::Corrupt as i32;
        self.state.alarms().iter().filter(|a| a.alarm == corrupt).map(|a| a.member_id).collect()
    }

    fn apply_request(&mut self, index: u64, data: &bytes::Bytes) {
        let no_space_before = self.state.no_space();
        let corrupt_before = self.corrupt_members();
        let compacted_before = self.state.mvcc().compact_revision();
        let applied = self.state.apply(data.clone());
        if let Some(job) = applied.hash_to_report {
            // The walk runs on the worker over the frozen copy; the report comes back
            // through the channel and is proposed at a later tick.
            let done = self.hash_reports_done.0.clone();
            let member_id = self.config.member_id;
            self.env.worker.run(Box::new(move || {
                let _ = done.send(crate::pb::detcdpb::HashReport { member_id, ..job.run() });
            }));
        }
        // Every change of who has a CORRUPT alarm (a second member alarmed while the
        // first one's alarm is up was not reported when only the on/off state counted).
        let corrupt_after = self.corrupt_members();
        if corrupt_after != corrupt_before {
            let raised = corrupt_after.iter().any(|member| !corrupt_before.contains(member));
            self.observe(NodeEvent::Corrupt { index, active: raised, members: corrupt_after });
        }
        if self.state.mvcc().compact_revision() != compacted_before {
            self.observe(NodeEvent::Compacted { revision: self.state.mvcc().compact_revision() });
        }
        if self.state.no_space() != no_space_before {
            let revision = self.state.mvcc().current_revision();
            self.observe(NodeEvent::NoSpace { index, active: !no_space_before, revision });
        }
        self.db_size_high_water_bytes = self.db_size_high_water_bytes.max(self.state.mvcc().approximate_bytes());
        if applied.invalid {
            self.invalid_entries_applied += 1;
        }
        if applied.members_changed {
            self.tell_transport_peers();
        }
        if !applied.lease_changes.is_empty() {
            let now_ms = self.env.clock.now_ms();
            for change in &applied.lease_changes {
                self.lease_clock.on_change(change, now_ms);
                self.observe(NodeEvent::Lease(change.clone()));
            }
        }
        if !applied.events.is_empty() {
            if self.env.observer.wants_changes() {
                let revision = self.state.mvcc().current_revision();
                self.observe(NodeEvent::Changes { revision, events: applied.events.clone() });
            }
            if let Some(feed) = self.change_feed.as_mut() {
                if feed.len() >= CHANGE_FEED_REVISIONS_MAX {
                    feed.clear();
                    self.change_feed_gap = true;
                }
                feed.push((self.state.mvcc().current_revision(), applied.events));
            }
        }
        let Some((proposer, request_id, result)) = applied.answer else { return };
        if proposer != self.config.member_id {
            return;
        }
        let Some(pending) = self.proposals.remove(request_id) else { return };
        let header = self.header();
        let result = result.map(|mut response| {
            response.set_header(header);
            response
        });
        let _ = pending.responder.send(result);
    }

    fn serve_ready_reads(&mut self) {
        #[allow(unused_mut)]
        let mut servable_index = self.applied_index;
        #[cfg(madsim)]
        if self.planted(PlantedBug::ReadServedBeforeApplied) {
            servable_index = servable_index.max(self.raw.raft.raft_log.committed);
        }
        for read in self.reads.take_servable(servable_index) {
            self.serve_read(read);
        }
    }

    /// The log index a leader keeps from for followers being caught up from a snapshot:
    /// the one raft sent a follower until the follower answers (raft then sends what
    /// follows it), and, while a follower is behind the log, the fresh one being made
    /// for raft's next ask (`NodeStorage::fresh_index`) and the file being loaded for it
    /// (`NodeStorage::snapshot_kept_for_index`). Without them a stretched interval's
    /// compaction could pass a fresh snapshot while the worker made it — refused on
    /// arrival, made again, for as long as writes go on faster than a snapshot of the
    /// store is made — and the compaction at each new snapshot could pass the file
    /// being loaded (canary-slow-snapshots seed 197: loads slower than the snapshots
    /// came, a follower behind for as long as the writes went on). Bounded: a pin
    /// further behind what is applied than an unstretched interval and its catch-up
    /// entries (at least [`LOG_KEPT_FOR_SNAPSHOT_ENTRIES_MIN`]) is let go, so a follower
    /// that fell behind and died holds no more of the log than that.
    fn log_kept_from(&self) -> Option<u64> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        let interval_entries = self.config.snapshot_count.saturating_mul(self.config.tunables.snapshot_interval_stretch_max.max(1));
        let kept_entries_max = interval_entries.saturating_add(self.config.snapshot_catchup_entries).max(LOG_KEPT_FOR_SNAPSHOT_ENTRIES_MIN);
        let oldest_kept = self.applied_index.saturating_sub(kept_entries_max);
        let first_index = self.raw.raft.raft_log.first_index();
        let mut follower_behind_log = false;
        let mut kept_from = u64::MAX;
        for (id, progress) in self.raw.raft.prs().iter() {
            if *id == self.config.member_id {
                continue;
            }
            follower_behind_log |= progress.matched.saturating_add(1) < first_index;
            match progress.state {
                raft::ProgressState::Snapshot => kept_from = kept_from.min(progress.pending_snapshot),
                // Sent a snapshot, not yet answered: once the transport reports it sent,
                // raft probes from the snapshot's index + 1 (its matched index is
                // older), while the follower may still be installing it.
                raft::ProgressState::Probe if progress.next_idx > progress.matched.saturating_add(1) && progress.next_idx > first_index => {
                    kept_from = kept_from.min(progress.next_idx - 1);
                }
                _ => {}
            }
        }
        #[allow(unused_mut)]
        let mut fresh_index = self.storage.fresh_index();
        #[cfg(madsim)]
        if self.config.planted_bug == Some(PlantedBug::FreshSnapshotUnpinned) {
            fresh_index = None;
        }
        if follower_behind_log {
            for index in [fresh_index, self.storage.snapshot_kept_for_index()].into_iter().flatten() {
                kept_from = kept_from.min(index);
            }
        }
        Some(kept_from).filter(|index| *index != u64::MAX && *index >= oldest_kept)
    }

    /// Finishes an own snapshot whose job is done, then starts the next one if due: a
    /// frozen copy of the state goes to the env's worker, which encodes and writes it
    /// while this loop goes on (see `snapshotter`).
    fn maybe_snapshot(&mut self) -> Result<(), FatalError> {
        // A stretched snapshot interval (`Snapshotter::is_due`) does not hold more of the
        // log in memory: it keeps an interval and the catch-up entries behind what is
        // applied, snapshot or not (a follower behind that gets a fresh snapshot). A
        // million keys loaded into one member peaked 56 MiB higher without it.
        if self.config.tunables.snapshot_interval_stretch_max > 1 {
            let kept_entries = self.config.snapshot_count.saturating_add(self.config.snapshot_catchup_entries);
            self.storage.compact_towards(self.applied_index.saturating_sub(kept_entries));
        }
        self.storage.compact_step(LOG_COMPACT_ENTRIES_PER_TURN_MAX, self.log_kept_from())?;
        self.state.compact_step(self.config.compaction_keys_per_turn_max);
        #[cfg(madsim)]
        if let Some(mut job) = self.late_snapshot_job.take() {
            job.read_live_state_for_planted_bug(&self.state);
            return self.run_snapshot_job(job);
        }
        self.finish_snapshot_if_saved()?;
        // A member added since the latest snapshot needs one that has it (see
        // `NodeStorage::snapshot`): made in memory on the worker, not as a file.
        if self.storage.take_fresh_snapshot_wanted() {
            let term = self.storage.entry_term(self.applied_index)?;
            let mut metadata = raft::eraftpb::SnapshotMetadata::default();
            metadata.index = self.applied_index;
            metadata.term = term;
            metadata.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
            self.storage.note_fresh_index(self.applied_index);
            let (state, storage) = (self.state.clone(), self.storage.clone());
            self.env.worker.run(Box::new(move || {
                let mut snapshot = raft::eraftpb::Snapshot::default();
                snapshot.set_metadata(metadata);
                snapshot.data = state.encode().into();
                storage.set_fresh(snapshot);
            }));
        }
        if !self.snapshotter.is_due(self.applied_index, self.state.mvcc().approximate_bytes()) {
            return Ok(());
        }
        let term = self.storage.entry_term(self.applied_index)?;
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        #[allow(unused_mut)]
        let mut job = self.snapshotter.begin_own(self.applied_index, term, conf_state, &self.state);
        let stretched = self.snapshotter.take_stretched();
        self.observe(NodeEvent::SnapshotBegun { index: self.applied_index, stretched });
        #[cfg(madsim)]
        if self.planted(PlantedBug::SnapshotNotFrozen) {
            // Held back until a later turn has applied more, then read from the live state.
            self.late_snapshot_job = Some(job);
            return Ok(());
        }
        self.run_snapshot_job(job)
    }

    /// Hands the WAL the spare segment a worker job prepared, and starts the next one when
    /// the WAL wants it (see `storage::wal`): the next cut then renames a file instead of
    /// creating and filling one on this loop.
    fn tend_spare_segment(&mut self) {
        if let Ok(prepared) = self.spares_prepared.1.try_recv() {
            // A failure is not fatal here: the next cut creates its segment on this loop
            // and meets the disk's error itself (no room; a disk poisoned by a failed
            // sync refuses the WAL's own writes).
            self.wal.spare_prepared(prepared);
        }
        if let Some(job) = self.wal.spare_wanted() {
            let done = self.spares_prepared.0.clone();
            self.env.worker.run(Box::new(move || {
                // The member may have stopped meanwhile; then nobody waits for the result.
                let _ = done.send(job.run());
            }));
        }
    }

    fn run_snapshot_job(&mut self, job: snapshotter::SnapshotJob) -> Result<(), FatalError> {
        let done = self.snapshots_saved.0.clone();
        self.env.worker.run(Box::new(move || {
            // The member may have stopped meanwhile; then nobody waits for the result.
            let _ = done.send(job.run());
        }));
        // A worker that ran the job at once (tests) is answered in the same turn.
        self.finish_snapshot_if_saved()
    }

    /// Completes an own snapshot whose job reported back (and removes the files it made
    /// useless, on the worker); a removal that failed earlier stops the member now.
    fn finish_snapshot_if_saved(&mut self) -> Result<(), FatalError> {
        if let Ok(error) = self.removals_failed.1.try_recv() {
            return Err(error.into());
        }
        let Ok(saved) = self.snapshots_saved.1.try_recv() else { return Ok(()) };
        let removals = self.snapshotter.finish_own(saved, &self.storage, &mut self.wal)?;
        if !removals.is_empty() {
            let failed = self.removals_failed.0.clone();
            self.env.worker.run(Box::new(move || {
                if let Err(error) = removals.run() {
                    let _ = failed.send(error);
                }
            }));
        }
        Ok(())
    }

    /// A summary of the member's state. Cheap: no walk over the store.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            member_id: self.config.member_id,
            cluster_id: self.config.cluster_id,
            term: self.raw.raft.term,
            role: role_of(self.raw.raft.state),
            leader_id: self.raw.raft.leader_id,
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.applied_index,
            revision: self.state.mvcc().current_revision(),
            compact_revision: self.state.mvcc().compact_revision(),
            db_size_bytes: self.db_size_high_water_bytes.max(self.state.mvcc().approximate_bytes()),
            db_size_in_use_bytes: self.state.mvcc().approximate_bytes(),
            fsyncs: self.fsyncs,
            entries_persisted: self.entries_persisted,
            peer_messages_refused: self.peer_messages_refused,
            peer_reads_refused: self.peer_reads_refused,
            invalid_entries_applied: self.invalid_entries_applied,
            alarms: self.state.alarms().iter().map(|a| (a.member_id, a.alarm)).collect(),
            leader_changes_seen: self.leader_changes_seen,
            proposals_pending: self.proposals.len() as u64,
            proposals_failed: self.proposals.failed_total(),
            live_keys: self.state.mvcc().live_keys(),
            is_learner: self.raw.raft.prs().conf().learners().contains(&self.config.member_id),
            loop_turn_longest_ms: self.loop_turn_longest_ms,
            loop_turn_longest_without_sync_ms: self.loop_turn_longest_without_sync_ms,
        }
    }

    /// Walks the whole store: for HashKV and convergence checks, never for status.
    /// etcd's HashKV: the digest of the key space up to `revision` (0: current), with the
    /// The simulator's memory-corruption fault (simulator builds only).
    #[cfg(madsim)]
    pub fn corrupt_memory_for_simulation(&mut self, prefix: &[u8]) -> Option<Vec<u8>> {
        self.state.corrupt_memory_for_simulation(prefix)
    }

    /// A frozen copy of this member's applied state for a client snapshot
    /// (`Maintenance.Snapshot`), with its revision: cheap (copy-on-write), so the caller
    /// encodes it away from the loop (`storage::client_snapshot::encode`).
    pub fn client_snapshot_state(&self) -> (i64, StateMachine) {
        let revision = self.state.mvcc().current_revision();
        #[cfg(madsim)]
        if self.planted(PlantedBug::SnapshotSkipsLeasedKeys) {
            return (revision, self.state.with_leased_keys_deleted());
        }
        (revision, self.state.clone())
    }

    /// etcd's HashKV, in two halves: this checks the revision (etcd's errors for a
    /// compacted or future one; 0 is the current revision) and hands out a frozen copy
    /// of the store to hash away from the loop with [`HashKvJob::run`]. Served from this
    /// member's state (as etcd's: not linearizable).
    pub fn hash_kv_job(&self, revision: i64) -> Result<HashKvJob, EtcdError> {
        let mvcc = self.state.mvcc();
        let revision = if revision <= 0 { mvcc.current_revision() } else { revision };
        if revision > mvcc.current_revision() {
            return Err(EtcdError::FutureRevision);
        }
        if revision < mvcc.compact_revision() {
            return Err(EtcdError::Compacted);
        }
        Ok(HashKvJob { revision, store: mvcc.clone() })
    }

    /// A digest of the whole replicated state at the current revision — keys with their
    /// history and leases — for convergence checks.
    pub fn state_digest(&self) -> (i64, u64) {
        let mvcc = self.state.mvcc();
        let revision = mvcc.current_revision();
        (revision, (u64::from(mvcc.hash_kv(revision)) << 32) | u64::from(mvcc.leases().hash()))
    }

    /// etcd's Defragment on this member: gives memory back after compaction and resets
    /// DB SIZE to what is in use. Local, not replicated (as etcd's).
    pub fn defragment(&mut self) {
        self.state.defragment();
        self.db_size_high_water_bytes = self.state.mvcc().approximate_bytes();
    }

    /// etcd's MoveLeader: this member (the leader) hands leadership to `target`, a voter;
    /// `answer` gets `Ok` once this member sees `target` lead, or etcd's errors: not the
    /// leader, a target that is not a voter, no transfer within the request timeout.
    /// raft-rs catches the target up first and stops taking proposals meanwhile.
    pub fn move_leader(&mut self, target: u64, answer: tokio::sync::oneshot::Sender<Result<(), EtcdError>>, now_ms: u64) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = answer.send(Err(EtcdError::NotLeader));
            return;
        }
        if !self.raw.raft.prs().conf().voters().contains(target) {
            let _ = answer.send(Err(EtcdError::BadLeaderTransferee));
            return;
        }
        if target == self.config.member_id {
            let _ = answer.send(Ok(()));
            return;
        }
        if self.leader_transfer.is_some() {
            let _ = answer.send(Err(EtcdError::TooManyRequests));
            return;
        }
        self.raw.transfer_leader(target);
        #[cfg(madsim)]
        if self.planted(PlantedBug::MoveLeaderAnswersAtOnce) {
            let _ = answer.send(Ok(()));
            return;
        }
        self.leader_transfer = Some((target, now_ms + self.config.request_timeout_ms, answer));
    }

    /// Answers a pending MoveLeader once its target leads, or when its time is up.
    fn check_leader_transfer(&mut self, now_ms: u64) {
        let Some((target, deadline_ms, _)) = &self.leader_transfer else { return };
        let (target, deadline_ms) = (*target, *deadline_ms);
        let result = if self.raw.raft.leader_id == target {
            Ok(())
        } else if now_ms >= deadline_ms {
            Err(EtcdError::LeaderTransferTimeout)
        } else {
            return;
        };
        if let Some((_, _, answer)) = self.leader_transfer.take() {
            let _ = answer.send(result);
        }
    }

    /// Makes this member start a real election now, skipping pre-vote (the simulator's
    /// split-vote fault: several members doing this at one instant split the vote).
    pub fn campaign(&mut self) {
        // Only a voter campaigns (a learner, a removed member or one that has not
        // received its configuration yet cannot lead; raft-rs would panic leading).
        if self.raw.raft.state != StateRole::Leader && self.raw.raft.promotable() {
            self.raw.raft.campaign(raft::CAMPAIGN_ELECTION);
        }
        self.override_election_timeout();
    }

    /// Starts keeping the change feed (see [`NodeCore::take_changes`]).
    pub fn enable_change_feed(&mut self) {
        self.change_feed.get_or_insert_with(Vec::new);
    }

    /// The changes applied since the last call, and whether revisions were skipped
    /// (a snapshot was installed, or the feed overflowed) so that consumers must catch
    /// up from the store's history.
    pub fn take_changes(&mut self) -> (Vec<(i64, Vec<Event>)>, bool) {
        let changes = self.change_feed.as_mut().map(std::mem::take).unwrap_or_default();
        (changes, std::mem::take(&mut self.change_feed_gap))
    }

    /// A response header for the current state (cluster, member, revision, term).
    pub fn current_header(&self) -> ResponseHeader {
        self.header()
    }

    /// Names of the WAL segments on disk, oldest first.
    pub fn wal_segments(&self) -> Vec<String> {
        self.wal.segment_names()
    }

    pub fn state(&self) -> &StateMachine {
        &self.state
    }
}

/// Whether a request is served as a read (never replicated).
/// Keys a range may return and still be served on the loop; beyond (or without a
/// limit, over more than one key) it is served on the worker.
pub const RANGE_ON_LOOP_KEYS_MAX: i64 = 1000;

fn is_large_range(range: &crate::pb::etcdserverpb::RangeRequest) -> bool {
    !range.range_end.is_empty() && (range.limit <= 0 || range.limit > RANGE_ON_LOOP_KEYS_MAX)
}

fn is_read(request: &Request) -> bool {
    match request {
        Request::Range(_) | Request::LeaseTimeToLive(_) | Request::LeaseLeases(_) => true,
        Request::Alarm(alarm) => alarm.action == crate::pb::etcdserverpb::alarm_request::AlarmAction::Get as i32,
        Request::Txn(txn) => validate::txn_is_read_only(txn),
        Request::Auth(_) => request.to_internal_op().is_none(),
        _ => false,
    }
}

/// Bytes a request holds while it waits, for the pending-bytes limit.
fn request_size_bytes(request: &Request) -> usize {
    match request {
        Request::Range(r) => r.encoded_len(),
        Request::Put(p) => p.encoded_len(),
        Request::DeleteRange(d) => d.encoded_len(),
        Request::Txn(t) => t.encoded_len(),
        Request::Compact(c) => c.encoded_len(),
        Request::LeaseGrant(g) => g.encoded_len(),
        Request::LeaseRevoke(r) => r.encoded_len(),
        Request::LeaseKeepAlive(k) => k.encoded_len(),
        Request::LeaseTimeToLive(t) => t.encoded_len(),
        Request::LeaseLeases(l) => l.encoded_len(),
        Request::Alarm(a) => a.encoded_len(),
        Request::Member(_) => 64,
        Request::Auth(_) => 256,
    }
}
