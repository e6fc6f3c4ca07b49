//! The whole-state model: etcd's key space rebuilt revision by revision from the
//! authoritative change record (what the members applied, identical on every member —
//! checked as they report), and every client-visible result checked against it, as
//! etcd's robustness tests check theirs:
//!
//! - **the record itself**: revisions contiguous from 2, each change at its revision,
//!   versions counted from 1 and create revisions kept within a key's life, deletes only
//!   of live keys — computed here, not taken from the members;
//! - **writes**: an acknowledged put or successful compare-and-set was applied exactly
//!   once, at the revision its answer gave; a refused one never; a failed compare held
//!   at its revision; a delete answered "deleted 1" removed the key at its revision; no
//!   value is applied twice (a duplicated proposal); every change on a workload key was
//!   written by some client that had invoked it by then; a write invoked after another
//!   op completed lands at a higher revision than that op saw. Unknown outcomes are
//!   settled from the record (the op took effect iff its unique value was applied);
//! - **reads**: a get or range at revision R returned exactly the state at R — value,
//!   mod and create revision and version of every key — linearizable or serializable,
//!   and R had been applied by some member before the read returned.
//!
//! The per-key linearizability search (`checker`) stays: it needs nothing from the
//! members. This model needs their record and is exact and linear in the history.
//! Pure: no simulator, no I/O; `detcd-sim check REPORT` runs it on a saved report.

use std::collections::BTreeMap;

use crate::checker::Verdict;
use crate::history::{History, Op, OpKind, Outcome, ReadKv};
use crate::watch_history::{WatchRecord, WatchedEvent};

/// Violations described per check; the rest are counted.
const VIOLATIONS_DESCRIBED_MAX: usize = 5;

/// A key's state within one life (between its creation and its deletion).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Live {
    value: String,
    mod_revision: i64,
    create_revision: i64,
    version: i64,
}

impl Live {
    fn describe(state: Option<&Live>) -> String {
        match state {
            Some(l) => format!("{:?} (mod {}, create {}, version {})", l.value, l.mod_revision, l.create_revision, l.version),
            None => "absent".into(),
        }
    }
}

/// The key space at every revision.
#[derive(Default)]
struct Model {
    /// Per key: its state after each revision that changed it, in revision order.
    per_key: BTreeMap<String, Vec<(i64, Option<Live>)>>,
    /// Revisions at which each (key, value) was put.
    puts: BTreeMap<(String, String), Vec<i64>>,
    /// Revisions at which each key was deleted.
    deletes: BTreeMap<String, Vec<i64>>,
    last_revision: i64,
}

impl Model {
    fn state_at(&self, key: &str, revision: i64) -> Option<&Live> {
        let changes = self.per_key.get(key)?;
        let after = changes.partition_point(|(r, _)| *r <= revision);
        after.checked_sub(1).and_then(|i| changes[i].1.as_ref())
    }

    fn live_in_range_at(&self, start: &str, end: &str, revision: i64) -> Vec<(&str, &Live)> {
        self.per_key
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Excluded(end)))
            .filter_map(|(key, _)| self.state_at(key, revision).map(|live| (key.as_str(), live)))
            .collect()
    }
}

/// Collects violations of one check; the verdict names the first few.
struct Findings {
    check: &'static str,
    details: Vec<String>,
    ops: Vec<u64>,
    count: usize,
}

impl Findings {
    fn new(check: &'static str) -> Self {
        Findings { check, details: Vec::new(), ops: Vec::new(), count: 0 }
    }

    fn add(&mut self, detail: String, ops: &[u64]) {
        self.count += 1;
        if self.details.len() < VIOLATIONS_DESCRIBED_MAX {
            self.details.push(detail);
            self.ops.extend_from_slice(ops);
        }
    }

    fn verdict(self) -> (String, Verdict) {
        let verdict = if self.count == 0 {
            Verdict::Ok
        } else {
            let mut detail = self.details.join("; ");
            if self.count > self.details.len() {
                detail.push_str(&format!("; and {} more", self.count - self.details.len()));
            }
            Verdict::Violation { check: self.check.into(), detail, ops: self.ops }
        };
        (self.check.to_string(), verdict)
    }
}

/// Rebuilds the key space from the record, checking the record as it goes.
fn build(record: &BTreeMap<i64, Vec<WatchedEvent>>, findings: &mut Findings) -> Model {
    let mut model = Model { last_revision: 1, ..Model::default() };
    let mut live: BTreeMap<&str, Live> = BTreeMap::new();
    for (revision, events) in record {
        let revision = *revision;
        if revision != model.last_revision + 1 {
            findings.add(format!("revision {revision} follows revision {}: no member applied the revisions between", model.last_revision), &[]);
        }
        model.last_revision = revision;
        for event in events {
            if event.revision != revision {
                findings.add(format!("a change recorded at revision {revision} says revision {}", event.revision), &[]);
            }
            let before = live.get(event.key.as_str()).cloned();
            if let (Some((prev_value, prev_mod)), Some(before)) = (&event.prev, &before) {
                if (prev_value, *prev_mod) != (&before.value, before.mod_revision) {
                    findings.add(
                        format!("revision {revision} on {:?} names as previous {prev_value:?} at {prev_mod}, but the key held {}", event.key, Live::describe(Some(before))),
                        &[],
                    );
                }
            }
            if event.delete {
                if before.is_none() {
                    findings.add(format!("revision {revision} deletes {:?}, which did not exist", event.key), &[]);
                }
                live.remove(event.key.as_str());
                model.deletes.entry(event.key.clone()).or_default().push(revision);
                model.per_key.entry(event.key.clone()).or_default().push((revision, None));
            } else {
                let (create_revision, version) = match &before {
                    Some(b) => (b.create_revision, b.version + 1),
                    None => (revision, 1),
                };
                if (event.create_revision, event.version) != (create_revision, version) {
                    findings.add(
                        format!(
                            "revision {revision} puts {:?} with create revision {} and version {}; the model says create revision {create_revision}, version {version}",
                            event.key, event.create_revision, event.version
                        ),
                        &[],
                    );
                }
                // The model continues from its own count, so one wrong record is one finding.
                let now = Live { value: event.value.clone(), mod_revision: revision, create_revision, version };
                live.insert(event.key.as_str(), now.clone());
                model.puts.entry((event.key.clone(), event.value.clone())).or_default().push(revision);
                model.per_key.entry(event.key.clone()).or_default().push((revision, Some(now)));
            }
        }
    }
    model
}

/// The key space the members' change record describes, rebuilt once per run and
/// shared by every check against it (history, saved snapshots, locks).
pub struct KeySpace {
    model: Model,
    /// What rebuilding found wrong with the record itself (`kv-model-record`).
    record_verdict: (String, Verdict),
}

impl KeySpace {
    pub fn build(record: &WatchRecord) -> KeySpace {
        let mut findings = Findings::new("kv-model-record");
        let model = build(&record.authoritative, &mut findings);
        KeySpace { model, record_verdict: findings.verdict() }
    }
}

/// Checks `history` against the key space the members' `record` describes. Keys in
/// `[workload_start, workload_end)` belong to the history's clients alone: every change
/// on them must come from one of its operations.
pub fn check_kv_model(history: &History, record: &WatchRecord, space: &KeySpace, workload_start: &str, workload_end: &str) -> Vec<(String, Verdict)> {
    let model = &space.model;
    let applied_seq = |revision: i64| record.first_applied_seq.get(&revision).copied();
    let mut writes = Findings::new("kv-model-writes");
    let mut reads = Findings::new("kv-model-reads");

    // What each op observed or made, by completion: a write invoked after completes
    // above it. (revision, op id) pairs, prefix maxima by completion order.
    let mut observed: Vec<(u64, i64, u64)> = history
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && op.revision > 0)
        .filter_map(|op| op.complete_seq.map(|seq| (seq, op.revision, op.id)))
        .collect();
    observed.sort_unstable();
    let mut prefix_max: Vec<(i64, u64)> = Vec::with_capacity(observed.len());
    for (_, revision, id) in &observed {
        let best = match prefix_max.last() {
            Some(prev) if prev.0 >= *revision => *prev,
            _ => (*revision, *id),
        };
        prefix_max.push(best);
    }
    let seen_before = |invoke_seq: u64| -> Option<(i64, u64)> {
        let done = observed.partition_point(|(seq, _, _)| *seq < invoke_seq);
        done.checked_sub(1).map(|i| prefix_max[i])
    };
    let check_write_revision = |op: &Op, revision: i64, writes: &mut Findings| {
        if let Some((seen, by)) = seen_before(op.invoke_seq) {
            if revision <= seen {
                writes.add(
                    format!("op {} was applied at revision {revision}, although op {by} had already completed at revision {seen} before op {} was invoked", op.id, op.id),
                    &[by, op.id],
                );
            }
        }
        if applied_seq(revision).is_some_and(|seq| seq < op.invoke_seq) {
            writes.add(format!("op {}'s change at revision {revision} was applied before the op was invoked", op.id), &[op.id]);
        }
    };

    let mut pending_deletes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut explained_deletes: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for op in &history.ops {
        let key = op.kind.key();
        match (&op.kind, op.outcome) {
            (OpKind::Put { value, .. } | OpKind::Cas { value, .. }, outcome) => {
                let applied = model.puts.get(&(key.to_string(), value.clone())).map(Vec::as_slice).unwrap_or_default();
                if applied.len() > 1 {
                    writes.add(format!("op {}'s value {value:?} was applied {} times, at revisions {applied:?}", op.id, applied.len()), &[op.id]);
                }
                let acknowledged = outcome == Outcome::Ok && (matches!(op.kind, OpKind::Put { .. }) || op.succeeded);
                match (outcome, applied.first()) {
                    (Outcome::Ok, first) if acknowledged => match first {
                        Some(revision) if *revision == op.revision => check_write_revision(op, *revision, &mut writes),
                        Some(revision) => writes.add(
                            format!("op {} was acknowledged at revision {}, but its value {value:?} was applied at revision {revision}", op.id, op.revision),
                            &[op.id],
                        ),
                        None => writes.add(format!("op {} ({key:?} = {value:?}) was acknowledged at revision {}, but no member applied it", op.id, op.revision), &[op.id]),
                    },
                    (Outcome::Ok, Some(revision)) => {
                        writes.add(format!("op {}'s compare failed, yet its value {value:?} was applied at revision {revision}", op.id), &[op.id]);
                    }
                    (Outcome::Ok, None) => {}
                    (Outcome::Fail, Some(revision)) => writes.add(
                        format!(
                            "op {} ({key:?} = {value:?}) was refused ({}), yet it was applied at revision {revision}",
                            op.id,
                            op.error.as_deref().unwrap_or("no error text")
                        ),
                        &[op.id],
                    ),
                    (Outcome::Fail, None) => {}
                    // Settled from the record: it took effect, at that revision.
                    (Outcome::Unknown, Some(revision)) => check_write_revision(op, *revision, &mut writes),
                    (Outcome::Unknown, None) => {}
                }
                if let (OpKind::Cas { expected, .. }, Outcome::Ok) = (&op.kind, outcome) {
                    let at = if op.succeeded { op.revision - 1 } else { op.revision };
                    let held = model.state_at(key, at).map(|live| live.value.clone());
                    if (held == *expected) != op.succeeded {
                        reads.add(
                            format!(
                                "op {} compared {key:?} with {expected:?} and {}, but at revision {at} the key held {}",
                                op.id,
                                if op.succeeded { "succeeded" } else { "failed" },
                                Live::describe(model.state_at(key, at))
                            ),
                            &[op.id],
                        );
                    }
                }
            }
            (OpKind::Delete { .. }, Outcome::Ok) if op.deleted > 0 => {
                let at_revision = model.deletes.get(key).is_some_and(|d| d.contains(&op.revision));
                if at_revision {
                    explained_deletes.entry(key).or_default().push(op.revision);
                    check_write_revision(op, op.revision, &mut writes);
                } else {
                    writes.add(format!("op {} deleted {key:?} at revision {}, but no member applied that delete", op.id, op.revision), &[op.id]);
                }
            }
            (OpKind::Delete { .. }, Outcome::Ok) => {
                if let Some(live) = model.state_at(key, op.revision) {
                    reads.add(format!("op {} deleted nothing at revision {}, but {key:?} held {}", op.id, op.revision, Live::describe(Some(live))), &[op.id]);
                }
            }
            (OpKind::Delete { .. }, Outcome::Unknown) => pending_deletes.entry(key).or_default().push(op),
            (OpKind::Delete { .. }, Outcome::Fail) => {}
            (OpKind::Get { .. } | OpKind::Range { .. }, Outcome::Ok) => check_read(op, &model, applied_seq(op.revision), &mut reads),
            (OpKind::Get { .. } | OpKind::Range { .. }, _) => {}
        }
    }

    // Every change on a workload key has a writer: puts by their unique value, deletes
    // by an acknowledged delete at that revision or an unknown one invoked before.
    let client_values: std::collections::BTreeSet<(&str, &str)> =
        history.ops.iter().filter_map(|op| op.kind.written_value().map(|v| (op.kind.key(), v))).collect();
    let in_workload = |key: &str| key >= workload_start && key < workload_end;
    for ((key, value), revisions) in &model.puts {
        if in_workload(key) && !client_values.contains(&(key.as_str(), value.as_str())) {
            writes.add(format!("revision {} put {key:?} = {value:?}, a value no client wrote", revisions[0]), &[]);
        }
    }
    for (key, revisions) in &model.deletes {
        if !in_workload(key) {
            continue;
        }
        let explained = explained_deletes.get(key.as_str()).map(Vec::as_slice).unwrap_or_default();
        let mut candidates: Vec<&Op> = pending_deletes.get(key.as_str()).cloned().unwrap_or_default();
        candidates.sort_by_key(|op| op.invoke_seq);
        let mut used = vec![false; candidates.len()];
        for revision in revisions.iter().filter(|r| !explained.contains(r)) {
            let applied = applied_seq(*revision).unwrap_or(u64::MAX);
            // Any pending delete invoked before the change may have made it; the
            // earliest invoked is as good as any other for later changes.
            match candidates.iter().enumerate().position(|(i, op)| !used[i] && op.invoke_seq <= applied) {
                Some(i) => used[i] = true,
                None => writes.add(format!("revision {revision} deleted {key:?}, but no client had a delete of it pending"), &[]),
            }
        }
    }
    vec![space.record_verdict.clone(), writes.verdict(), reads.verdict()]
}

/// A client snapshot a backup client saved during the run, as restore would read it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SavedSnapshot {
    pub member: usize,
    pub at_ms: u64,
    /// The revision the member said it saved.
    pub header_revision: i64,
    /// The revision the file holds (0 when it could not be read back).
    pub revision: i64,
    /// Every live key in the file at its revision.
    pub kvs: Vec<ReadKv>,
    /// Why the file could not be read back, if it could not.
    pub error: Option<String>,
}

/// Every saved snapshot reads back, holds what its header says, and holds exactly the
/// key space at its revision: every key, value, mod and create revision and version.
pub fn check_snapshots(space: &KeySpace, snapshots: &[SavedSnapshot]) -> (String, Verdict) {
    let mut findings = Findings::new("snapshot-consistent");
    let model = &space.model;
    for saved in snapshots {
        if let Some(error) = &saved.error {
            findings.add(format!("the snapshot m{} saved at {} ms does not read back: {error}", saved.member, saved.at_ms), &[]);
            continue;
        }
        if saved.revision != saved.header_revision {
            findings.add(format!("m{} said it saved revision {} but the file holds revision {}", saved.member, saved.header_revision, saved.revision), &[]);
        }
        if saved.revision > model.last_revision {
            findings.add(format!("the snapshot m{} saved holds revision {}, beyond any member's ({})", saved.member, saved.revision, model.last_revision), &[]);
            continue;
        }
        let expected = model.live_in_range_at("", "\u{10ffff}", saved.revision);
        let same = expected.len() == saved.kvs.len()
            && expected.iter().zip(&saved.kvs).all(|((key, live), kv)| {
                *key == kv.key && (&live.value, live.mod_revision, live.create_revision, live.version) == (&kv.value, kv.mod_revision, kv.create_revision, kv.version)
            });
        if !same {
            let missing: Vec<&str> = expected.iter().map(|(k, _)| *k).filter(|k| !saved.kvs.iter().any(|kv| kv.key == *k)).take(5).collect();
            let extra: Vec<&str> = saved.kvs.iter().map(|kv| kv.key.as_str()).filter(|k| !expected.iter().any(|(e, _)| e == k)).take(5).collect();
            findings.add(
                format!(
                    "the snapshot m{} saved at {} ms holds {} keys at revision {}, the key space then held {} (missing {missing:?}, extra {extra:?}, or fields differ)",
                    saved.member,
                    saved.at_ms,
                    saved.kvs.len(),
                    saved.revision,
                    expected.len()
                ),
                &[],
            );
        }
    }
    findings.verdict()
}

/// One acquisition of a lock by a lock client.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LockHold {
    pub client: u64,
    pub member: usize,
    pub key: String,
    /// The create revision of the client's key.
    pub create_revision: i64,
    /// The revision at which the member confirmed no older key was left.
    pub acquired_revision: i64,
    pub acquired_ms: u64,
}

/// Mutual exclusion, in the store: when a lock was acquired, the holder's key existed
/// with its create revision and no key under the lock's prefix was older.
pub fn check_locks(space: &KeySpace, holds: &[LockHold], prefix: &str) -> (String, Verdict) {
    let mut findings = Findings::new("lock-exclusive");
    let model = &space.model;
    let end = String::from_utf8_lossy(&detcd_node::recipes::prefix_end(prefix.as_bytes())).into_owned();
    for hold in holds {
        let at = hold.acquired_revision;
        let live = model.live_in_range_at(prefix, &end, at);
        match live.iter().find(|(key, _)| *key == hold.key) {
            Some((_, own)) if own.create_revision == hold.create_revision => {}
            _ => findings.add(
                format!("client {} held {} (created at revision {}) from revision {at}, where that key did not exist", hold.client, hold.key, hold.create_revision),
                &[],
            ),
        }
        if let Some((older, life)) = live.iter().find(|(_, life)| life.create_revision < hold.create_revision) {
            findings.add(
                format!(
                    "client {} took the lock with {} (created at revision {}) at revision {at}, while {older} (created at revision {}) still held it",
                    hold.client, hold.key, hold.create_revision, life.create_revision
                ),
                &[],
            );
        }
    }
    findings.verdict()
}

/// Unknown-outcome writes settled from the record: (took effect, never applied).
pub fn settle_unknown_writes(history: &History, record: &WatchRecord) -> (u64, u64) {
    let applied: std::collections::BTreeSet<(&str, &str)> =
        record.authoritative.values().flatten().filter(|e| !e.delete).map(|e| (e.key.as_str(), e.value.as_str())).collect();
    let mut settled = (0, 0);
    for op in history.ops.iter().filter(|op| op.outcome == Outcome::Unknown) {
        if let Some(value) = op.kind.written_value() {
            if applied.contains(&(op.kind.key(), value)) {
                settled.0 += 1;
            } else {
                settled.1 += 1;
            }
        }
    }
    settled
}

/// A get or a range at revision R returned exactly the state at R, and R existed.
fn check_read(op: &Op, model: &Model, revision_applied_seq: Option<u64>, reads: &mut Findings) {
    let revision = op.revision;
    if revision > model.last_revision {
        reads.add(format!("op {} read at revision {revision}, beyond the last revision any member applied ({})", op.id, model.last_revision), &[op.id]);
        return;
    }
    if revision > 1 && revision_applied_seq.is_none_or(|seq| Some(seq) >= op.complete_seq) {
        reads.add(format!("op {} returned revision {revision} before any member had applied it", op.id), &[op.id]);
    }
    let expected: Vec<(&str, &Live)> = match &op.kind {
        OpKind::Get { key, .. } => model.state_at(key, revision).map(|live| (key.as_str(), live)).into_iter().collect(),
        OpKind::Range { start, end } => model.live_in_range_at(start, end, revision),
        _ => return,
    };
    let matches = |(key, live): &(&str, &Live), kv: &ReadKv| {
        *key == kv.key && (&live.value, live.mod_revision, live.create_revision, live.version) == (&kv.value, kv.mod_revision, kv.create_revision, kv.version)
    };
    let agrees = expected.len() == op.read_kvs.len() && expected.iter().zip(&op.read_kvs).all(|(e, kv)| matches(e, kv));
    if !agrees {
        let got: Vec<String> = op
            .read_kvs
            .iter()
            .map(|kv| format!("{} = {:?} (mod {}, create {}, version {})", kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.version))
            .collect();
        let want: Vec<String> = expected.iter().map(|(key, live)| format!("{key} = {}", Live::describe(Some(live)))).collect();
        let serializable = matches!(op.kind, OpKind::Get { serializable: true, .. });
        reads.add(
            format!(
                "op {} ({}read of {:?} on member {:016x}) returned [{}] at revision {revision}; the model holds [{}] there",
                op.id,
                if serializable { "serializable " } else { "" },
                op.kind.key(),
                op.member,
                got.join(", "),
                want.join(", ")
            ),
            &[op.id],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str, value: &str, create_revision: i64, version: i64) -> WatchedEvent {
        WatchedEvent { revision, delete: false, key: key.into(), value: value.into(), create_revision, version, lease: 0, prev: None }
    }

    fn delete(revision: i64, key: &str) -> WatchedEvent {
        WatchedEvent { revision, delete: true, key: key.into(), value: String::new(), create_revision: 0, version: 0, lease: 0, prev: None }
    }

    fn record(changes: Vec<WatchedEvent>) -> WatchRecord {
        let mut record = WatchRecord::default();
        for (i, change) in changes.into_iter().enumerate() {
            record.first_applied_seq.insert(change.revision, 10 * (i as u64 + 1));
            record.authoritative.entry(change.revision).or_default().push(change);
        }
        record
    }

    fn op(id: u64, kind: OpKind, outcome: Outcome, invoke_seq: u64, complete_seq: Option<u64>, revision: i64) -> Op {
        Op {
            id,
            client: 0,
            member: 1,
            incarnation: 1,
            kind,
            outcome,
            invoke_seq,
            complete_seq,
            invoke_ms: invoke_seq,
            complete_ms: complete_seq,
            read_value: None,
            read_kvs: Vec::new(),
            deleted: 0,
            succeeded: outcome == Outcome::Ok,
            revision,
            error: None,
        }
    }

    fn put_op(id: u64, key: &str, value: &str, outcome: Outcome, seqs: (u64, Option<u64>), revision: i64) -> Op {
        op(id, OpKind::Put { key: key.into(), value: value.into() }, outcome, seqs.0, seqs.1, revision)
    }

    fn get_op(id: u64, key: &str, seqs: (u64, u64), revision: i64, kv: Option<(&str, i64, i64, i64)>) -> Op {
        let mut get = op(id, OpKind::Get { key: key.into(), serializable: false }, Outcome::Ok, seqs.0, Some(seqs.1), revision);
        get.read_value = kv.map(|(value, ..)| value.to_string());
        get.read_kvs = kv
            .map(|(value, mod_revision, create_revision, version)| ReadKv { key: key.into(), value: value.into(), mod_revision, create_revision, version })
            .into_iter()
            .collect();
        get
    }

    fn violations(history: &History, record: &WatchRecord) -> Vec<String> {
        check_kv_model(history, record, &KeySpace::build(record), "k", "l")
            .into_iter()
            .filter_map(|(name, verdict)| match verdict {
                Verdict::Violation { detail, .. } => Some(format!("{name}: {detail}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_consistent_run_passes_and_unknown_writes_are_settled_either_way() {
        let record = record(vec![put(2, "k1", "a", 2, 1), put(3, "k1", "b", 2, 2), delete(4, "k1"), put(5, "k1", "c", 5, 1)]);
        let history = History {
            ops: vec![
                put_op(0, "k1", "a", Outcome::Ok, (1, Some(11)), 2),
                put_op(1, "k1", "b", Outcome::Unknown, (12, None), 0),
                put_op(2, "k1", "never", Outcome::Unknown, (13, None), 0),
                { let mut d = op(3, OpKind::Delete { key: "k1".into() }, Outcome::Unknown, 14, None, 0); d.deleted = 0; d },
                put_op(4, "k1", "c", Outcome::Ok, (35, Some(52)), 5),
                get_op(5, "k1", (31, 33), 3, Some(("b", 3, 2, 2))),
                get_op(6, "k1", (53, 54), 5, Some(("c", 5, 5, 1))),
                get_op(7, "k1", (41, 44), 4, None),
            ],
        };
        assert_eq!(violations(&history, &record), Vec::<String>::new());
    }

    #[test]
    fn wrong_versions_create_revisions_and_gaps_in_the_record_are_caught() {
        let wrong = record(vec![put(2, "k1", "a", 2, 1), delete(3, "k1"), put(4, "k1", "b", 2, 1), put(6, "k1", "c", 4, 3)]);
        let found = violations(&History::default(), &wrong);
        assert!(found[0].contains("revision 4 puts \"k1\" with create revision 2"), "{found:?}");
        assert!(found[0].contains("revision 6 follows revision 4"), "{found:?}");
        assert!(found[0].contains("version 3; the model says create revision 4, version 2"), "{found:?}");
    }

    #[test]
    fn refused_lost_duplicated_and_late_writes_are_caught() {
        let record = record(vec![put(2, "k1", "refused", 2, 1), put(3, "k1", "twice", 2, 2), put(4, "k1", "twice", 2, 3), put(5, "k2", "stranger", 5, 1)]);
        let mut refused = put_op(0, "k1", "refused", Outcome::Fail, (1, Some(2)), 0);
        refused.error = Some("etcdserver: no leader".into());
        let history = History {
            ops: vec![
                refused,
                put_op(1, "k1", "twice", Outcome::Ok, (3, Some(35)), 3),
                put_op(2, "k1", "lost", Outcome::Ok, (36, Some(37)), 6),
            ],
        };
        let found = violations(&history, &record).join("\n");
        assert!(found.contains("op 0 (\"k1\" = \"refused\") was refused (etcdserver: no leader), yet it was applied at revision 2"), "{found}");
        assert!(found.contains("applied 2 times, at revisions [3, 4]"), "{found}");
        assert!(found.contains("op 2 (\"k1\" = \"lost\") was acknowledged at revision 6, but no member applied it"), "{found}");
        assert!(found.contains("revision 5 put \"k2\" = \"stranger\", a value no client wrote"), "{found}");
    }

    #[test]
    fn a_write_ordered_before_an_earlier_read_is_caught() {
        // Op 1 invoked after op 0 had read revision 3, yet applied at revision 3.
        let record = record(vec![put(2, "k1", "a", 2, 1), put(3, "k2", "b", 3, 1)]);
        let history = History {
            ops: vec![
                get_op(0, "k2", (21, 22), 3, Some(("b", 3, 3, 1))),
                put_op(1, "k1", "a", Outcome::Ok, (23, Some(40)), 2),
                put_op(2, "k2", "b", Outcome::Unknown, (0, None), 0),
            ],
        };
        let found = violations(&history, &record).join("\n");
        assert!(found.contains("op 1 was applied at revision 2, although op 0 had already completed at revision 3"), "{found}");
    }

    #[test]
    fn reads_must_return_the_exact_state_at_their_revision() {
        let record = record(vec![put(2, "k1", "a", 2, 1), put(3, "k1", "b", 2, 2), put(4, "k2", "x", 4, 1)]);
        let mut range = op(3, OpKind::Range { start: "k".into(), end: "l".into() }, Outcome::Ok, 50, Some(51), 4);
        range.read_kvs = vec![ReadKv { key: "k1".into(), value: "b".into(), mod_revision: 3, create_revision: 2, version: 2 }];
        let history = History {
            ops: vec![
                put_op(0, "k1", "a", Outcome::Unknown, (0, None), 0),
                put_op(1, "k1", "b", Outcome::Unknown, (0, None), 0),
                get_op(2, "k1", (40, 41), 3, Some(("b", 3, 2, 1))),
                range,
                put_op(4, "k2", "x", Outcome::Unknown, (0, None), 0),
                get_op(5, "k1", (5, 6), 3, Some(("b", 3, 2, 2))),
            ],
        };
        let found = violations(&history, &record).join("\n");
        assert!(found.contains("op 2 (read of \"k1\" on member 0000000000000001) returned [k1 = \"b\" (mod 3, create 2, version 1)]"), "{found}");
        assert!(found.contains("op 3 (read of \"k\""), "a range missing k2 is caught: {found}");
        assert!(found.contains("op 5 returned revision 3 before any member had applied it"), "{found}");
    }
}
