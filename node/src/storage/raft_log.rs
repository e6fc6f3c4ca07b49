//! [`RaftLog`]: the raft log in memory (mirroring the WAL), with the hard state,
//! configuration and latest snapshot's metadata that raft's `Storage` reports.
//!
//! Why it exists: raft-rs's `MemStorage` keeps the log in a `Vec`. Its compaction drains
//! from the front, moving every later entry each time — the member drops a snapshot's
//! worth of entries in bounded steps, so each step moved the rest of the log (7-8 ms of
//! the loop for the first step after each snapshot at a million keys, this machine,
//! 2026-11-29) — and while the log first fills after a start, the `Vec` grows by
//! reallocation, copying the whole log into fresh pages (9-25 ms of one turn, four
//! times in the first seconds of a load). Here the log is a `VecDeque` reserved up
//! front for the entries a member holds between snapshots: dropping from the front
//! moves nothing, and appending never reallocates until the log outgrows the
//! reservation.
//!
//! The semantics are `MemStorageCore`'s exactly (the same errors, the same panics on
//! misuse), so raft sees the same storage.

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{RaftState, StorageError};

/// The most log entries reserved up front (`RaftLog::with_reserved`), whatever the
/// snapshot interval: ~27 MB of entry headers at most, their data apart.
pub const RAFT_LOG_ENTRIES_RESERVED_MAX: usize = 1 << 18;

/// See the module documentation.
#[derive(Default)]
pub struct RaftLog {
    raft_state: RaftState,
    /// `entries[i]` has index `first_index() + i`.
    entries: VecDeque<Entry>,
    /// The latest snapshot's metadata (index 0: none).
    snapshot_metadata: SnapshotMetadata,
}

impl RaftLog {
    /// An empty log with room for `entries_reserved` entries (at most
    /// [`RAFT_LOG_ENTRIES_RESERVED_MAX`]).
    pub fn with_reserved(entries_reserved: usize) -> Self {
        Self { entries: VecDeque::with_capacity(entries_reserved.min(RAFT_LOG_ENTRIES_RESERVED_MAX)), ..Self::default() }
    }

    pub fn raft_state(&self) -> RaftState {
        self.raft_state.clone()
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.raft_state.hard_state = hard_state;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.raft_state.hard_state.commit = commit;
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.raft_state.conf_state = conf_state;
    }

    pub fn first_index(&self) -> u64 {
        match self.entries.front() {
            Some(entry) => entry.index,
            None => self.snapshot_metadata.index + 1,
        }
    }

    pub fn last_index(&self) -> u64 {
        match self.entries.back() {
            Some(entry) => entry.index,
            None => self.snapshot_metadata.index,
        }
    }

    /// The log restarts after `snapshot` (its data is not looked at); refused if the
    /// log already starts after it.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> raft::Result<()> {
        let metadata = snapshot.get_metadata();
        let index = metadata.index;
        if self.first_index() > index {
            return Err(raft::Error::Store(StorageError::SnapshotOutOfDate));
        }
        self.snapshot_metadata = metadata.clone();
        self.raft_state.hard_state.term = self.raft_state.hard_state.term.max(metadata.term);
        self.raft_state.hard_state.commit = index;
        self.entries.clear();
        self.raft_state.conf_state = metadata.get_conf_state().clone();
        Ok(())
    }

    /// Drops the entries before `compact_index` (nothing if the log starts there or
    /// later). A bug panics: compacting past the last entry.
    pub fn compact(&mut self, compact_index: u64) {
        if compact_index <= self.first_index() {
            return;
        }
        assert!(
            compact_index <= self.last_index() + 1,
            "compact not received raft logs: {compact_index}, last index: {}",
            self.last_index()
        );
        let dropped = (compact_index - self.first_index()) as usize;
        self.entries.drain(..dropped);
    }

    /// Appends `entries`, replacing every entry from the first one's index on. A bug
    /// panics: entries that overwrite compacted ones or leave a gap.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            self.first_index() <= first.index,
            "overwrite compacted raft logs, compacted: {}, append: {}",
            self.first_index() - 1,
            first.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "raft logs should be continuous, last index: {}, new appended: {}",
            self.last_index(),
            first.index
        );
        let kept = (first.index - self.first_index()) as usize;
        self.entries.truncate(kept);
        self.entries.extend(entries.iter().cloned());
    }

    /// Entries `[low, high)`, at most `max_size` bytes of them but at least one (raft's
    /// `limit_size`). `Compacted` below the first index; a bug panics past the last.
    pub fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last_index() + 1, "index out of bound (last: {}, high: {})", self.last_index() + 1, high);
        let first = self.first_index();
        let (from, to) = ((low - first) as usize, (high - first) as usize);
        let mut entries: Vec<Entry> = self.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut entries, max_size);
        Ok(entries)
    }

    /// The term of entry `index`: the snapshot's at its index, `Compacted` before the
    /// log, `Unavailable` after it.
    pub fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot_metadata.index {
            return Ok(self.snapshot_metadata.term);
        }
        let first = self.first_index();
        if index < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(index - first) as usize].term)
    }

    /// Entries the log has room for without reallocating.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use raft::storage::{MemStorage, Storage};
    use raft::GetEntriesContext;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn entry(index: u64, term: u64, data_bytes: usize) -> Entry {
        let mut entry = Entry::default();
        entry.index = index;
        entry.term = term;
        entry.data = vec![7u8; data_bytes].into();
        entry
    }

    /// Random appends (overwriting suffixes), compactions, snapshots and reads, each
    /// against raft-rs's `MemStorage` doing the same: the same answers and errors.
    #[test]
    fn answers_as_raft_rs_mem_storage_does() {
        for seed in 0..30u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let model = MemStorage::new();
            let mut log = RaftLog::with_reserved(16);
            let mut term = 1u64;
            for _ in 0..400 {
                let (first, last) = (log.first_index(), log.last_index());
                assert_eq!((first, last), (model.first_index().expect("first"), model.last_index().expect("last")), "seed {seed}");
                match rng.gen_range(0..10) {
                    0..=3 => {
                        // From anywhere in the log up to just past its end.
                        let start = rng.gen_range(first..=last + 1);
                        term += u64::from(rng.gen_bool(0.3));
                        let count = rng.gen_range(1..6);
                        let appended: Vec<Entry> = (start..start + count).map(|i| entry(i, term, rng.gen_range(0..40))).collect();
                        log.append(&appended);
                        model.wl().append(&appended).expect("appends");
                    }
                    4 => {
                        let to = rng.gen_range(first.saturating_sub(2)..=last + 1);
                        log.compact(to);
                        model.wl().compact(to).expect("compacts");
                    }
                    5 if rng.gen_bool(0.2) => {
                        let mut snapshot = Snapshot::default();
                        snapshot.mut_metadata().index = rng.gen_range(first.saturating_sub(3)..last + 5);
                        snapshot.mut_metadata().term = term;
                        snapshot.mut_metadata().mut_conf_state().set_voters(vec![1, rng.gen_range(2..5)]);
                        let ours = log.apply_snapshot(&snapshot);
                        let theirs = model.wl().apply_snapshot(snapshot);
                        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "seed {seed}");
                    }
                    _ => {
                        let low = rng.gen_range(first.saturating_sub(2)..=last + 1);
                        let high = rng.gen_range(low.max(first)..=last + 1);
                        let max_size = if rng.gen_bool(0.5) { Some(rng.gen_range(0..200)) } else { None };
                        let ours = log.entries(low, high, max_size);
                        let theirs = if low >= first && low == high && log.entries.is_empty() {
                            // MemStorage indexes its first entry even for an empty range.
                            Ok(Vec::new())
                        } else {
                            model.entries(low, high, max_size, GetEntriesContext::empty(false))
                        };
                        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "seed {seed}");
                        let index = rng.gen_range(first.saturating_sub(2)..last + 3);
                        assert_eq!(format!("{:?}", log.term(index)), format!("{:?}", model.term(index)), "seed {seed}");
                    }
                }
                let (ours, theirs) = (log.raft_state(), model.initial_state().expect("state"));
                assert_eq!((ours.hard_state, ours.conf_state), (theirs.hard_state, theirs.conf_state), "seed {seed}");
            }
        }
    }

    /// A log reserved for its entries between snapshots never reallocates while it
    /// fills and is compacted in steps.
    #[test]
    fn a_reserved_log_does_not_grow_while_compacted_in_steps() {
        let mut log = RaftLog::with_reserved(1000);
        let reserved = log.capacity();
        assert!(reserved >= 1000);
        for round in 0..10u64 {
            let appended: Vec<Entry> = (round * 100 + 1..=round * 100 + 100).map(|i| entry(i, 1, 8)).collect();
            log.append(&appended);
            log.compact(log.last_index().saturating_sub(500).max(1));
        }
        assert_eq!((log.first_index(), log.last_index()), (500, 1000));
        assert_eq!(log.capacity(), reserved, "the reservation held");
        assert!(RaftLog::with_reserved(usize::MAX).capacity() < 2 * RAFT_LOG_ENTRIES_RESERVED_MAX, "the reservation is capped");
    }
}
