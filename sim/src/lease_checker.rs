//! Lease checks against the applied log and the clients' own record:
//! - **safety**: a lease expires no earlier than every granted or renewed TTL allows,
//!   measured from the moment the client *asked* (the server renews later, never
//!   earlier), shortened only by the clock drift the scenario declares (a leader whose
//!   clock runs fast by d measures T in T/(1+d) real time);
//! - **linearizable**: once a lease's end was applied, no later put with it succeeds,
//!   no later keep-alive renews it, no later TimeToLive finds it;
//! - **atomic**: a lease's end deletes exactly the keys attached to it, in its revision,
//!   and no key is attached to it afterwards.
//!
//! Liveness (a lease nobody renews is gone within TTL + a bound) needs the live cluster
//! and is checked by the run itself.

use std::collections::{BTreeMap, BTreeSet};

use crate::checker::Verdict;
use crate::history::Outcome;
use crate::lease_history::{LeaseOpKind, LeaseRecord};
use crate::watch_history::WatchedEvent;

fn violation(check: &str, detail: String) -> Verdict {
    Verdict::Violation { check: check.into(), detail, ops: vec![] }
}

/// See the module documentation. `drift_ppm` is the scenario's clock-drift bound.
pub fn check_lease_safety(record: &LeaseRecord, drift_ppm: i64) -> Verdict {
    let scale = 1_000_000.0 / (1_000_000.0 + drift_ppm.max(0) as f64);
    for op in &record.ops {
        let renews = matches!(op.kind, LeaseOpKind::Grant { .. } | LeaseOpKind::KeepAlive);
        if !renews || op.outcome != Outcome::Ok || op.ttl <= 0 {
            continue;
        }
        let Some(end) = record.ends.get(&op.lease).filter(|end| end.expired) else { continue };
        let promised_until = op.invoke_ms as f64 + op.ttl as f64 * 1000.0 * scale;
        if (end.at_ms as f64) < promised_until - 1.0 {
            return violation(
                "lease-safety",
                format!(
                    "lease {:016x} expired at {} ms, but client {} was granted TTL {} s by {:?} invoked at {} ms (answered at {:?} ms): it was promised until {:.0} ms (clock drift bound {drift_ppm} ppm)",
                    op.lease, end.at_ms, op.client, op.ttl, op.kind, op.invoke_ms, op.complete_ms, promised_until
                ),
            );
        }
    }
    Verdict::Ok
}

/// See the module documentation.
pub fn check_lease_linearizable(record: &LeaseRecord) -> Verdict {
    for op in &record.ops {
        let Some(end) = record.ends.get(&op.lease) else { continue };
        if op.invoke_ms <= end.at_ms || op.outcome != Outcome::Ok {
            continue;
        }
        let wrong = match op.kind {
            LeaseOpKind::Put { .. } => true,
            LeaseOpKind::KeepAlive | LeaseOpKind::TimeToLive => op.ttl > 0,
            LeaseOpKind::Grant { .. } | LeaseOpKind::Revoke => false,
        };
        if wrong {
            return violation(
                "lease-linearizable",
                format!(
                    "lease {:016x} ended at {} ms (revision {}), but {:?} invoked at {} ms by client {} succeeded (TTL {})",
                    op.lease, end.at_ms, end.revision, op.kind, op.invoke_ms, op.client, op.ttl
                ),
            );
        }
    }
    Verdict::Ok
}

/// See the module documentation.
pub fn check_lease_atomicity(record: &LeaseRecord, authoritative: &BTreeMap<i64, Vec<WatchedEvent>>) -> Verdict {
    let ends_by_revision: BTreeMap<i64, Vec<i64>> = record.ends.iter().fold(BTreeMap::new(), |mut by, (lease, end)| {
        by.entry(end.revision).or_insert_with(Vec::new).push(*lease);
        by
    });
    let ended_at: BTreeMap<i64, i64> = record.ends.iter().map(|(lease, end)| (*lease, end.revision)).collect();
    let mut attached: BTreeMap<String, i64> = BTreeMap::new();
    for (revision, events) in authoritative {
        let before = attached.clone();
        for event in events {
            if event.delete {
                attached.remove(&event.key);
            } else if event.lease != 0 {
                if ended_at.get(&event.lease).is_some_and(|end| *end < *revision) {
                    return violation("lease-atomic", format!("key {} attached at revision {revision} to lease {:016x}, which ended at revision {}", event.key, event.lease, ended_at[&event.lease]));
                }
                attached.insert(event.key.clone(), event.lease);
            } else {
                attached.remove(&event.key);
            }
        }
        for lease in ends_by_revision.get(revision).into_iter().flatten() {
            let owed: BTreeSet<&String> = before.iter().filter(|(_, l)| *l == lease).map(|(k, _)| k).collect();
            if owed.is_empty() {
                continue;
            }
            let deleted: BTreeSet<&String> = events.iter().filter(|e| e.delete).map(|e| &e.key).collect();
            if !owed.is_subset(&deleted) {
                return violation("lease-atomic", format!("lease {lease:016x} ended at revision {revision}, which deleted {deleted:?}, not all of its keys {owed:?}"));
            }
        }
    }
    Verdict::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease_history::{LeaseEnd, LeaseOp};

    fn op(lease: i64, kind: LeaseOpKind, invoke_ms: u64, ttl: i64) -> LeaseOp {
        LeaseOp { id: 0, client: 1, lease, kind, member: 1, invoke_ms, complete_ms: Some(invoke_ms + 5), outcome: Outcome::Ok, ttl, error: None }
    }

    fn record(ops: Vec<LeaseOp>, end_ms: u64, expired: bool) -> LeaseRecord {
        let mut ends = BTreeMap::new();
        ends.insert(7, LeaseEnd { at_ms: end_ms, revision: 5, expired });
        LeaseRecord { ops, ends }
    }

    #[test]
    fn early_expiry_is_caught_and_drift_within_the_bound_is_not() {
        let renewed = vec![op(7, LeaseOpKind::Grant { requested_ttl: 2 }, 1000, 2), op(7, LeaseOpKind::KeepAlive, 2000, 2)];
        assert_eq!(check_lease_safety(&record(renewed.clone(), 4100, true), 0), Verdict::Ok);
        assert!(check_lease_safety(&record(renewed.clone(), 3500, true), 0).is_violation(), "expired before 2000 + 2000");
        assert_eq!(check_lease_safety(&record(renewed.clone(), 3950, true), 50_000), Verdict::Ok, "within 5% drift");
        assert_eq!(check_lease_safety(&record(renewed, 1500, false), 0), Verdict::Ok, "a client revoke may come any time");
    }

    #[test]
    fn success_after_the_end_is_caught() {
        let late_put = vec![op(7, LeaseOpKind::Put { key: "x".into() }, 5000, 0)];
        assert!(check_lease_linearizable(&record(late_put, 4000, true)).is_violation());
        let late_ttl_not_found = vec![op(7, LeaseOpKind::TimeToLive, 5000, -1)];
        assert_eq!(check_lease_linearizable(&record(late_ttl_not_found, 4000, true)), Verdict::Ok);
    }

    fn event(revision: i64, key: &str, delete: bool, lease: i64) -> WatchedEvent {
        WatchedEvent { revision, delete, key: key.into(), value: String::new(), create_revision: 0, version: 0, lease, prev: None }
    }

    #[test]
    fn a_partial_revoke_is_caught() {
        let mut log = BTreeMap::new();
        log.insert(2, vec![event(2, "a", false, 7)]);
        log.insert(3, vec![event(3, "b", false, 7)]);
        log.insert(5, vec![event(5, "a", true, 0), event(5, "b", true, 0)]);
        let whole = record(vec![], 9000, true);
        assert_eq!(check_lease_atomicity(&whole, &log), Verdict::Ok);
        log.insert(5, vec![event(5, "a", true, 0)]);
        assert!(check_lease_atomicity(&whole, &log).is_violation());
    }
}
