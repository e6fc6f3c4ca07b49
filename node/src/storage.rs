//! Durable state besides the WAL, and the raft `Storage` the member's RawNode reads.
//!
//! - [`SnapshotStore`]: snapshot files `snap/<term>-<index>.snap` on the data disk, each
//!   a CRC followed by the protobuf `eraftpb.Snapshot` (its data is the MVCC state).
//!   Written to a temporary name, synced, then renamed: a crash leaves the old or the new
//!   file, never half of one. Loading skips a damaged newest file for an older good one.
//! - [`MemberMeta`]: who this member is (cluster id, member id, first voters), written
//!   once when the data dir is created.
//! - [`NodeStorage`]: raft-rs's `MemStorage` for the log, plus the latest snapshot with
//!   its data (MemStorage would hand out snapshots without data).

use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::{MemStorage, Storage};
use raft::{GetEntriesContext, RaftState, StorageError};
use serde::{Deserialize, Serialize};

use crate::env::{Disk, DiskError};

const SNAP_DIR: &str = "snap";
const META_PATH: &str = "meta";

/// Snapshot files on the data disk.
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
}

/// The newest intact snapshot found at start-up and the files that had to be skipped.
pub struct LoadedSnapshot {
    pub snapshot: Option<Snapshot>,
    pub skipped_damaged: Vec<String>,
}

fn snapshot_name(term: u64, index: u64) -> String {
    format!("{SNAP_DIR}/{term:016x}-{index:016x}.snap")
}

fn snapshot_index_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".snap")?;
    let (_, index) = stem.split_once('-')?;
    u64::from_str_radix(index, 16).ok()
}

impl SnapshotStore {
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        Self { disk }
    }

    /// Writes a snapshot durably (temp file, sync, rename).
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), DiskError> {
        let meta = snapshot.get_metadata();
        let name = snapshot_name(meta.term, meta.index);
        let temp = format!("{name}.tmp");
        let body = snapshot.write_to_bytes().expect("snapshot encodes");
        let mut bytes = Vec::with_capacity(body.len() + 4);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        self.disk.create(&temp)?;
        self.disk.append(&temp, &bytes)?;
        self.disk.sync(&temp)?;
        self.disk.rename(&temp, &name)
    }

    /// Loads the newest snapshot whose CRC checks out.
    pub fn load_newest(&self) -> Result<LoadedSnapshot, DiskError> {
        let mut names: Vec<(u64, String)> = self
            .disk
            .list(SNAP_DIR)?
            .into_iter()
            .filter_map(|n| snapshot_index_of(&n).map(|i| (i, format!("{SNAP_DIR}/{n}"))))
            .collect();
        names.sort();
        let mut skipped_damaged = Vec::new();
        for (_, name) in names.into_iter().rev() {
            let bytes = self.disk.read(&name)?;
            if bytes.len() >= 4 {
                let crc = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
                if crc32fast::hash(&bytes[4..]) == crc {
                    if let Ok(snapshot) = Snapshot::parse_from_bytes(&bytes[4..]) {
                        return Ok(LoadedSnapshot { snapshot: Some(snapshot), skipped_damaged });
                    }
                }
            }
            skipped_damaged.push(name);
        }
        Ok(LoadedSnapshot { snapshot: None, skipped_damaged })
    }

    /// Keeps the newest `keep_max` snapshot files, removes older ones and stray temps.
    pub fn purge(&self, keep_max: usize) -> Result<(), DiskError> {
        let names = self.disk.list(SNAP_DIR)?;
        let mut snapshots: Vec<(u64, String)> = Vec::new();
        for name in names {
            match snapshot_index_of(&name) {
                Some(index) => snapshots.push((index, name)),
                None if name.ends_with(".tmp") => self.disk.remove(&format!("{SNAP_DIR}/{name}"))?,
                None => {}
            }
        }
        snapshots.sort();
        let excess = snapshots.len().saturating_sub(keep_max.max(1));
        for (_, name) in snapshots.into_iter().take(excess) {
            self.disk.remove(&format!("{SNAP_DIR}/{name}"))?;
        }
        Ok(())
    }
}

/// Identity of a member, fixed when its data dir is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Member ids of the cluster's first voters.
    pub initial_voters: Vec<u64>,
}

impl MemberMeta {
    /// Reads the metadata, or `None` for a data dir that was never initialised.
    pub fn load(disk: &dyn Disk) -> Result<Option<MemberMeta>, DiskError> {
        match disk.read(META_PATH) {
            Ok(bytes) => {
                let meta = bincode::deserialize(&bytes).map_err(|e| DiskError::Corrupt {
                    path: META_PATH.to_string(),
                    detail: e.to_string(),
                })?;
                Ok(Some(meta))
            }
            Err(DiskError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the metadata durably.
    pub fn save(&self, disk: &dyn Disk) -> Result<(), DiskError> {
        let temp = format!("{META_PATH}.tmp");
        let bytes = bincode::serialize(self).expect("member meta encodes");
        disk.create(&temp)?;
        disk.append(&temp, &bytes)?;
        disk.sync(&temp)?;
        disk.rename(&temp, META_PATH)
    }
}

/// The raft log in memory (mirroring the WAL) and the latest snapshot with its data.
#[derive(Clone)]
pub struct NodeStorage {
    log: MemStorage,
    latest_snapshot: Arc<Mutex<Snapshot>>,
}

impl NodeStorage {
    /// Storage for a member that starts from `snapshot` (if any), then `entries`.
    pub fn recover(
        conf_state: ConfState,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> raft::Result<Self> {
        let log = MemStorage::new();
        let latest = match snapshot {
            Some(snapshot) => {
                log.wl().apply_snapshot(snapshot.clone())?;
                snapshot
            }
            None => {
                log.wl().set_conf_state(conf_state.clone());
                let mut empty = Snapshot::default();
                empty.mut_metadata().set_conf_state(conf_state);
                empty
            }
        };
        log.wl().append(entries)?;
        if let Some(mut hard_state) = hard_state {
            // A snapshot is only ever taken of committed state: its index is committed
            // even if the newest durable hard state predates it.
            let snapshot_meta = latest.get_metadata();
            hard_state.commit = hard_state.commit.max(snapshot_meta.index);
            hard_state.term = hard_state.term.max(snapshot_meta.term);
            log.wl().set_hardstate(hard_state);
        }
        Ok(Self { log, latest_snapshot: Arc::new(Mutex::new(latest)) })
    }

    pub fn append(&self, entries: &[Entry]) -> raft::Result<()> {
        self.log.wl().append(entries)
    }

    pub fn set_hard_state(&self, hard_state: HardState) {
        self.log.wl().set_hardstate(hard_state);
    }

    pub fn set_commit(&self, commit: u64) {
        self.log.wl().mut_hard_state().commit = commit;
    }

    pub fn set_conf_state(&self, conf_state: ConfState) {
        self.log.wl().set_conf_state(conf_state);
    }

    /// Installs a snapshot received from the leader (the log restarts after it).
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> raft::Result<()> {
        self.log.wl().apply_snapshot(snapshot.clone())?;
        *self.latest_snapshot.lock().expect("snapshot lock") = snapshot;
        Ok(())
    }

    /// Records a snapshot this member made and drops log entries before `compact_index`.
    pub fn set_snapshot(&self, snapshot: Snapshot, compact_index: u64) -> raft::Result<()> {
        *self.latest_snapshot.lock().expect("snapshot lock") = snapshot;
        self.log.wl().compact(compact_index)
    }

    pub fn latest_snapshot_index(&self) -> u64 {
        self.latest_snapshot.lock().expect("snapshot lock").get_metadata().index
    }

    pub fn entry_term(&self, index: u64) -> raft::Result<u64> {
        self.log.term(index)
    }
}

impl Storage for NodeStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.log.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.latest_snapshot.lock().expect("snapshot lock").clone();
        if snapshot.get_metadata().index < request_index || snapshot.get_metadata().index == 0 {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snapshot)
    }
}
