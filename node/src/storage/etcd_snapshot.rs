//! Migration from etcd: the key space and leases of an etcd 3.4/3.5 snapshot file (a
//! bbolt database, as `etcdctl snapshot save` writes it against etcd, with or without
//! the SHA-256 etcd appends) as a detcd state, for `detcd snapshot restore` and `status`.
//!
//! etcd keeps every kept revision of every key in the bucket `key`, keyed by revision
//! (main u64 big-endian, `_`, sub u64 big-endian, and a trailing `t` for a tombstone),
//! each value an `mvccpb.KeyValue`; leases in `lease` (`leasepb.Lease`); the compaction
//! point in `meta` (`finishedCompactRev`, a revision key). Members, auth and alarms are
//! not carried over: the restored cluster has the member list it is restored with.

use prost::Message as _;

use super::bbolt::{BoltFile, BucketRoot};
use crate::apply::StateMachine;
use crate::mvcc::import::{ImportReport, ImportedRecord};
use crate::mvcc::Mvcc;
use crate::pb::mvccpb::KeyValue;

const SHA256_BYTES: usize = 32;
/// etcd's snapshot stream: the database (a multiple of 512 bytes), then its SHA-256.
const HASHED_FILE_MODULUS: usize = 512;
const REVISION_BYTES: usize = 17;

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// A revision key: (main, sub, tombstone).
fn parse_revision(bytes: &[u8]) -> Result<(i64, i64, bool), String> {
    let tombstone = match bytes.len() {
        REVISION_BYTES => false,
        n if n == REVISION_BYTES + 1 && bytes[REVISION_BYTES] == b't' => true,
        _ => return Err(format!("a key-bucket key of {} bytes is not an etcd revision", bytes.len())),
    };
    if bytes[8] != b'_' {
        return Err("a key-bucket key without etcd's '_' separator".into());
    }
    let main = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    Ok((main, sub, tombstone))
}

/// The database bytes of an etcd snapshot file, its trailing SHA-256 checked if present.
fn database_of(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() % HASHED_FILE_MODULUS != SHA256_BYTES {
        return Ok(bytes);
    }
    let (database, checksum) = bytes.split_at(bytes.len() - SHA256_BYTES);
    if crate::digest::sha256(database) != checksum {
        return Err("etcd snapshot file is damaged: sha256 checksum mismatch".into());
    }
    Ok(database)
}

/// Whether `bytes` is a bbolt file (an etcd snapshot).
pub fn is_etcd_snapshot(bytes: &[u8]) -> bool {
    super::bbolt::looks_like_bolt(bytes)
}

/// The state an etcd snapshot file holds, and what the import kept.
pub fn read(bytes: &[u8]) -> Result<(StateMachine, ImportReport), String> {
    let database = database_of(bytes)?;
    let file = BoltFile::open(database).map_err(|e| format!("etcd snapshot file: {e}"))?;
    let bucket = |name: &str| file.bucket(name.as_bytes()).map_err(|e| format!("etcd snapshot file: {e}"));
    let keys = bucket("key")?.ok_or("etcd snapshot file has no `key` bucket: not an etcd v3 database")?;
    let mut records = Vec::new();
    let mut visit_records = |key: &[u8], value: &[u8], is_bucket: bool| {
        if is_bucket {
            return Err("a bucket inside etcd's key bucket".to_string());
        }
        let (main, sub, tombstone) = parse_revision(key)?;
        let kv = KeyValue::decode(value).map_err(|e| format!("revision {main}_{sub} does not decode: {e}"))?;
        records.push(ImportedRecord { main, sub, tombstone, kv });
        Ok(())
    };
    file.for_each(keys, &mut visit_records).map_err(|e| format!("etcd snapshot file: {e}"))?;
    let mut leases = Vec::new();
    if let Some(lease_bucket) = bucket("lease")? {
        file.for_each(lease_bucket, |_, value, _| {
            let lease = EtcdLease::decode(value).map_err(|e| format!("a lease does not decode: {e}"))?;
            leases.push((lease.id, lease.ttl));
            Ok(())
        })
        .map_err(|e| format!("etcd snapshot file: {e}"))?;
    }
    let compact_revision = match bucket("meta")? {
        Some(meta) => finished_compaction(&file, meta)?,
        None => 0,
    };
    let (store, report) = Mvcc::from_imported(&records, compact_revision, &leases).map_err(|e| format!("etcd snapshot file: {e}"))?;
    Ok((StateMachine::from_store(store), report))
}

/// `finishedCompactRev` of etcd's meta bucket (0 if never compacted).
fn finished_compaction(file: &BoltFile<'_>, meta: BucketRoot<'_>) -> Result<i64, String> {
    let mut compacted = 0;
    file.for_each(meta, |key, value, _| {
        if key == b"finishedCompactRev" {
            compacted = parse_revision(value)?.0;
        }
        Ok(())
    })
    .map_err(|e| format!("etcd snapshot file: {e}"))?;
    Ok(compacted)
}
