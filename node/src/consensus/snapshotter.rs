//! Every crash-ordering rule of snapshots, in one place.
//!
//! Taking a snapshot of this member's own state:
//! 1. the snapshot file is made durable (temp file, sync, rename);
//! 2. only then the in-memory raft log drops entries behind it (keeping
//!    `snapshot_catchup_entries` for slow followers);
//! 3. only then WAL segments wholly covered by it are released;
//! 4. last, snapshot files beyond `max_snapshots` are purged.
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

use raft::eraftpb::{ConfState, Snapshot};

use super::fatal::FatalError;
use crate::apply::StateMachine;
use crate::storage::wal::Wal;
use crate::storage::{NodeStorage, SnapshotStore};

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
    snapshot_count: u64,
    catchup_entries: u64,
    max_wals: usize,
    max_snapshots: usize,
}

impl Snapshotter {
    pub fn new(
        files: Arc<SnapshotStore>,
        last_snapshot_index: u64,
        snapshot_count: u64,
        catchup_entries: u64,
        max_wals: usize,
        max_snapshots: usize,
    ) -> Self {
        assert!(snapshot_count > 0, "snapshot_count must be positive");
        Self {
            files,
            last_snapshot_index,
            snapshot_count,
            catchup_entries,
            max_wals,
            max_snapshots,
            #[cfg(madsim)]
            release_before_sync: false,
            #[cfg(madsim)]
            save_errors_ignored: false,
        }
    }

    pub fn last_snapshot_index(&self) -> u64 {
        self.last_snapshot_index
    }

    /// Whether `snapshot_count` entries were applied since the last snapshot.
    pub fn is_due(&self, applied_index: u64) -> bool {
        applied_index >= self.last_snapshot_index + self.snapshot_count
    }

    /// Takes a snapshot of `state` at `applied_index` (see the module documentation).
    pub fn save_own(
        &mut self,
        applied_index: u64,
        applied_term: u64,
        conf_state: ConfState,
        state: &StateMachine,
        storage: &NodeStorage,
        wal: &mut Wal,
    ) -> Result<(), FatalError> {
        assert!(applied_index > self.last_snapshot_index, "snapshots move forward");
        let mut snapshot = Snapshot::default();
        snapshot.set_data(state.encode().into());
        let metadata = snapshot.mut_metadata();
        metadata.index = applied_index;
        metadata.term = applied_term;
        metadata.set_conf_state(conf_state);
        #[cfg(madsim)]
        if self.release_before_sync {
            // The planted misordering: segments go before the snapshot is durable.
            let name = self.files.save_without_sync(&snapshot)?;
            storage.set_snapshot(&snapshot, applied_index.saturating_sub(self.catchup_entries).max(1))?;
            self.last_snapshot_index = applied_index;
            wal.release(applied_index, self.max_wals)?;
            self.files.sync_file(&name)?;
            self.files.purge(self.max_snapshots)?;
            return Ok(());
        }
        let saved = self.files.save(&snapshot);
        #[cfg(madsim)]
        let saved = if self.save_errors_ignored { Ok(()) } else { saved };
        saved?;
        let compact_index = applied_index.saturating_sub(self.catchup_entries).max(1);
        storage.set_snapshot(&snapshot, compact_index)?;
        self.last_snapshot_index = applied_index;
        wal.release(applied_index, self.max_wals)?;
        self.files.purge(self.max_snapshots)?;
        Ok(())
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
        self.files.save(snapshot)?;
        wal.append_snapshot_mark(index, term)?;
        storage.apply_snapshot(snapshot)?;
        self.last_snapshot_index = index;
        self.files.purge(self.max_snapshots)?;
        Ok(state)
    }
}
