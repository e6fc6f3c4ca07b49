//! Auto-compaction, as etcd's `--auto-compaction-mode` / `--auto-compaction-retention`:
//! decided by the leader on its clock and carried out as a compaction through raft, so
//! every member compacts at the same revision.
//!
//! - `revision` keeps the last N revisions: every check interval (etcd: 5 minutes) the
//!   leader compacts to current − N if that is newer than the compaction point;
//! - `periodic` keeps a time window: every tenth of the window (at least a second) the
//!   leader records the current revision, and compacts to the newest recorded revision
//!   that is at least a window old.

use std::collections::VecDeque;

/// Revision samples kept in periodic mode (one window plus one).
pub const AUTO_COMPACTION_SAMPLES_MAX: usize = 11;
/// etcd's check interval in revision mode.
pub const AUTO_COMPACTION_REVISION_INTERVAL_MS: u64 = 5 * 60 * 1000;

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoCompaction {
    #[default]
    Off,
    Periodic { retention_ms: u64 },
    Revision { retain: i64, interval_ms: u64 },
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AutoCompactor {
    mode: AutoCompaction,
    samples: VecDeque<(u64, i64)>,
    next_check_ms: Option<u64>,
}

impl AutoCompactor {
    pub fn new(mode: AutoCompaction) -> Self {
        Self { mode, samples: VecDeque::new(), next_check_ms: None }
    }

    fn interval_ms(&self) -> u64 {
        match self.mode {
            AutoCompaction::Off => u64::MAX,
            AutoCompaction::Periodic { retention_ms } => (retention_ms / 10).max(1000),
            AutoCompaction::Revision { interval_ms, .. } => interval_ms.max(1),
        }
    }

    /// Forgets what was recorded (this member stopped leading).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.next_check_ms = None;
    }

    /// Called by the leader at every tick: the revision to compact to now, if any.
    pub fn due(&mut self, now_ms: u64, current_revision: i64, compact_revision: i64) -> Option<i64> {
        if self.mode == AutoCompaction::Off {
            return None;
        }
        let next = *self.next_check_ms.get_or_insert(now_ms);
        if now_ms < next {
            return None;
        }
        self.next_check_ms = Some(now_ms.saturating_add(self.interval_ms()));
        let target = match self.mode {
            AutoCompaction::Off => return None,
            AutoCompaction::Revision { retain, .. } => current_revision - retain,
            AutoCompaction::Periodic { retention_ms } => {
                self.samples.push_back((now_ms, current_revision));
                while self.samples.len() > AUTO_COMPACTION_SAMPLES_MAX {
                    self.samples.pop_front();
                }
                let cutoff = now_ms.checked_sub(retention_ms)?;
                self.samples.iter().rev().find(|(at, _)| *at <= cutoff).map(|(_, revision)| *revision)?
            }
        };
        (target > compact_revision && target <= current_revision).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let mut compactor = AutoCompactor::new(AutoCompaction::Revision { retain: 5, interval_ms: 1000 });
        assert_eq!(compactor.due(0, 20, 0), Some(15));
        assert_eq!(compactor.due(500, 30, 15), None, "not before the interval");
        assert_eq!(compactor.due(1000, 30, 15), Some(25));
        assert_eq!(compactor.due(2000, 27, 25), None, "nothing newer to compact");
    }

    #[test]
    fn periodic_mode_keeps_a_time_window() {
        let mut compactor = AutoCompactor::new(AutoCompaction::Periodic { retention_ms: 10_000 });
        assert_eq!(compactor.due(0, 10, 0), None, "no sample a window old yet");
        for step in 1..10 {
            assert_eq!(compactor.due(step * 1000, 10 + step as i64, 0), None);
        }
        // At 10 s the sample from 0 s (revision 10) is a window old.
        assert_eq!(compactor.due(10_000, 20, 0), Some(10));
        assert_eq!(compactor.due(11_000, 21, 10), Some(11));
    }
}
