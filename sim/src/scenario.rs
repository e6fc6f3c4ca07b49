//! Scenario files (TOML) and the options one seed derives from them.
//!
//! A scenario fixes the shape of a run: cluster size, how long the chaos phase lasts,
//! the workload mix, and faults — a scripted timeline, a swarm (fault kinds the seed
//! enables and rates it draws), or both. [`Options::derive`] turns (scenario, seed) into
//! every concrete option of the run; the run prints them all, like VOPR, so a failing
//! seed can be understood without rerunning it.

use detcd_node::consensus::config::Tunables;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A scenario as written in `scenarios/*.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_members")]
    pub members: usize,
    /// Slots for members an operator may add during the run (`add_member`): the
    /// cluster can grow to `members + spare_members`.
    #[serde(default)]
    pub spare_members: usize,
    /// Length of the chaos phase in simulated milliseconds.
    pub duration_ms: u64,
    /// After the chaos phase every fault is healed; the cluster must converge within this.
    #[serde(default = "default_liveness_bound_ms")]
    pub liveness_bound_ms: u64,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub expect: Expectations,
    /// Node settings for the simulated members.
    #[serde(default)]
    pub node: NodeSettings,
    /// Options used as they are instead of being drawn from the seed (a shrunk run
    /// keeps the options of the run it came from; see `detcd-sim shrink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_options: Option<Options>,
}

fn default_members() -> usize {
    3
}

fn default_liveness_bound_ms() -> u64 {
    20_000
}

/// What the clients do.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub clients: usize,
    pub keys: usize,
    /// Relative weights of the operation kinds.
    pub put: u32,
    pub get: u32,
    pub serializable_get: u32,
    pub delete: u32,
    pub cas: u32,
    /// Linearizable reads of every workload key at once.
    pub range: u32,
    /// Client think time between operations, drawn uniformly from [0, think_ms_max].
    pub think_ms_max: u64,
    /// How long a client waits for an answer before recording the outcome unknown.
    pub client_timeout_ms: u64,
    /// Probability that a client↔member request or its answer is lost in transit.
    pub client_link_loss: f64,
    /// Times a client retries a write that failed as unavailable (no leader, leader
    /// changed, timed out, member down), on another member, as etcd clients do.
    pub write_retries_max: u32,
    /// Watch clients: each keeps watches open on random members (prefix or one key,
    /// from now or from revision 1, some with prev_kv or a filter), moves them to
    /// another member now and then or when a stream breaks, resuming from the revision
    /// after the last one it was given, and asks for progress.
    pub watch_clients: usize,
    /// Every this many simulated ms a client compacts history (0: never), keeping the
    /// last `compact_retain_revisions`, so that some watches resume into compacted
    /// revisions.
    pub compact_interval_ms: u64,
    pub compact_retain_revisions: i64,
    /// Lease clients: each grants short leases (2–4 s TTL), attaches keys, and then keeps
    /// a lease alive for a while, revokes it, or abandons it; and asks TimeToLive.
    pub lease_clients: usize,
    /// Whether a lease client about to abandon a lease renews it once more at about the
    /// moment it runs out (within `LATE_KEEP_ALIVE_MS_MAX` before): the renewal then
    /// races the leader's expiry decision (off by default: the draw would change every
    /// lease scenario's seeds).
    pub late_keep_alives: bool,
    /// Every this many simulated ms an operator checks for the NOSPACE alarm and, if it
    /// is raised, compacts to the current revision, defragments every member and disarms
    /// (0: never).
    pub maintenance_interval_ms: u64,
    /// Every this many simulated ms (±50%) a backup client saves a client snapshot
    /// (`Maintenance.Snapshot`) from a random member (0: never).
    pub backup_interval_ms: u64,
    /// Lock clients: each takes the lock `lock` with a short lease through etcd's lock
    /// recipe, holds it, then unlocks, revokes or abandons it.
    pub lock_clients: usize,
    /// Auth clients (0: auth stays disabled): an operator enables auth and alternates
    /// revoking and granting a user's write permission while this many clients of that
    /// user write (`auth_workload`); every other client sends root's token.
    pub auth_clients: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 4,
            keys: 4,
            put: 35,
            get: 30,
            serializable_get: 10,
            delete: 5,
            cas: 20,
            range: 5,
            think_ms_max: 50,
            client_timeout_ms: 3000,
            client_link_loss: 0.0,
            write_retries_max: 2,
            watch_clients: 2,
            compact_interval_ms: 5000,
            compact_retain_revisions: 50,
            lease_clients: 1,
            late_keep_alives: false,
            maintenance_interval_ms: 0,
            backup_interval_ms: 5000,
            lock_clients: 2,
            auth_clients: 0,
        }
    }
}

/// Member settings for a scenario (small defaults so that snapshots and WAL release
/// happen within a short run).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub wal_segment_bytes_max: u64,
    pub request_timeout_ms: u64,
    /// `--quota-backend-bytes` (0: etcd's default, 2 GiB).
    pub quota_backend_bytes: u64,
    /// Node auto-compaction in revision mode: keep this many revisions (0: off), checked
    /// every `auto_compaction_interval_ms` by the leader.
    pub auto_compaction_retain_revisions: i64,
    pub auto_compaction_interval_ms: u64,
    /// `--max-wals` (accepted as etcd's; members keep only the WAL segments their kept
    /// snapshot files need, see the node's `snapshotter`).
    pub max_wals: usize,
    /// `--experimental-corrupt-check-time` in ms (0: off).
    pub corrupt_check_interval_ms: u64,
    /// Whether each seed draws every member's own tunables ([`MemberKnobs`]) around
    /// these settings (on by default); off, every member runs these settings and the
    /// node's defaults.
    pub randomize_knobs: bool,
    /// Whether each seed also draws the cluster's heartbeat interval and election
    /// timeout ([`ClusterTiming::draw`]; on by default, and only with `randomize_knobs`):
    /// a scenario written for one timing (the election canaries) turns it off.
    pub randomize_timing: bool,
    /// Whether followers may forward keep-alives to the leader (the node's default; with
    /// `randomize_knobs`, each member draws it, off about a third of the time). Off,
    /// every follower renews through raft: each renewal then races the leader's expiry
    /// decisions, which the lease canary needs often, not in a third of the members.
    pub forward_keep_alives: bool,
    /// The shortest simulated time a member's background job (making a snapshot, loading
    /// one to send, hashing a frozen store) waits before it runs: a slow disk or a large
    /// store. 0 (the
    /// default) keeps the worker's draw of 0..=`JOB_DELAY_MS_MAX`; above, the draw is
    /// this much later (`SimWorker`).
    pub worker_job_delay_ms_min: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 200,
            snapshot_catchup_entries: 50,
            wal_segment_bytes_max: 16 * 1024,
            request_timeout_ms: 3000,
            quota_backend_bytes: 0,
            auto_compaction_retain_revisions: 0,
            auto_compaction_interval_ms: 3000,
            max_wals: 3,
            corrupt_check_interval_ms: 0,
            randomize_knobs: true,
            randomize_timing: true,
            forward_keep_alives: true,
            worker_job_delay_ms_min: 0,
        }
    }
}

/// The cluster's heartbeat interval and election timeout (`--heartbeat-interval`,
/// `--election-timeout`), the same on every member as etcd's tuning guide asks. Unless it
/// keeps the scenario's, a seed draws them from what operators run — from 25 ms / 125 ms
/// on a LAN to 250 ms / 2.5 s across regions — so that elections, leader leases, lease
/// extensions on a new leader, pre-vote and check-quorum run at timings the scenarios
/// never wrote down. The checkers' bounds written for the scenario's timing grow with
/// [`Options::election_slowdown_ms`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterTiming {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
}

/// The range a drawn heartbeat interval comes from (log-uniform; never below twice the
/// seed's longest message delay, or no heartbeat would arrive in time).
pub const DRAWN_HEARTBEAT_INTERVAL_MS_MIN: u64 = 25;
pub const DRAWN_HEARTBEAT_INTERVAL_MS_MAX: u64 = 250;
/// Election timeouts are a whole number of heartbeats (raft ticks), 5 to 15 of them
/// (etcd's guide: at least 5; its default 10) ...
pub const DRAWN_ELECTION_HEARTBEATS_MIN: u64 = 5;
pub const DRAWN_ELECTION_HEARTBEATS_MAX: u64 = 15;
/// ... and at most 2.5 s, so that etcd's minimum lease TTL (1.5 election timeouts)
/// stays within the lease workload's TTLs.
pub const DRAWN_ELECTION_TIMEOUT_MS_MAX: u64 = 2500;

impl ClusterTiming {
    /// The scenario's own timing.
    pub fn of(settings: &NodeSettings) -> ClusterTiming {
        ClusterTiming { heartbeat_interval_ms: settings.heartbeat_interval_ms, election_timeout_ms: settings.election_timeout_ms }
    }

    /// The timing of `seed` (a stream of its own: drawing it changes no other option),
    /// or the scenario's when it fixes its timing or the seed keeps it.
    fn draw(scenario: &Scenario, seed: u64, message_delay_ms_max: u64) -> ClusterTiming {
        let fixed = ClusterTiming::of(&scenario.node);
        if !scenario.node.randomize_knobs || !scenario.node.randomize_timing {
            return fixed;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7469_6d69_6e67_7321);
        if rng.gen_bool(KNOB_KEPT_FIXED_PROBABILITY) {
            return fixed;
        }
        let low = DRAWN_HEARTBEAT_INTERVAL_MS_MIN.max(2 * message_delay_ms_max);
        let high = DRAWN_HEARTBEAT_INTERVAL_MS_MAX.max(low);
        let exponent = rng.gen_range((low as f64).ln()..=(high as f64).ln());
        let heartbeat_interval_ms = (exponent.exp().round() as u64).clamp(low, high);
        let heartbeats_max = (DRAWN_ELECTION_TIMEOUT_MS_MAX / heartbeat_interval_ms).clamp(DRAWN_ELECTION_HEARTBEATS_MIN, DRAWN_ELECTION_HEARTBEATS_MAX);
        let heartbeats = rng.gen_range(DRAWN_ELECTION_HEARTBEATS_MIN..=heartbeats_max);
        ClusterTiming { heartbeat_interval_ms, election_timeout_ms: heartbeat_interval_ms * heartbeats }
    }
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming::of(&NodeSettings::default())
    }
}

/// One member's tunables as a seed drew them — the knob randomization of FoundationDB's
/// simulator and TigerBeetle's VOPR: limits production leaves at defaults sized for big
/// clusters, which the simulator's small runs would never reach. Drawn per member, so
/// that every sweep runs catch-ups split over many appends, replication flow control,
/// loop turns that leave work for the next, snapshots and WAL segment cuts at odd
/// points, compaction removal over many turns and fragmented watch responses — and
/// members that differ in all of them must still agree on everything they answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberKnobs {
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub wal_segment_bytes_max: u64,
    pub compaction_keys_per_turn_max: usize,
    /// Bytes of client requests waiting at once before "too many requests".
    pub pending_request_bytes_max: usize,
    /// Bytes of uncommitted entries the leader takes before raft drops proposals.
    pub uncommitted_bytes_max: u64,
    /// The member's limits no flag sets (raft appends, loop turns, watch responses).
    pub tunables: Tunables,
    /// raft's pre-vote (`--pre-vote`): off on some members, as in a cluster upgraded
    /// member by member from etcd 3.4 (off by default there) to 3.5 (on).
    #[serde(default = "pre_vote_on")]
    pub pre_vote: bool,
    /// How long a client request may wait for commit or a read index before "request
    /// timed out" (production derives it from the election timeout).
    #[serde(default = "request_timeout_ms_default")]
    pub request_timeout_ms: u64,
    /// `--max-request-bytes`: larger requests are refused ("request is too large"); with
    /// the default fragment rule, also the size of a watch response's fragments.
    #[serde(default = "max_request_bytes_default")]
    pub max_request_bytes: usize,
}

fn pre_vote_on() -> bool {
    true
}

fn request_timeout_ms_default() -> u64 {
    NodeSettings::default().request_timeout_ms
}

fn max_request_bytes_default() -> usize {
    MAX_REQUEST_BYTES_DEFAULT
}

/// What a member runs when its request limit is not drawn: etcd's default.
pub use detcd_node::consensus::config::MAX_REQUEST_BYTES_DEFAULT;
/// The smallest drawn `--max-request-bytes`: every request of the workloads but a large
/// value fits (leases, locks, members, compactions are a few hundred bytes at most).
pub const DRAWN_MAX_REQUEST_BYTES_MIN: u64 = 1024;
/// Drawn request timeouts: from a quarter of the scenario's (at least this) to twice it.
pub const DRAWN_REQUEST_TIMEOUT_MS_MIN: u64 = 500;

/// Chance that a member runs without pre-vote when knobs are drawn.
pub const PRE_VOTE_OFF_PROBABILITY: f64 = 0.25;
/// Chance that a member proposes its clients' keep-alives through raft instead of
/// forwarding them to the leader (the product's default), when knobs are drawn.
pub const KEEP_ALIVE_FORWARDING_OFF_PROBABILITY: f64 = 0.35;

/// Every member slot's tunables for `seed` (none when the scenario fixes them), from a
/// stream of their own: drawing them changes no other option of the seed.
fn draw_member_knobs(scenario: &Scenario, seed: u64) -> Vec<MemberKnobs> {
    if !scenario.node.randomize_knobs {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b6e_6f62_7321_2121);
    let mut knobs: Vec<MemberKnobs> = (0..scenario.members + scenario.spare_members).map(|_| MemberKnobs::draw(&scenario.node, &mut rng)).collect();
    // Knobs added since are drawn from a stream of their own, so that every seed keeps
    // the draws above (and the seeds of sim/regressions.toml found with them).
    let mut later_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b6e_6f62_7332_2121);
    for member_knobs in &mut knobs {
        member_knobs.draw_later_knobs(&scenario.node, &mut later_rng);
    }
    let mut snapshot_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b6e_6f62_7333_2121);
    for member_knobs in &mut knobs {
        member_knobs.draw_snapshot_knobs(&mut snapshot_rng);
    }
    knobs
}

/// Chance that a seed's put and compare-and-set requests carry large values at all
/// (when knobs are drawn), and the share of them that do then.
pub const LARGE_VALUES_PROBABILITY: f64 = 0.5;
pub const LARGE_VALUE_PERCENT_MAX: u32 = 5;
/// A large value's size, drawn log-uniformly per request.
pub const LARGE_VALUE_BYTES_MIN: usize = 256;
pub const LARGE_VALUE_BYTES_MAX: usize = 16 * 1024;

/// The percentage of a seed's writes that carry a large value (0 when knobs are fixed):
/// values the size of what etcd users store (configs, certificates) next to the drawn
/// limits — a request over a member's `--max-request-bytes`, one entry larger than an
/// append's byte limit or a WAL segment, one watch event larger than a fragment.
fn draw_large_value_percent(scenario: &Scenario, seed: u64) -> u32 {
    if !scenario.node.randomize_knobs {
        return 0;
    }
    // Under a space quota the keys could fill with large values alone, the live data
    // would stay over the quota after compaction and defragmentation — no runbook frees
    // it (etcd's neither: an operator deletes keys), and no write could commit after
    // healing (simulator seed 5587 of nospace).
    let quota_bytes = scenario.node.quota_backend_bytes;
    if quota_bytes > 0 && 2 * (scenario.workload.keys * LARGE_VALUE_BYTES_MAX) as u64 > quota_bytes {
        return 0;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c61_7267_6521_2121);
    if !rng.gen_bool(LARGE_VALUES_PROBABILITY) {
        return 0;
    }
    rng.gen_range(1..=LARGE_VALUE_PERCENT_MAX)
}

/// Elections the liveness bound allows for beyond its scenario's timing (a split vote,
/// a pre-vote round, a leader that loses its quorum again while a fault heals).
pub const LIVENESS_BOUND_ELECTIONS: u64 = 6;

/// Compacted records removed per loop turn when knobs are not drawn: removal spans
/// turns in the simulator's small key spaces, as it does in a big store.
pub const FIXED_COMPACTION_KEYS_PER_TURN: usize = 2;
/// Chance that a member keeps a knob's fixed value (the scenario's setting or the
/// node's default) instead of drawing one.
pub const KNOB_KEPT_FIXED_PROBABILITY: f64 = 0.25;

impl MemberKnobs {
    /// What every member runs when knobs are not drawn.
    pub fn fixed(settings: &NodeSettings) -> MemberKnobs {
        use detcd_node::consensus::config as node;
        MemberKnobs {
            snapshot_count: settings.snapshot_count,
            snapshot_catchup_entries: settings.snapshot_catchup_entries,
            wal_segment_bytes_max: settings.wal_segment_bytes_max,
            compaction_keys_per_turn_max: FIXED_COMPACTION_KEYS_PER_TURN,
            pending_request_bytes_max: node::PENDING_REQUEST_BYTES_MAX,
            uncommitted_bytes_max: node::UNCOMMITTED_BYTES_MAX,
            tunables: Tunables { forward_keep_alives: settings.forward_keep_alives, snapshot_interval_stretch_max: 1, ..Tunables::default() },
            pre_vote: true,
            request_timeout_ms: settings.request_timeout_ms,
            max_request_bytes: MAX_REQUEST_BYTES_DEFAULT,
        }
    }

    /// One member's draw: each knob keeps its fixed value now and then, otherwise it is
    /// drawn log-uniformly from a range around it (a quarter to four times a scenario
    /// setting; from small to the default for the node's limits).
    pub fn draw(settings: &NodeSettings, rng: &mut ChaCha8Rng) -> MemberKnobs {
        let pick = pick_knob;
        let fixed = MemberKnobs::fixed(settings);
        let limits = fixed.tunables;
        let around = |value: u64, floor: u64| ((value / 4).max(floor), value.saturating_mul(4).max(floor));
        let (snapshots_low, snapshots_high) = around(fixed.snapshot_count, 10);
        let (segment_low, segment_high) = around(fixed.wal_segment_bytes_max, 1024);
        // Drawn in the order written (a struct literal evaluates its fields in order): a
        // new knob goes last, so that every seed keeps the draws it made before.
        let mut knobs = MemberKnobs {
            snapshot_count: pick(rng, fixed.snapshot_count, snapshots_low, snapshots_high),
            snapshot_catchup_entries: if rng.gen_bool(KNOB_KEPT_FIXED_PROBABILITY) {
                fixed.snapshot_catchup_entries
            } else {
                rng.gen_range(0..=fixed.snapshot_catchup_entries.saturating_mul(2))
            },
            wal_segment_bytes_max: pick(rng, fixed.wal_segment_bytes_max, segment_low, segment_high),
            compaction_keys_per_turn_max: pick(rng, fixed.compaction_keys_per_turn_max as u64, 1, 8) as usize,
            tunables: Tunables {
                raft_append_bytes_max: pick(rng, limits.raft_append_bytes_max, 1024, limits.raft_append_bytes_max),
                raft_inflight_appends_max: pick(rng, limits.raft_inflight_appends_max as u64, 4, limits.raft_inflight_appends_max as u64) as usize,
                loop_peer_messages_per_turn_max: pick(rng, limits.loop_peer_messages_per_turn_max as u64, 4, limits.loop_peer_messages_per_turn_max as u64) as usize,
                loop_commands_per_turn_max: pick(rng, limits.loop_commands_per_turn_max as u64, 4, limits.loop_commands_per_turn_max as u64) as usize,
                watch_fragment_bytes_max: pick(rng, 0, 64, 1024) as usize,
                watch_history_events_per_response_max: pick(rng, limits.watch_history_events_per_response_max as u64, 1, limits.watch_history_events_per_response_max as u64) as usize,
                watch_sync_watchers_per_turn_max: pick(rng, limits.watch_sync_watchers_per_turn_max as u64, 1, limits.watch_sync_watchers_per_turn_max as u64) as usize,
                // Drawn with the later knobs (`draw_later_knobs`).
                raft_committed_bytes_per_ready_max: limits.raft_committed_bytes_per_ready_max,
                forward_keep_alives: limits.forward_keep_alives,
                // Drawn from a stream of its own (`draw_snapshot_knobs`).
                snapshot_interval_stretch_max: limits.snapshot_interval_stretch_max,
            },
            pending_request_bytes_max: pick(rng, fixed.pending_request_bytes_max as u64, 4096, fixed.pending_request_bytes_max as u64) as usize,
            uncommitted_bytes_max: pick(rng, fixed.uncommitted_bytes_max, 4096, fixed.uncommitted_bytes_max),
            pre_vote: !rng.gen_bool(PRE_VOTE_OFF_PROBABILITY),
            request_timeout_ms: fixed.request_timeout_ms,
            max_request_bytes: fixed.max_request_bytes,
        };
        // raft refuses an uncommitted-bytes limit below the size of one append.
        knobs.uncommitted_bytes_max = knobs.uncommitted_bytes_max.max(knobs.tunables.raft_append_bytes_max);
        knobs
    }

    /// How far a member's snapshot interval may stretch (production's 2 now and then,
    /// else 1 to 4), from a third stream: the draws above stay as every seed made them.
    fn draw_snapshot_knobs(&mut self, rng: &mut ChaCha8Rng) {
        let production = detcd_node::consensus::config::SNAPSHOT_INTERVAL_STRETCH_MAX;
        self.tunables.snapshot_interval_stretch_max = pick_knob(rng, production, 1, 4);
    }

    /// The knobs added after the first draw (from their own stream): raft's committed
    /// bytes per Ready (the applied index trails the commit index over many turns), the
    /// request timeout (proposals and reads that time out on the member before the
    /// client gives up, then commit), `--max-request-bytes` and whether keep-alives are
    /// forwarded to the leader.
    fn draw_later_knobs(&mut self, settings: &NodeSettings, rng: &mut ChaCha8Rng) {
        let fixed = MemberKnobs::fixed(settings);
        let per_ready = fixed.tunables.raft_committed_bytes_per_ready_max;
        self.tunables.raft_committed_bytes_per_ready_max = pick_knob(rng, per_ready, 1, per_ready);
        let timeout_low = (fixed.request_timeout_ms / 4).max(DRAWN_REQUEST_TIMEOUT_MS_MIN);
        self.request_timeout_ms = pick_knob(rng, fixed.request_timeout_ms, timeout_low, fixed.request_timeout_ms * 2);
        self.max_request_bytes = pick_knob(rng, fixed.max_request_bytes as u64, DRAWN_MAX_REQUEST_BYTES_MIN, fixed.max_request_bytes as u64) as usize;
        // Drawn even when the scenario turns forwarding off, so every seed keeps its later draws.
        self.tunables.forward_keep_alives = !rng.gen_bool(KEEP_ALIVE_FORWARDING_OFF_PROBABILITY) && settings.forward_keep_alives;
    }
}

/// A knob's draw: its fixed value now and then, otherwise log-uniform in `low..=high`.
fn pick_knob(rng: &mut ChaCha8Rng, fixed_value: u64, low: u64, high: u64) -> u64 {
    if rng.gen_bool(KNOB_KEPT_FIXED_PROBABILITY) {
        return fixed_value;
    }
    let (low, high) = (low.max(1), high.max(low.max(1)));
    let exponent = rng.gen_range((low as f64).ln()..=(high as f64).ln());
    (exponent.exp().round() as u64).clamp(low, high)
}

/// One kind of fault the fault driver can inject.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Kill the leader (all memory gone), restart it later from its disk.
    CrashLeader,
    /// Kill a random member.
    CrashRandom,
    /// Power loss of a member: each file's unsynced bytes are lost, or kept up to a
    /// seeded sector boundary of the file (so a record can really be torn), or — as some
    /// file systems show — the file keeps its length with zeros where they were.
    CrashLoseUnsynced,
    /// Isolate one member (both directions).
    IsolateOne,
    /// Put the leader in a minority partition.
    PartitionLeaderMinority,
    /// Split the cluster into a random majority and minority.
    PartitionMajorityMinority,
    /// A bridge: two halves that only one member connects.
    PartitionBridge,
    /// A hears B, B does not hear A.
    PartitionAsymmetric,
    /// Hold every message on random links, then release them in random order.
    ClogAndRelease,
    /// Drop, duplicate and delay messages with a slow tail for a while.
    LossyNetwork,
    /// Pause a member (no progress), then resume it.
    PauseMember,
    /// Fill the leader's disk; it stops; later space is freed and it restarts.
    DiskFullLeader,
    /// Make a follower's next fsync fail; it stops; later it restarts.
    FsyncErrorFollower,
    /// Fill a follower's disk; it stops; later space is freed and it restarts.
    DiskFullFollower,
    /// Arm the leader to crash right after its next WAL sync of entries, before it
    /// applies or answers anything (a crash point).
    CrashAfterPersist,
    /// Flip a byte in a durable WAL record of a stopped follower — in an older segment
    /// anywhere, in the newest one the length field of a record that is not the last
    /// (so it can never pass for a torn tail): it must refuse to start. The heal
    /// restores the byte, as an operator would the disk.
    CorruptWalRecord,
    /// Skew, drift or jump a member's clock.
    ClockSkew,
    /// Slow I/O on one member: its fsyncs stall for 5–100 ms again and again. The member
    /// syncs on its only loop, so a stalled fsync stalls the member: modelled as a train
    /// of short pauses.
    SlowDisk,
    /// Crash the leader and make the others campaign at the same instant.
    SplitVote,
    /// For a while, some messages are also delivered again seconds later — to whatever
    /// incarnation of the receiver is running then (old TCP queues, retransmissions).
    StaleRedelivery,
    /// An exact crash point: power is lost at a seeded write operation of a member's
    /// disk (often mid-Ready: between a leader's early send and its fsync, between a
    /// snapshot file and its WAL mark, inside a segment cut); both of its disks then
    /// lose their unsynced bytes (torn or zeroed as in power loss) and it restarts.
    PowerLossMidIo,
    /// Arm a follower to crash right after it next makes a vote for another member
    /// durable, and restart it soon after (a crash point).
    CrashAfterVote,
    /// Correlated failure: power is lost on several members at once (a rack, or the
    /// whole cluster), each losing, tearing or zeroing its unsynced bytes; they come
    /// back within a second. Beyond the attrition limit on purpose: the cluster is
    /// unavailable meanwhile, and must lose no acknowledged write.
    PowerLossRack,
    /// The data disk (snapshot files, member metadata) of a member fills up or fails
    /// its next fsync: the member must stop at its next snapshot, never serve from a
    /// half-written one, and start again once the disk is healed.
    DataDiskFault,
    /// Flip a byte of a stopped member's newest snapshot file: it must pass over the
    /// damaged file (starting from an older snapshot and its WAL) or refuse to start,
    /// never load it. The heal restores the byte.
    CorruptSnapshotFile,
    /// Peer connections reset: what was in flight on a few links is lost, and what is
    /// sent while each reconnects (100 ms, the production transport's retry delay) is
    /// dropped; later messages flow again.
    ConnectionReset,
    /// A bad RAM cell: a byte of a value in a follower's in-memory store flips (a key of
    /// the fault's own, so no client reads the damage). The corruption check must raise
    /// a CORRUPT alarm for that member before the heal restarts it and an operator
    /// disarms the alarm. Scenarios with it take no snapshots, so the damage never
    /// reaches the disk.
    MemoryCorruption,
    /// An operator moves leadership (etcd's MoveLeader) from the leader to a random
    /// running voter; an answer of success must come only once the target leads.
    MoveLeader,
    /// An operator replaces a member (the leader, sometimes): removes it from the
    /// cluster (MemberRemove), then adds a new member (as a voter, or as a learner it
    /// promotes once caught up) and starts it on blank disks under the same name and
    /// URLs, joining the running cluster. The chaos goes on meanwhile.
    ReplaceMember,
    /// An operator adds a member into a free slot (a spare, or one a removal freed): a
    /// voter, or a learner promoted once caught up, started on blank disks.
    AddMember,
    /// An operator removes a member (the leader, sometimes) while at least three are
    /// in the cluster: it stops, and its slot is free for a later `add_member`.
    RemoveMember,
    /// `corrupt_wal_record`, healed the way an operator heals a member whose disk lost
    /// data: it is replaced (removed, a new member added on a blank disk in its place)
    /// instead of having its byte restored.
    ReplaceCorruptedMember,
    /// An operator changes a member's peer URLs (MemberUpdate): adds an alias URL, or
    /// drops it again. The member list must show the last update applied.
    UpdateMember,
    /// A member's next few reads go wrong — I/O errors on either disk, or a silently
    /// flipped byte read from its data disk (a latent sector error): sending a snapshot
    /// must retry, and a start may refuse but never load damaged bytes.
    ReadErrors,
}

/// A scripted fault at a moment of the chaos phase.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    pub at_ms: u64,
    pub fault: FaultKind,
    /// Seeds the fault's own choices (victims, duration). Drawn from the run's seed
    /// when absent; a shrunk timeline names it, so that every fault it keeps makes the
    /// choices it made in the original run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Faults: a timeline and/or a swarm.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    pub timeline: Vec<ScriptedFault>,
    /// Kinds the swarm may use; the seed enables a random non-empty subset.
    pub swarm: Vec<FaultKind>,
    /// Mean simulated milliseconds between swarm faults (the seed draws within ±50%).
    pub swarm_interval_ms: u64,
    /// How long a fault lasts before it is healed (the seed draws within ±50%).
    pub fault_duration_ms: u64,
    /// `clock_skew`: the largest drift a seed may draw (ppm; default 200,000 = ±20%) and
    /// the largest forward jump (ms; default 5,000).
    pub clock_drift_ppm_cap: Option<i64>,
    pub clock_jump_ms_max: Option<u64>,
}

/// The clock bound under which detcd promises lease safety: drift within ±5% on every
/// member and no forward jumps. Scenarios whose clock faults stay inside it must never
/// see a lease expire early; beyond it, early expiry is an expected finding.
pub const LEASE_SAFE_CLOCK_DRIFT_PPM_MAX: i64 = 50_000;

/// What a scenario requires to have happened, beyond "no violation".
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Expectations {
    /// The trace must show a term in which members campaigned and none became leader.
    pub split_vote: bool,
    /// At least this many client operations must have succeeded.
    pub ok_operations_min: usize,
    /// Catch-up under load (0: none): when the chaos phase ends, every fault is healed
    /// while the clients go on writing for this long (plus `LIVENESS_BOUND_ELECTIONS`
    /// times the seed's election slowdown); by then every member must have applied all
    /// that any member had applied at the heal. A member that catches up only once the
    /// writes stop (the liveness phase) fails it.
    pub catch_up_under_load_ms: u64,
}

impl Scenario {
    /// Whether the scenario's clock faults stay inside the bound under which leases are
    /// safe (see [`LEASE_SAFE_CLOCK_DRIFT_PPM_MAX`]).
    pub fn lease_safety_promised(&self) -> bool {
        let skews = self.faults.swarm.contains(&FaultKind::ClockSkew) || self.faults.timeline.iter().any(|f| f.fault == FaultKind::ClockSkew);
        !skews
            || (self.faults.clock_jump_ms_max == Some(0)
                && self.faults.clock_drift_ppm_cap.is_some_and(|cap| cap <= LEASE_SAFE_CLOCK_DRIFT_PPM_MAX))
    }
}

/// Every concrete option a seed derived from a scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Options {
    pub seed: u64,
    pub scenario: String,
    pub members: usize,
    pub duration_ms: u64,
    pub liveness_bound_ms: u64,
    pub clients: usize,
    pub keys: usize,
    pub swarm_enabled: Vec<FaultKind>,
    pub swarm_interval_ms: u64,
    pub fault_duration_ms: u64,
    pub message_delay_ms_max: u64,
    pub lossy_drop_rate: f64,
    pub lossy_duplicate_rate: f64,
    pub torn_write_probability: f64,
    pub clock_drift_ppm_max: i64,
    pub clock_jump_ms_max: u64,
    pub client_link_loss: f64,
    /// A bug planted in every member (simulator canary), by name.
    pub planted_bug: Option<String>,
    /// Power lost at one exact write of one member's disk (`detcd-sim crash-every-write`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_at_write: Option<CrashAtWrite>,
    /// Each member slot's tunables, drawn from the seed (empty: every member runs the
    /// scenario's settings and the node's defaults, [`MemberKnobs::fixed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_knobs: Vec<MemberKnobs>,
    /// The cluster's heartbeat interval and election timeout, drawn from the seed or
    /// the scenario's.
    #[serde(default)]
    pub timing: ClusterTiming,
    /// The percentage of writes that carry a large value (see `draw_large_value_percent`).
    #[serde(default)]
    pub large_value_percent: u32,
}

/// Which disk of a member.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiskKind {
    Wal,
    Data,
}

/// Power lost at the `write`-th write operation (counted from the member's first start)
/// of one member's disk.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CrashAtWrite {
    pub member: usize,
    pub disk: DiskKind,
    pub write: u64,
}

impl CrashAtWrite {
    /// Parses `MEMBER:DISK:WRITE`, e.g. `0:wal:153`.
    pub fn parse(text: &str) -> Result<CrashAtWrite, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [member, disk, write] = parts.as_slice() else {
            return Err(format!("{text:?} is not MEMBER:DISK:WRITE (e.g. 0:wal:153)"));
        };
        let member = member.parse().map_err(|_| format!("{member:?} is not a member number"))?;
        let disk = match *disk {
            "wal" => DiskKind::Wal,
            "data" => DiskKind::Data,
            other => return Err(format!("disk {other:?} is neither wal nor data")),
        };
        let write = write.parse().map_err(|_| format!("{write:?} is not a write number"))?;
        if write == 0 {
            return Err("writes are counted from 1".into());
        }
        Ok(CrashAtWrite { member, disk, write })
    }

    pub fn describe(&self) -> String {
        format!("{}:{}:{}", self.member, if self.disk == DiskKind::Wal { "wal" } else { "data" }, self.write)
    }
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        if scenario.members == 0 || scenario.members > 7 {
            return Err(format!("members must be 1..=7, not {}", scenario.members));
        }
        if scenario.members + scenario.spare_members > 7 {
            return Err(format!("members + spare_members must be at most 7, not {}", scenario.members + scenario.spare_members));
        }
        if scenario.workload.clients == 0 || scenario.workload.keys == 0 {
            return Err("workload needs at least one client and one key".to_string());
        }
        if !scenario.faults.swarm.is_empty() && scenario.faults.swarm_interval_ms == 0 {
            return Err("a swarm needs swarm_interval_ms > 0".to_string());
        }
        if let Some(late) = scenario.faults.timeline.iter().find(|f| f.at_ms >= scenario.duration_ms) {
            return Err(format!("timeline fault at {} ms is after the chaos phase ends", late.at_ms));
        }
        Ok(scenario)
    }

    /// Reads a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Options {
    /// The options `seed` derives from `scenario` (a pure function of both), or the
    /// scenario's pinned options.
    pub fn derive(scenario: &Scenario, seed: u64) -> Options {
        if let Some(pinned) = &scenario.pinned_options {
            // The pinned scenario name too: member ids derive from it.
            return Options { seed, planted_bug: None, crash_at_write: None, ..pinned.clone() };
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6f70_7469_6f6e_7321);
        let mut swarm_enabled: Vec<FaultKind> = scenario.faults.swarm.iter().copied().filter(|_| rng.gen_bool(0.6)).collect();
        if swarm_enabled.is_empty() && !scenario.faults.swarm.is_empty() {
            let pick = rng.gen_range(0..scenario.faults.swarm.len());
            swarm_enabled.push(scenario.faults.swarm[pick]);
        }
        let jitter = |rng: &mut ChaCha8Rng, mean: u64| -> u64 {
            if mean == 0 {
                0
            } else {
                rng.gen_range(mean / 2..=mean + mean / 2)
            }
        };
        let fault_duration_base = if scenario.faults.fault_duration_ms == 0 { 2000 } else { scenario.faults.fault_duration_ms };
        let mut options = Options {
            seed,
            scenario: scenario.name.clone(),
            members: scenario.members,
            duration_ms: scenario.duration_ms,
            liveness_bound_ms: scenario.liveness_bound_ms,
            clients: scenario.workload.clients,
            keys: scenario.workload.keys,
            swarm_interval_ms: jitter(&mut rng, scenario.faults.swarm_interval_ms),
            fault_duration_ms: jitter(&mut rng, fault_duration_base),
            swarm_enabled,
            message_delay_ms_max: rng.gen_range(1..=20),
            lossy_drop_rate: rng.gen_range(0.05..0.3),
            lossy_duplicate_rate: rng.gen_range(0.0..0.2),
            torn_write_probability: rng.gen_range(0.0..0.5),
            clock_drift_ppm_max: rng.gen_range(0..=scenario.faults.clock_drift_ppm_cap.unwrap_or(200_000).max(0)),
            clock_jump_ms_max: scenario.faults.clock_jump_ms_max.unwrap_or(5000),
            client_link_loss: scenario.workload.client_link_loss,
            planted_bug: None,
            crash_at_write: None,
            member_knobs: draw_member_knobs(scenario, seed),
            timing: ClusterTiming::of(&scenario.node),
            large_value_percent: draw_large_value_percent(scenario, seed),
        };
        options.timing = ClusterTiming::draw(scenario, seed, options.message_delay_ms_max);
        // Recovering from a fault takes a few elections: the bound grows with them.
        options.liveness_bound_ms += LIVENESS_BOUND_ELECTIONS * options.election_slowdown_ms(scenario);
        options
    }

    /// The successes the scenario expects (`expect.ok_operations_min`: a sanity floor;
    /// a stuck cluster is the liveness check's to find), fewer when the seed's elections
    /// are slower than the scenario's — by the square of the ratio: each leader fault
    /// stops writes for longer, and faults that come faster than an election completes
    /// leave whole stretches without a leader (heavy-load 1642: 1.97 s elections, a
    /// member crashing every 2-3 s, no leader from 4 s to 18 s).
    pub fn ok_operations_min(&self, scenario: &Scenario) -> usize {
        let written_for_ms = scenario.node.election_timeout_ms.max(1) as u128;
        let election_ms = (self.timing.election_timeout_ms as u128).max(written_for_ms);
        (scenario.expect.ok_operations_min as u128 * written_for_ms * written_for_ms / (election_ms * election_ms)) as usize
    }

    /// How much longer this seed's elections take than the scenario's (0 when they are
    /// not slower): a bound written for the scenario's timing that waits for elections
    /// grows by a multiple of it.
    pub fn election_slowdown_ms(&self, scenario: &Scenario) -> u64 {
        self.timing.election_timeout_ms.saturating_sub(scenario.node.election_timeout_ms)
    }

    /// Member slot `index`'s tunables.
    pub fn knobs(&self, scenario: &Scenario, index: usize) -> MemberKnobs {
        self.member_knobs.get(index).cloned().unwrap_or_else(|| MemberKnobs::fixed(&scenario.node))
    }

    /// Every fault of the run in time order — the scenario's timeline and the swarm the
    /// seed draws — each with the seed of its own choices (a function of the run's seed
    /// and its place in the plan, unless the timeline names one).
    pub fn fault_plan(&self, scenario: &Scenario) -> Vec<ScriptedFault> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6661_756c_7473_2121);
        let mut plan: Vec<ScriptedFault> = scenario.faults.timeline.clone();
        if !self.swarm_enabled.is_empty() && self.swarm_interval_ms > 0 {
            let mut at_ms = self.swarm_interval_ms;
            while at_ms < self.duration_ms {
                let fault = self.swarm_enabled[rng.gen_range(0..self.swarm_enabled.len())];
                plan.push(ScriptedFault { at_ms, fault, seed: None });
                at_ms += rng.gen_range(self.swarm_interval_ms / 2..=self.swarm_interval_ms * 3 / 2).max(1);
            }
        }
        plan.sort_by_key(|f| f.at_ms);
        for (place, fault) in plan.iter_mut().enumerate() {
            // Below 2^63: a TOML integer holds it (shrunk scenarios name it).
            let seed = (self.seed ^ 0x6661_756c_7421_0000).wrapping_add((place as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 1;
            fault.seed.get_or_insert(seed);
        }
        plan
    }

    /// The options as `key=value` lines, as every run prints them.
    pub fn describe(&self) -> String {
        let json = serde_json::to_value(self).expect("options serialize");
        let mut lines = Vec::new();
        if let serde_json::Value::Object(map) = json {
            for (key, value) in map {
                lines.push(format!("  {key} = {value}"));
            }
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name = "t"
duration_ms = 5000
[faults]
swarm = ["crash_leader", "isolate_one", "lossy_network"]
swarm_interval_ms = 1000
[[faults.timeline]]
at_ms = 100
fault = "split_vote"
"#;

    #[test]
    fn options_are_a_function_of_the_seed() {
        let scenario = Scenario::parse(SCENARIO).expect("parse");
        assert_eq!(Options::derive(&scenario, 7), Options::derive(&scenario, 7));
        let differ = (1..20).any(|s| Options::derive(&scenario, s) != Options::derive(&scenario, 0));
        assert!(differ);
        assert!(!Options::derive(&scenario, 3).swarm_enabled.is_empty());
    }

    #[test]
    fn member_knobs_are_drawn_per_member_within_their_ranges() {
        let mut scenario = Scenario::parse(SCENARIO).expect("parse");
        let settings = scenario.node.clone();
        let fixed = MemberKnobs::fixed(&settings);
        let mut draws = Vec::new();
        for seed in 0..200 {
            let options = Options::derive(&scenario, seed);
            assert_eq!(options.member_knobs.len(), scenario.members + scenario.spare_members);
            draws.extend(options.member_knobs);
        }
        for knobs in &draws {
            assert!((settings.snapshot_count / 4..=settings.snapshot_count * 4).contains(&knobs.snapshot_count));
            assert!(knobs.snapshot_catchup_entries <= settings.snapshot_catchup_entries * 2);
            assert!((settings.wal_segment_bytes_max / 4..=settings.wal_segment_bytes_max * 4).contains(&knobs.wal_segment_bytes_max));
            assert!((1..=8).contains(&knobs.compaction_keys_per_turn_max));
            assert!((1024..=fixed.tunables.raft_append_bytes_max).contains(&knobs.tunables.raft_append_bytes_max));
            assert!((4..=fixed.tunables.raft_inflight_appends_max).contains(&knobs.tunables.raft_inflight_appends_max));
            assert!((4..=fixed.tunables.loop_peer_messages_per_turn_max).contains(&knobs.tunables.loop_peer_messages_per_turn_max));
            assert!((4..=fixed.tunables.loop_commands_per_turn_max).contains(&knobs.tunables.loop_commands_per_turn_max));
            assert!(knobs.tunables.watch_fragment_bytes_max == 0 || (64..=1024).contains(&knobs.tunables.watch_fragment_bytes_max));
            assert!((1..=fixed.tunables.watch_history_events_per_response_max).contains(&knobs.tunables.watch_history_events_per_response_max));
            assert!((1..=fixed.tunables.watch_sync_watchers_per_turn_max).contains(&knobs.tunables.watch_sync_watchers_per_turn_max));
            assert!((4096..=fixed.pending_request_bytes_max).contains(&knobs.pending_request_bytes_max));
            assert!((4096..=fixed.uncommitted_bytes_max).contains(&knobs.uncommitted_bytes_max));
            assert!(knobs.uncommitted_bytes_max >= knobs.tunables.raft_append_bytes_max, "raft's own rule");
            let per_ready = knobs.tunables.raft_committed_bytes_per_ready_max;
            assert!((1..=fixed.tunables.raft_committed_bytes_per_ready_max).contains(&per_ready));
            assert!((DRAWN_REQUEST_TIMEOUT_MS_MIN..=settings.request_timeout_ms * 2).contains(&knobs.request_timeout_ms));
            assert!((DRAWN_MAX_REQUEST_BYTES_MIN as usize..=MAX_REQUEST_BYTES_DEFAULT).contains(&knobs.max_request_bytes));
        }
        // The later knobs are drawn small sometimes (a Ready of one entry, a request
        // limit below a large value) and kept other times.
        assert!(draws.iter().any(|k| k.tunables.raft_committed_bytes_per_ready_max < 256));
        assert!(draws.iter().any(|k| k.tunables.raft_committed_bytes_per_ready_max == fixed.tunables.raft_committed_bytes_per_ready_max));
        assert!(draws.iter().any(|k| k.request_timeout_ms < settings.request_timeout_ms));
        assert!(draws.iter().any(|k| k.max_request_bytes < LARGE_VALUE_BYTES_MAX));
        assert!(draws.iter().any(|k| k.max_request_bytes == MAX_REQUEST_BYTES_DEFAULT));
        assert!(draws.iter().any(|k| k.tunables.forward_keep_alives) && draws.iter().any(|k| !k.tunables.forward_keep_alives));
        // Snapshot intervals: never stretched on some members, stretched up to 4x on
        // others, production's 2 on many (the fixed knobs keep 1: seeds found before it).
        let stretch = |k: &MemberKnobs| k.tunables.snapshot_interval_stretch_max;
        assert!(draws.iter().all(|k| (1..=4).contains(&stretch(k))));
        assert!(draws.iter().any(|k| stretch(k) == 1) && draws.iter().any(|k| stretch(k) == 2) && draws.iter().any(|k| stretch(k) == 4));
        assert_eq!(fixed.tunables.snapshot_interval_stretch_max, 1);
        // Large values: none in some seeds, a few percent of the writes in others.
        let percents: Vec<u32> = (0..200).map(|seed| Options::derive(&scenario, seed).large_value_percent).collect();
        assert!(percents.iter().all(|p| *p <= LARGE_VALUE_PERCENT_MAX));
        let with_large = percents.iter().filter(|p| **p > 0).count();
        assert!(with_large > 50 && with_large < 150, "{with_large} of 200 seeds");
        // Some members run without pre-vote, most with it.
        let without_pre_vote = draws.iter().filter(|k| !k.pre_vote).count();
        assert!(without_pre_vote > draws.len() / 8 && without_pre_vote < draws.len() / 2, "{without_pre_vote} of {}", draws.len());
        // Every knob both keeps its fixed value sometimes and is drawn small sometimes.
        assert!(draws.iter().any(|k| k.tunables.raft_inflight_appends_max == fixed.tunables.raft_inflight_appends_max));
        assert!(draws.iter().any(|k| k.tunables.raft_inflight_appends_max < 16));
        assert!(draws.iter().any(|k| k.tunables.loop_commands_per_turn_max < 16));
        assert!(draws.iter().any(|k| k.tunables.watch_fragment_bytes_max == 0));
        assert!(draws.iter().any(|k| (64..128).contains(&k.tunables.watch_fragment_bytes_max)));
        // Members of one run differ.
        assert!((0..20).any(|seed| {
            let knobs = Options::derive(&scenario, seed).member_knobs;
            knobs.windows(2).any(|pair| pair[0] != pair[1])
        }));
        // Drawing them changes no other option of a seed.
        let mut fixed_scenario = scenario.clone();
        fixed_scenario.node.randomize_knobs = false;
        let (drawn, kept) = (Options::derive(&scenario, 5), Options::derive(&fixed_scenario, 5));
        assert!(kept.member_knobs.is_empty());
        assert_eq!(kept.large_value_percent, 0);
        let unslowed = |o: Options| Options { liveness_bound_ms: scenario.liveness_bound_ms, ..o };
        assert_eq!(unslowed(Options { member_knobs: Vec::new(), timing: kept.timing, large_value_percent: 0, ..drawn }), kept);
        scenario.node.randomize_knobs = false;
        assert_eq!(Options::derive(&scenario, 5).knobs(&scenario, 0), fixed);
    }

    #[test]
    fn cluster_timing_is_drawn_within_its_ranges_and_bounds_grow_with_slower_elections() {
        let mut scenario = Scenario::parse(SCENARIO).expect("parse");
        scenario.expect.ok_operations_min = 1000;
        let fixed = ClusterTiming::of(&scenario.node);
        let draws: Vec<Options> = (0..300).map(|seed| Options::derive(&scenario, seed)).collect();
        for options in &draws {
            let timing = options.timing;
            if timing == fixed {
                continue;
            }
            let heartbeat = timing.heartbeat_interval_ms;
            assert!((DRAWN_HEARTBEAT_INTERVAL_MS_MIN.max(2 * options.message_delay_ms_max)..=DRAWN_HEARTBEAT_INTERVAL_MS_MAX).contains(&heartbeat), "{timing:?}");
            assert_eq!(timing.election_timeout_ms % heartbeat, 0, "a whole number of ticks: {timing:?}");
            let heartbeats = timing.election_timeout_ms / heartbeat;
            assert!((DRAWN_ELECTION_HEARTBEATS_MIN..=DRAWN_ELECTION_HEARTBEATS_MAX).contains(&heartbeats), "{timing:?}");
            assert!(timing.election_timeout_ms <= DRAWN_ELECTION_TIMEOUT_MS_MAX, "{timing:?}");
            // etcd's minimum lease TTL (1.5 elections) stays within the lease workload's TTLs.
            #[cfg(madsim)]
            assert!(timing.election_timeout_ms * 3 / 2 <= crate::lease_workload::LEASE_TTL_SECS_MAX as u64 * 1000);
            // The liveness bound grows with elections slower than the scenario's.
            let slowdown = timing.election_timeout_ms.saturating_sub(fixed.election_timeout_ms);
            assert_eq!(options.election_slowdown_ms(&scenario), slowdown);
            assert_eq!(options.liveness_bound_ms, scenario.liveness_bound_ms + LIVENESS_BOUND_ELECTIONS * slowdown);
            let ratio = fixed.election_timeout_ms as f64 / timing.election_timeout_ms.max(fixed.election_timeout_ms) as f64;
            let expected = (scenario.expect.ok_operations_min as f64 * ratio * ratio).floor() as usize;
            assert!(options.ok_operations_min(&scenario).abs_diff(expected) <= 1);
        }
        // Some seeds keep the scenario's timing; others draw faster and slower ones.
        assert!(draws.iter().any(|o| o.timing == fixed && o.liveness_bound_ms == scenario.liveness_bound_ms));
        assert!(draws.iter().any(|o| o.timing.election_timeout_ms < 400));
        assert!(draws.iter().any(|o| o.timing.election_timeout_ms > 1500));
        // Drawing it changes no other option of a seed.
        let mut fixed_scenario = scenario.clone();
        fixed_scenario.node.randomize_timing = false;
        for seed in 0..20 {
            let (drawn, kept) = (Options::derive(&scenario, seed), Options::derive(&fixed_scenario, seed));
            assert_eq!(kept.timing, fixed);
            assert_eq!(Options { timing: fixed, liveness_bound_ms: scenario.liveness_bound_ms, ..drawn }, kept);
        }
        // Fixed knobs (`--fixed-knobs`) fix the timing too.
        scenario.node.randomize_knobs = false;
        assert!((0..20).all(|seed| Options::derive(&scenario, seed).timing == fixed));
    }

    #[test]
    fn bad_scenarios_are_refused() {
        assert!(Scenario::parse("name = \"x\"\nduration_ms = 10\nmembers = 0").is_err());
        assert!(Scenario::parse("name = \"x\"\nduration_ms = 10\nbogus = 1").is_err());
        let late = "name = \"x\"\nduration_ms = 10\n[[faults.timeline]]\nat_ms = 20\nfault = \"crash_leader\"";
        assert!(Scenario::parse(late).unwrap_err().contains("after the chaos phase"));
    }
}
