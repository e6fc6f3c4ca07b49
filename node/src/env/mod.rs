//! The seam between a member and the world: clock, transport, disk and randomness.
//!
//! Everything a member does to the outside goes through the traits here. Production
//! implementations (`fs_disk`, `tcp`, [`RuntimeClock`]) use real files, sockets and tokio
//! time; the simulator (`detcd-sim`) supplies fault-injecting twins of each. Nothing in
//! the node reaches the OS any other way, which is what makes a simulated run a pure
//! function of its seed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use raft::eraftpb::Message;

#[cfg(not(madsim))]
pub mod background;
#[cfg(not(madsim))]
pub mod fs_disk;
pub mod mem_disk;
#[cfg(not(madsim))]
pub mod tcp;

/// A boxed future that owns everything it needs.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why a disk operation failed. Distinguishable so that callers (and the simulator's
/// checks) can tell a full disk from a broken one from damaged data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The device is full (ENOSPC). Nothing was written by the failed call.
    NoSpace { path: String },
    /// The device failed. After a failed sync the disk refuses all further writes:
    /// what reached the platter is unknown, so retrying would be a lie.
    Io { path: String, detail: String },
    /// Bytes were read back that do not match what was written.
    Corrupt { path: String, detail: String },
    /// The file does not exist.
    NotFound { path: String },
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::NoSpace { path } => write!(f, "no space left on device writing {path}"),
            DiskError::Io { path, detail } => write!(f, "I/O error on {path}: {detail}"),
            DiskError::Corrupt { path, detail } => write!(f, "corrupt data in {path}: {detail}"),
            DiskError::NotFound { path } => write!(f, "{path} does not exist"),
        }
    }
}

impl std::error::Error for DiskError {}

/// A directory of files with explicit durability, in the style of redb's storage backend:
/// small, synchronous, and honest about what is durable.
///
/// Contract (the simulated disk enforces exactly this, so code that passes the simulator
/// is correct on real disks that honour fsync):
/// - `append` data is *not* durable until `sync` of that file returns `Ok`.
/// - `create`, `rename` and `remove` are durable when they return (the implementation
///   syncs the directory).
/// - After a failed `sync`, the disk is poisoned: every later write or sync fails.
/// - Names are relative paths with `/` separators, e.g. `wal/0000000000000001.wal`.
pub trait Disk: Send + Sync {
    /// Names of the files directly inside `dir`, sorted. A missing directory is empty.
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError>;
    /// The whole current content of a file (durable or not).
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError>;
    /// [`Disk::read`] for a file that is never written again once complete (a snapshot
    /// file, a WAL segment older than the last): the production disk maps a large one instead of copying it into fresh
    /// memory — at a gigabyte, zeroing and filling that memory was most of a restart.
    fn read_immutable(&self, path: &str) -> Result<bytes::Bytes, DiskError> {
        self.read(path).map(bytes::Bytes::from)
    }
    /// Creates (or truncates to empty) a file, durably, creating parent directories.
    fn create(&self, path: &str) -> Result<(), DiskError>;
    /// Appends bytes to the end of an existing file (after any room [`Disk::preallocate`]
    /// reserved). Not durable until `sync`.
    fn append(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// Writes bytes at `offset` of an existing file, which must not be past its end and
    /// must not be before the end of what was synced (synced bytes are never rewritten:
    /// a bug panics). Not durable until `sync`; until then a crash may leave the old bytes
    /// (the zeros of reserved room), or a torn prefix of the new ones.
    fn write_at(&self, path: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError>;
    /// Reserves room: a file shorter than `len_bytes` grows to it, the new bytes zeros,
    /// durably on return. Writes into that room (`write_at`) then change no file size,
    /// so syncing them commits no metadata: on this machine's ext4 an appending
    /// write + fdatasync took ~140 us, one overwriting reserved room ~95 us (etcd
    /// preallocates its WAL segments for the same reason). Readers see the zeros: a log
    /// treats zeros after its last record as its end. `NoSpace` if the room is not there
    /// (nothing reserved then).
    fn preallocate(&self, path: &str, len_bytes: u64) -> Result<(), DiskError>;
    /// [`Disk::preallocate`] from a thread that may wait (never the member's loop): the
    /// room's zeros are written out, not only reserved, durably on return. On ext4 a
    /// reserved block is an unwritten extent until first synced, so every sync of
    /// writes into fresh reserved room also commits the extent's conversion through
    /// the journal (one journal for the whole file system: all members of a cluster
    /// on one disk queue behind each other's). Writes into zeros written out are plain
    /// overwrites: a 8 KiB write + fdatasync took ~190 us into reserved room and ~125 us
    /// into written zeros on this machine (2026-11-29), and three members putting at
    /// 64 clients did 8% more. A simulated disk has no extents: the default reserves.
    fn preallocate_zeroed(&self, path: &str, len_bytes: u64) -> Result<(), DiskError> {
        self.preallocate(path, len_bytes)
    }
    /// Shortens a file to `len_bytes` (used to cut a torn WAL tail). Durable on return.
    fn truncate(&self, path: &str, len_bytes: u64) -> Result<(), DiskError>;
    /// Makes everything appended to `path` so far durable (fdatasync).
    fn sync(&self, path: &str) -> Result<(), DiskError>;
    /// Writes the file's dirty bytes to the device and waits for them, making nothing
    /// durable (no cache flush, no metadata: `sync_file_range`, as RocksDB's
    /// `bytes_per_sync`). A long write calls it every few megabytes, so the kernel
    /// writes the file in slices instead of in one burst at its `sync` that the WAL's
    /// fsyncs on the same device would queue behind. Bytes written back may still be
    /// rewritten (`write_at`): only `sync` makes them durable. A failure poisons the disk
    /// as a failed `sync` does (the bytes' fate is unknown).
    fn write_back(&self, path: &str) -> Result<(), DiskError>;
    /// Atomically and durably renames a file.
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Durably removes a file. Removing a missing file is not an error.
    fn remove(&self, path: &str) -> Result<(), DiskError>;
    /// [`Disk::remove`] from a thread that may wait (never the member's loop), for a file
    /// that may be large: durably removed on return as by `remove`, but the production
    /// disk frees its blocks in slices with pauses between, so that the WAL's fsyncs on
    /// the same device never wait behind the release of a whole snapshot file. Unlinking
    /// a 400 MB file made a concurrent 300-byte write + fdatasync take ~40 ms on this
    /// machine's ext4, freeing it 8 MiB at a time with 2 ms pauses at most 3-5 ms
    /// (2026-11-29). A simulated disk has no blocks to free: the default removes.
    fn remove_paced(&self, path: &str) -> Result<(), DiskError> {
        self.remove(path)
    }
}

/// Delivers raft messages to other members. Sending never blocks and never fails:
/// raft treats the network as lossy, so an unreachable peer simply loses the message.
pub trait Transport: Send + Sync {
    /// Queues `messages` for delivery. Returns the peers (sorted, without repeats) some
    /// of whose messages were dropped at once — no route, a full queue — so that raft
    /// can be told they are unreachable. Losses further along go unreported.
    fn send(&self, messages: Vec<Message>) -> Vec<u64>;

    /// The cluster's members changed (or the member started): whom to reach at which
    /// peer URLs, who is a learner, and who was removed (never to be accepted again).
    /// Called by the loop with the applied member table. A transport that routes by
    /// member id alone (the simulator's) may ignore it.
    fn set_peers(&self, _peers: &PeerDirectory) {}

    /// The peers that told this member it was removed from the cluster (it stops once
    /// a voter of its last configuration has).
    fn removal_notices(&self) -> std::collections::BTreeSet<u64> {
        std::collections::BTreeSet::new()
    }
}

/// The applied member table as the transport needs it (see [`Transport::set_peers`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerDirectory {
    /// Every member of the configuration (this one included): peer URLs, and whether it
    /// is a learner.
    pub members: std::collections::BTreeMap<u64, (Vec<String>, bool)>,
    /// Members removed from the cluster.
    pub removed: std::collections::BTreeSet<u64>,
}

/// Runs blocking jobs away from the member's loop: encoding and writing a snapshot of a
/// frozen copy of the store, hashing it, streaming it to a client. The job owns what it
/// needs and reports its result itself (through a channel it holds).
///
/// Production: tokio's blocking pool ([`BlockingPool`]). The simulator: a task that first
/// waits a seeded, simulated while, so the loop goes on applying (and faults strike)
/// while the job runs. [`InlineWorker`] runs the job at once, for tests that drive the
/// core by hand.
pub trait Worker: Send + Sync {
    fn run(&self, job: Box<dyn FnOnce() + Send>);
}

/// Tokio's blocking thread pool (production); each job runs at background priority
/// (see `background`).
#[cfg(not(madsim))]
pub struct BlockingPool;

#[cfg(not(madsim))]
impl Worker for BlockingPool {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        drop(tokio::task::spawn_blocking(move || {
            let _background = background::BackgroundPriority::enter();
            job()
        }));
    }
}

/// Runs every job on the caller's stack before returning.
pub struct InlineWorker;

impl Worker for InlineWorker {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        job();
    }
}

/// The member's view of time.
///
/// `now_ms` is monotonic milliseconds since an arbitrary origin, as this member
/// perceives it (the simulator may skew, drift or jump it per member). `sleep_ms`
/// waits until this member perceives `ms` milliseconds to have passed.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
    fn sleep_ms(&self, ms: u64) -> BoxFuture;
}

/// Time from the async runtime: tokio's clock in production, madsim's virtual clock in
/// the simulator (madsim-tokio swaps the implementation under `--cfg madsim`).
pub struct RuntimeClock {
    origin: tokio::time::Instant,
}

impl RuntimeClock {
    pub fn new() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

impl Default for RuntimeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RuntimeClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn sleep_ms(&self, ms: u64) -> BoxFuture {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

/// What a member reports about itself as it runs: role changes and applied entries.
/// Production ignores these (or logs them); the simulator checks raft invariants with
/// them (one leader per term, committed entries never change) and draws its timeline.
pub trait Observer: Send + Sync {
    fn on_event(&self, member_id: u64, event: NodeEvent);

    /// Whether this observer wants [`NodeEvent::Changes`] (a copy of every applied
    /// change; production observers say no and pay nothing).
    fn wants_changes(&self) -> bool {
        false
    }
}

/// One observation, see [`Observer`].
#[derive(Clone, Debug, PartialEq)]
pub enum NodeEvent {
    /// The member's raft role or known leader changed.
    RoleChanged { term: u64, role: Role, leader_id: u64 },
    /// An entry was applied to the state machine. `digest` is a hash of its bytes,
    /// `state_digest` one of the whole replicated state after it (both only to
    /// observers that want changes: every member must agree on them at every index).
    Applied { index: u64, term: u64, digest: Option<u64>, state_digest: Option<u64> },
    /// The member opened its disks: whether a torn WAL tail was cut away, and how many
    /// damaged snapshot files it passed over for an older one.
    Recovered { torn_tail_cut: bool, damaged_snapshots_skipped: usize },
    /// A snapshot was installed (from a leader or at start-up).
    SnapshotInstalled { index: u64, term: u64 },
    /// The member began a snapshot of its own state at `index`; `stretched`: later than
    /// `--snapshot-count` entries because its store dwarfs what changed.
    SnapshotBegun { index: u64, stretched: bool },
    /// A vote for `vote` in `term` was made durable (reported after the sync).
    VotePersisted { term: u64, vote: u64 },
    /// Entries up to `last_index` were made durable, before any reply depending on them.
    EntriesPersisted { last_index: u64 },
    /// An applied write changed the store: its revision and its changes in order (only
    /// to observers that want them).
    Changes { revision: i64, events: Vec<crate::pb::mvccpb::Event> },
    /// The entry at `index` changed who has a CORRUPT alarm: `members` have one now;
    /// `active` when someone got one.
    Corrupt { index: u64, active: bool, members: Vec<u64> },
    /// A compaction was applied: history before `revision` is gone on this member.
    Compacted { revision: i64 },
    /// A lease was granted, renewed or ended (revoked, or expired by the leader).
    Lease(crate::apply::LeaseChange),
    /// The entry at `index` made the NOSPACE alarm active (or cleared it), with the store
    /// at `revision`.
    NoSpace { index: u64, active: bool, revision: i64 },
    /// The configuration change at `index` was applied: the voters and learners after it.
    ConfChanged { index: u64, voters: Vec<u64>, learners: Vec<u64> },
    /// A read-index request of member `from` was refused before raft saw it: delivered
    /// again, or overtaken by a newer one (see `consensus::read_index::PeerReadContexts`).
    PeerReadRefused { from: u64 },
}

/// A member's raft role, as shown to observers and in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// An observer that drops everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_event(&self, _member_id: u64, _event: NodeEvent) {}
}

/// Everything a member needs from the world, bundled.
#[derive(Clone)]
pub struct Env {
    /// Where the WAL lives (`--wal-dir`, by default `<data-dir>/member/wal`).
    pub wal_disk: Arc<dyn Disk>,
    /// Where snapshots and member metadata live (`<data-dir>/member`).
    pub data_disk: Arc<dyn Disk>,
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub observer: Arc<dyn Observer>,
    /// Where blocking jobs run (see [`Worker`]).
    pub worker: Arc<dyn Worker>,
    /// Seed of the member's only source of randomness (a ChaCha generator).
    pub seed: u64,
}
