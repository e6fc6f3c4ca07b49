//! Compaction: history before a revision is dropped, each key keeping its newest version
//! at or below it and everything after — except a tombstone *below* the compaction
//! point, which goes with the key's whole history. A tombstone *at* the compaction point
//! stays: a watch may start at that revision and is owed the delete (etcd lost it the
//! same way once, etcd-io/etcd#18089; detcd's simulator found it here independently).

use super::{record_bytes, Mvcc};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::CompactionRequest;

impl Mvcc {
    /// Compacts history before `request.revision`, with etcd's errors for a revision
    /// already compacted or not yet written.
    pub fn compact(&mut self, request: &CompactionRequest) -> Result<(), EtcdError> {
        let revision = request.revision;
        if revision <= self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        if revision > self.current_revision {
            return Err(EtcdError::FutureRevision);
        }
        // A tombstone at the compaction point is dropped only by the planted old rule.
        #[cfg(madsim)]
        let tombstone_kept_at = if self.tombstone_compacted_at_its_revision { revision + 1 } else { revision };
        #[cfg(not(madsim))]
        let tombstone_kept_at = revision;
        let mut freed_bytes = 0u64;
        // Records a key drops: everything before the newest record at or below the
        // compaction point, and that one too if it is a tombstone older than the point.
        let keep_from = |records: &[super::KeyRecord]| match records.partition_point(|r| r.mod_revision <= revision) {
            0 => 0,
            p if records[p - 1].tombstone && records[p - 1].mod_revision < tombstone_kept_at => p,
            p => p - 1,
        };
        // Only chunks holding a key with something to drop are visited (and copied if a
        // frozen view still shares them).
        self.keys.retain_where(
            |_, records| keep_from(records) > 0,
            |key, records| {
                let drop_count = keep_from(records);
                freed_bytes += records[..drop_count].iter().map(|r| record_bytes(key, r)).sum::<u64>();
                records.drain(..drop_count);
                !records.is_empty()
            },
        );
        self.size_bytes -= freed_bytes;
        self.compact_revision = revision;
        Ok(())
    }
}
