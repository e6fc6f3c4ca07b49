//! The NOSPACE alarm check: while the alarm is active — from the revision at which its
//! activation was applied until its deactivation — no revision may add data (a put
//! event). Checked against the authoritative changes every member reported.

use std::collections::BTreeMap;

use crate::checker::Verdict;
use crate::watch_history::WatchedEvent;

/// `transitions`: (store revision when applied, active), in apply order.
pub fn check_nospace_respected(transitions: &[(i64, bool)], authoritative: &BTreeMap<i64, Vec<WatchedEvent>>) -> Verdict {
    let mut since: Option<i64> = None;
    let mut intervals = Vec::new();
    for (revision, active) in transitions {
        match (active, since) {
            (true, None) => since = Some(*revision),
            (false, Some(on)) => {
                intervals.push((on, Some(*revision)));
                since = None;
            }
            _ => {}
        }
    }
    if let Some(on) = since {
        intervals.push((on, None));
    }
    for (on, off) in intervals {
        let upper = off.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included);
        for (revision, events) in authoritative.range((std::ops::Bound::Excluded(on), upper)) {
            if let Some(put) = events.iter().find(|e| !e.delete) {
                return Verdict::Violation {
                    check: "nospace-respected".into(),
                    detail: format!(
                        "revision {revision} put {:?} while the NOSPACE alarm was active (raised at revision {on}, {})",
                        put.key,
                        off.map_or("never cleared".to_string(), |r| format!("cleared at revision {r}"))
                    ),
                    ops: vec![],
                };
            }
        }
    }
    Verdict::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str) -> WatchedEvent {
        WatchedEvent { revision, delete: false, key: key.into(), value: String::new(), create_revision: revision, version: 1, lease: 0, prev: None }
    }

    #[test]
    fn a_put_under_the_alarm_is_caught_and_deletes_are_not() {
        let mut log = BTreeMap::new();
        log.insert(5, vec![put(5, "a")]);
        let mut delete = put(6, "a");
        delete.delete = true;
        log.insert(6, vec![delete]);
        log.insert(7, vec![put(7, "b")]);
        assert_eq!(check_nospace_respected(&[(5, true), (6, false)], &log), Verdict::Ok);
        assert!(check_nospace_respected(&[(5, true), (7, false)], &log).is_violation());
        assert!(check_nospace_respected(&[(5, true)], &log).is_violation());
    }
}
