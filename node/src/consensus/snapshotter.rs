//! Every crash-ordering rule of snapshots, in one place.
//!
//! Taking a snapshot of this member's own state happens in two halves, so that the
//! raft loop never stops for it: [`Snapshotter::begin_own`] takes a frozen copy of the
//! state (copy-on-write: a pointer per chunk of keys) into a [`SnapshotJob`] that runs
//! on the env's worker, and [`Snapshotter::finish_own`] completes it on the loop:
//! 1. the snapshot file is made durable (temp file, sync, rename) — by the job;
//! 2. only then the in-memory raft log drops entries behind it (keeping
//!    `snapshot_catchup_entries` for slow followers);
//! 3. only then snapshot files beyond the newest [`SNAPSHOT_FILES_KEPT_MAX`] (or fewer,
//!    `max_snapshots`) are purged;
//! 4. last, WAL segments wholly covered by the *oldest* snapshot file kept are released:
//!    the WAL still reaches back to every snapshot kept, so a start that finds the newest
//!    one damaged falls back to the older one and replays from there.
//!
//! Why at most two files and no WAL beyond them (etcd keeps `--max-snapshots` and
//! `--max-wals` files, 5 each): a detcd snapshot file holds the whole store, where etcd's
//! holds raft metadata beside one bbolt file. Two full copies plus the WAL since the
//! older one keep a member of a million keys below etcd's data-dir size; five would not.
//!
//! Installing a snapshot received from the leader:
//! 1. its data is decoded first — bad data is refused before anything is written;
//! 2. the file is made durable;
//! 3. the WAL records a snapshot mark in a fresh segment, whose leading hard state is
//!    synced (so releasing older segments can never lose the vote);
//! 4. raft's storage and the state machine switch to it; old files are purged.
//!
//! A crash between any two steps leaves a state the next start recovers from: the WAL
//! still reaches back to the newest snapshot file it names.

use std::sync::Arc;

use raft::eraftpb::{ConfState, Snapshot, SnapshotMetadata};

use super::fatal::FatalError;
use crate::apply::StateMachine;
use crate::storage::wal::Wal;
use crate::env::DiskError;
use crate::storage::{NodeStorage, SnapshotStore, SnapshotWriter};

/// See the module documentation.
pub struct Snapshotter {
    files: Arc<SnapshotStore>,
    /// Planted bug `release-before-snapshot-sync` (simulator builds only).
    #[cfg(madsim)]
    pub release_before_sync: bool,
    /// Planted bug `snapshot-save-error-ignored` (simulator builds only).
    #[cfg(madsim)]
    pub save_errors_ignored: bool,
    last_snapshot_index: u64,
    /// The index of the own snapshot whose job is running, if one is.
    in_flight_index: Option<u64>,
    snapshot_count: u64,
    /// How far the interval may stretch for a store much larger than what changed
    /// (see [`Snapshotter::is_due`]): a multiple of `snapshot_count`, at least 1.
    interval_stretch_max: u64,
    /// Bytes of the entries applied since the last snapshot began (what it would be
    /// the first to cover).
    applied_entry_bytes_since: u64,
    /// The stretch held back the snapshot now due at least once (see
    /// [`Snapshotter::begin_own`]'s answer).
    stretched: bool,
    catchup_entries: u64,
    /// Snapshot files kept: `max_snapshots`, at most [`SNAPSHOT_FILES_KEPT_MAX`].
    snapshot_files_kept: usize,
}

/// Whole-store snapshot files a member keeps (see the module documentation).
pub const SNAPSHOT_FILES_KEPT_MAX: usize = 2;

/// A store more than this many times the bytes of the entries applied since the last
/// snapshot stretches the interval (see [`Snapshotter::is_due`]).
pub const SNAPSHOT_STORE_TO_ENTRY_BYTES_RATIO_MAX: u64 = 4;

impl Snapshotter {
    pub fn new(
        files: Arc<SnapshotStore>,
        last_snapshot_index: u64,
        snapshot_count: u64,
        interval_stretch_max: u64,
        catchup_entries: u64,
        max_snapshots: usize,
    ) -> Self {
        assert!(snapshot_count > 0, "snapshot_count must be positive");
        assert!(interval_stretch_max > 0, "the interval stretches by a positive multiple");
        Self {
            files,
            last_snapshot_index,
            in_flight_index: None,
            snapshot_count,
            interval_stretch_max,
            applied_entry_bytes_since: 0,
            stretched: false,
            catchup_entries,
            snapshot_files_kept: max_snapshots.clamp(1, SNAPSHOT_FILES_KEPT_MAX),
            #[cfg(madsim)]
            release_before_sync: false,
            #[cfg(madsim)]
            save_errors_ignored: false,
        }
    }

    pub fn last_snapshot_index(&self) -> u64 {
        self.last_snapshot_index
    }

    /// An entry of `entry_bytes` was applied (see [`Snapshotter::is_due`]).
    pub fn note_applied(&mut self, entry_bytes: usize) {
        self.applied_entry_bytes_since = self.applied_entry_bytes_since.saturating_add(entry_bytes as u64);
    }

    /// Whether a snapshot is due and none is being written: once `snapshot_count`
    /// entries were applied since the last one — unless the store (`store_bytes`) is
    /// over [`SNAPSHOT_STORE_TO_ENTRY_BYTES_RATIO_MAX`] times the bytes of those
    /// entries; then once `snapshot_count` times the interval stretch (at most).
    ///
    /// Why: a snapshot rewrites the whole store, the entries since the last one are what
    /// changed. Keys with long histories (10k keys of ~90 revisions: ~270 MB) were
    /// rewritten every 100k entries (~33 MB) by every member — three members on two
    /// cores put 15% slower, at 2-4x the p99, than with snapshots off (2026-11-29). The
    /// stretch is bounded because the WAL holds the entries since the last snapshot (and
    /// a restart replays them); the log in memory does not grow with it (the loop
    /// compacts it without a snapshot meanwhile, see `NodeCore::maybe_snapshot`).
    pub fn is_due(&mut self, applied_index: u64, store_bytes: u64) -> bool {
        let entries_since = applied_index.saturating_sub(self.last_snapshot_index);
        if self.in_flight_index.is_some() || entries_since < self.snapshot_count {
            return false;
        }
        let store_dwarfs_changes = store_bytes > self.applied_entry_bytes_since.saturating_mul(SNAPSHOT_STORE_TO_ENTRY_BYTES_RATIO_MAX);
        let due = !store_dwarfs_changes || entries_since >= self.snapshot_count.saturating_mul(self.interval_stretch_max);
        self.stretched |= !due;
        due
    }

    /// Whether the stretch held back the snapshot [`Snapshotter::begin_own`] just began
    /// (the simulator counts them: the stretch must be exercised).
    pub fn take_stretched(&mut self) -> bool {
        std::mem::take(&mut self.stretched)
    }


    /// Starts a snapshot of `state` at `applied_index`: the job holds a frozen copy of
    /// the state and writes the file away from the loop (see the module documentation).
    pub fn begin_own(
        &mut self,
        applied_index: u64,
        applied_term: u64,
        conf_state: ConfState,
        state: &StateMachine,
    ) -> SnapshotJob {
        assert!(applied_index > self.last_snapshot_index, "snapshots move forward");
        assert!(self.in_flight_index.is_none(), "one own snapshot at a time");
        self.in_flight_index = Some(applied_index);
        self.applied_entry_bytes_since = 0;
        let mut metadata = SnapshotMetadata::default();
        metadata.index = applied_index;
        metadata.term = applied_term;
        metadata.set_conf_state(conf_state);
        SnapshotJob {
            files: self.files.clone(),
            metadata,
            state: state.clone(),
            #[cfg(madsim)]
            without_sync: self.release_before_sync,
        }
    }

    /// Completes a snapshot whose job finished: steps 2–4 of the module documentation.
    /// A file that could not be made durable stops the member. A snapshot overtaken by
    /// one received from the leader meanwhile changes nothing but the purge. Returns
    /// the files to remove — after this call, and best away from the loop (unlinking a
    /// store-sized file or a 64 MiB segment takes tens of milliseconds).
    pub fn finish_own(&mut self, saved: SnapshotSaved, storage: &NodeStorage, wal: &mut Wal) -> Result<Removals, FatalError> {
        let index = saved.metadata.index;
        assert_eq!(self.in_flight_index.take(), Some(index), "finishing the snapshot that was started");
        #[cfg(madsim)]
        let saved_result = if self.save_errors_ignored { saved.result.or(Ok(None)) } else { saved.result };
        #[cfg(not(madsim))]
        let saved_result = saved.result;
        #[cfg_attr(not(madsim), allow(unused_variables))]
        let unsynced_name = saved_result?;
        if index <= self.last_snapshot_index {
            let data_files = self.files.purge_plan(self.snapshot_files_kept)?;
            return Ok(Removals { data_disk: self.files.disk(), data_files, wal_disk: wal.disk(), wal_segments: Vec::new() });
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(saved.metadata);
        let compact_index = index.saturating_sub(self.catchup_entries).max(1);
        storage.set_snapshot(&snapshot, compact_index);
        self.last_snapshot_index = index;
        #[cfg(madsim)]
        if let Some(name) = unsynced_name {
            // The planted misordering (`release-before-snapshot-sync`): the WAL segments
            // the new file covers go before the file is durable.
            wal.release(index, 1)?;
            self.files.sync_file(&name)?;
        }
        let data_files = self.files.purge_plan(self.snapshot_files_kept)?;
        let oldest_kept_index = self.files.oldest_index_after(&data_files)?.map_or(index, |oldest| oldest.min(index));
        let wal_segments = wal.detach_released(oldest_kept_index, 1);
        Ok(Removals { data_disk: self.files.disk(), data_files, wal_disk: wal.disk(), wal_segments })
    }

    /// Installs a snapshot received from the leader and returns the state it holds
    /// (see the module documentation).
    pub fn install_received(
        &mut self,
        snapshot: &Snapshot,
        storage: &NodeStorage,
        wal: &mut Wal,
    ) -> Result<StateMachine, FatalError> {
        let index = snapshot.get_metadata().index;
        let term = snapshot.get_metadata().term;
        let state = StateMachine::decode(snapshot.get_data()).map_err(FatalError::Snapshot)?;
        self.files.save(snapshot.get_metadata(), &snapshot.get_data(), SnapshotWriter::Received)?;
        wal.append_snapshot_mark(index, term)?;
        storage.apply_snapshot(snapshot)?;
        self.last_snapshot_index = index;
        self.applied_entry_bytes_since = 0;
        self.files.purge(self.snapshot_files_kept)?;
        Ok(state)
    }
}

/// A snapshot of this member's own state, ready to be encoded and written away from the
/// loop: a frozen copy of the state and the raft metadata it carries.
pub struct SnapshotJob {
    files: Arc<SnapshotStore>,
    metadata: SnapshotMetadata,
    state: StateMachine,
    /// Planted bug `release-before-snapshot-sync`: write and rename without syncing.
    #[cfg(madsim)]
    without_sync: bool,
}

/// What a [`SnapshotJob`] did: the metadata it was for, and `Ok` once the file is
/// durable (`Ok(Some(name))`: written but not yet synced, planted bug only).
pub struct SnapshotSaved {
    metadata: SnapshotMetadata,
    result: Result<Option<String>, DiskError>,
}

impl SnapshotJob {
    /// Planted bug `snapshot-not-frozen`: the state the job writes is replaced by a later
    /// one, as if the writer had read the live store.
    #[cfg(madsim)]
    pub fn read_live_state_for_planted_bug(&mut self, live: &StateMachine) {
        self.state = live.clone();
    }

    /// Encodes the state and writes the file (temp, sync, rename).
    pub fn run(self) -> SnapshotSaved {
        let data = self.state.encoding();
        #[cfg(madsim)]
        if self.without_sync {
            let result = self.files.save_without_sync(&self.metadata, &data).map(Some);
            return SnapshotSaved { metadata: self.metadata, result };
        }
        let result = self.files.save(&self.metadata, &data, SnapshotWriter::Own).map(|()| None);
        SnapshotSaved { metadata: self.metadata, result }
    }
}

/// Files a finished snapshot made useless: old snapshot files and WAL segments no kept
/// snapshot needs. [`Removals::run`] removes them (a failure is returned, not retried:
/// the file stays, and a later purge or start-up passes over it).
pub struct Removals {
    data_disk: Arc<dyn crate::env::Disk>,
    data_files: Vec<String>,
    wal_disk: Arc<dyn crate::env::Disk>,
    wal_segments: Vec<String>,
}

impl Removals {
    pub fn is_empty(&self) -> bool {
        self.data_files.is_empty() && self.wal_segments.is_empty()
    }

    pub fn run(self) -> Result<(), DiskError> {
        // On the env's worker, never the loop: paced removals may wait.
        for name in &self.data_files {
            self.data_disk.remove_paced(name)?;
        }
        for name in &self.wal_segments {
            self.wal_disk.remove_paced(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshotter(snapshot_count: u64, interval_stretch_max: u64) -> Snapshotter {
        let files = Arc::new(SnapshotStore::new(Arc::new(crate::env::mem_disk::MemDisk::new())));
        Snapshotter::new(files, 0, snapshot_count, interval_stretch_max, 10, 2)
    }

    #[test]
    fn a_snapshot_is_due_after_snapshot_count_entries_while_the_store_is_not_far_larger_than_them() {
        let mut snapshotter = snapshotter(100, 2);
        for _ in 0..99 {
            snapshotter.note_applied(300);
        }
        assert!(!snapshotter.is_due(99, 1_000), "not before snapshot_count entries");
        snapshotter.note_applied(300);
        // 100 entries of 300 bytes: a store of up to four times that is rewritten at once.
        assert!(snapshotter.is_due(100, 120_000));
        assert!(!snapshotter.is_due(100, 120_001), "a larger store waits");
        assert!(!snapshotter.is_due(199, 10_000_000));
        assert!(snapshotter.is_due(200, 10_000_000), "at most twice the interval");
        assert!(snapshotter.take_stretched());
        assert!(!snapshotter.take_stretched(), "told once");
    }

    #[test]
    fn without_a_stretch_the_interval_is_snapshot_count() {
        let mut snapshotter = snapshotter(100, 1);
        assert!(snapshotter.is_due(100, u64::MAX));
        assert!(!snapshotter.take_stretched());
    }
}
