//! Building a store from another server's records: etcd's key bucket (every kept
//! revision of every key, with its sub-revision and tombstone mark) and its leases, as
//! `storage::etcd_snapshot` reads them from a bbolt file. Revisions are kept exactly as
//! etcd numbered them, so clients see the same create, mod and compact revisions.

use super::{KeyRecord, Mvcc};
use crate::pb::mvccpb::KeyValue;

/// One record of etcd's key bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedRecord {
    pub main: i64,
    pub sub: i64,
    pub tombstone: bool,
    pub kv: KeyValue,
}

/// What an import kept and what it had to drop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub records: u64,
    pub leases: u64,
    /// Live keys whose lease was not among the leases: kept without a lease.
    pub dangling_lease_references: u64,
}

impl Mvcc {
    /// A store holding `records` (in revision order, as etcd's key bucket holds them),
    /// compacted at `compact_revision`, with `leases` (id, TTL in seconds) and each live
    /// key attached to its lease. Input that cannot be etcd's (revisions out of order, a
    /// key written twice in one revision) is an error.
    pub fn from_imported(records: &[ImportedRecord], compact_revision: i64, leases: &[(i64, i64)]) -> Result<(Mvcc, ImportReport), String> {
        let mut store = Mvcc::new();
        let mut report = ImportReport::default();
        for (id, ttl_secs) in leases {
            if *id <= 0 {
                return Err(format!("lease id {id} is not positive"));
            }
            store.lease_grant(*id, *ttl_secs).map_err(|e| format!("lease {id:x}: {e}"))?;
            report.leases += 1;
        }
        let mut last = (0i64, -1i64);
        for record in records {
            if record.main <= 0 || (record.main, record.sub) <= last {
                return Err(format!("revision {}_{} is out of order (after {}_{})", record.main, record.sub, last.0, last.1));
            }
            last = (record.main, record.sub);
            let sub = u32::try_from(record.sub).map_err(|_| format!("sub-revision {} of revision {} is out of range", record.sub, record.main))?;
            let key = &record.kv.key;
            if key.is_empty() {
                return Err(format!("revision {}_{} has an empty key", record.main, record.sub));
            }
            let key_record = if record.tombstone {
                KeyRecord { mod_revision: record.main, sub, create_revision: 0, version: 0, lease: 0, value: super::no_value(), tombstone: true }
            } else {
                KeyRecord {
                    mod_revision: record.main,
                    sub,
                    create_revision: record.kv.create_revision,
                    version: record.kv.version,
                    lease: record.kv.lease,
                    value: bytes::Bytes::copy_from_slice(&record.kv.value),
                    tombstone: false,
                }
            };
            let history = std::sync::Arc::make_mut(store.keys.get_or_insert_with(key, || std::sync::Arc::new(Vec::with_capacity(1))));
            if history.last().is_some_and(|previous| previous.mod_revision >= record.main) {
                return Err(format!("key {:?} is written twice in revision {}", String::from_utf8_lossy(key), record.main));
            }
            history.push(key_record);
            report.records += 1;
        }
        // Attach live keys to their leases (a reference to a lease that is gone is dropped).
        let mut attachments = Vec::new();
        for (key, history) in store.keys.iter() {
            if let Some(live) = history.last().filter(|r| !r.tombstone && r.lease != 0) {
                attachments.push((key.to_vec(), live.lease));
            }
        }
        for (key, lease) in attachments {
            if store.lessor.contains(lease) {
                store.lessor.attach(lease, &key);
            } else {
                report.dangling_lease_references += 1;
                if let Some(live) = store.keys.get_mut(&key).and_then(|history| std::sync::Arc::make_mut(history).last_mut()) {
                    live.lease = 0;
                }
            }
        }
        store.current_revision = last.0.max(compact_revision).max(1);
        store.compact_revision = compact_revision.clamp(0, store.current_revision);
        let encoded = bincode::serialize(&store).map_err(|e| e.to_string())?;
        Ok((Mvcc::decode(&encoded)?, report))
    }
}
