//! The multi-version key-value store: etcd's data model, in memory, deterministic.
//!
//! Every key keeps its history as records ordered by `mod_revision`; a delete writes a
//! tombstone, and a put after a tombstone starts a new generation (version 1, new
//! `create_revision`). One store-wide revision counter starts at 1; each write request
//! that changes something advances it by exactly one, and every change a txn makes shares
//! that revision.
//!
//! Invariants:
//! - `compact_revision <= current_revision`; reads below `compact_revision` fail with
//!   `Compacted`, above `current_revision` with `FutureRevision`.
//! - Per key, records are strictly increasing in `mod_revision`, and each record's
//!   `mod_revision <= current_revision` outside an open write.
//! - Iteration is over `BTreeMap`s only: the same operations give the same bytes on every
//!   member (the snapshot and `hash_kv` depend on it).
//!
//! The store does no I/O; it is saved whole inside raft snapshots (see ARCHITECTURE.md).
//!
//! Split by concern: this file holds the store and its invariants; [`range`] the read
//! path, [`write`] puts and deletes, [`txn`] transactions (etcd's order: compare path,
//! checks, then execution), [`compaction`], [`hash`], and [`history`] (past changes
//! as watch events, for watchers catching up).

pub(crate) mod byte_strings;
mod compaction;
pub(crate) mod cow_map;
mod hash;
mod history;
pub mod import;
pub mod lease;
mod range;
mod txn;
mod write;

use serde::{Deserialize, Serialize};

use crate::errors::EtcdError;
use crate::pb::mvccpb::KeyValue;

/// One version of one key. The value is shared (`Bytes`): copying a record — what a
/// write to a chunk a frozen copy still holds does for the chunk's 64 keys — copies no
/// value bytes; and a large value is a slice of the log entry that wrote it, so the
/// raft log and the store hold its bytes once (see [`stored_value`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    mod_revision: i64,
    /// Order of this change among the changes of its revision (etcd's sub-revision):
    /// events of one txn replay from history in the order they were made.
    sub: u32,
    create_revision: i64,
    version: i64,
    lease: i64,
    #[serde(with = "byte_strings::shared")]
    value: bytes::Bytes,
    tombstone: bool,
}

/// A key's records, oldest first, behind an `Arc`: a chunk a frozen copy still shares is
/// copied for a write with its keys' history pointers, not their records, and a key's
/// records are copied (`Arc::make_mut`) only at its own next write. Cloning every key's
/// records with its chunk made the loop's longest turn grow with the histories (one
/// member, 10k keys at 64 clients, never compacted: 3 ms at 15 records a key, 19 ms at
/// 90). Encoded as the `Vec` (serde's `rc`), so snapshots did not change.
pub(crate) type History = std::sync::Arc<Vec<KeyRecord>>;

/// The value of a tombstone (and of an empty put).
fn no_value() -> bytes::Bytes {
    bytes::Bytes::new()
}

/// Values at least this large are kept as the slice of the request they came in (for
/// an applied entry: of the entry's buffer, which the raft log holds until compacted);
/// smaller ones are copied into an allocation of their own, so that a small value does
/// not keep a whole entry — key and request fields — alive for the key's life.
pub const SHARED_VALUE_BYTES_MIN: usize = 1024;

/// What the store keeps of a put's value (see [`SHARED_VALUE_BYTES_MIN`]).
fn stored_value(value: &bytes::Bytes) -> bytes::Bytes {
    if value.len() >= SHARED_VALUE_BYTES_MIN {
        value.clone()
    } else {
        bytes::Bytes::copy_from_slice(value)
    }
}

/// The key space with its history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mvcc {
    /// Key → history; cheap to clone (copy-on-write chunks), so a frozen copy of the
    /// store can be encoded or hashed off the raft loop.
    keys: cow_map::CowMap<History>,
    current_revision: i64,
    compact_revision: i64,
    /// What [`Mvcc::approximate_bytes`] reports, kept up to date by every write and
    /// compaction so that status calls never walk the store. Not part of the encoding.
    #[serde(skip)]
    size_bytes: u64,
    /// XOR of [`live_record_digest`] over every live key: a digest of the live key space
    /// kept up to date by every write (compaction and defragment never touch a live
    /// record). Not part of the encoding; recomputed at decode.
    #[serde(skip)]
    live_digest: u64,
    /// Live keys now (etcd_debugging_mvcc_keys_total), kept by every write. Not encoded.
    #[serde(skip)]
    live_keys: u64,
    /// Leases and the keys attached to them.
    lessor: lease::Lessor,
    /// How far the removal of compacted records got (see `compaction`). Not encoded.
    #[serde(skip)]
    compaction_progress: compaction::CompactionProgress,
    /// Planted bug `create-revision-survives-delete` (simulator builds only).
    #[cfg(madsim)]
    #[serde(skip)]
    create_revision_survives_delete: bool,
    /// Planted bug `tombstone-compacted-at-its-revision` (simulator builds only).
    #[cfg(madsim)]
    #[serde(skip)]
    pub(crate) tombstone_compacted_at_its_revision: bool,
    /// Planted bug `hash-counts-compacted-records` (simulator builds only).
    #[cfg(madsim)]
    #[serde(skip)]
    pub(crate) hash_counts_compacted_records: bool,
}

/// Per-record overhead counted in the database size besides key and value bytes.
const RECORD_OVERHEAD_BYTES: u64 = 48;

/// A digest of one live key: its name and every field of its newest record. The value
/// enters as its length and CRC-32 (SIMD-fast, and it changes with any damaged byte):
/// FNV-1a byte by byte over every value was 17% of a 1 GiB member's restart, and a
/// cost on every put.
fn live_record_digest(key: &[u8], record: &KeyRecord) -> u64 {
    let mut hasher = crate::digest::Fnv64::default();
    hasher.update(&(key.len() as u64).to_le_bytes()).update(key);
    for field in [record.mod_revision, i64::from(record.sub), record.create_revision, record.version, record.lease] {
        hasher.update(&field.to_le_bytes());
    }
    hasher.update(&(record.value.len() as u64).to_le_bytes()).update(&crc32fast::hash(&record.value).to_le_bytes()).finish()
}

fn record_bytes(key: &[u8], record: &KeyRecord) -> u64 {
    key.len() as u64 + record.value.len() as u64 + RECORD_OVERHEAD_BYTES
}

/// Key bounds of a request: `[start, end)`, `end = None` meaning unbounded.
pub(crate) struct KeyRange<'a> {
    start: &'a [u8],
    end: Option<&'a [u8]>,
    single: bool,
}

pub(crate) fn key_range<'a>(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
    if range_end.is_empty() {
        KeyRange { start: key, end: None, single: true }
    } else if range_end == [0] {
        KeyRange { start: key, end: None, single: false }
    } else {
        KeyRange { start: key, end: Some(range_end), single: false }
    }
}

impl KeyRecord {
    fn to_key_value(&self, key: &[u8]) -> KeyValue {
        self.to_key_value_shaped(key, true)
    }

    /// As etcd returns it; `with_value: false` for keys-only reads (no value copied).
    fn to_key_value_shaped(&self, key: &[u8], with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: if with_value { self.value.clone() } else { bytes::Bytes::new() },
            lease: self.lease,
        }
    }
}

/// The record of `records` visible at `revision`, if the key is live then.
fn visible_at(records: &[KeyRecord], revision: i64) -> Option<&KeyRecord> {
    let position = records.partition_point(|r| r.mod_revision <= revision);
    let record = records[..position].last()?;
    (!record.tombstone).then_some(record)
}

impl Mvcc {
    /// An empty store at revision 1, as a new etcd cluster starts.
    pub fn new() -> Self {
        Self {
            keys: cow_map::CowMap::default(),
            current_revision: 1,
            compact_revision: 0,
            size_bytes: 0,
            live_digest: 0,
            live_keys: 0,
            lessor: lease::Lessor::default(),
            compaction_progress: compaction::CompactionProgress::default(),
            #[cfg(madsim)]
            create_revision_survives_delete: false,
            #[cfg(madsim)]
            tombstone_compacted_at_its_revision: false,
            #[cfg(madsim)]
            hash_counts_compacted_records: false,
        }
    }

    #[cfg(madsim)]
    pub(crate) fn plant(&mut self, create_revision_survives_delete: bool, tombstone_compacted_at_its_revision: bool) {
        self.create_revision_survives_delete = create_revision_survives_delete;
        self.tombstone_compacted_at_its_revision = tombstone_compacted_at_its_revision;
    }

    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The store's bytes, for a raft snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut bytes);
        bytes
    }

    /// The length of [`Mvcc::encode`]'s bytes (a walk of the store, no copy).
    pub fn encoded_len(&self) -> usize {
        usize::try_from(bincode::serialized_size(self).expect("mvcc state sizes")).expect("fits in memory")
    }

    /// Appends [`Mvcc::encode`]'s bytes to `bytes`, which should have room for them:
    /// a store of a million keys is never copied into a growing buffer.
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        bincode::serialize_into(bytes, self).expect("mvcc state encodes")
    }

    /// Restores a store from snapshot bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut store: Mvcc = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        store.size_bytes = store.count_bytes();
        store.live_digest = store.count_live_digest();
        store.live_keys = store.live_key_count() as u64;
        // Records a compaction dropped may have been encoded before their removal:
        // visit every key once more.
        if store.compact_revision > 0 {
            store.compaction_progress.0 = Some(Vec::new());
        }
        store.assert_invariants();
        Ok(store)
    }

    fn assert_invariants(&self) {
        assert!(self.current_revision >= 1, "revision starts at 1");
        assert!(self.compact_revision <= self.current_revision, "compaction beyond current revision");
        self.keys.assert_invariants();
        for (key, records) in self.keys.iter() {
            if let Some(live) = records.last().filter(|r| !r.tombstone && r.lease != 0) {
                let attached = self.lessor.get(live.lease).is_some_and(|lease| lease.keys.contains(key));
                assert!(attached, "a live key's lease exists and lists the key");
            }
            assert!(!records.is_empty(), "a key with no records is removed");
            assert!(records.windows(2).all(|w| w[0].mod_revision < w[1].mod_revision), "records out of order");
        }
    }

    pub(crate) fn check_read_revision(&self, requested: i64) -> Result<i64, EtcdError> {
        if requested <= 0 {
            return Ok(self.current_revision);
        }
        if requested > self.current_revision {
            return Err(EtcdError::FutureRevision);
        }
        if requested < self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        Ok(requested)
    }

    /// Live key-values in a range at `revision`, in key order.
    pub(crate) fn collect(&self, range: &KeyRange<'_>, revision: i64) -> Vec<KeyValue> {
        range::keys_in(&self.keys, range)
            .filter_map(|(key, records)| visible_at(records, revision).map(|r| r.to_key_value(key)))
            .collect()
    }

    /// Bytes the store holds (keys, values and per-record overhead), reported as the
    /// database size.
    pub fn approximate_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Gives memory back after compaction: every key's history is shrunk to fit (values
    /// are exactly sized already); etcd's defragment rewrites its file for the same
    /// reason.
    pub fn defragment(&mut self) {
        while self.compact_step(usize::MAX) {}
        self.keys.for_each_value_mut(|records| {
            // Only a history with room to spare: one a frozen copy still shares would
            // otherwise be copied just to be shrunk.
            if records.capacity() > records.len() {
                std::sync::Arc::make_mut(records).shrink_to_fit();
            }
        });
    }

    /// A digest of the live key space (every live key's newest record), kept up to
    /// date by every write: cheap enough to take after every applied entry.
    pub fn live_digest(&self) -> u64 {
        self.live_digest
    }

    /// [`Mvcc::live_digest`] counted from scratch (at decode, and by tests of the counter).
    pub fn count_live_digest(&self) -> u64 {
        self.keys
            .iter()
            .filter_map(|(key, records)| records.last().filter(|r| !r.tombstone).map(|r| live_record_digest(key, r)))
            .fold(0, |digest, record| digest ^ record)
    }

    /// The database size counted from scratch (at decode, and by tests of the counter).
    pub fn count_bytes(&self) -> u64 {
        self.keys.iter().map(|(key, records)| records.iter().map(|r| record_bytes(key, r)).sum::<u64>()).sum()
    }

    /// The simulator's memory-corruption fault: flips one byte of the newest value of
    /// the first live key starting with `prefix`, as a bad RAM cell would (the live
    /// digest follows, as the hardware would not tell). The key, if one was found.
    #[cfg(madsim)]
    pub fn corrupt_live_value_for_simulation(&mut self, prefix: &[u8]) -> Option<Vec<u8>> {
        let (key, records) = self.keys.find_mut(|key, records| {
            key.starts_with(prefix) && records.last().is_some_and(|r| !r.tombstone && !r.value.is_empty())
        })?;
        let record = std::sync::Arc::make_mut(records).last_mut().expect("found above");
        let before = live_record_digest(key, record);
        let mut damaged = record.value.to_vec();
        damaged[0] ^= 0x20;
        record.value = damaged.into();
        self.live_digest ^= before ^ live_record_digest(key, record);
        Some(key.to_vec())
    }

    /// Key records kept, history included.
    pub fn record_count(&self) -> u64 {
        self.keys.values().map(|records| records.len() as u64).sum()
    }

    /// Live keys now, from the counter every write keeps.
    pub fn live_keys(&self) -> u64 {
        self.live_keys
    }

    /// Number of live keys now, counted from scratch (at decode, and by tests).
    pub fn live_key_count(&self) -> usize {
        self.keys.values().filter(|r| r.last().is_some_and(|r| !r.tombstone)).count()
    }
}


#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::apply::decode_internal_shared;
    use crate::pb::detcdpb::{internal_request, InternalRequest};
    use crate::pb::etcdserverpb::PutRequest;

    /// A large value applied from a log entry is a slice of the entry's buffer (the raft
    /// log and the store hold it once); a small one gets its own allocation.
    #[test]
    fn a_large_value_shares_the_entry_buffer_a_small_one_does_not() {
        for (value_bytes, shared) in [(SHARED_VALUE_BYTES_MIN, true), (SHARED_VALUE_BYTES_MIN - 1, false)] {
            let put = PutRequest { key: b"k".to_vec(), value: vec![7; value_bytes].into(), ..PutRequest::default() };
            let request = InternalRequest { proposer: 1, request_id: 1, op: Some(internal_request::Op::Put(put)), auth: None };
            let entry: bytes::Bytes = request.encode_to_vec().into();
            let Some(internal_request::Op::Put(decoded)) = decode_internal_shared(entry.clone()).expect("decodes").op else {
                panic!("a put")
            };
            let stored = stored_value(&decoded.value);
            assert_eq!(stored, decoded.value);
            let inside = entry.as_ptr_range().contains(&stored.as_ptr());
            assert_eq!(inside, shared, "{value_bytes}-byte value inside the entry's buffer");
        }
    }
}
