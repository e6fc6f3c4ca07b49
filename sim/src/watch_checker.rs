//! Checks every watch chain against the authoritative changes, for etcd's documented
//! guarantees:
//! - **ordered** and **unique**: revisions strictly increase across responses; no
//!   revision is given twice (a resumed stream continues after what was given);
//! - **reliable**: no revision with a change the watch covers is skipped;
//! - **atomic** and **valid**: a revision's events arrive together in one response and
//!   equal the authoritative ones (type, key, value, revisions, version, prev_kv iff
//!   asked, in order) — except that, as etcd, an event may come without its prev_kv
//!   once the revision before it was compacted away (some member had applied a
//!   compaction past it by the time the response arrived);
//! - **bookmarkable**: a progress response at R comes only after every covered change
//!   up to R;
//! - **compaction**: a cancel with `compact_revision` C only for a watch whose next
//!   revision is below C;
//! - and, once the run has settled, every open chain answers a final progress request.

use crate::checker::Verdict;
use crate::watch_history::{WatchChain, WatchEntry, WatchRecord};

/// Why a member refuses to create a watch for a client's credentials (etcd's errors).
const AUTH_REFUSALS: [&str; 3] = ["etcdserver: user name is empty", "etcdserver: permission denied", "etcdserver: invalid auth token"];

fn violation(check: &str, chain: &WatchChain, detail: String) -> Verdict {
    Verdict::Violation {
        check: check.into(),
        detail: format!("watch chain {} (client {}, key {:?}, range_end {:?}): {detail}", chain.id, chain.client, chain.key, chain.range_end),
        ops: vec![],
    }
}

/// The first revision in `[from, to]` with a change `chain` covers, if any.
fn first_owed(record: &WatchRecord, chain: &WatchChain, from: i64, to: i64) -> Option<i64> {
    if from > to {
        return None;
    }
    record.authoritative.range(from..=to).find(|(_, events)| !chain.expected(events).is_empty()).map(|(r, _)| *r)
}

fn check_chain(record: &WatchRecord, chain: &WatchChain) -> Verdict {
    // The first revision this watch has not been given yet (known once created).
    let mut next: Option<i64> = None;
    let mut final_progress = false;
    for (index, segment) in chain.segments.iter().enumerate() {
        for timed in &segment.responses {
            match &timed.entry {
                WatchEntry::Created { header_revision } => {
                    let start = if segment.requested_start > 0 { segment.requested_start } else { header_revision + 1 };
                    match next {
                        None => next = Some(start),
                        Some(expected) if segment.requested_start != expected => {
                            return violation("watch-resumable", chain, format!("segment {index} resumed at {} but the next revision owed was {expected}", segment.requested_start));
                        }
                        Some(_) => {}
                    }
                }
                WatchEntry::Events { events, header_revision } => {
                    let Some(mut owed) = next else {
                        return violation("watch-ordered", chain, format!("segment {index}: events before the created response"));
                    };
                    let mut position = 0;
                    while position < events.len() {
                        let revision = events[position].revision;
                        let end = events[position..].iter().position(|e| e.revision != revision).map_or(events.len(), |p| position + p);
                        if revision < owed {
                            return violation("watch-unique", chain, format!("segment {index} at {} ms: revision {revision} given again or out of order (next owed {owed})", timed.at_ms));
                        }
                        if let Some(missed) = first_owed(record, chain, owed, revision - 1) {
                            return violation("watch-reliable", chain, format!("segment {index} at {} ms: revision {missed} was skipped (went from {owed} to {revision}); owed {:?}", timed.at_ms, chain.expected(&record.authoritative[&missed])));
                        }
                        let expected = record.authoritative.get(&revision).map(|e| chain.expected(e)).unwrap_or_default();
                        let given = &events[position..end];
                        let compacted_by = record.compacted_by(timed.at_ms);
                        let same = |g: &crate::watch_history::WatchedEvent, e: &crate::watch_history::WatchedEvent| {
                            g == e || (g.prev.is_none() && e.prev.is_some() && e.revision - 1 < compacted_by && { let mut e = e.clone(); e.prev = None; *g == e })
                        };
                        if given.len() != expected.len() || !given.iter().zip(&expected).all(|(g, e)| same(g, e)) {
                            return violation("watch-valid", chain, format!("segment {index} at {} ms: revision {revision} given as {given:?}, but it was {expected:?}", timed.at_ms));
                        }
                        owed = revision + 1;
                        position = end;
                    }
                    if *header_revision < owed - 1 {
                        return violation("watch-ordered", chain, format!("segment {index}: header revision {header_revision} below its events (up to {})", owed - 1));
                    }
                    next = Some(owed);
                }
                WatchEntry::Progress { header_revision } => {
                    let Some(owed) = next else {
                        return violation("watch-ordered", chain, format!("segment {index}: progress before the created response"));
                    };
                    if let Some(missed) = first_owed(record, chain, owed, *header_revision) {
                        return violation("watch-bookmarkable", chain, format!("segment {index} at {} ms: progress at revision {header_revision} but revision {missed} was never given", timed.at_ms));
                    }
                    next = Some(owed.max(header_revision + 1));
                    if index + 1 == chain.segments.len() {
                        final_progress = true;
                    }
                }
                WatchEntry::Canceled { compact_revision, reason } => {
                    if *compact_revision > 0 {
                        let owed = next.unwrap_or(segment.requested_start);
                        if owed >= *compact_revision {
                            return violation("watch-compaction", chain, format!("cancelled as compacted at {compact_revision}, but the next revision owed was {owed}"));
                        }
                    } else if !AUTH_REFUSALS.contains(&reason.as_str()) {
                        return violation("watch-canceled", chain, format!("segment {index}: cancelled by the server ({reason:?}) without asking"));
                    }
                    // (An auth refusal is etcd's answer to a watcher whose client had no
                    // credentials the member accepted — in the auth scenario, a client
                    // that had no token yet when auth was enabled — not a lost watch.)
                    return Verdict::Ok;
                }
            }
        }
    }
    if chain.final_progress_required && !final_progress {
        return violation("watch-liveness", chain, "the settled cluster never answered the final progress request".into());
    }
    Verdict::Ok
}

/// One verdict per chain that failed, or a single `Ok`.
pub fn check_watches(record: &WatchRecord) -> Vec<(String, Verdict)> {
    let failures: Vec<(String, Verdict)> = record
        .chains
        .iter()
        .map(|chain| (format!("watch[{}]", chain.id), check_chain(record, chain)))
        .filter(|(_, verdict)| verdict.is_violation())
        .collect();
    if failures.is_empty() {
        vec![("watch".into(), Verdict::Ok)]
    } else {
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch_history::{TimedWatchEntry, WatchSegment, WatchedEvent};

    fn put(revision: i64, key: &str, value: &str) -> WatchedEvent {
        WatchedEvent { revision, delete: false, key: key.into(), value: value.into(), create_revision: revision, version: 1, lease: 0, prev: None }
    }

    fn record() -> WatchRecord {
        let mut record = WatchRecord::default();
        record.authoritative.insert(2, vec![put(2, "k0", "a")]);
        record.authoritative.insert(3, vec![put(3, "k1", "b")]);
        record.authoritative.insert(4, vec![put(4, "k0", "c"), put(4, "k1", "d")]);
        record
    }

    fn chain(entries: Vec<Vec<WatchEntry>>, starts: Vec<i64>) -> WatchChain {
        WatchChain {
            id: 1,
            client: 0,
            key: "k".into(),
            range_end: "l".into(),
            prev_kv: false,
            no_put: false,
            no_delete: false,
            segments: entries
                .into_iter()
                .zip(starts)
                .map(|(responses, requested_start)| WatchSegment {
                    member: 1,
                    incarnation: 1,
                    requested_start,
                    opened_ms: 0,
                    responses: responses.into_iter().map(|entry| TimedWatchEntry { at_ms: 0, entry }).collect(),
                    ended: String::new(),
                })
                .collect(),
            final_progress_required: false,
        }
    }

    fn check(chain: WatchChain) -> Verdict {
        let mut record = record();
        record.chains.push(chain);
        check_watches(&record).remove(0).1
    }

    fn events(header_revision: i64, events: Vec<WatchedEvent>) -> WatchEntry {
        WatchEntry::Events { header_revision, events }
    }

    #[test]
    fn a_complete_resumed_chain_passes() {
        let c = chain(
            vec![
                vec![WatchEntry::Created { header_revision: 4 }, events(3, vec![put(2, "k0", "a"), put(3, "k1", "b")])],
                vec![WatchEntry::Created { header_revision: 4 }, events(4, vec![put(4, "k0", "c"), put(4, "k1", "d")]), WatchEntry::Progress { header_revision: 4 }],
            ],
            vec![1, 4],
        );
        assert_eq!(check(c), Verdict::Ok);
    }

    #[test]
    fn a_gap_a_duplicate_a_split_revision_and_a_false_bookmark_are_caught() {
        let gap = chain(vec![vec![WatchEntry::Created { header_revision: 4 }, events(4, vec![put(2, "k0", "a"), put(4, "k0", "c"), put(4, "k1", "d")])]], vec![1]);
        assert!(matches!(check(gap), Verdict::Violation { check, .. } if check == "watch-reliable"));
        let dup = chain(vec![vec![WatchEntry::Created { header_revision: 4 }, events(2, vec![put(2, "k0", "a")]), events(2, vec![put(2, "k0", "a")])]], vec![1]);
        assert!(matches!(check(dup), Verdict::Violation { check, .. } if check == "watch-unique"));
        let split = chain(vec![vec![WatchEntry::Created { header_revision: 3 }, events(4, vec![put(4, "k0", "c")]), events(4, vec![put(4, "k1", "d")])]], vec![4]);
        assert!(matches!(check(split), Verdict::Violation { check, .. } if check == "watch-valid"));
        let bookmark = chain(vec![vec![WatchEntry::Created { header_revision: 4 }, events(2, vec![put(2, "k0", "a")]), WatchEntry::Progress { header_revision: 4 }]], vec![1]);
        assert!(matches!(check(bookmark), Verdict::Violation { check, .. } if check == "watch-bookmarkable"));
        let early_compaction = chain(vec![vec![WatchEntry::Created { header_revision: 4 }, WatchEntry::Canceled { compact_revision: 2, reason: String::new() }]], vec![3]);
        assert!(matches!(check(early_compaction), Verdict::Violation { check, .. } if check == "watch-compaction"));
        let resumed_wrong = chain(
            vec![vec![WatchEntry::Created { header_revision: 4 }, events(2, vec![put(2, "k0", "a")])], vec![WatchEntry::Created { header_revision: 4 }]],
            vec![1, 4],
        );
        assert!(matches!(check(resumed_wrong), Verdict::Violation { check, .. } if check == "watch-resumable"));
    }
}
