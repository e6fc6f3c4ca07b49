//! Snapshot files `snap/<term>-<index>.snap` on the data disk, each a CRC followed by
//! the protobuf `eraftpb.Snapshot` (its data is the state machine's encoding).
//!
//! Written to a temporary name, synced, then renamed: a crash leaves the old or the new
//! file, never half of one. Loading skips a damaged newest file for an older good one
//! and says which it skipped, so the caller can refuse to start when the WAL no longer
//! reaches back to the snapshot it fell back to.

use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use crate::env::{Disk, DiskError};

const SNAP_DIR: &str = "snap";
/// Bytes handed to the disk per append when a snapshot file is written.
const SNAPSHOT_WRITE_BYTES_MAX: usize = 1 << 20;

/// The protobuf `eraftpb.Snapshot` around `data`, in pieces, so that the state's bytes
/// (the bulk of the file) are written as they are, never copied into a second buffer:
/// the bytes before the data (field 1's tag and length), and the metadata field after
/// it. Decodes with `Snapshot::parse_from_bytes` like any other encoding.
fn snapshot_body_around(metadata: &SnapshotMetadata, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut before = Vec::with_capacity(11);
    let mut stream = protobuf::CodedOutputStream::vec(&mut before);
    stream.write_tag(1, protobuf::wire_format::WireType::WireTypeLengthDelimited).expect("encodes to memory");
    stream.write_raw_varint64(data.len() as u64).expect("encodes to memory");
    stream.flush().expect("encodes to memory");
    drop(stream);
    let mut after = Vec::new();
    let mut stream = protobuf::CodedOutputStream::vec(&mut after);
    stream.write_message(2, metadata).expect("metadata encodes");
    stream.flush().expect("encodes to memory");
    drop(stream);
    (before, after)
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

    /// Writes the temp file of a snapshot (CRC, then the body) without syncing it, and
    /// returns its final and temporary names.
    fn write_temp(&self, metadata: &SnapshotMetadata, data: &[u8]) -> Result<(String, String), DiskError> {
        let name = snapshot_name(metadata.term, metadata.index);
        let temp = format!("{name}.tmp");
        let (before, after) = snapshot_body_around(metadata, data);
        let mut crc = crc32fast::Hasher::new();
        for piece in [&before[..], data, &after[..]] {
            crc.update(piece);
        }
        self.disk.create(&temp)?;
        self.disk.append(&temp, &crc.finalize().to_le_bytes())?;
        self.disk.append(&temp, &before)?;
        for piece in data.chunks(SNAPSHOT_WRITE_BYTES_MAX) {
            self.disk.append(&temp, piece)?;
        }
        self.disk.append(&temp, &after)?;
        Ok((name, temp))
    }

    /// Writes a snapshot durably (temp file, sync, rename).
    pub fn save(&self, metadata: &SnapshotMetadata, data: &[u8]) -> Result<(), DiskError> {
        let (name, temp) = self.write_temp(metadata, data)?;
        self.disk.sync(&temp)?;
        self.disk.rename(&temp, &name)
    }

    /// Planted bug `release-before-snapshot-sync` (simulator builds only): writes and
    /// renames the file without syncing it; [`SnapshotStore::sync_file`] syncs later.
    #[cfg(madsim)]
    pub fn save_without_sync(&self, metadata: &SnapshotMetadata, data: &[u8]) -> Result<String, DiskError> {
        let (name, temp) = self.write_temp(metadata, data)?;
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

    /// The index of the oldest snapshot file (intact or not), if there is one.
    pub fn oldest_index(&self) -> Result<Option<u64>, DiskError> {
        Ok(self.disk.list(SNAP_DIR)?.iter().filter_map(|name| snapshot_index_of(name)).min())
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

