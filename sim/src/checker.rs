//! Checks of a history: linearizability of the key-value operations, what serializable
//! reads promise, and that revisions seen by clients never go backwards.
//!
//! Linearizability uses the Wing–Gong/Lowe search (as Porcupine runs it: events in a
//! linked list, lifted and restored; see [`check_key`]) with a memo of failed (linearized
//! set, state) pairs that prunes by subsumption, split per key (every operation touches one key, so the history is linearizable
//! iff each key's sub-history is). Unknown-outcome writes have no completion: they may
//! be placed anywhere after their invocation, or nowhere. Each key gets a budget of
//! search steps; running out gives `Unknown`, never a wrong verdict.
//! The search uses an explicit stack (no recursion) and only ordered or
//! membership-only collections, so it is deterministic.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{History, Op, OpKind, Outcome};

/// Search steps allowed per key before the verdict is `Unknown` (a few seconds of
/// search). 2,000,000 left canary-read-contexts seed 71 undecided once a new cluster
/// started from a snapshot (846 ops on one key, 125 unknown outcomes in the run); it
/// decides within 20,000,000 in 0.3 s. 20,000,000 left canary-compacted-log seed 3 with
/// power lost at m2's WAL write 800 undecided (127 ops on one key, 35 of them writes of
/// unknown outcome: its clients give up after 500 ms); it decides within 100,000,000 in
/// ~2 s.
pub const SEARCH_STEPS_PER_KEY_MAX: u64 = 100_000_000;

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

/// What one operation does to the register a key is, with values interned (`u32`), so
/// that a search step compares integers and copies nothing.
#[derive(Clone, Copy)]
enum Step {
    Put { value: u32 },
    /// A read that saw `read` (`None`: absent).
    Get { read: Option<u32> },
    /// `deleted`: how many keys it reported deleting, when its outcome is known.
    Delete { deleted: Option<bool> },
    /// `succeeded`, when its outcome is known.
    Cas { expected: Option<u32>, value: u32, succeeded: Option<bool> },
}

/// The register's state: absent, or holding an interned value.
type State = Option<u32>;

impl Step {
    fn of<'a>(op: &'a Op, intern: &mut impl FnMut(&'a str) -> u32) -> Step {
        let known = op.outcome == Outcome::Ok;
        match &op.kind {
            OpKind::Put { value, .. } => Step::Put { value: intern(value) },
            OpKind::Get { .. } => Step::Get { read: op.read_value.as_deref().map(&mut *intern) },
            OpKind::Delete { .. } => Step::Delete { deleted: known.then_some(op.deleted > 0) },
            OpKind::Cas { expected, value, .. } => Step::Cas {
                expected: expected.as_deref().map(&mut *intern),
                value: intern(value),
                succeeded: known.then_some(op.succeeded),
            },
            OpKind::Range { .. } => unreachable!("multi-key reads are not split per key"),
        }
    }

    /// Whether this op's result depends on the state it is placed in (a read, a cas, a
    /// delete whose answer is known); a put, or a delete of unknown outcome, only writes.
    fn observes(self) -> bool {
        match self {
            Step::Put { .. } => false,
            Step::Get { .. } | Step::Cas { .. } => true,
            Step::Delete { deleted } => deleted.is_some(),
        }
    }

    /// The state after this op; `None` if its observed result is impossible in `state`.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Put { value } => Some(Some(value)),
            Step::Get { read } => (read == state).then_some(state),
            Step::Delete { deleted } => match deleted {
                Some(deleted) if deleted != state.is_some() => None,
                _ => Some(None),
            },
            Step::Cas { expected, value, succeeded } => {
                let holds = state == expected;
                if succeeded.is_some_and(|s| s != holds) {
                    return None;
                }
                Some(if holds { Some(value) } else { state })
            }
        }
    }
}

/// A [`Step`] as a hash-map key (identical steps of unknown-outcome ops).
#[derive(PartialEq, Eq, Hash)]
struct StepKey(u8, Option<u32>, Option<u32>, Option<bool>);

impl StepKey {
    fn of(step: Step) -> StepKey {
        match step {
            Step::Put { value } => StepKey(0, Some(value), None, None),
            Step::Get { read } => StepKey(1, read, None, None),
            Step::Delete { deleted } => StepKey(2, None, None, deleted),
            Step::Cas { expected, value, succeeded } => StepKey(3, expected, Some(value), succeeded),
        }
    }
}

/// The memo's hasher: its keys are already Zobrist hashes (mixed with the state), so
/// they are used as they are instead of being hashed again (SipHash was a quarter of the
/// search's time).
#[derive(Default)]
struct ZobristKeyHasher(u64);

impl std::hash::Hasher for ZobristKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8 | self.0 >> 56) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

/// A memo key: the Zobrist hash of the required ops placed, mixed with the state and
/// with whether the next op placed must observe the state (see `check_key`'s lazy rule).
fn memo_key(required_hash: u64, state: State, must_observe: bool) -> u64 {
    let key = required_hash ^ zobrist(usize::MAX - state.map_or(0, |value| value as usize + 1));
    if must_observe {
        key ^ MUST_OBSERVE_SALT
    } else {
        key
    }
}

/// Mixed into the memo key of configurations whose last op placed had an unknown outcome.
const MUST_OBSERVE_SALT: u64 = 0x5bd1_e995_7f4a_7c15;

#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
    /// Whether every member of `self` is in `other`, and every member of `other` not in
    /// `self` is outside `mask` (here: the extra ops are all optional ones).
    fn subset_differing_outside(&self, other: &Bits, mask: &Bits) -> bool {
        self.0.iter().zip(&other.0).zip(&mask.0).all(|((mine, theirs), mask)| mine & !theirs == 0 && (theirs & !mine) & mask == 0)
    }
}

/// A fixed pseudo-random 64-bit value per op index (splitmix64): the Zobrist hash of a
/// set of linearized ops is the XOR of its members' values, updated in O(1) per step.
fn zobrist(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Checks one key's operations (already filtered: no failed ops, no serializable or
/// unknown reads), sorted by invocation.
///
/// The search is Lowe's refinement of Wing–Gong, as Porcupine runs it: the call and
/// return events of every op sit in one doubly-linked list in time order; linearizing an
/// op lifts its two events out of the list (restored on backtrack, "dancing links"), so
/// the candidates for the next place are the calls before the first return still in
/// the list — found by walking from the head, never by rescanning every op. An op of
/// unknown outcome returns "at infinity": it may take effect
/// anywhere after its call or not at all (placed last, it changes no observed result).
///
/// The memo holds (linearized set, state) configurations that were explored to the end
/// and failed, under a Zobrist hash of the required ops placed (kept up to date in O(1)
/// per step) mixed with the state; the bitsets stored rule out hash collisions. It prunes
/// by subsumption: a configuration fails if one with the same required ops placed, the same
/// state and a subset of its unknown-outcome ops placed failed — the one with fewer
/// optional ops used can make every move the other can (the extra ops stay available and
/// need never be placed). Histories with many timed-out writes (Jepsen's) otherwise
/// revisit every subset of them: Porcupine's test log etcd_002 (77 ops, 25 timed out)
/// took 165 ms with an exact-match memo, about a fifth of that with subsumption, and
/// 10.5 ms with the twin rule below as well.
///
/// The lazy rule: an unknown-outcome op is placed only right before an op that observes
/// the state (a read, a cas, a delete whose answer is known). It loses no linearization:
/// in any valid order, an unknown op followed by a pure write (a put, a delete of unknown
/// outcome) or by nothing is overwritten before anyone sees it, so dropping it (it never
/// took effect) leaves every other op's state as it was; repeating that until no such op
/// is left gives a valid order that obeys the rule. A configuration reached by placing an
/// unknown op is therefore a different one from the same set and state reached
/// otherwise (its next op is restricted): the memo keeps them apart, and a failure of
/// the unrestricted one rules out the restricted one too.
fn check_key<'a>(key: &str, ops: &[&'a Op]) -> Verdict {
    const NIL: usize = usize::MAX;
    let n = ops.len();
    let mut interned: HashMap<&str, u32> = HashMap::new();
    let mut intern = |value: &'a str| -> u32 {
        let next = interned.len() as u32;
        *interned.entry(value).or_insert(next)
    };
    let steps: Vec<Step> = ops.iter().map(|op| Step::of(op, &mut intern)).collect();
    let required: Vec<bool> = ops.iter().map(|op| op.complete_seq.is_some()).collect();
    let required_count = required.iter().filter(|r| **r).count();
    let mut required_mask = Bits::new(n);
    for (i, _) in required.iter().enumerate().filter(|(_, r)| **r) {
        required_mask.flip(i);
    }
    // Unknown-outcome ops with the same step are interchangeable once both are called
    // (both stay available to the end): they are placed in call order only, so an op
    // waits while an identical one called before it is unplaced. `twin_before[i]`: the
    // latest such earlier op. (Jepsen's logs repeat a handful of values: without this,
    // every order of equal timed-out writes was tried.)
    let mut twin_before = vec![NIL; n];
    let mut latest_unknown_with_step: HashMap<StepKey, usize> = HashMap::new();
    for i in (0..n).filter(|i| !required[*i]) {
        if let Some(earlier) = latest_unknown_with_step.insert(StepKey::of(steps[i]), i) {
            twin_before[i] = earlier;
        }
    }

    // Events: 2i is op i's call, 2i+1 its return; in time order (unknown returns last).
    let mut order: Vec<(u64, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke_seq, 2 * i));
        order.push((op.complete_seq.unwrap_or(u64::MAX), 2 * i + 1));
    }
    order.sort_unstable();
    // The list: node 2n is the head sentinel.
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &(_, event) in &order {
        next[last] = event;
        prev[event] = last;
        last = event;
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, q) = (prev[e], next[e]);
        next[p] = q;
        if q != NIL {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, q) = (prev[e], next[e]);
        next[p] = e;
        if q != NIL {
            prev[q] = e;
        }
    };

    let mut linearized = Bits::new(n);
    // Zobrist hash of the required ops placed (unknown-outcome ones are left out, so that
    // configurations differing only in those meet under one memo key).
    let mut required_hash = 0u64;
    let mut linearized_count = 0usize;
    let mut required_done = 0usize;
    let mut state: State = None;
    // `memo_key` -> the failed configurations (state, linearized set) under it, kept an
    // antichain (an entry another one subsumes is dropped).
    let mut failed: HashMap<u64, Vec<(State, Bits)>, std::hash::BuildHasherDefault<ZobristKeyHasher>> = HashMap::default();
    // (call event lifted, state before it) for every op placed so far, in order.
    let mut placed: Vec<(usize, State)> = Vec::new();
    let mut deepest: (usize, Bits) = (0, Bits::new(n));
    let mut search_steps = 0u64;
    let mut event = next[head];
    loop {
        if required_done == required_count {
            return Verdict::Ok;
        }
        search_steps += 1;
        if search_steps > SEARCH_STEPS_PER_KEY_MAX {
            return Verdict::Unknown {
                check: "linearizability".into(),
                detail: format!("key {key:?}: search budget of {SEARCH_STEPS_PER_KEY_MAX} steps exhausted over {n} ops"),
            };
        }
        assert!(event != NIL, "the list always ends with a return event");
        let op = event / 2;
        if event % 2 == 0 {
            // A call: try to place its op next.
            let twin_waiting = twin_before[op] != NIL && !linearized.get(twin_before[op]);
            let must_observe = placed.last().is_some_and(|(call, _)| !required[call / 2]);
            let lazy_blocked = must_observe && !steps[op].observes();
            if let Some(after) = steps[op].apply(state).filter(|_| !twin_waiting && !lazy_blocked) {
                let hash = if required[op] { required_hash ^ zobrist(op) } else { required_hash };
                linearized.flip(op);
                let subsumed_under = |key: u64| {
                    failed.get(&key).is_some_and(|seen| {
                        seen.iter().any(|(earlier_state, earlier)| *earlier_state == after && earlier.subset_differing_outside(&linearized, &required_mask))
                    })
                };
                // Placing an unknown op restricts the next move: a failure without that
                // restriction rules this configuration out too.
                let restricted = !required[op];
                let subsumed = subsumed_under(memo_key(hash, after, false)) || (restricted && subsumed_under(memo_key(hash, after, true)));
                if subsumed {
                    linearized.flip(op);
                } else {
                    placed.push((event, state));
                    state = after;
                    required_hash = hash;
                    linearized_count += 1;
                    required_done += usize::from(required[op]);
                    if linearized_count > deepest.0 {
                        deepest.0 = linearized_count;
                        deepest.1 .0.clone_from(&linearized.0);
                    }
                    unlink(&mut next, &mut prev, event);
                    unlink(&mut next, &mut prev, event + 1);
                    event = next[head];
                    continue;
                }
            }
            event = next[event];
        } else {
            // A return whose op is not placed: this configuration is explored to the end
            // and failed; everything placed since its last op must move.
            let Some((call, before)) = placed.pop() else { break };
            let seen = failed.entry(memo_key(required_hash, state, !required[call / 2])).or_default();
            seen.retain(|(later_state, later)| *later_state != state || !linearized.subset_differing_outside(later, &required_mask));
            seen.push((state, linearized.clone()));
            let undone = call / 2;
            relink(&mut next, &mut prev, call + 1);
            relink(&mut next, &mut prev, call);
            linearized.flip(undone);
            if required[undone] {
                required_hash ^= zobrist(undone);
            }
            linearized_count -= 1;
            required_done -= usize::from(required[undone]);
            state = before;
            event = next[call];
        }
    }
    // Report the required ops that the deepest attempt could not place.
    let mut stuck: Vec<&Op> = (0..n).filter(|i| required[*i] && !deepest.1.get(*i)).map(|i| ops[i]).collect();
    stuck.sort_by_key(|op| op.complete_seq);
    let mut involved: Vec<u64> = stuck.iter().take(3).map(|op| op.id).collect();
    let mut detail = format!(
        "key {key:?}: no linearization of its {} operations; after placing {} of them, none of ops {:?} fits",
        n, deepest.0, involved
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
            let mut writers = ops.iter().filter(|op| op.kind.written_value() == Some(value.as_str()));
            let Some(writer) = writers.next() else {
                return Some((format!("op {} read {value:?} from {key:?}, a value no write of this key produced", read.id), vec![read.id]));
            };
            // Values written more than once (a Jepsen log's) name no single writer.
            if writers.next().is_some() {
                return None;
            }
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
    let reads: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && matches!(op.kind, OpKind::Get { serializable: true, .. }))
        .collect();
    // Monotonic reads per member start: a read invoked after another read from the same
    // member start had completed sees a revision at least as high. (Answers to
    // concurrent reads may arrive in any order: ordering by completion alone blamed the
    // member for the network's reordering — found under the heavy-load scenario.)
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(reads.len() * 2);
    for (i, op) in reads.iter().enumerate() {
        events.push((op.invoke_seq, true, i));
        events.push((op.complete_seq.expect("answered ops complete"), false, i));
    }
    events.sort_unstable();
    let mut completed_max: BTreeMap<(u64, u64), (i64, u64)> = BTreeMap::new();
    let mut floor: Vec<Option<(i64, u64)>> = vec![None; reads.len()];
    for (_, is_invoke, i) in events {
        let op = reads[i];
        let slot = (op.member, op.incarnation);
        if is_invoke {
            floor[i] = completed_max.get(&slot).copied();
        } else {
            let entry = completed_max.entry(slot).or_insert((op.revision, op.id));
            if op.revision > entry.0 {
                *entry = (op.revision, op.id);
            }
        }
    }
    for (i, op) in reads.iter().enumerate() {
        if let Some((revision, previous_op)) = floor[i] {
            if op.revision < revision {
                return Verdict::Violation {
                    check: "serializable-read".into(),
                    detail: format!(
                        "member {:016x} answered op {} at revision {}, though op {} had been answered at revision {revision} by the same member start before op {} began",
                        op.member, op.id, op.revision, previous_op, op.id
                    ),
                    ops: vec![previous_op, op.id],
                };
            }
        }
    }
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
        Op { outcome, complete_seq: complete, complete_ms: complete, ..Op::invoked(id, id, 1, 0, kind, invoke, invoke) }
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

    /// Whether `ops` (one key) have a linearization, by brute force: every subset of the
    /// unknown-outcome ops, every order of it and the answered ops that respects real time.
    fn linearizable_by_brute_force(ops: &[Op]) -> bool {
        fn extend(ops: &[&Op], placed: &mut Vec<usize>, state: State, steps: &[Step]) -> bool {
            if placed.len() == ops.len() {
                return true;
            }
            for x in 0..ops.len() {
                if placed.contains(&x) {
                    continue;
                }
                // Every unplaced op that finished before x began must come first.
                let blocked = (0..ops.len()).any(|y| y != x && !placed.contains(&y) && ops[y].complete_seq.is_some_and(|c| c < ops[x].invoke_seq));
                if blocked {
                    continue;
                }
                if let Some(after) = steps[x].apply(state) {
                    placed.push(x);
                    if extend(ops, placed, after, steps) {
                        return true;
                    }
                    placed.pop();
                }
            }
            false
        }
        let relevant: Vec<&Op> = ops.iter().filter(|op| op.outcome != Outcome::Fail && !(matches!(op.kind, OpKind::Get { .. }) && op.outcome == Outcome::Unknown)).collect();
        let unknown: Vec<usize> = (0..relevant.len()).filter(|i| relevant[*i].outcome == Outcome::Unknown).collect();
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut intern = |value: &str| -> u32 {
            let next = interned.len() as u32;
            *interned.entry(value.to_string()).or_insert(next)
        };
        for subset in 0..(1u32 << unknown.len()) {
            let chosen: Vec<&Op> = (0..relevant.len())
                .filter(|i| relevant[*i].outcome != Outcome::Unknown || unknown.iter().position(|u| u == i).is_some_and(|bit| subset & (1 << bit) != 0))
                .map(|i| relevant[i])
                .collect();
            let steps: Vec<Step> = chosen.iter().map(|op| Step::of(op, &mut intern)).collect();
            if extend(&chosen, &mut Vec::new(), None, &steps) {
                return true;
            }
        }
        false
    }

    /// The search (memo by subsumption, twins placed in call order) against brute force
    /// on random small histories with repeated values, timed-out writes and compares.
    #[test]
    fn the_search_agrees_with_brute_force_on_random_histories() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut linearizable, mut violations) = (0, 0);
        for _ in 0..4000 {
            let count = rng.gen_range(2..=8u64);
            let value = |rng: &mut rand_chacha::ChaCha8Rng| ["1", "2"][rng.gen_range(0..2)].to_string();
            let ops: Vec<Op> = (0..count)
                .map(|id| {
                    let invoke = rng.gen_range(0..24u64) * 2;
                    let complete = invoke + 1 + rng.gen_range(0..12u64) * 2;
                    let kind = match rng.gen_range(0..7) {
                        0 | 1 => OpKind::Put { key: "k".into(), value: value(&mut rng) },
                        2 | 3 => OpKind::Get { key: "k".into(), serializable: false },
                        4 => OpKind::Delete { key: "k".into() },
                        _ => OpKind::Cas { key: "k".into(), expected: rng.gen_bool(0.8).then(|| value(&mut rng)), value: value(&mut rng) },
                    };
                    let unknown = !matches!(kind, OpKind::Get { .. }) && rng.gen_bool(0.35);
                    let mut o = if unknown { op(id, kind, invoke, None, Outcome::Unknown) } else { op(id, kind, invoke, Some(complete), Outcome::Ok) };
                    o.read_value = rng.gen_bool(0.8).then(|| value(&mut rng));
                    o.succeeded = rng.gen_bool(0.5);
                    o.deleted = rng.gen_range(0..2);
                    o
                })
                .collect();
            let mut sorted = ops.clone();
            sorted.sort_by_key(|o| o.invoke_seq);
            let brute = linearizable_by_brute_force(&sorted);
            let found = verdict(sorted.clone());
            assert_eq!(found == Verdict::Ok, brute, "search {found:?}, brute force {brute}, history {sorted:#?}");
            if brute {
                linearizable += 1;
            } else {
                violations += 1;
            }
        }
        // Both verdicts are exercised.
        assert!(linearizable > 500 && violations > 500, "{linearizable} linearizable, {violations} not");
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

    /// One member start: a read that began after another ended must not see an older
    /// revision; answers to overlapping reads may arrive in either order.
    #[test]
    fn serializable_reads_are_monotonic_in_real_time_only() {
        let read = |id: u64, invoke: u64, complete: u64, revision: i64| {
            let mut read = op(id, OpKind::Get { key: "k".into(), serializable: true }, invoke, Some(complete), Outcome::Ok);
            read.revision = revision;
            read
        };
        // Overlapping: op 1 (revision 5) completes after op 2 (revision 7).
        assert_eq!(check_serializable_reads(&History { ops: vec![read(1, 1, 6, 5), read(2, 2, 4, 7)] }), Verdict::Ok);
        // Sequential: op 2 began after op 1 ended, and saw less.
        assert!(check_serializable_reads(&History { ops: vec![read(1, 1, 2, 7), read(2, 3, 4, 5)] }).is_violation());
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
