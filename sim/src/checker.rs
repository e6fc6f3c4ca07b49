//! Checks of a history: linearizability of the key-value operations, what serializable
//! reads promise, and that revisions seen by clients never go backwards.
//!
//! Linearizability uses the Wing–Gong/Lowe search with memoised (linearized set, state)
//! pairs, split per key (every operation touches one key, so the history is linearizable
//! iff each key's sub-history is). Unknown-outcome writes have no completion: they may
//! be placed anywhere after their invocation, or nowhere. Each key gets a budget of
//! search steps; running out gives `Unknown`, never a wrong verdict.
//! The search uses an explicit stack (no recursion) and only ordered or
//! membership-only collections, so it is deterministic.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{History, Op, OpKind, Outcome};

/// Search steps allowed per key before the verdict is `Unknown`.
pub const SEARCH_STEPS_PER_KEY_MAX: u64 = 2_000_000;

/// The verdict of one check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Violation { check: String, detail: String, ops: Vec<u64> },
    Unknown { check: String, detail: String },
}

impl Verdict {
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation { .. })
    }

    /// A violation, or a check that could not decide (ran out of budget): either way
    /// the run is not a pass.
    pub fn fails_run(&self) -> bool {
        !matches!(self, Verdict::Ok)
    }
}

/// The register every key is: absent or holding a value.
type State = Option<String>;

/// Applies `op` to `state`; `None` if the op's observed result is impossible there.
fn step(state: &State, op: &Op) -> Option<State> {
    let known = op.outcome == Outcome::Ok;
    match &op.kind {
        OpKind::Put { value, .. } => Some(Some(value.clone())),
        OpKind::Get { .. } => (op.read_value == *state).then(|| state.clone()),
        OpKind::Range { .. } => unreachable!("multi-key reads are not split per key"),
        OpKind::Delete { .. } => {
            if known && op.deleted != i64::from(state.is_some()) {
                return None;
            }
            Some(None)
        }
        OpKind::Cas { expected, value, .. } => {
            let holds = state == expected;
            if known && op.succeeded != holds {
                return None;
            }
            Some(if holds { Some(value.clone()) } else { state.clone() })
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn with(&self, i: usize) -> Self {
        let mut bits = self.clone();
        bits.0[i / 64] |= 1 << (i % 64);
        bits
    }
    fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

/// Checks one key's operations (already filtered: no failed ops, no serializable or
/// unknown reads).
fn check_key(key: &str, ops: &[&Op]) -> Verdict {
    const NEVER: u64 = u64::MAX;
    let complete: Vec<u64> = ops.iter().map(|op| op.complete_seq.unwrap_or(NEVER)).collect();
    let required = complete.iter().filter(|c| **c != NEVER).count() as u32;
    let required_mask: Vec<bool> = complete.iter().map(|c| *c != NEVER).collect();

    struct Frame {
        linearized: Bits,
        state: State,
        next_candidate: usize,
    }
    let mut seen: HashSet<(Bits, State)> = HashSet::new();
    let mut stack = vec![Frame { linearized: Bits::new(ops.len()), state: None, next_candidate: 0 }];
    let mut steps = 0u64;
    let mut deepest: (u32, Bits) = (0, Bits::new(ops.len()));
    while let Some(frame) = stack.last_mut() {
        steps += 1;
        if steps > SEARCH_STEPS_PER_KEY_MAX {
            return Verdict::Unknown {
                check: "linearizability".into(),
                detail: format!("key {key:?}: search budget of {SEARCH_STEPS_PER_KEY_MAX} steps exhausted over {} ops", ops.len()),
            };
        }
        let required_done = (0..ops.len()).filter(|i| required_mask[*i] && frame.linearized.get(*i)).count() as u32;
        if required_done == required {
            return Verdict::Ok;
        }
        if frame.linearized.count() > deepest.0 {
            deepest = (frame.linearized.count(), frame.linearized.clone());
        }
        // The earliest completion among unlinearized ops bounds what may go next.
        let mut first = (NEVER, usize::MAX);
        let mut second = NEVER;
        for (i, c) in complete.iter().enumerate() {
            if frame.linearized.get(i) {
                continue;
            }
            if *c < first.0 {
                second = first.0;
                first = (*c, i);
            } else if *c < second {
                second = *c;
            }
        }
        let mut pushed = None;
        for i in frame.next_candidate..ops.len() {
            if frame.linearized.get(i) {
                continue;
            }
            let bound = if i == first.1 { second } else { first.0 };
            if ops[i].invoke_seq > bound {
                // Ops are sorted by invocation: no later one can go next either.
                break;
            }
            if let Some(state) = step(&frame.state, ops[i]) {
                let linearized = frame.linearized.with(i);
                if seen.insert((linearized.clone(), state.clone())) {
                    pushed = Some((i, Frame { linearized, state, next_candidate: 0 }));
                    break;
                }
            }
        }
        match pushed {
            Some((i, next)) => {
                frame.next_candidate = i + 1;
                stack.push(next);
            }
            None => {
                stack.pop();
            }
        }
    }
    // Report the required ops that the deepest attempt could not place.
    let mut stuck: Vec<&Op> = (0..ops.len()).filter(|i| required_mask[*i] && !deepest.1.get(*i)).map(|i| ops[i]).collect();
    stuck.sort_by_key(|op| op.complete_seq);
    let mut involved: Vec<u64> = stuck.iter().take(3).map(|op| op.id).collect();
    let mut detail = format!(
        "key {key:?}: no linearization of its {} operations; after placing {} of them, none of ops {:?} fits",
        ops.len(),
        deepest.0,
        involved
    );
    if let Some((why, ops_named)) = stuck.iter().find_map(|read| explain_read(ops, read)) {
        detail.push_str(&format!(". {why}"));
        involved = ops_named;
    }
    Verdict::Violation { check: "linearizability".into(), detail, ops: involved }
}

/// Why a read cannot be placed, in words, when a simple reason exists: it saw a value
/// no write produced, or a value some write had already replaced before the read began
/// (or nothing, although a write had finished and no delete could come between).
fn explain_read(ops: &[&Op], read: &Op) -> Option<(String, Vec<u64>)> {
    let OpKind::Get { key, .. } = &read.kind else { return None };
    let finished = |op: &Op| op.complete_seq.unwrap_or(u64::MAX);
    // A write that certainly took effect and certainly before the read began.
    let done_before_read = |op: &&&Op| op.outcome == Outcome::Ok && finished(op) < read.invoke_seq;
    match &read.read_value {
        Some(value) => {
            let Some(writer) = ops.iter().find(|op| op.kind.written_value() == Some(value.as_str())) else {
                return Some((format!("op {} read {value:?} from {key:?}, a value no write of this key produced", read.id), vec![read.id]));
            };
            // A later write: invoked after the writer finished, done before the read began.
            let replaced = ops.iter().filter(done_before_read).find(|op| {
                op.kind.is_write() && op.invoke_seq > finished(writer) && (!matches!(op.kind, OpKind::Delete { .. }) || op.deleted > 0) && (!matches!(op.kind, OpKind::Cas { .. }) || op.succeeded)
            })?;
            Some((
                format!(
                    "op {} read {value:?} (written by op {}, which finished at {} ms), but op {} ({}) began after that and finished at {} ms, before op {} began at {} ms: the read is stale",
                    read.id,
                    writer.id,
                    writer.complete_ms.unwrap_or(0),
                    replaced.id,
                    describe_write(replaced),
                    replaced.complete_ms.unwrap_or(0),
                    read.id,
                    read.invoke_ms
                ),
                vec![writer.id, replaced.id, read.id],
            ))
        }
        None => {
            let written = ops.iter().filter(done_before_read).filter(|op| matches!(op.kind, OpKind::Put { .. }) || (matches!(op.kind, OpKind::Cas { .. }) && op.succeeded)).max_by_key(|op| op.complete_seq)?;
            let may_delete = ops.iter().any(|op| matches!(op.kind, OpKind::Delete { .. }) && finished(op) > written.invoke_seq && op.invoke_seq < finished(read));
            (!may_delete).then(|| {
                (
                    format!(
                        "op {} found {key:?} absent at {} ms, but op {} ({}) had finished at {} ms and no delete of the key could come between",
                        read.id,
                        read.invoke_ms,
                        written.id,
                        describe_write(written),
                        written.complete_ms.unwrap_or(0)
                    ),
                    vec![written.id, read.id],
                )
            })
        }
    }
}

fn describe_write(op: &Op) -> String {
    match &op.kind {
        OpKind::Put { value, .. } => format!("put {value:?}"),
        OpKind::Cas { expected, value, .. } => format!("compare-and-set {expected:?} -> {value:?}"),
        OpKind::Delete { .. } => "delete".into(),
        OpKind::Get { .. } | OpKind::Range { .. } => "read".into(),
    }
}

/// Linearizability of the whole history, one verdict per key (keys in order).
pub fn check_linearizability(history: &History) -> Vec<(String, Verdict)> {
    let mut per_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        let relevant = match (&op.kind, op.outcome) {
            (_, Outcome::Fail) => false,
            (OpKind::Get { serializable: true, .. }, _) => false,
            (OpKind::Get { .. }, Outcome::Unknown) => false,
            // Multi-key reads are checked by the whole-state model (`kv_model`).
            (OpKind::Range { .. }, _) => false,
            _ => true,
        };
        if relevant {
            per_key.entry(op.kind.key()).or_default().push(op);
        }
    }
    per_key
        .into_iter()
        .map(|(key, mut ops)| {
            ops.sort_by_key(|op| op.invoke_seq);
            (key.to_string(), check_key(key, &ops))
        })
        .collect()
}

/// Serializable reads: never a value no write had been invoked for by then, and on one
/// start of one member the revision never goes backwards.
pub fn check_serializable_reads(history: &History) -> Verdict {
    let mut written: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for op in &history.ops {
        if let OpKind::Put { key, value } | OpKind::Cas { key, value, .. } = &op.kind {
            // A retried write carries the same value: the first invocation counts.
            written.entry((key, value)).or_insert(op.invoke_seq);
        }
    }
    let mut last_per_member: BTreeMap<(u64, u64), (i64, u64)> = BTreeMap::new();
    let mut reads: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && matches!(op.kind, OpKind::Get { serializable: true, .. }))
        .collect();
    reads.sort_by_key(|op| op.complete_seq);
    for op in reads {
        if let Some(value) = &op.read_value {
            let invoked = written.get(&(op.kind.key(), value.as_str()));
            if invoked.is_none_or(|seq| Some(*seq) > op.complete_seq) {
                return Verdict::Violation {
                    check: "serializable-read".into(),
                    detail: format!("op {} read {value:?} that no write had been invoked for", op.id),
                    ops: vec![op.id],
                };
            }
        }
        let slot = (op.member, op.incarnation);
        if let Some((revision, previous_op)) = last_per_member.get(&slot) {
            if op.revision < *revision {
                return Verdict::Violation {
                    check: "serializable-read".into(),
                    detail: format!(
                        "member {:016x} answered op {} at revision {} after op {} at revision {revision}",
                        op.member, op.id, op.revision, previous_op
                    ),
                    ops: vec![*previous_op, op.id],
                };
            }
        }
        last_per_member.insert(slot, (op.revision, op.id));
    }
    Verdict::Ok
}

/// A linearizable operation that starts after another finished sees a revision at least
/// as high.
pub fn check_revisions_monotonic(history: &History) -> Verdict {
    let mut done: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && op.revision > 0 && !matches!(op.kind, OpKind::Get { serializable: true, .. }))
        .collect();
    done.sort_by_key(|op| op.complete_seq);
    // prefix_max[i] = the op with the highest revision among done[..=i].
    let mut prefix_max: Vec<&Op> = Vec::with_capacity(done.len());
    for op in &done {
        let best = match prefix_max.last() {
            Some(prev) if prev.revision >= op.revision => *prev,
            _ => *op,
        };
        prefix_max.push(best);
    }
    for op in &done {
        let finished_before = done.partition_point(|other| other.complete_seq < Some(op.invoke_seq));
        if finished_before == 0 {
            continue;
        }
        let earlier = prefix_max[finished_before - 1];
        if earlier.revision > op.revision {
            return Verdict::Violation {
                check: "revision-monotonic".into(),
                detail: format!(
                    "op {} saw revision {} although op {} had already finished at revision {}",
                    op.id, op.revision, earlier.id, earlier.revision
                ),
                ops: vec![earlier.id, op.id],
            };
        }
    }
    Verdict::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Op, OpKind, Outcome};

    fn op(id: u64, kind: OpKind, invoke: u64, complete: Option<u64>, outcome: Outcome) -> Op {
        Op {
            id,
            client: id,
            member: 1,
            incarnation: 0,
            kind,
            outcome,
            invoke_seq: invoke,
            complete_seq: complete,
            invoke_ms: invoke,
            complete_ms: complete,
            read_value: None,
            read_kvs: Vec::new(),
            deleted: 0,
            succeeded: false,
            revision: 0,
            error: None,
        }
    }

    fn put(id: u64, v: &str, i: u64, c: u64) -> Op {
        op(id, OpKind::Put { key: "k".into(), value: v.into() }, i, Some(c), Outcome::Ok)
    }

    fn get(id: u64, v: Option<&str>, i: u64, c: u64) -> Op {
        let mut o = op(id, OpKind::Get { key: "k".into(), serializable: false }, i, Some(c), Outcome::Ok);
        o.read_value = v.map(str::to_string);
        o
    }

    fn verdict(ops: Vec<Op>) -> Verdict {
        let results = check_linearizability(&History { ops });
        assert_eq!(results.len(), 1);
        results[0].1.clone()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_eq!(verdict(vec![put(1, "a", 1, 2), get(2, Some("a"), 3, 4), put(3, "b", 5, 6), get(4, Some("b"), 7, 8)]), Verdict::Ok);
    }

    #[test]
    fn stale_read_is_a_violation() {
        let v = verdict(vec![put(1, "a", 1, 2), put(2, "b", 3, 4), get(3, Some("a"), 5, 6)]);
        assert!(v.is_violation(), "{v:?}");
        let Verdict::Violation { detail, ops, .. } = v else { unreachable!() };
        assert!(detail.contains("op 3 read \"a\" (written by op 1, which finished at 2 ms), but op 2 (put \"b\") began after that and finished at 4 ms, before op 3 began at 5 ms: the read is stale"), "{detail}");
        assert_eq!(ops, vec![1, 2, 3]);
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        // The read overlaps the write of b: it may see a or b.
        assert_eq!(verdict(vec![put(1, "a", 1, 2), put(2, "b", 3, 6), get(3, Some("a"), 4, 5)]), Verdict::Ok);
        assert_eq!(verdict(vec![put(1, "a", 1, 2), put(2, "b", 3, 6), get(3, Some("b"), 4, 5)]), Verdict::Ok);
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let unknown = op(2, OpKind::Put { key: "k".into(), value: "u".into() }, 3, None, Outcome::Unknown);
        assert_eq!(verdict(vec![put(1, "a", 1, 2), unknown.clone(), get(3, Some("u"), 10, 11)]), Verdict::Ok);
        assert_eq!(verdict(vec![put(1, "a", 1, 2), unknown.clone(), get(3, Some("a"), 10, 11)]), Verdict::Ok);
        // But once read, the unknown write cannot be undone.
        let v = verdict(vec![put(1, "a", 1, 2), unknown, get(3, Some("u"), 10, 11), get(4, Some("a"), 12, 13)]);
        assert!(v.is_violation());
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        let v = verdict(vec![put(1, "a", 1, 2), get(2, None, 3, 4)]);
        assert!(v.is_violation());
        let Verdict::Violation { detail, .. } = v else { unreachable!() };
        assert!(detail.contains("op 2 found \"k\" absent at 3 ms, but op 1 (put \"a\") had finished at 2 ms"), "{detail}");
    }

    #[test]
    fn cas_and_delete_results_are_checked() {
        let mut cas = op(2, OpKind::Cas { key: "k".into(), expected: Some("a".into()), value: "b".into() }, 3, Some(4), Outcome::Ok);
        cas.succeeded = true;
        let mut del = op(3, OpKind::Delete { key: "k".into() }, 5, Some(6), Outcome::Ok);
        del.deleted = 1;
        assert_eq!(verdict(vec![put(1, "a", 1, 2), cas.clone(), del.clone(), get(4, None, 7, 8)]), Verdict::Ok);
        let mut wrong = cas;
        wrong.succeeded = false;
        assert!(verdict(vec![put(1, "a", 1, 2), wrong, del, get(4, None, 7, 8)]).is_violation());
    }

    #[test]
    fn serializable_read_of_an_unwritten_value_is_caught() {
        let mut read = op(1, OpKind::Get { key: "k".into(), serializable: true }, 1, Some(2), Outcome::Ok);
        read.read_value = Some("ghost".into());
        assert!(check_serializable_reads(&History { ops: vec![read] }).is_violation());
    }

    #[test]
    fn revision_going_backwards_is_caught() {
        let mut a = put(1, "a", 1, 2);
        a.revision = 10;
        let mut b = get(2, Some("a"), 3, 4);
        b.revision = 9;
        assert!(check_revisions_monotonic(&History { ops: vec![a.clone(), b.clone()] }).is_violation());
        b.revision = 10;
        assert_eq!(check_revisions_monotonic(&History { ops: vec![a, b] }), Verdict::Ok);
    }
}
