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
/// A snapshot file being written is written back to the device every this many bytes
/// ([`Disk::write_back`]): the kernel then writes it in slices instead of one flush of
/// the whole store at its sync, which would make the WAL's fsyncs on the same device
/// wait behind it. Each WAL fsync still waits for the slice in flight: with 16 MiB
/// slices the WAL's fsyncs took 8-13 ms all through a million-key snapshot (1.3 s) on
/// this machine (2026-11-29, instrumented build), with 2 MiB under 8 ms (the snapshot
/// took 2.6 s).
const SNAPSHOT_WRITE_BACK_EVERY_BYTES: usize = 2 << 20;
/// The file's CRC (of everything after it), first in the file.
const SNAPSHOT_CRC_BYTES: usize = 4;

/// Who writes a snapshot file (its temp file is named after the writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// This member's own snapshot job.
    Own,
    /// A snapshot received from the leader.
    Received,
    /// `detcd snapshot restore`.
    Restore,
}

impl Writer {
    fn tag(self) -> &'static str {
        match self {
            Writer::Own => "own",
            Writer::Received => "received",
            Writer::Restore => "restore",
        }
    }
}

/// What a snapshot file carries as its data: its exact length, and the bytes, written
/// to `out` as often as asked (always the same bytes).
pub trait SnapshotData {
    fn len(&self) -> usize;
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}

impl SnapshotData for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self)
    }
}

/// Appends what is written to it to one file, in [`SNAPSHOT_WRITE_BYTES_MAX`] pieces,
/// writing the file back every [`SNAPSHOT_WRITE_BACK_EVERY_BYTES`], and hashes it (the
/// file's CRC). A disk error is kept to be returned as itself (the writer's caller sees
/// only an `io::Error`).
struct DiskAppender<'a> {
    disk: &'a dyn Disk,
    path: &'a str,
    buffer: Vec<u8>,
    bytes: usize,
    crc: crc32fast::Hasher,
    not_written_back_bytes: usize,
    error: Option<DiskError>,
}

impl<'a> DiskAppender<'a> {
    fn new(disk: &'a dyn Disk, path: &'a str) -> Self {
        Self { disk, path, buffer: Vec::new(), bytes: 0, crc: crc32fast::Hasher::new(), not_written_back_bytes: 0, error: None }
    }

    fn push(&mut self) -> Result<(), DiskError> {
        if !self.buffer.is_empty() {
            self.disk.append(self.path, &self.buffer)?;
            self.not_written_back_bytes += self.buffer.len();
            self.buffer.clear();
        }
        if self.not_written_back_bytes >= SNAPSHOT_WRITE_BACK_EVERY_BYTES {
            self.disk.write_back(self.path)?;
            self.not_written_back_bytes = 0;
        }
        Ok(())
    }

    /// Appends what is still buffered and returns the CRC of everything written; the
    /// disk's own error if one struck.
    fn finish(mut self, written: std::io::Result<()>) -> Result<(u32, usize), DiskError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        written.map_err(|e| DiskError::Io { path: self.path.to_string(), detail: format!("encoding: {e}") })?;
        if !self.buffer.is_empty() {
            self.disk.append(self.path, &self.buffer)?;
        }
        Ok((self.crc.finalize(), self.bytes))
    }
}

impl std::io::Write for DiskAppender<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("the disk failed"));
        }
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(SNAPSHOT_WRITE_BYTES_MAX);
        }
        let taken = buf.len().min(SNAPSHOT_WRITE_BYTES_MAX - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..taken]);
        self.crc.update(&buf[..taken]);
        self.bytes += taken;
        if self.buffer.len() == SNAPSHOT_WRITE_BYTES_MAX {
            if let Err(error) = self.push() {
                self.error = Some(error);
                return Err(std::io::Error::other("the disk failed"));
            }
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The protobuf `eraftpb.Snapshot` around `data`, in pieces, so that the state's bytes
/// (the bulk of the file) are written as they are, never copied into a second buffer:
/// the bytes before the data (field 1's tag and length), and the metadata field after
/// it. Decodes with `Snapshot::parse_from_bytes` like any other encoding.
fn snapshot_body_around(metadata: &SnapshotMetadata, data_len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut before = Vec::with_capacity(11);
    let mut stream = protobuf::CodedOutputStream::vec(&mut before);
    stream.write_tag(1, protobuf::wire_format::WireType::WireTypeLengthDelimited).expect("encodes to memory");
    stream.write_raw_varint64(data_len as u64).expect("encodes to memory");
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
fn decode_snapshot_file(bytes: bytes::Bytes) -> Option<Snapshot> {
    let crc = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    if crc32fast::hash(&bytes[4..]) != crc {
        return None;
    }
    // The snapshot's data is a slice of the file's buffer, not a copy of it.
    Snapshot::parse_from_carllerche_bytes(&bytes.slice(4..)).ok()
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
    fn decode(&self, bytes: bytes::Bytes) -> Option<Snapshot> {
        #[cfg(madsim)]
        if self.crc_unchecked {
            return Snapshot::parse_from_bytes(bytes.get(4..)?).ok();
        }
        decode_snapshot_file(bytes)
    }

    /// Writes the temp file of a snapshot (CRC, then the body) without syncing it, and
    /// returns its final and temporary names. The data is produced once, onto the disk
    /// and into the CRC together (a big state is never held encoded in memory, nor
    /// encoded twice); the CRC's room at the start is filled in last, which the file's
    /// not being synced before then allows.
    fn write_temp(&self, metadata: &SnapshotMetadata, data: &dyn SnapshotData, writer: Writer) -> Result<(String, String), DiskError> {
        use std::io::Write as _;
        let name = snapshot_name(metadata.term, metadata.index);
        // Each writer its own temp name: this member's own snapshot job and a snapshot
        // received from the leader may be written at the same index at the same time.
        let temp = format!("{name}.{}.tmp", writer.tag());
        let data_len = data.len();
        let (before, after) = snapshot_body_around(metadata, data_len);
        self.disk.create(&temp)?;
        self.disk.append(&temp, &[0; SNAPSHOT_CRC_BYTES])?;
        let mut appender = DiskAppender::new(self.disk.as_ref(), &temp);
        let written = appender.write_all(&before).and_then(|()| data.write_to(&mut appender)).and_then(|()| appender.write_all(&after));
        let (crc, body_len) = appender.finish(written)?;
        assert_eq!(body_len, before.len() + data_len + after.len(), "snapshot data is as long as it said");
        self.disk.write_at(&temp, 0, &crc.to_le_bytes())?;
        Ok((name, temp))
    }

    /// Writes a snapshot durably (temp file, sync, rename).
    pub fn save(&self, metadata: &SnapshotMetadata, data: &dyn SnapshotData, writer: Writer) -> Result<(), DiskError> {
        let (name, temp) = self.write_temp(metadata, data, writer)?;
        self.disk.sync(&temp)?;
        self.disk.rename(&temp, &name)
    }

    /// Planted bug `release-before-snapshot-sync` (simulator builds only): writes and
    /// renames the file without syncing it; [`SnapshotStore::sync_file`] syncs later.
    #[cfg(madsim)]
    pub fn save_without_sync(&self, metadata: &SnapshotMetadata, data: &dyn SnapshotData) -> Result<String, DiskError> {
        let (name, temp) = self.write_temp(metadata, data, Writer::Own)?;
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
        let bytes = self.disk.read_immutable(&name)?;
        self.decode(bytes).ok_or(DiskError::Corrupt { path: name, detail: "snapshot file fails its CRC".into() })
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
            let bytes = self.disk.read_immutable(&name)?;
            if let Some(snapshot) = self.decode(bytes) {
                return Ok(LoadedSnapshot { snapshot: Some(snapshot), skipped_damaged });
            }
            skipped_damaged.push(name);
        }
        Ok(LoadedSnapshot { snapshot: None, skipped_damaged })
    }

    /// The index of the oldest snapshot file (intact or not) that is not among
    /// `to_be_removed`, if there is one.
    pub fn oldest_index_after(&self, to_be_removed: &[String]) -> Result<Option<u64>, DiskError> {
        Ok(self
            .disk
            .list(SNAP_DIR)?
            .iter()
            .filter(|name| !to_be_removed.contains(&format!("{SNAP_DIR}/{name}")))
            .filter_map(|name| snapshot_index_of(name))
            .min())
    }

    /// Keeps the newest `keep_max` snapshot files, removes older ones and stray temps.
    pub fn purge(&self, keep_max: usize) -> Result<(), DiskError> {
        for name in self.purge_plan(keep_max)? {
            self.disk.remove(&name)?;
        }
        Ok(())
    }

    /// The snapshot files [`SnapshotStore::purge`] would remove (oldest first), for a
    /// caller that removes them away from the loop. Temp files are never in it: one may
    /// be a snapshot being written right now.
    pub fn purge_plan(&self, keep_max: usize) -> Result<Vec<String>, DiskError> {
        let mut snapshots: Vec<(u64, String)> =
            self.disk.list(SNAP_DIR)?.into_iter().filter_map(|name| snapshot_index_of(&name).map(|index| (index, name))).collect();
        snapshots.sort();
        let excess = snapshots.len().saturating_sub(keep_max.max(1));
        Ok(snapshots.into_iter().take(excess).map(|(_, name)| format!("{SNAP_DIR}/{name}")).collect())
    }

    /// Removes temp files a crash left behind. Only at start-up, before any snapshot is
    /// being written.
    pub fn remove_stray_temps(&self) -> Result<(), DiskError> {
        for name in self.disk.list(SNAP_DIR)?.into_iter().filter(|name| name.ends_with(".tmp")) {
            self.disk.remove(&format!("{SNAP_DIR}/{name}"))?;
        }
        Ok(())
    }

    /// The data disk (for removals run away from the loop).
    pub fn disk(&self) -> Arc<dyn Disk> {
        self.disk.clone()
    }
}


#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use raft::eraftpb::SnapshotMetadata;

    use super::SnapshotStore;
    use crate::env::mem_disk::MemDisk;
    use crate::env::DiskError;

    fn metadata(index: u64) -> SnapshotMetadata {
        let mut metadata = SnapshotMetadata::default();
        metadata.index = index;
        metadata.term = 3;
        metadata
    }

    /// A state bigger than several write pieces and write-back slices is written back in
    /// slices (not in one flush at the end), synced once, and reads back whole: the CRC
    /// filled in at the start after the slices were written back is the one read.
    #[test]
    fn a_big_snapshot_is_written_back_in_slices_and_reads_back() {
        let disk = Arc::new(MemDisk::new());
        let store = SnapshotStore::new(disk.clone());
        let data: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
        let (syncs_before, write_backs_before) = (disk.syncs(), disk.write_backs());
        store.save(&metadata(7), &data.as_slice(), super::Writer::Own).expect("saved");
        assert_eq!(disk.write_backs() - write_backs_before, ((40 << 20) / super::SNAPSHOT_WRITE_BACK_EVERY_BYTES) as u64, "40 MiB written back in slices");
        assert_eq!(disk.syncs() - syncs_before, 1, "synced once, as a whole");
        let loaded = store.load(3, 7).expect("loads");
        assert_eq!(loaded.get_metadata().index, 7);
        assert!(loaded.get_data() == data.as_slice(), "the data reads back unchanged");
    }

    /// A disk that fills half-way leaves no snapshot file, only a temp the next purge
    /// removes, and the error is the disk's own.
    #[test]
    fn a_disk_full_half_way_leaves_no_snapshot() {
        let disk = Arc::new(MemDisk::new());
        let store = SnapshotStore::new(disk.clone());
        disk.set_capacity_bytes(Some(20 << 20));
        let data = vec![7u8; 30 << 20];
        let error = store.save(&metadata(9), &data.as_slice(), super::Writer::Received).expect_err("disk full");
        assert!(matches!(error, DiskError::NoSpace { .. }), "{error:?}");
        assert!(disk.files().iter().all(|(name, _)| name.ends_with(".tmp")), "{:?}", disk.files());
        store.remove_stray_temps().expect("removed");
        assert!(disk.files().is_empty(), "{:?}", disk.files());
    }
}
