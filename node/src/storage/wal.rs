//! The write-ahead log: what raft has persisted, replayed at start-up.
//!
//! A WAL is a sequence of segment files `<seq>-<first_index>.wal` (both 16 hex digits).
//! Each holds records:
//!
//! ```text
//! len: u32 LE   (bytes after the crc: 1 + 8 + 8 + data)
//! crc: u32 LE   (CRC-32 of kind, term, index and data)
//! kind: u8      (1 entry, 2 hard state, 3 snapshot mark)
//! term: u64 LE
//! index: u64 LE
//! data          (protobuf Entry / HardState; empty for a snapshot mark)
//! ```
//!
//! Invariants:
//! - A batch of records is appended with one write and made durable with one sync
//!   ([`Wal::sync`]); raft's Ready is reported persisted only after it returns.
//! - At replay, the log of the last segment ends at the first record that fails its
//!   checks *if nothing valid follows it*: a run of zeros to the end of the file (what
//!   some file systems show after power loss), or a torn record with no intact record
//!   after it, is a torn write; it is truncated away and the member starts. A bad record
//!   followed by a valid one — or a bad record in any older segment — is corruption
//!   (a flipped length field must never silently cut synced entries), and replay fails.
//! - The newest segment is preallocated to the segment size (zeros, durably) and written
//!   at its end offset, so that a sync commits no new file size (~95 instead of ~140 us
//!   per write + fdatasync on this machine's ext4, as etcd preallocates its segments).
//!   Zeros after the last record are therefore the normal end of the newest segment:
//!   they are cut away at open (and the room reserved again), and not reported as a torn
//!   write. A cut shortens the old segment to its records, so older segments hold no
//!   zeros: there, zeros are corruption like any other bad record.
//! - An older segment is never left with unsynced bytes: before a cut, whatever was
//!   written without sync (commit-only hard states) is synced, and at open the last
//!   segment is synced (an earlier process may have left unsynced bytes in the page
//!   cache), so power loss can only tear the last segment.
//! - A later entry at an index overrides earlier ones (raft log truncation); a snapshot
//!   mark discards everything before it.
//! - Every new segment starts with the current hard state, so releasing old segments
//!   never loses the vote.
//!
//! The next segment is a *spare* ([`Wal::spare_wanted`]): a file `<n>.spare` that a job
//! on the worker fills with zeros to the segment size, written out and durable
//! ([`Disk::preallocate_zeroed`]: a sync of writes into written zeros commits no extent
//! conversion; three members put 7-15% faster at 64 clients, 2026-11-29). Writing 64
//! MiB takes the worker 50-150 ms, which a cut on the loop could not afford (a cut
//! there takes 1-5 ms: the old segment's truncation, the rename, the header's sync).
//! The next cut renames it into place; a cut that finds none ready creates its segment in
//! place, as before. A spare holds nothing but zeros, so a cut that takes one leaves
//! exactly what a cut in place leaves; spares a crash left behind are removed at open,
//! never used. A segment made from a spare asks for the next one once half full; one
//! whose room is only reserved (the first of a new member, the last one at open, one cut
//! in place) asks at once and is cut as soon as the spare is ready, however full.

use raft::eraftpb::{Entry, HardState};
use protobuf::Message as _;

use crate::env::{Disk, DiskError};

/// Segments are cut once they grow past this.
pub const WAL_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
const RECORD_HEADER_BYTES: usize = 8;
const RECORD_FIXED_BYTES: usize = 1 + 8 + 8;
/// A spare segment's name ends with this (see the module documentation).
const SPARE_SUFFIX: &str = ".spare";
/// Largest record accepted at replay; anything claiming more is damage.
pub const WAL_RECORD_BYTES_MAX: usize = 512 * 1024 * 1024;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT_MARK: u8 = 3;

/// Why the WAL could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalError {
    Disk(DiskError),
    /// A record failed its checks somewhere other than the tail of the last segment,
    /// or the log has a hole. Never skipped silently.
    Corrupt { segment: String, offset: u64, detail: String },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Disk(e) => write!(f, "wal: {e}"),
            WalError::Corrupt { segment, offset, detail } => {
                write!(f, "wal: corrupt record in {segment} at byte {offset}: {detail}")
            }
        }
    }
}

impl std::error::Error for WalError {}

impl From<DiskError> for WalError {
    fn from(e: DiskError) -> Self {
        WalError::Disk(e)
    }
}

/// What replay recovered.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Entries after the snapshot, contiguous, in index order.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    /// Where a torn tail was cut: (segment, byte offset).
    pub torn_tail_truncated_at: Option<(String, u64)>,
    /// The newest snapshot the WAL says the state machine starts from (0: none). The
    /// member needs a snapshot file at least this new: entries before it are gone.
    pub snapshot_mark_index: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    name: String,
    seq: u64,
    first_index: u64,
}

fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<Segment> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, first) = stem.split_once('-')?;
    Some(Segment {
        name: name.to_string(),
        seq: u64::from_str_radix(seq, 16).ok()?,
        first_index: u64::from_str_radix(first, 16).ok()?,
    })
}

fn encode_record(kind: u8, term: u64, index: u64, data: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(RECORD_FIXED_BYTES + data.len()).expect("record under 4 GiB");
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&term.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    hasher.update(data);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(data);
}

struct DecodedRecord<'a> {
    kind: u8,
    term: u64,
    index: u64,
    data: &'a [u8],
}

/// Decodes the record at `offset`; `Err(detail)` if it fails a check.
fn decode_record(bytes: &[u8], offset: usize) -> Result<(DecodedRecord<'_>, usize), String> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(format!("{} bytes left, a record header needs {RECORD_HEADER_BYTES}", rest.len()));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if !(RECORD_FIXED_BYTES..=WAL_RECORD_BYTES_MAX).contains(&len) {
        return Err(format!("record length {len} is impossible"));
    }
    if rest.len() < RECORD_HEADER_BYTES + len {
        return Err(format!("record of {len} bytes runs past the end of the file"));
    }
    let body = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    if crc32fast::hash(body) != crc {
        return Err("CRC mismatch".to_string());
    }
    let record = DecodedRecord {
        kind: body[0],
        term: u64::from_le_bytes(body[1..9].try_into().expect("8 bytes")),
        index: u64::from_le_bytes(body[9..17].try_into().expect("8 bytes")),
        data: &body[RECORD_FIXED_BYTES..],
    };
    Ok((record, offset + RECORD_HEADER_BYTES + len))
}

/// Whether the bytes from `offset` on are all zeros: the reserved room of a preallocated
/// segment (or unsynced writes into it that power loss turned back into zeros).
fn is_zero_tail(bytes: &[u8], offset: usize) -> bool {
    bytes[offset..].iter().all(|b| *b == 0)
}

/// Whether the bad record at `offset` of the last segment is the torn end of the log:
/// zeros from there to the end of the file, or no intact record anywhere after it.
/// (The scan tries every later offset; garbage lengths are rejected before any CRC is
/// computed, so it costs little more than reading the tail.)
fn is_torn_tail(bytes: &[u8], offset: usize) -> bool {
    if is_zero_tail(bytes, offset) {
        return true;
    }
    // A record starts with a non-zero length: none starts in the reserved zeros.
    let scan_end = bytes.iter().rposition(|b| *b != 0).map_or(offset, |last| last + 1);
    !(offset + 1..scan_end).any(|later| decode_record(bytes, later).is_ok())
}

/// The same decision as replay made before detcd checked what follows a bad record:
/// only whether its length field reaches the end of the file. Kept only as a planted
/// bug, so the simulator proves it can tell the difference.
#[cfg(madsim)]
fn is_torn_tail_by_length_only(bytes: &[u8], offset: usize) -> bool {
    let rest = &bytes[offset..];
    if rest.len() < 4 {
        return true;
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    offset + RECORD_HEADER_BYTES + len >= bytes.len()
}

/// Byte spans `[start, end)` of the records of a segment that decode, in order, up to
/// the first that does not (for tests and the simulator's corruption faults).
pub fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match decode_record(bytes, offset) {
            Ok((_, next)) => {
                spans.push((offset, next));
                offset = next;
            }
            Err(_) => break,
        }
    }
    spans
}

/// Wrong behaviours the simulator must be able to catch, planted on purpose. Simulator
/// builds only.
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WalPlantedBugs {
    /// Cut a new segment without syncing (or shortening: that syncs too) the old one.
    pub cut_without_sync: bool,
    /// Call a bad record torn when its length field reaches the end of the file.
    pub torn_by_length_only: bool,
    /// A segment that cannot be read counts as empty.
    pub read_error_is_empty: bool,
    /// A spare starts as a copy of the newest segment, not zeros (as a recycled old
    /// segment would: its stale records follow the new ones).
    pub spare_holds_stale_bytes: bool,
}

#[cfg(madsim)]
impl WalPlantedBugs {
    pub fn new(cut_without_sync: bool, torn_by_length_only: bool, read_error_is_empty: bool, spare_holds_stale_bytes: bool) -> Self {
        Self { cut_without_sync, torn_by_length_only, read_error_is_empty, spare_holds_stale_bytes }
    }
}

/// The file the next cut renames into the new segment (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spare {
    /// None yet: wanted at once if the newest segment is not zeroed, else once it is half
    /// full.
    Absent,
    /// A job on the worker prepares this file.
    Preparing(String),
    /// Zeros to the segment size, durably: the next cut takes it.
    Ready(String),
    /// Its preparation failed: the next cut creates its segment in place, and the segment
    /// after it asks again.
    Failed,
}

/// Prepares a spare segment on the worker; [`Wal::spare_prepared`] takes its result.
pub struct SpareJob {
    disk: std::sync::Arc<dyn Disk>,
    name: String,
    len_bytes: u64,
    /// The newest segment, copied into the spare first (the planted bug).
    #[cfg(madsim)]
    stale_from: Option<String>,
}

/// What a [`SpareJob`] did.
pub struct SparePrepared {
    name: String,
    result: Result<(), DiskError>,
}

impl SpareJob {
    /// Creates the spare and writes its zeros out, durably. Blocks for a while (64 MiB).
    pub fn run(self) -> SparePrepared {
        let result = self.prepare();
        if result.is_err() {
            // Best effort: what is left of it is removed at the next open anyway.
            let _ = self.disk.remove(&self.name);
        }
        SparePrepared { name: self.name, result }
    }

    fn prepare(&self) -> Result<(), DiskError> {
        self.disk.create(&self.name)?;
        #[cfg(madsim)]
        if let Some(from) = &self.stale_from {
            // Unsynced: the cut's first sync makes them durable with its header.
            let stale = self.disk.read(from)?;
            self.disk.write_at(&self.name, 0, &stale)?;
        }
        self.disk.preallocate_zeroed(&self.name, self.len_bytes)
    }
}

/// The open WAL: appends go to the newest segment.
pub struct Wal {
    disk: std::sync::Arc<dyn Disk>,
    segments: Vec<Segment>,
    /// Where the newest segment's records end (the file is longer: reserved zeros).
    current_bytes: u64,
    segment_bytes_max: u64,
    pending: Vec<u8>,
    /// Whether the newest segment holds bytes written without a sync.
    current_unsynced: bool,
    /// Index of the last entry appended (to name the next segment).
    last_index: u64,
    hard_state: HardState,
    spare: Spare,
    /// Spares asked for by this process (names the next one).
    spares_wanted: u64,
    /// Whether the newest segment was a spare: its room is written zeros.
    current_zeroed: bool,
    #[cfg(madsim)]
    planted: WalPlantedBugs,
}

impl Wal {
    /// Reads every segment, cuts a torn tail, and returns the WAL ready for appends
    /// together with what it held after `snapshot_index`. Creates the first segment of an
    /// empty WAL.
    pub fn open(
        disk: std::sync::Arc<dyn Disk>,
        snapshot_index: u64,
        segment_bytes_max: u64,
    ) -> Result<(Wal, Replayed), WalError> {
        Self::open_with(
            disk,
            snapshot_index,
            segment_bytes_max,
            #[cfg(madsim)]
            WalPlantedBugs::default(),
        )
    }

    /// [`Wal::open`], with the simulator's planted bugs in simulator builds.
    pub fn open_with(
        disk: std::sync::Arc<dyn Disk>,
        snapshot_index: u64,
        segment_bytes_max: u64,
        #[cfg(madsim)] planted: WalPlantedBugs,
    ) -> Result<(Wal, Replayed), WalError> {
        assert!(segment_bytes_max > 0, "segment_bytes_max must be positive");
        let names = disk.list("")?;
        // A spare left by an earlier process may be half prepared: never used.
        for spare in names.iter().filter(|name| name.ends_with(SPARE_SUFFIX)) {
            disk.remove(spare)?;
        }
        let mut segments: Vec<Segment> = names.iter().filter_map(|name| parse_segment_name(name)).collect();
        segments.sort_by_key(|s| s.seq);

        let mut replayed = Replayed::default();
        let mut base_index = snapshot_index;
        let mut current_bytes = 0u64;
        let segment_count = segments.len();
        for (position, segment) in segments.iter().enumerate() {
            let is_last = position + 1 == segment_count;
            // An older segment is never written again (a cut syncs it first; later it is
            // only removed): it is mapped rather than copied into fresh memory. The last
            // one may be cut short below while its bytes are held, so it is read.
            let read = if is_last { disk.read(&segment.name).map(bytes::Bytes::from) } else { disk.read_immutable(&segment.name) };
            #[cfg(madsim)]
            let read = match read {
                Err(DiskError::Io { .. }) if planted.read_error_is_empty => Ok(bytes::Bytes::new()),
                other => other,
            };
            let bytes = read?;
            let mut offset = 0usize;
            while offset < bytes.len() {
                let (record, next) = match decode_record(&bytes, offset) {
                    Ok(decoded) => decoded,
                    Err(detail) => {
                        #[cfg(madsim)]
                        let torn = if planted.torn_by_length_only {
                            is_torn_tail_by_length_only(&bytes, offset)
                        } else {
                            is_torn_tail(&bytes, offset)
                        };
                        #[cfg(not(madsim))]
                        let torn = is_torn_tail(&bytes, offset);
                        if is_last && torn {
                            // Zeros are the reserved room (re-reserved below), not a tear.
                            if !is_zero_tail(&bytes, offset) {
                                replayed.torn_tail_truncated_at = Some((segment.name.clone(), offset as u64));
                            }
                            disk.truncate(&segment.name, offset as u64)?;
                            break;
                        }
                        return Err(WalError::Corrupt {
                            segment: segment.name.clone(),
                            offset: offset as u64,
                            detail,
                        });
                    }
                };
                let corrupt = |detail: String| WalError::Corrupt {
                    segment: segment.name.clone(),
                    offset: offset as u64,
                    detail,
                };
                match record.kind {
                    // An entry the snapshot (or a later mark) already covers is ignored
                    // (`apply_replayed_entry`): its CRC was checked, its body is not decoded
                    // (at 4 KiB values, 100k such entries were a quarter of a restart).
                    KIND_ENTRY if record.index <= base_index => {}
                    KIND_ENTRY => {
                        let entry = Entry::parse_from_bytes(record.data)
                            .map_err(|e| corrupt(format!("entry does not decode: {e}")))?;
                        if entry.index != record.index || entry.term != record.term {
                            return Err(corrupt("entry header disagrees with its body".to_string()));
                        }
                        apply_replayed_entry(&mut replayed.entries, base_index, entry).map_err(corrupt)?;
                    }
                    KIND_HARD_STATE => {
                        let hard_state = HardState::parse_from_bytes(record.data)
                            .map_err(|e| corrupt(format!("hard state does not decode: {e}")))?;
                        replayed.hard_state = Some(hard_state);
                    }
                    KIND_SNAPSHOT_MARK => {
                        replayed.entries.clear();
                        base_index = base_index.max(record.index);
                        replayed.snapshot_mark_index = replayed.snapshot_mark_index.max(record.index);
                    }
                    other => return Err(corrupt(format!("unknown record kind {other}"))),
                }
                offset = next;
            }
            if is_last {
                current_bytes = offset as u64;
            }
        }

        let last_index = replayed.entries.last().map_or(base_index, |e| e.index);
        let mut wal = Wal {
            disk,
            segments,
            current_bytes,
            segment_bytes_max,
            pending: Vec::new(),
            current_unsynced: false,
            last_index,
            hard_state: replayed.hard_state.clone().unwrap_or_default(),
            spare: Spare::Absent,
            spares_wanted: 0,
            current_zeroed: false,
            #[cfg(madsim)]
            planted,
        };
        match wal.segments.last() {
            // What replay read may include bytes an earlier process wrote without sync
            // (a process crash keeps the page cache). Make it durable before the member
            // acts on it — and before a cut could leave it unsynced in an older segment.
            Some(last) => {
                let name = last.name.clone();
                wal.disk.sync(&name)?;
                wal.reserve_room(&name)?;
            }
            None => wal.cut()?,
        }
        Ok((wal, replayed))
    }

    fn current_segment(&self) -> &Segment {
        self.segments.last().expect("an open WAL has a segment")
    }

    /// Whether the newest segment holds bytes written without a sync.
    pub fn has_unsynced_bytes(&self) -> bool {
        self.current_unsynced
    }

    /// Starts a new segment whose first record is the current hard state, durably:
    /// older segments may be released as soon as this one exists, and the vote they
    /// hold must never depend on a record that a crash could still take away.
    fn cut(&mut self) -> Result<(), WalError> {
        assert!(self.pending.is_empty(), "queued records belong to the old segment");
        // What the old segment holds unsynced must be durable before it stops being the
        // last one: replay calls a bad record in an older segment corruption.
        #[cfg(madsim)]
        let sync_old = self.current_unsynced && !self.planted.cut_without_sync;
        #[cfg(not(madsim))]
        let sync_old = self.current_unsynced;
        if let Some(old) = self.segments.last().map(|s| s.name.clone()) {
            if sync_old {
                self.disk.sync(&old)?;
            }
            // Older segments end at their last record: their reserved zeros go (durably).
            #[cfg(madsim)]
            let shorten_old = !self.planted.cut_without_sync;
            #[cfg(not(madsim))]
            let shorten_old = true;
            if shorten_old {
                self.disk.truncate(&old, self.current_bytes)?;
            }
        }
        self.current_unsynced = false;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let segment = Segment { name: segment_name(seq, self.last_index + 1), seq, first_index: self.last_index + 1 };
        self.current_zeroed = false;
        match std::mem::replace(&mut self.spare, Spare::Absent) {
            Spare::Ready(spare) => {
                self.disk.rename(&spare, &segment.name)?;
                self.current_zeroed = true;
            }
            not_ready => {
                // A spare still being prepared is kept for the next cut.
                if let Spare::Preparing(name) = not_ready {
                    self.spare = Spare::Preparing(name);
                }
                self.disk.create(&segment.name)?;
                self.reserve_room(&segment.name)?;
            }
        }
        let mut header = Vec::new();
        let hard_state_bytes = self.hard_state.write_to_bytes().expect("hard state encodes");
        encode_record(KIND_HARD_STATE, self.hard_state.term, self.hard_state.commit, &hard_state_bytes, &mut header);
        self.disk.write_at(&segment.name, 0, &header)?;
        self.disk.sync(&segment.name)?;
        self.current_bytes = header.len() as u64;
        self.segments.push(segment);
        Ok(())
    }

    /// Preallocates the newest segment to the segment size (see the module's invariants).
    /// A disk without that room only loses the faster sync: writes still grow the file,
    /// and report `NoSpace` themselves when nothing is left.
    fn reserve_room(&self, name: &str) -> Result<(), WalError> {
        match self.disk.preallocate(name, self.segment_bytes_max) {
            Ok(()) | Err(DiskError::NoSpace { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// A spare segment to prepare on the worker, when none is ready or being prepared and
    /// the newest segment is half full or not zeroed (see the module documentation). The
    /// caller runs the job away from the loop and hands its result to
    /// [`Wal::spare_prepared`].
    pub fn spare_wanted(&mut self) -> Option<SpareJob> {
        let due = !self.current_zeroed || self.current_bytes >= self.segment_bytes_max / 2;
        if self.spare != Spare::Absent || !due {
            return None;
        }
        self.spares_wanted += 1;
        let name = format!("{:016x}{SPARE_SUFFIX}", self.spares_wanted);
        self.spare = Spare::Preparing(name.clone());
        Some(SpareJob {
            disk: self.disk.clone(),
            name,
            len_bytes: self.segment_bytes_max,
            #[cfg(madsim)]
            stale_from: self.planted.spare_holds_stale_bytes.then(|| self.current_segment().name.clone()),
        })
    }

    /// Takes the result of the job [`Wal::spare_wanted`] handed out (one at a time).
    pub fn spare_prepared(&mut self, prepared: SparePrepared) {
        assert_eq!(self.spare, Spare::Preparing(prepared.name.clone()), "a spare's result arrives for the spare being prepared");
        self.spare = match prepared.result {
            Ok(()) => Spare::Ready(prepared.name),
            Err(_) => Spare::Failed,
        };
    }

    /// Queues entries (not yet written or durable).
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.cut_if_full()?;
        for entry in entries {
            let data = entry.write_to_bytes().expect("entry encodes");
            encode_record(KIND_ENTRY, entry.term, entry.index, &data, &mut self.pending);
            self.last_index = entry.index;
        }
        Ok(())
    }

    /// Queues a hard state (term, vote, commit).
    pub fn append_hard_state(&mut self, hard_state: &HardState) -> Result<(), WalError> {
        self.cut_if_full()?;
        let data = hard_state.write_to_bytes().expect("hard state encodes");
        encode_record(KIND_HARD_STATE, hard_state.term, hard_state.commit, &data, &mut self.pending);
        self.hard_state = hard_state.clone();
        Ok(())
    }

    /// Records that the state machine now starts from a snapshot at `index`, in a fresh
    /// segment so that older segments become releasable.
    pub fn append_snapshot_mark(&mut self, index: u64, term: u64) -> Result<(), WalError> {
        self.sync()?;
        self.last_index = index;
        self.cut()?;
        encode_record(KIND_SNAPSHOT_MARK, term, index, &[], &mut self.pending);
        Ok(())
    }

    /// Cuts when the newest segment is full, or when a spare is ready to replace one whose
    /// room is only reserved.
    fn cut_if_full(&mut self) -> Result<(), WalError> {
        let full = self.current_bytes >= self.segment_bytes_max;
        let zeroed_waits = !self.current_zeroed && matches!(self.spare, Spare::Ready(_));
        if self.pending.is_empty() && (full || zeroed_waits) {
            self.cut()?;
        }
        Ok(())
    }

    /// Whether records are queued but not yet durable.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes everything queued with one append and makes it durable with one sync.
    /// Returns whether a sync was issued.
    pub fn sync(&mut self) -> Result<bool, WalError> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        let name = self.current_segment().name.clone();
        self.disk.write_at(&name, self.current_bytes, &self.pending)?;
        self.disk.sync(&name)?;
        self.current_bytes += self.pending.len() as u64;
        self.pending.clear();
        self.current_unsynced = false;
        Ok(true)
    }

    /// Writes what is queued without syncing. Only for records raft does not need durable
    /// (a hard state whose only change is the commit index, which is recomputable); a
    /// later `sync` of the segment makes them durable with everything else.
    pub fn write_without_sync(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = self.current_segment().name.clone();
        self.disk.write_at(&name, self.current_bytes, &self.pending)?;
        self.current_bytes += self.pending.len() as u64;
        self.pending.clear();
        self.current_unsynced = true;
        Ok(())
    }

    /// Removes segments whose entries are all covered by a durable snapshot at
    /// `snapshot_index`, oldest first, while more than `keep_max` segments remain.
    pub fn release(&mut self, snapshot_index: u64, keep_max: usize) -> Result<usize, WalError> {
        let released = self.detach_released(snapshot_index, keep_max);
        for name in &released {
            self.disk.remove(name)?;
        }
        Ok(released.len())
    }

    /// As [`Wal::release`], but the segments are only dropped from the WAL: their names
    /// are returned for the caller to remove from the disk (away from the loop). Until
    /// then they are stale files a restart passes over (they end before the snapshot).
    pub fn detach_released(&mut self, snapshot_index: u64, keep_max: usize) -> Vec<String> {
        let mut released = Vec::new();
        while self.segments.len() > keep_max.max(1) {
            let releasable = self.segments.get(1).is_some_and(|next| next.first_index <= snapshot_index + 1);
            if !releasable {
                break;
            }
            released.push(self.segments.remove(0).name);
        }
        released
    }

    /// The disk the WAL lives on (for removals run away from the loop).
    pub fn disk(&self) -> std::sync::Arc<dyn Disk> {
        self.disk.clone()
    }

    /// Names of the segments, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }
}

fn apply_replayed_entry(entries: &mut Vec<Entry>, base_index: u64, entry: Entry) -> Result<(), String> {
    if entry.index <= base_index {
        return Ok(());
    }
    let next_index = entries.last().map_or(base_index + 1, |e| e.index + 1);
    if entry.index > next_index {
        return Err(format!("log has a hole: expected index {next_index}, found {}", entry.index));
    }
    let keep = (entry.index - base_index - 1) as usize;
    entries.truncate(keep);
    entries.push(entry);
    Ok(())
}
