//! Past changes as watch events: what a watcher that starts in the past (or fell
//! behind) is owed, read back from the key histories the store keeps until compaction.

use super::{key_range, range::keys_in, Mvcc};
use crate::errors::EtcdError;
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};

/// Revisions one history read covers at most (bounds the work of one catch-up step).
pub const HISTORY_REVISIONS_MAX: i64 = 1024;

/// Changes read back from history.
#[derive(Debug, PartialEq)]
pub struct HistoryBatch {
    /// Events in `[from, through_revision]`, ordered by (revision, sub-revision); every
    /// event of a revision it covers is there.
    pub events: Vec<Event>,
    /// The last revision the batch covers completely.
    pub through_revision: i64,
}

impl Mvcc {
    /// Changes to keys in `[key, range_end)` (etcd's range forms) from revision `from`
    /// on: at most [`HISTORY_REVISIONS_MAX`] revisions, and no more than `events_max`
    /// events unless one revision alone has more (a revision is never split).
    /// `Compacted` if `from` is below the compaction point.
    pub fn history(&self, key: &[u8], range_end: &[u8], from: i64, events_max: usize) -> Result<HistoryBatch, EtcdError> {
        assert!(from >= 1, "revisions start at 1");
        if from < self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        let through = self.current_revision.min(from.saturating_add(HISTORY_REVISIONS_MAX - 1));
        if from > through {
            return Ok(HistoryBatch { events: Vec::new(), through_revision: self.current_revision });
        }
        let mut found: Vec<(i64, u32, Event)> = Vec::new();
        for (key, records) in keys_in(&self.keys, &key_range(key, range_end)) {
            let first = records.partition_point(|r| r.mod_revision < from);
            // Records compaction dropped (removed yet or not) are no one's previous value.
            let kept_from = self.compacted_prefix(records);
            for position in first..records.len() {
                let record = &records[position];
                if record.mod_revision > through {
                    break;
                }
                let previous = position.checked_sub(1).filter(|p| *p >= kept_from).map(|p| &records[p]).filter(|p| !p.tombstone);
                let prev_kv = previous.map(|p| p.to_key_value(key));
                let event = if record.tombstone {
                    let kv = KeyValue { key: key.to_vec(), mod_revision: record.mod_revision, ..Default::default() };
                    Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv }
                } else {
                    Event { r#type: EventType::Put as i32, kv: Some(record.to_key_value(key)), prev_kv }
                };
                found.push((record.mod_revision, record.sub, event));
            }
        }
        found.sort_by_key(|(revision, sub, _)| (*revision, *sub));
        let mut through_revision = through;
        if found.len() > events_max.max(1) {
            // Cut after the revision of the last event that fits, keeping it whole.
            let cut_revision = found[events_max.max(1) - 1].0;
            found.retain(|(revision, _, _)| *revision <= cut_revision);
            through_revision = cut_revision;
        }
        Ok(HistoryBatch { events: found.into_iter().map(|(_, _, event)| event).collect(), through_revision })
    }
}
