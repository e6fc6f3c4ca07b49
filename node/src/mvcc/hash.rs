//! The store's digest (etcd's HashKV): equal on every member that applied the same log.

use super::Mvcc;

impl Mvcc {
    /// Hash of the key space at `revision` (keys, versions and values of every record at
    /// or below it). Walks the whole store: call it off the hot path (status does not).
    pub fn hash_kv(&self, revision: i64) -> u32 {
        let revision = if revision <= 0 { self.current_revision } else { revision };
        let mut hasher = crc32fast::Hasher::new();
        for (key, records) in self.keys.iter() {
            // Records compaction dropped are skipped, removed yet or not.
            #[allow(unused_mut)]
            let mut kept = &records[self.compacted_prefix(records)..];
            #[cfg(madsim)]
            if self.hash_counts_compacted_records {
                // The planted bug: records not yet removed count, so the hash depends on
                // how far this member's removal got.
                kept = records;
            }
            for record in kept.iter().filter(|r| r.mod_revision <= revision) {
                hasher.update(key);
                hasher.update(&record.mod_revision.to_le_bytes());
                hasher.update(&record.create_revision.to_le_bytes());
                hasher.update(&record.version.to_le_bytes());
                hasher.update(&record.lease.to_le_bytes());
                hasher.update(&[u8::from(record.tombstone)]);
                hasher.update(&record.value);
            }
        }
        hasher.finalize()
    }
}
