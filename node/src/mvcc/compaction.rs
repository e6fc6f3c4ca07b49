//! Compaction: history before a revision is dropped, each key keeping its newest version
//! at or below it and everything after — except a tombstone *below* the compaction
//! point, which goes with the key's whole history. A tombstone *at* the compaction point
//! stays: a watch may start at that revision and is owed the delete (etcd lost it the
//! same way once, etcd-io/etcd#18089; detcd's simulator found it here independently).
//!
//! In two halves, so that compacting a store of a million keys never stops the raft
//! loop: applying a compaction moves the compaction point at once (reads, watches and
//! hashes below it are refused from that revision on, on every member alike), and the
//! records it dropped are then removed in bounded steps ([`Mvcc::compact_step`], a
//! window of keys per loop turn). Until a key's turn comes, its dropped records are
//! still in memory but invisible: every read picks the newest record at or below its
//! revision (never below the compaction point), and `hash_kv` skips exactly the records
//! compaction dropped ([`Mvcc::compacted_prefix`]), so the hash never depends on how far
//! the removal got. The database size shrinks as records are removed.

use super::{record_bytes, KeyRecord, Mvcc};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::CompactionRequest;

/// How far the removal of compacted records got: the first key not yet visited (`None`:
/// nothing pending). Not part of the store's value — two stores that differ only in it
/// hold the same data — so it compares equal always and is not encoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompactionProgress(pub(crate) Option<Vec<u8>>);

impl PartialEq for CompactionProgress {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for CompactionProgress {}

impl Mvcc {
    /// Compacts history before `request.revision`, with etcd's errors for a revision
    /// already compacted or not yet written, and removes what it dropped at once (for
    /// callers that are not a member's loop: tests, tools).
    pub fn compact(&mut self, request: &CompactionRequest) -> Result<(), EtcdError> {
        self.compact_deferred(request)?;
        while self.compact_step(usize::MAX) {}
        Ok(())
    }

    /// The first half (see the module documentation): moves the compaction point, with
    /// etcd's errors; the records it drops are removed by later [`Mvcc::compact_step`]s.
    pub fn compact_deferred(&mut self, request: &CompactionRequest) -> Result<(), EtcdError> {
        let revision = request.revision;
        if revision <= self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        if revision > self.current_revision {
            return Err(EtcdError::FutureRevision);
        }
        self.compact_revision = revision;
        // Start (or start over) from the first key: the new point drops more everywhere.
        self.compaction_progress.0 = Some(Vec::new());
        Ok(())
    }

    /// How many of a key's oldest records the compaction point drops: everything before
    /// the newest record at or below it, and that one too if it is a tombstone older
    /// than the point.
    pub(crate) fn compacted_prefix(&self, records: &[KeyRecord]) -> usize {
        self.clone_rule().compacted_prefix(records)
    }

    /// The second half: removes the records the compaction point drops from at most
    /// `keys_max` keys, continuing where the last step stopped. Whether work remains.
    pub fn compact_step(&mut self, keys_max: usize) -> bool {
        let Some(start) = self.compaction_progress.0.take() else { return false };
        let probe = self.clone_rule();
        let mut freed_bytes = 0u64;
        // Only chunks holding a key with something to drop are changed (and copied if a
        // frozen view still shares them).
        let next = self.keys.retain_where_from(
            &start,
            keys_max,
            |_, records| probe.compacted_prefix(records) > 0,
            |key, records| {
                let records = std::sync::Arc::make_mut(records);
                let drop_count = probe.compacted_prefix(records);
                freed_bytes += records[..drop_count].iter().map(|r| record_bytes(key, r)).sum::<u64>();
                records.drain(..drop_count);
                !records.is_empty()
            },
        );
        self.size_bytes -= freed_bytes;
        self.compaction_progress.0 = next;
        self.compaction_progress.0.is_some()
    }

    /// What [`Mvcc::compacted_prefix`] needs, apart from the store (so the key index can
    /// be changed while the rule is consulted).
    fn clone_rule(&self) -> CompactionRule {
        CompactionRule {
            compact_revision: self.compact_revision,
            #[cfg(madsim)]
            tombstone_compacted_at_its_revision: self.tombstone_compacted_at_its_revision,
        }
    }
}

/// The compaction rule at one compaction point (see [`Mvcc::compacted_prefix`]).
struct CompactionRule {
    compact_revision: i64,
    #[cfg(madsim)]
    tombstone_compacted_at_its_revision: bool,
}

impl CompactionRule {
    fn compacted_prefix(&self, records: &[KeyRecord]) -> usize {
        let revision = self.compact_revision;
        // A tombstone at the compaction point is dropped only by the planted old rule.
        #[cfg(madsim)]
        let tombstone_kept_at = if self.tombstone_compacted_at_its_revision { revision + 1 } else { revision };
        #[cfg(not(madsim))]
        let tombstone_kept_at = revision;
        match records.partition_point(|r| r.mod_revision <= revision) {
            0 => 0,
            p if records[p - 1].tombstone && records[p - 1].mod_revision < tombstone_kept_at => p,
            p => p - 1,
        }
    }
}
