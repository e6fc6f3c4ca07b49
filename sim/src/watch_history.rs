//! The record of every watch in a run, and the authoritative changes it is checked
//! against: what every member applied, at which revision (the members report it; they
//! must all agree). Pure data, written into the run's JSON report.
//!
//! A *chain* is one logical watch as a client keeps it alive: its first stream, and
//! every stream it resumed on (another member, from the revision after the last one it
//! had been given) after a stream broke or the client moved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One change as a watcher sees it (and as the authoritative log holds it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchedEvent {
    pub revision: i64,
    pub delete: bool,
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub version: i64,
    /// The lease the key is attached to (0: none; deletes carry 0).
    #[serde(default)]
    pub lease: i64,
    /// The value and mod revision before the change, when there was one (and the
    /// watcher asked for it).
    pub prev: Option<(String, i64)>,
}

/// What one watch response said.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEntry {
    Created { header_revision: i64 },
    Events { header_revision: i64, events: Vec<WatchedEvent> },
    /// A progress response: everything up to `header_revision` was given.
    Progress { header_revision: i64 },
    Canceled { compact_revision: i64, reason: String },
}

/// A response with the moment it was received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimedWatchEntry {
    pub at_ms: u64,
    pub entry: WatchEntry,
}

/// One stream of a chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchSegment {
    pub member: u64,
    pub incarnation: u64,
    /// The start revision the create request asked for (0: from now).
    pub requested_start: i64,
    pub opened_ms: u64,
    pub responses: Vec<TimedWatchEntry>,
    /// Why the stream ended (empty while open).
    pub ended: String,
}

/// One logical watch across the streams that carried it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchChain {
    pub id: u64,
    pub client: u64,
    pub key: String,
    /// etcd's range end ("" for one key).
    pub range_end: String,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub segments: Vec<WatchSegment>,
    /// Whether the chain's last stream must have answered a final progress request
    /// (set for chains still open when the run settles).
    pub final_progress_required: bool,
}

impl WatchChain {
    /// Whether this watch covers `key`.
    pub fn covers(&self, key: &str) -> bool {
        if self.range_end.is_empty() {
            key == self.key
        } else if self.range_end == "\0" {
            key >= self.key.as_str()
        } else {
            key >= self.key.as_str() && key < self.range_end.as_str()
        }
    }

    /// The events of an authoritative revision this watch must see, shaped as asked.
    pub fn expected(&self, events: &[WatchedEvent]) -> Vec<WatchedEvent> {
        events
            .iter()
            .filter(|e| self.covers(&e.key) && !(if e.delete { self.no_delete } else { self.no_put }))
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev = None;
                }
                e
            })
            .collect()
    }
}

/// Every watch of a run and the authoritative changes, by revision.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchRecord {
    pub chains: Vec<WatchChain>,
    pub authoritative: BTreeMap<i64, Vec<WatchedEvent>>,
    /// When each revision was first applied by any member, as a position in the
    /// history's event counter (`invoke_seq`/`complete_seq`): an op invoked after it
    /// cannot have caused it; an op completed before it cannot have seen it.
    #[serde(default)]
    pub first_applied_seq: BTreeMap<i64, u64>,
    /// Every compaction point, with when a member first applied it (simulated ms).
    #[serde(default)]
    pub compactions: BTreeMap<i64, u64>,
}

impl WatchRecord {
    /// The highest compaction point some member had applied by `at_ms` (0: none).
    pub fn compacted_by(&self, at_ms: u64) -> i64 {
        self.compactions.iter().filter(|(_, applied_ms)| **applied_ms <= at_ms).map(|(revision, _)| *revision).max().unwrap_or(0)
    }
}
