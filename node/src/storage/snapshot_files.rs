//! Snapshot files `snap/<term>-<index>.snap` on the data disk, each a CRC followed by
//! the protobuf `eraftpb.Snapshot` (its data is the state machine's encoding).
//!
//! Written to a temporary name, synced, then renamed: a crash leaves the old or the new
//! file, never half of one. Loading skips a damaged newest file for an older good one
//! and says which it skipped, so the caller can refuse to start when the WAL no longer
//! reaches back to the snapshot it fell back to.

use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::Snapshot;

use crate::env::{Disk, DiskError};

const SNAP_DIR: &str = "snap";

/// A snapshot's file name, its temporary name, and its bytes (CRC, then the body).
fn encode_snapshot_file(snapshot: &Snapshot) -> (String, String, Vec<u8>) {
    let meta = snapshot.get_metadata();
    let name = snapshot_name(meta.term, meta.index);
    let temp = format!("{name}.tmp");
    let body = snapshot.write_to_bytes().expect("snapshot encodes");
    let mut bytes = Vec::with_capacity(body.len() + 4);
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    (name, temp, bytes)
}

/// A snapshot file's content, if its CRC and encoding check out.
fn decode_snapshot_file(bytes: &[u8]) -> Option<Snapshot> {
    let crc = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    if crc32fast::hash(&bytes[4..]) != crc {
        return None;
    }
    Snapshot::parse_from_bytes(&bytes[4..]).ok()
}

/// Snapshot files on the data disk.
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
    /// Planted bug `snapshot-crc-unchecked` (simulator builds only).
    #[cfg(madsim)]
    crc_unchecked: bool,
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
        Self {
            disk,
            #[cfg(madsim)]
            crc_unchecked: false,
        }
    }

    #[cfg(madsim)]
    pub fn plant_crc_unchecked(&mut self, planted: bool) {
        self.crc_unchecked = planted;
    }

    /// A snapshot file's content, if it checks out (see [`decode_snapshot_file`]).
    fn decode(&self, bytes: &[u8]) -> Option<Snapshot> {
        #[cfg(madsim)]
        if self.crc_unchecked {
            return Snapshot::parse_from_bytes(bytes.get(4..)?).ok();
        }
        decode_snapshot_file(bytes)
    }

    /// Writes a snapshot durably (temp file, sync, rename).
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), DiskError> {
        let (name, temp, bytes) = encode_snapshot_file(snapshot);
        self.disk.create(&temp)?;
        self.disk.append(&temp, &bytes)?;
        self.disk.sync(&temp)?;
        self.disk.rename(&temp, &name)
    }

    /// Planted bug `release-before-snapshot-sync` (simulator builds only): writes and
    /// renames the file without syncing it; [`SnapshotStore::sync_unsynced`] syncs later.
    #[cfg(madsim)]
    pub fn save_without_sync(&self, snapshot: &Snapshot) -> Result<String, DiskError> {
        let (name, temp, bytes) = encode_snapshot_file(snapshot);
        self.disk.create(&temp)?;
        self.disk.append(&temp, &bytes)?;
        self.disk.rename(&temp, &name)?;
        Ok(name)
    }

    /// The late sync of [`SnapshotStore::save_without_sync`].
    #[cfg(madsim)]
    pub fn sync_file(&self, name: &str) -> Result<(), DiskError> {
        self.disk.sync(name)
    }

    /// Reads the snapshot file of `(term, index)` and checks its CRC.
    pub fn load(&self, term: u64, index: u64) -> Result<Snapshot, DiskError> {
        let name = snapshot_name(term, index);
        let bytes = self.disk.read(&name)?;
        self.decode(&bytes).ok_or(DiskError::Corrupt { path: name, detail: "snapshot file fails its CRC".into() })
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
            if let Some(snapshot) = self.decode(&bytes) {
                return Ok(LoadedSnapshot { snapshot: Some(snapshot), skipped_damaged });
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

