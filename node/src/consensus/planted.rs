//! Bugs planted on purpose, to prove the simulator finds them. They exist only in
//! simulator builds (`--cfg madsim`); a production binary cannot contain them. Each is
//! tested for in one place, named after the bug, so the safety-critical code reads the
//! same with or without them.

/// Heartbeats after which etcd stops a member that applied its own removal
/// (`stopWithDelay`); detcd waits for a voter's notice instead (see `membership`).
pub const ETCD_REMOVED_MEMBER_STOP_DELAY_TICKS: u64 = 10;

/// One planted bug. See `sim`'s canary test for which scenario finds each.
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
    /// Read-index contexts are a counter that restarts at 1 with every incarnation, and
    /// any response is accepted (the old behaviour: a late answer meant for a previous
    /// incarnation completes a new read with an old index).
    ReuseReadContexts,
    /// Cut a new WAL segment without syncing what the old one holds unsynced (the old
    /// behaviour: after power loss a torn record sits in a non-last segment).
    CutWithoutSync,
    /// A spare WAL segment starts as a copy of the newest segment instead of zeros (as a
    /// recycled old segment would): after a cut takes it, stale records follow the new
    /// ones; the cut's header sync makes them durable, so the WAL's next write lands on
    /// synced bytes, which the simulated disk refuses (a panic naming the segment).
    SpareHoldsStaleBytes,
    /// The latest snapshot file is sent to a follower even when the log in memory was
    /// compacted past it (a stretched snapshot interval): the follower installs it, and
    /// the entries right after it are gone from the leader's log — it gets the same
    /// snapshot again and again and never catches up.
    SnapshotBehindCompactedLog,
    /// The leader compacts its log past a fresh snapshot while the snapshot is being
    /// made (the behaviour before session 31): refused on arrival, because the follower
    /// could not go on from it, and made again — for good while writes pass each one
    /// before it is ready (a slow disk or a large store).
    FreshSnapshotUnpinned,
    /// A snapshot file loaded for a follower is sent only if it is still the newest (the
    /// old behaviour): a load slower than the leader's snapshots come is dropped and
    /// started again, for as long as the writes go on.
    LoadedSnapshotMustBeNewest,
    /// Decide torn vs corrupt by the length field only (the old behaviour: a zero-filled
    /// tail is corruption, a flipped length truncates synced records).
    TornByLengthOnly,
    /// Watchers catching up from history skip the first revision of later batches.
    WatchSkipOnCatchUp,
    /// A watch created with a start revision starts one revision late.
    WatchStartOffByOne,
    /// An expiry applies even when a renewal was applied after the leader decided it
    /// (the old behaviour, found by the simulator: a keep-alive answered with its TTL,
    /// then the lease revoked by a stale expiry).
    LeaseExpiryRacesRenewal,
    /// The leader ignores keep-alives when it computes deadlines.
    LeaseRenewIgnored,
    /// The NOSPACE alarm is checked only when a request is submitted, not when it is
    /// applied: writes admitted before the alarm (or once space looks free again, before
    /// the alarm is disarmed) still land.
    NospaceIgnoredAtApply,
    /// Release WAL segments before the snapshot that covers them is durable (visible
    /// only to a power loss at an exact write inside the snapshot step).
    ReleaseBeforeSnapshotSync,
    /// A key created again after a delete keeps the create revision of its previous
    /// life (every member alike: invisible to comparisons between members, and to
    /// checks of values alone).
    CreateRevisionSurvivesDelete,
    /// Proposals pending when leadership is lost are answered with a definite refusal
    /// ("no leader") although the next leader may still commit them.
    LeaderLostReportedAsRefused,
    /// Members with odd ids record a granted lease TTL one second longer than the one
    /// answered (as a mixed-version cluster might): replicas differ without any change
    /// event differing, and the leases are gone by the end of the run.
    LeaseTtlDiffersBetweenMembers,
    /// Followers answer appends before their WAL sync (the leader still syncs first):
    /// one lost follower is covered by the others, several at once are not.
    FollowerAcksBeforeFsync,
    /// A snapshot that could not be written (full or failing data disk) is taken as
    /// written, and the WAL segments it covers are released anyway.
    SnapshotSaveErrorIgnored,
    /// Snapshot files are loaded without checking their CRC.
    SnapshotCrcUnchecked,
    /// A WAL segment that cannot be read at start-up counts as empty.
    WalReadErrorIsEmpty,
    /// Compaction at the revision of a delete drops that delete, so a watch starting
    /// there never sees it (the old behaviour, found by the simulator; etcd had the same
    /// bug, etcd-io/etcd#18089).
    TombstoneCompactedAtItsRevision,
    /// A proposal the network delivered (and raft committed) twice is applied twice:
    /// the request-dedup window is ignored.
    DuplicateProposalsApplied,
    /// A client snapshot (`Maintenance.Snapshot`) leaves out the keys attached to leases.
    SnapshotSkipsLeasedKeys,
    /// The corruption check compares hashes but raises nothing when they differ.
    CorruptCheckIgnoresMismatch,
    /// A member applies only its own published attributes: member lists differ.
    MemberAttributesAppliedLocallyOnly,
    /// The lock recipe takes the lock as soon as its key exists, without waiting for
    /// older keys to go (planted in the simulator's lock clients, which run the recipe).
    LockSkipsTheWait,
    /// An own snapshot's state is read when its job runs, not frozen when it starts (a
    /// background writer sharing the live store): the file labelled index N holds the
    /// entries applied after N as well.
    SnapshotNotFrozen,
    /// `hash_kv` counts records a compaction dropped but the member has not removed yet
    /// (removal runs in steps on each member's own loop): healthy members' hashes differ.
    HashCountsCompactedRecords,
    /// MoveLeader answers success as soon as the transfer is started, not once the
    /// target leads.
    MoveLeaderAnswersAtOnce,
    /// The leader sends a member the latest snapshot even when that snapshot predates
    /// the member's addition (its configuration does not have it): raft on the new
    /// member refuses it, and the member never catches up.
    SnapshotPredatesNewMember,
    /// The replicated member table is left out of snapshots: a member that starts from
    /// one (installed, or its own after a restart) has another member table.
    MemberTableNotInSnapshot,
    /// A member that applied its own removal goes on serving clients until it stops.
    RemovedMemberKeepsServing,
    /// A removed member (a removed leader included) stops once
    /// [`ETCD_REMOVED_MEMBER_STOP_DELAY_TICKS`] are over (etcd's `stopWithDelay`),
    /// without waiting for a voter of the configuration after its removal to know the
    /// removal is committed: a cluster of two whose other member missed the commit has
    /// no quorum.
    RemovedLeaderLeavesWithoutSuccessor,
    /// A member's publication of its attributes carries its peer URLs too and overwrites
    /// the configuration's (the old behaviour, found by the end-to-end test: a
    /// MemberUpdate was reverted by the member's next publication).
    PublishOverwritesPeerUrls,
    /// Permissions are checked by the member that takes a request, against its own
    /// applied auth state, and not again when the request is applied: a member behind a
    /// revoke still lets the request through.
    AuthCheckedAtProposerOnly,
    /// The leader renews leases in memory without a recent confirmation of its
    /// leadership (the old behaviour, found by the simulator: a deposed leader cut off
    /// from its followers, whose check-quorum timer a leadership transfer had restarted,
    /// answered keep-alives the real leader never heard of).
    KeepAliveOnUnconfirmedLeader,
    /// A watch response split into fragments loses the event at each boundary (only
    /// a response larger than the fragment size — by default the 1.5 MiB request limit,
    /// which the simulator's small members draw much smaller — has a boundary).
    WatchFragmentDropsBoundaryEvent,
    /// A leader lets raft see every read-index request of another member, also one
    /// delivered again after raft answered it (the old behaviour, found with drawn
    /// timing: late acknowledgements of its first round answer the reads queued since).
    ReadIndexDuplicatesAdmitted,
    /// A confirmed read is served once its read index is committed, not once it is
    /// applied (visible only while the applied index trails the commit index: raft hands
    /// out committed entries in bounded batches, which the simulator draws small).
    ReadServedBeforeApplied,
    /// A follower answers a keep-alive it forwarded to the leader at once, with the TTL
    /// its own state holds, whatever becomes of the forward (lost, declined, overtaken).
    ForwardedKeepAliveAnsweredAtOnce,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 45] = [
        PlantedBug::AckBeforeFsync,
        PlantedBug::LocalLinearizableRead,
        PlantedBug::ForgetVote,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::AcceptStaleTerm,
        PlantedBug::ReuseReadContexts,
        PlantedBug::CutWithoutSync,
        PlantedBug::TornByLengthOnly,
        PlantedBug::WatchSkipOnCatchUp,
        PlantedBug::WatchStartOffByOne,
        PlantedBug::LeaseExpiryRacesRenewal,
        PlantedBug::LeaseRenewIgnored,
        PlantedBug::NospaceIgnoredAtApply,
        PlantedBug::ReleaseBeforeSnapshotSync,
        PlantedBug::CreateRevisionSurvivesDelete,
        PlantedBug::LeaderLostReportedAsRefused,
        PlantedBug::LeaseTtlDiffersBetweenMembers,
        PlantedBug::FollowerAcksBeforeFsync,
        PlantedBug::SnapshotSaveErrorIgnored,
        PlantedBug::SnapshotCrcUnchecked,
        PlantedBug::WalReadErrorIsEmpty,
        PlantedBug::TombstoneCompactedAtItsRevision,
        PlantedBug::DuplicateProposalsApplied,
        PlantedBug::SnapshotSkipsLeasedKeys,
        PlantedBug::CorruptCheckIgnoresMismatch,
        PlantedBug::MemberAttributesAppliedLocallyOnly,
        PlantedBug::LockSkipsTheWait,
        PlantedBug::SnapshotNotFrozen,
        PlantedBug::HashCountsCompactedRecords,
        PlantedBug::MoveLeaderAnswersAtOnce,
        PlantedBug::SnapshotPredatesNewMember,
        PlantedBug::MemberTableNotInSnapshot,
        PlantedBug::RemovedMemberKeepsServing,
        PlantedBug::PublishOverwritesPeerUrls,
        PlantedBug::AuthCheckedAtProposerOnly,
        PlantedBug::KeepAliveOnUnconfirmedLeader,
        PlantedBug::WatchFragmentDropsBoundaryEvent,
        PlantedBug::ReadIndexDuplicatesAdmitted,
        PlantedBug::ReadServedBeforeApplied,
        PlantedBug::RemovedLeaderLeavesWithoutSuccessor,
        PlantedBug::ForwardedKeepAliveAnsweredAtOnce,
        PlantedBug::SpareHoldsStaleBytes,
        PlantedBug::SnapshotBehindCompactedLog,
        PlantedBug::FreshSnapshotUnpinned,
        PlantedBug::LoadedSnapshotMustBeNewest,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::LocalLinearizableRead => "local-linearizable-read",
            PlantedBug::ForgetVote => "forget-vote",
            PlantedBug::ApplyBeforeCommit => "apply-before-commit",
            PlantedBug::AcceptStaleTerm => "accept-stale-term",
            PlantedBug::ReuseReadContexts => "reuse-read-contexts",
            PlantedBug::CutWithoutSync => "cut-without-sync",
            PlantedBug::TornByLengthOnly => "torn-by-length-only",
            PlantedBug::WatchSkipOnCatchUp => "watch-skip-on-catch-up",
            PlantedBug::WatchStartOffByOne => "watch-start-off-by-one",
            PlantedBug::LeaseExpiryRacesRenewal => "lease-expiry-races-renewal",
            PlantedBug::LeaseRenewIgnored => "lease-renew-ignored",
            PlantedBug::NospaceIgnoredAtApply => "nospace-ignored-at-apply",
            PlantedBug::ReleaseBeforeSnapshotSync => "release-before-snapshot-sync",
            PlantedBug::CreateRevisionSurvivesDelete => "create-revision-survives-delete",
            PlantedBug::LeaderLostReportedAsRefused => "leader-lost-reported-as-refused",
            PlantedBug::LeaseTtlDiffersBetweenMembers => "lease-ttl-differs-between-members",
            PlantedBug::FollowerAcksBeforeFsync => "follower-acks-before-fsync",
            PlantedBug::SnapshotSaveErrorIgnored => "snapshot-save-error-ignored",
            PlantedBug::SnapshotCrcUnchecked => "snapshot-crc-unchecked",
            PlantedBug::WalReadErrorIsEmpty => "wal-read-error-is-empty",
            PlantedBug::TombstoneCompactedAtItsRevision => "tombstone-compacted-at-its-revision",
            PlantedBug::DuplicateProposalsApplied => "duplicate-proposals-applied",
            PlantedBug::SnapshotSkipsLeasedKeys => "snapshot-skips-leased-keys",
            PlantedBug::CorruptCheckIgnoresMismatch => "corrupt-check-ignores-mismatch",
            PlantedBug::MemberAttributesAppliedLocallyOnly => "member-attributes-applied-locally-only",
            PlantedBug::LockSkipsTheWait => "lock-skips-the-wait",
            PlantedBug::SnapshotNotFrozen => "snapshot-not-frozen",
            PlantedBug::HashCountsCompactedRecords => "hash-counts-compacted-records",
            PlantedBug::MoveLeaderAnswersAtOnce => "move-leader-answers-at-once",
            PlantedBug::SnapshotPredatesNewMember => "snapshot-predates-new-member",
            PlantedBug::MemberTableNotInSnapshot => "member-table-not-in-snapshot",
            PlantedBug::RemovedMemberKeepsServing => "removed-member-keeps-serving",
            PlantedBug::PublishOverwritesPeerUrls => "publish-overwrites-peer-urls",
            PlantedBug::AuthCheckedAtProposerOnly => "auth-checked-at-proposer-only",
            PlantedBug::KeepAliveOnUnconfirmedLeader => "keep-alive-on-unconfirmed-leader",
            PlantedBug::WatchFragmentDropsBoundaryEvent => "watch-fragment-drops-boundary-event",
            PlantedBug::ReadIndexDuplicatesAdmitted => "read-index-duplicates-admitted",
            PlantedBug::ReadServedBeforeApplied => "read-served-before-applied",
            PlantedBug::RemovedLeaderLeavesWithoutSuccessor => "removed-leader-leaves-without-successor",
            PlantedBug::ForwardedKeepAliveAnsweredAtOnce => "forwarded-keep-alive-answered-at-once",
            PlantedBug::SpareHoldsStaleBytes => "spare-holds-stale-bytes",
            PlantedBug::SnapshotBehindCompactedLog => "snapshot-behind-compacted-log",
            PlantedBug::FreshSnapshotUnpinned => "fresh-snapshot-unpinned",
            PlantedBug::LoadedSnapshotMustBeNewest => "loaded-snapshot-must-be-newest",
        }
    }

    pub fn parse(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}
