//! How a member is configured: from flags in production, from the scenario in the
//! simulator. Identity, raft timing, limits.

#[cfg(madsim)]
use super::planted::PlantedBug;

/// Committed entries kept in memory behind a snapshot so slow followers catch up from
/// the log instead of needing a whole snapshot (etcd keeps 5000).
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
/// etcd's `--max-request-bytes` default (1.5 MiB).
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 1536 * 1024;
/// etcd's default space quota (2 GiB).
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// Default for [`NodeConfig::pending_request_bytes_max`].
pub const PENDING_REQUEST_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Default for [`NodeConfig::uncommitted_bytes_max`].
pub const UNCOMMITTED_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Default for [`Tunables::raft_append_bytes_max`] (etcd's `maxSizePerMsg`).
pub const RAFT_APPEND_BYTES_MAX: u64 = 1024 * 1024;
/// Default for [`Tunables::raft_committed_bytes_per_ready_max`]: etcd's rule, one
/// append's worth (etcd-raft's `MaxCommittedSizePerReady` defaults to `MaxSizePerMsg`),
/// so that a member with a long committed backlog (a restart, a catch-up) applies it
/// over several loop turns instead of stalling one turn for all of it.
pub const RAFT_COMMITTED_BYTES_PER_READY_MAX: u64 = RAFT_APPEND_BYTES_MAX;
/// See `Tunables::snapshot_interval_stretch_max`: twice `--snapshot-count` at most (the
/// WAL then holds, and a restart replays, up to ~200k entries at etcd's default 100k).
pub const SNAPSHOT_INTERVAL_STRETCH_MAX: u64 = 2;
/// Default for [`Tunables::raft_inflight_appends_max`].
pub const RAFT_INFLIGHT_APPENDS_MAX: usize = 256;
/// Default for [`Tunables::loop_peer_messages_per_turn_max`].
pub const LOOP_PEER_MESSAGES_PER_TURN_MAX: usize = 512;
/// Default for [`Tunables::loop_commands_per_turn_max`] (a bigger batch means fewer
/// fsyncs per entry).
pub const LOOP_COMMANDS_PER_TURN_MAX: usize = 1024;

/// How a member is configured (from flags in production, from the scenario in the
/// simulator).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Member ids of the cluster's first voters (used only when the data dir is new).
    pub initial_voters: Vec<u64>,
    /// This member's name and URLs, which it publishes through raft once it started
    /// (what MemberList shows), and the first members' peer URLs (`--initial-cluster`),
    /// shown for a member that has not published yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub initial_peer_urls: std::collections::BTreeMap<u64, Vec<String>>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    /// `--max-wals`, accepted as etcd's; a member never keeps more WAL than its kept
    /// snapshots need (see `snapshotter`), which is fewer segments than etcd keeps.
    pub max_wals: usize,
    /// `--max-snapshots`; at most `snapshotter::SNAPSHOT_FILES_KEPT_MAX` are kept.
    pub max_snapshots: usize,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How long a client request may wait for commit or read index before timing out.
    pub request_timeout_ms: u64,
    /// Bytes of client requests waiting for commit or read index at once; beyond it new
    /// ones are refused with "too many requests".
    pub pending_request_bytes_max: usize,
    /// Bytes of proposed but uncommitted entries the leader accepts (raft's
    /// `max_uncommitted_size`); beyond it proposals are dropped.
    pub uncommitted_bytes_max: u64,
    pub wal_segment_bytes_max: u64,
    /// How often watchers that asked for progress notifications get one
    /// (`--experimental-watch-progress-notify-interval`, etcd's default 10 minutes).
    pub watch_progress_notify_interval_ms: u64,
    /// `--auto-compaction-mode` / `--auto-compaction-retention` (off by default).
    pub auto_compaction: super::auto_compaction::AutoCompaction,
    /// `--quota-backend-bytes`: DB SIZE beyond which writes that add data are refused
    /// and the NOSPACE alarm is raised (etcd's default 2 GiB).
    pub quota_backend_bytes: u64,
    /// Whether the leader checkpoints remaining lease TTLs through raft
    /// (`--experimental-enable-lease-checkpoint`), and how often
    /// (`--experimental-lease-checkpoint-interval`, etcd's default 5 minutes).
    pub lease_checkpoint_enabled: bool,
    pub lease_checkpoint_interval_ms: u64,
    /// How often the leader runs the corruption check (`--experimental-corrupt-check-time`;
    /// 0: never): every member hashes its key space at one revision and reports the hash
    /// through raft; a member whose hash differs gets a CORRUPT alarm.
    pub corrupt_check_interval_ms: u64,
    /// Applied entries kept in memory behind a snapshot for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Keys whose compacted records are removed per loop turn (see `mvcc::compaction`).
    pub compaction_keys_per_turn_max: usize,
    /// Refuse a membership change that would leave fewer started voters than a quorum
    /// (`--strict-reconfig-check`, etcd's default true).
    pub strict_reconfig_check: bool,
    /// raft's pre-vote (`--pre-vote`): a partitioned member that rejoins does not
    /// disturb the leader with a higher term. On by default (etcd 3.5's default).
    pub pre_vote: bool,
    /// Limits no flag sets (see [`Tunables`]).
    pub tunables: Tunables,
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
            name: String::new(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            initial_peer_urls: std::collections::BTreeMap::new(),
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 100_000,
            max_wals: 5,
            max_snapshots: 5,
            max_request_bytes: MAX_REQUEST_BYTES_DEFAULT,
            max_txn_ops: 128,
            request_timeout_ms: 7000,
            pending_request_bytes_max: PENDING_REQUEST_BYTES_MAX,
            uncommitted_bytes_max: UNCOMMITTED_BYTES_MAX,
            wal_segment_bytes_max: crate::storage::wal::WAL_SEGMENT_BYTES_MAX,
            snapshot_catchup_entries: SNAPSHOT_CATCHUP_ENTRIES,
            compaction_keys_per_turn_max: super::COMPACTION_KEYS_PER_TURN_MAX,
            watch_progress_notify_interval_ms: 10 * 60 * 1000,
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            auto_compaction: super::auto_compaction::AutoCompaction::Off,
            lease_checkpoint_enabled: false,
            lease_checkpoint_interval_ms: 5 * 60 * 1000,
            corrupt_check_interval_ms: 0,
            strict_reconfig_check: true,
            pre_vote: true,
            tunables: Tunables::default(),
            #[cfg(madsim)]
            planted_bug: None,
        }
    }

    /// The watch hub's limits; responses are fragmented (for watchers that ask) beyond
    /// `watch_fragment_bytes_max`, or `max_request_bytes` when that is 0.
    pub fn watch_limits(&self) -> crate::watch::WatchLimits {
        let tunables = &self.tunables;
        crate::watch::WatchLimits {
            fragment_bytes_max: if tunables.watch_fragment_bytes_max == 0 { self.max_request_bytes } else { tunables.watch_fragment_bytes_max },
            history_events_per_response_max: tunables.watch_history_events_per_response_max,
            sync_watchers_per_turn_max: tunables.watch_sync_watchers_per_turn_max,
        }
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds rounded up
    /// (`(3 * election ticks / 2) * heartbeat`).
    pub fn lease_ttl_secs_min(&self) -> i64 {
        let ms = (3 * self.election_tick() as u64 / 2) * self.heartbeat_interval_ms;
        ms.div_ceil(1000).max(1) as i64
    }

    pub fn election_tick(&self) -> usize {
        (self.election_timeout_ms / self.heartbeat_interval_ms.max(1)).max(2) as usize
    }
}

/// Limits no flag sets: production runs the defaults; the simulator draws each member's
/// own from the seed (its `MemberKnobs`), so that paths the defaults reach only in big
/// clusters (a catch-up split over many appends, flow control, full loop turns,
/// fragmented watch responses, catch-ups over many batches) run in every sweep, and
/// members that differ in them must still agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunables {
    /// Bytes of entries in one append message (raft's `max_size_per_msg`).
    pub raft_append_bytes_max: u64,
    /// Append messages in flight to one follower before the leader waits for an
    /// answer (raft's `max_inflight_msgs`).
    pub raft_inflight_appends_max: usize,
    /// Peer messages taken from the inbox per loop turn, before raft's Ready is handled.
    pub loop_peer_messages_per_turn_max: usize,
    /// Client commands taken per loop turn.
    pub loop_commands_per_turn_max: usize,
    /// Encoded bytes above which a watcher that asked for fragments gets a response in
    /// pieces; 0: `max_request_bytes`, etcd's rule.
    pub watch_fragment_bytes_max: usize,
    /// Events in one watch catch-up response.
    pub watch_history_events_per_response_max: usize,
    /// Watchers behind the store caught up by one batch each per loop turn.
    pub watch_sync_watchers_per_turn_max: usize,
    /// Bytes of committed entries raft hands out for applying in one Ready (raft's
    /// `max_committed_size_per_ready`; at least one entry): drawn small in the simulator,
    /// the applied index trails the commit index over many loop turns.
    #[serde(default = "raft_committed_bytes_per_ready_max_default")]
    pub raft_committed_bytes_per_ready_max: u64,
    /// A follower forwards its clients' keep-alives to the leader beside raft (etcd's
    /// way; see `consensus::keep_alive_forward`) instead of proposing each renewal
    /// through raft. Off: every follower renewal is a log entry (the simulator draws it
    /// off on some members, so that raft renewals racing the leader's expiry decisions
    /// stay tested).
    #[serde(default = "forward_keep_alives_default")]
    pub forward_keep_alives: bool,
    /// How many times `snapshot_count` entries may pass between snapshots when the store
    /// is far larger than what changed (see `Snapshotter::is_due`); 1: never stretched
    /// (the simulator's fixed setting, as every seed ran before it; drawn 1-4).
    #[serde(default = "snapshot_interval_stretch_max_default")]
    pub snapshot_interval_stretch_max: u64,
}

fn snapshot_interval_stretch_max_default() -> u64 {
    SNAPSHOT_INTERVAL_STRETCH_MAX
}

fn forward_keep_alives_default() -> bool {
    true
}

fn raft_committed_bytes_per_ready_max_default() -> u64 {
    RAFT_COMMITTED_BYTES_PER_READY_MAX
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            raft_append_bytes_max: RAFT_APPEND_BYTES_MAX,
            raft_inflight_appends_max: RAFT_INFLIGHT_APPENDS_MAX,
            loop_peer_messages_per_turn_max: LOOP_PEER_MESSAGES_PER_TURN_MAX,
            loop_commands_per_turn_max: LOOP_COMMANDS_PER_TURN_MAX,
            watch_fragment_bytes_max: 0,
            watch_history_events_per_response_max: crate::watch::WATCH_HISTORY_EVENTS_PER_RESPONSE_MAX,
            watch_sync_watchers_per_turn_max: crate::watch::WATCH_SYNC_WATCHERS_PER_TURN_MAX,
            raft_committed_bytes_per_ready_max: RAFT_COMMITTED_BYTES_PER_READY_MAX,
            forward_keep_alives: true,
            snapshot_interval_stretch_max: SNAPSHOT_INTERVAL_STRETCH_MAX,
        }
    }
}
