//! Snapshots for people: the file `etcdctl snapshot save` writes from
//! `Maintenance.Snapshot`, and `detcd snapshot status` / `detcd snapshot restore` read.
//!
//! ```text
//! magic:   16 bytes   "detcd-snapshot\0" + format version 1
//! len:     u64 LE     bytes of the state that follow
//! state:   len bytes  the state machine's encoding (keys with history, leases, alarms)
//! padding: zeros      up to a multiple of 512 bytes
//! sha256:  32 bytes   SHA-256 of everything before it
//! ```
//!
//! The padding and the trailing SHA-256 follow etcd's convention for snapshot streams
//! (a bbolt file of 512-byte multiples, then its SHA-256): `etcdctl snapshot save`
//! refuses a stream that does not end so.
//!
//! A file that is not one, is cut short, or fails its CRC is refused before anything is
//! written. Restore builds the disks of one member of a *new* cluster (ids from the new
//! member list and token, as etcdutl does): member metadata, a raft snapshot at index 1
//! of term 1 holding the state and the new voters, and a WAL that starts from it. Every
//! member restored from the same file with the same member list starts from the same
//! state; the first election happens in term 2.

use std::collections::BTreeMap;
use std::sync::Arc;

use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};

use super::wal::{Wal, WAL_SEGMENT_BYTES_MAX};
use super::{MemberMeta, SnapshotStore};
use crate::apply::StateMachine;
use crate::env::Disk;

/// The first bytes of a client snapshot file: a name and the format version.
pub const CLIENT_SNAPSHOT_MAGIC: &[u8; 16] = b"detcd-snapshot\0\x01";
const LEN_BYTES: usize = 8;
const SHA256_BYTES: usize = 32;
/// The file before its checksum is padded to a multiple of this (etcd's convention).
const PADDING_MULTIPLE_BYTES: usize = 512;
/// The raft index and term a restored member starts from.
pub const RESTORED_INDEX: u64 = 1;
pub const RESTORED_TERM: u64 = 1;

/// The bytes of a client snapshot of `state`.
pub fn encode(state: &StateMachine) -> Vec<u8> {
    let body = state.encode();
    let unpadded = CLIENT_SNAPSHOT_MAGIC.len() + LEN_BYTES + body.len();
    let padded = unpadded.div_ceil(PADDING_MULTIPLE_BYTES) * PADDING_MULTIPLE_BYTES;
    let mut bytes = Vec::with_capacity(padded + SHA256_BYTES);
    bytes.extend_from_slice(CLIENT_SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes.resize(padded, 0);
    let checksum = crate::digest::sha256(&bytes);
    bytes.extend_from_slice(&checksum);
    bytes
}

/// The state a client snapshot holds, if the file checks out: detcd's own, or one saved
/// from etcd (a bbolt database, see `etcd_snapshot`).
pub fn decode(bytes: &[u8]) -> Result<StateMachine, String> {
    if super::etcd_snapshot::is_etcd_snapshot(bytes) {
        return super::etcd_snapshot::read(bytes).map(|(state, _)| state);
    }
    let header = CLIENT_SNAPSHOT_MAGIC.len() + LEN_BYTES;
    if bytes.len() < CLIENT_SNAPSHOT_MAGIC.len() || &bytes[..CLIENT_SNAPSHOT_MAGIC.len()] != CLIENT_SNAPSHOT_MAGIC {
        return Err("not a snapshot file (neither detcd's nor etcd's)".into());
    }
    if bytes.len() < header + SHA256_BYTES || (bytes.len() - SHA256_BYTES) % PADDING_MULTIPLE_BYTES != 0 {
        return Err(format!("snapshot file is truncated or damaged: {} bytes", bytes.len()));
    }
    let checksum_at = bytes.len() - SHA256_BYTES;
    if crate::digest::sha256(&bytes[..checksum_at]) != bytes[checksum_at..] {
        return Err("snapshot file is damaged: sha256 checksum mismatch".into());
    }
    let len = u64::from_le_bytes(bytes[CLIENT_SNAPSHOT_MAGIC.len()..header].try_into().expect("8 bytes"));
    let body_end = (header as u64).checked_add(len).filter(|end| *end <= checksum_at as u64).ok_or("snapshot file is damaged: its length field points past its end")?;
    let body_end = body_end as usize;
    if bytes[body_end..checksum_at].iter().any(|b| *b != 0) {
        return Err("snapshot file is damaged: bytes after the state".into());
    }
    StateMachine::decode(&bytes[header..body_end]).map_err(|e| format!("snapshot file holds no valid state: {e}"))
}

/// What `snapshot status` shows (etcd's columns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// The key space's hash at the snapshot's revision (HashKV).
    pub hash: u32,
    pub revision: i64,
    /// Key records kept, history included (etcd counts the records of its backend).
    pub total_keys: u64,
    pub total_size_bytes: u64,
}

pub fn status(bytes: &[u8]) -> Result<SnapshotStatus, String> {
    let state = decode(bytes)?;
    let mvcc = state.mvcc();
    Ok(SnapshotStatus {
        hash: mvcc.hash_kv(0),
        revision: mvcc.current_revision(),
        total_keys: mvcc.record_count(),
        total_size_bytes: bytes.len() as u64,
    })
}

/// The new cluster a restored (or bootstrapped) member belongs to: its ids and every
/// first voter with its peer URLs.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub cluster_id: u64,
    pub member_id: u64,
    pub members: BTreeMap<u64, Vec<String>>,
}

/// Writes one restored member's disks (both must be empty). The caller checked that
/// the data dir did not exist.
pub fn restore(bytes: &[u8], plan: &RestorePlan, data_disk: Arc<dyn Disk>, wal_disk: Arc<dyn Disk>) -> Result<SnapshotStatus, String> {
    let status = status(bytes)?;
    let mut state = decode(bytes)?;
    write_first_state(&mut state, plan, data_disk, wal_disk, WAL_SEGMENT_BYTES_MAX).map_err(|e| e.to_string())?;
    Ok(status)
}

/// Writes a member's first durable state: `state` (its member table replaced by the
/// plan's) as a raft snapshot at index 1, term 1, whose configuration is the plan's
/// voters; a WAL that starts from it; the member's identity last. A new cluster starts
/// this way too (with an empty state), so a member added later never needs an entry
/// before index 2: the leader catches it up with a snapshot, which carries the member
/// table and configuration (raft's log alone would not). A crash part-way leaves no
/// identity, and the next start writes everything again (each step is idempotent).
pub fn write_first_state(
    state: &mut StateMachine,
    plan: &RestorePlan,
    data_disk: Arc<dyn Disk>,
    wal_disk: Arc<dyn Disk>,
    wal_segment_bytes_max: u64,
) -> Result<(), crate::consensus::FatalError> {
    assert!(plan.members.contains_key(&plan.member_id), "a first member is one of the first voters");
    state.set_initial_members(&plan.members);
    let mut metadata = SnapshotMetadata::default();
    metadata.index = RESTORED_INDEX;
    metadata.term = RESTORED_TERM;
    let mut conf_state = ConfState::default();
    conf_state.set_voters(plan.members.keys().copied().collect());
    metadata.set_conf_state(conf_state);
    SnapshotStore::new(data_disk.clone()).save(&metadata, &state.encoding(), crate::storage::SnapshotWriter::Restore)?;
    let (mut wal, replayed) = Wal::open(wal_disk, RESTORED_INDEX, wal_segment_bytes_max)?;
    if replayed.hard_state.is_none() {
        wal.append_snapshot_mark(RESTORED_INDEX, RESTORED_TERM)?;
        let hard_state = HardState { term: RESTORED_TERM, commit: RESTORED_INDEX, ..Default::default() };
        wal.append_hard_state(&hard_state)?;
        wal.sync()?;
    }
    let meta = MemberMeta { cluster_id: plan.cluster_id, member_id: plan.member_id, initial_voters: plan.members.keys().copied().collect() };
    meta.save(data_disk.as_ref())?;
    Ok(())
}

/// etcd's human size (go-humanize `Bytes`): SI units, "20 kB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).ln() / 1000f64.ln()).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = (bytes as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem_disk::MemDisk;
    use crate::pb::etcdserverpb::PutRequest;

    fn state_with_keys(count: usize) -> StateMachine {
        let mut state = StateMachine::new();
        for i in 0..count {
            state.mvcc_mut_for_tests().put(&PutRequest { key: format!("k{i}").into_bytes(), value: bytes::Bytes::from_static(b"v"), ..Default::default() }).expect("put");
        }
        state
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_or_truncation_is_refused() {
        let state = state_with_keys(20);
        let bytes = encode(&state);
        assert_eq!(decode(&bytes).expect("decodes"), state);
        let status = status(&bytes).expect("status");
        assert_eq!((status.revision, status.total_keys, status.total_size_bytes), (21, 20, bytes.len() as u64));
        assert_eq!(bytes.len() % 512, 32, "etcdctl's test for a trailing sha256");
        assert!(decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("truncated"));
        assert!(decode(&bytes[..bytes.len() - 512]).unwrap_err().contains("checksum mismatch"));
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum mismatch"));
        assert!(decode(b"\x00\x01sqlite or bbolt").unwrap_err().contains("not a snapshot file"));
    }

    #[test]
    fn restore_writes_a_member_that_starts_from_the_snapshot() {
        let state = state_with_keys(5);
        let bytes = encode(&state);
        let data = Arc::new(MemDisk::new());
        let wal = Arc::new(MemDisk::new());
        let members: BTreeMap<u64, Vec<String>> = [1u64, 2, 3].iter().map(|id| (*id, vec![format!("http://m{id}:2380")])).collect();
        let plan = RestorePlan { cluster_id: 7, member_id: 2, members: members.clone() };
        restore(&bytes, &plan, data.clone(), wal.clone()).expect("restore");
        let meta = MemberMeta::load(data.as_ref()).expect("load").expect("meta written");
        assert_eq!((meta.cluster_id, meta.member_id, meta.initial_voters), (7, 2, vec![1, 2, 3]));
        let loaded = SnapshotStore::new(data).load_newest().expect("load").snapshot.expect("a snapshot");
        assert_eq!((loaded.get_metadata().index, loaded.get_metadata().term), (RESTORED_INDEX, RESTORED_TERM));
        assert_eq!(loaded.get_metadata().get_conf_state().get_voters(), &[1, 2, 3]);
        // The data of the snapshot, the member table of the new cluster.
        let mut expected = state;
        expected.set_initial_members(&members);
        assert_eq!(StateMachine::decode(loaded.get_data()).expect("state"), expected);
        let (_, replayed) = Wal::open(wal, RESTORED_INDEX, WAL_SEGMENT_BYTES_MAX).expect("wal");
        assert_eq!(replayed.snapshot_mark_index, RESTORED_INDEX);
        assert_eq!(replayed.hard_state.map(|h| (h.term, h.commit)), Some((RESTORED_TERM, RESTORED_INDEX)));
    }

    #[test]
    fn sizes_read_as_etcd_prints_them() {
        assert_eq!(human_size(5), "5 B");
        assert_eq!(human_size(20_480), "20 kB");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(2_100_000), "2.1 MB");
    }
}
