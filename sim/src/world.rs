//! What a run observes: a timeline of faults and member events, the client history,
//! raft invariants checked as members report, and the trace hash that proves a seed
//! replays exactly.
//!
//! The trace hash is FNV-1a over every event in order (including every applied entry),
//! so two runs of one seed agree on it only if they did the same thing at the same
//! virtual instants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use detcd_node::consensus::fnv1a64;
use detcd_node::env::{NodeEvent, Observer, Role};

use crate::checker::Verdict;
use crate::history::{History, Op, OpKind, Outcome};
use crate::lease_history::{LeaseEnd, LeaseOp, LeaseOpKind, LeaseRecord};
use crate::watch_history::{TimedWatchEntry, WatchChain, WatchEntry, WatchRecord, WatchSegment, WatchedEvent};
pub use crate::report::TimelineEvent;

#[derive(Default)]
struct Invariants {
    /// The leader of each term as any member saw it: itself, or the leader it followed
    /// (raft-rs learns a term's leader only from that leader's messages, so a follower's
    /// view shows a leadership whose own report a crash cut off — a leader sends before
    /// it persists, and reports its role after).
    leader_of_term: BTreeMap<u64, u64>,
    campaign_terms: BTreeSet<u64>,
    applied: BTreeMap<u64, (u64, u64, u64)>,
    /// The state digest after each index: (digest, first member to report it).
    state_after: BTreeMap<u64, (u64, u64)>,
    /// Whether a state divergence was reported (once per run: later indexes follow).
    state_diverged: bool,
    /// Indexes already reported as changed (each is reported once).
    changed_indexes: BTreeSet<u64>,
    /// The configuration (voters, learners) each configuration change left, by index:
    /// every member that applies the index must arrive at the same one.
    conf_after: BTreeMap<u64, (Vec<u64>, Vec<u64>)>,
    /// Members that applied their own removal: per member, the history sequence
    /// numbers from that moment to the end of that incarnation (a restarted member that
    /// has not re-applied its removal yet does not know of it). In between it must
    /// answer no client.
    left_seqs: BTreeMap<u64, Vec<(u64, u64)>>,
    violations: Vec<Verdict>,
}

struct WorldState {
    /// Members armed to crash right after their next durable vote for another member.
    crash_after_vote: BTreeSet<u64>,
    /// Members armed to crash right after their next durable batch of entries.
    crash_after_persist: BTreeSet<u64>,
    crash_requests: Option<tokio::sync::mpsc::UnboundedSender<(usize, String)>>,
    hash: u64,
    seq: u64,
    timeline: Vec<TimelineEvent>,
    history: History,
    invariants: Invariants,
    member_index: BTreeMap<u64, usize>,
    /// Authoritative changes by revision (first member to apply each) and every watch.
    watches: WatchRecord,
    /// Revisions whose changes differed between members (each reported once).
    diverged_revisions: BTreeSet<i64>,
    leases: LeaseRecord,
    /// What the run reached, by name (see [`World::count`]).
    coverage: BTreeMap<String, u64>,
    /// Client snapshots the backup client saved.
    snapshots: Vec<crate::kv_model::SavedSnapshot>,
    /// Every lock acquisition of the lock clients.
    lock_holds: Vec<crate::kv_model::LockHold>,
    /// The auth workload's permission changes and permitted writes.
    auth: crate::auth_checker::AuthRecord,
    /// Members whose memory the memory-corruption fault damaged, since when (until they
    /// restart): their applied changes, state digests and snapshots are not the cluster's.
    memory_corrupted: BTreeMap<u64, u64>,
    /// Every memory corruption: (member id, since ms, until ms once it restarted).
    corruption_episodes: Vec<(u64, u64, Option<u64>)>,
    /// CORRUPT alarm changes, first member to apply each: (at ms, raft index, members
    /// with a CORRUPT alarm after it).
    corrupt_alarms: BTreeMap<u64, (u64, Vec<u64>)>,
    /// Each member's last start: (torn tail cut, damaged snapshot files passed over).
    last_recovery: BTreeMap<u64, (bool, usize)>,
    /// NOSPACE alarm transitions by the raft index of the entry that caused them:
    /// (store revision, active). Every member applying that entry must agree.
    nospace: BTreeMap<u64, (i64, bool)>,
}

/// A key-value in the history's shape.
pub fn read_kv_of(kv: &detcd_node::pb::mvccpb::KeyValue) -> crate::history::ReadKv {
    crate::history::ReadKv {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
    }
}

/// A watch event in the record's shape.
pub fn watched_event(event: &detcd_node::pb::mvccpb::Event) -> WatchedEvent {
    let kv = event.kv.clone().unwrap_or_default();
    WatchedEvent {
        revision: kv.mod_revision,
        delete: event.r#type == detcd_node::pb::mvccpb::event::EventType::Delete as i32,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        create_revision: kv.create_revision,
        version: kv.version,
        lease: kv.lease,
        prev: event.prev_kv.as_ref().map(|p| (String::from_utf8_lossy(&p.value).into_owned(), p.mod_revision)),
    }
}

/// Shared by the harness, the clients and (as an [`Observer`]) every member.
pub struct World {
    state: Mutex<WorldState>,
    origin: tokio::time::Instant,
}

impl World {
    pub fn new(member_ids: &[u64]) -> Arc<World> {
        Arc::new(World {
            state: Mutex::new(WorldState {
                crash_after_vote: BTreeSet::new(),
                crash_after_persist: BTreeSet::new(),
                crash_requests: None,
                hash: 0xcbf2_9ce4_8422_2325,
                seq: 0,
                timeline: Vec::new(),
                history: History::default(),
                invariants: Invariants {
                    // The first configuration: every first member a voter (the snapshot at
                    // index 1 every first member starts from).
                    conf_after: BTreeMap::from([(1, ({
                        let mut voters = member_ids.to_vec();
                        voters.sort_unstable();
                        voters
                    }, Vec::new()))]),
                    ..Invariants::default()
                },
                member_index: member_ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
                watches: WatchRecord::default(),
                diverged_revisions: BTreeSet::new(),
                leases: LeaseRecord::default(),
                nospace: BTreeMap::new(),
                coverage: BTreeMap::new(),
                last_recovery: BTreeMap::new(),
                snapshots: Vec::new(),
                lock_holds: Vec::new(),
                auth: crate::auth_checker::AuthRecord::default(),
                memory_corrupted: BTreeMap::new(),
                corruption_episodes: Vec::new(),
                corrupt_alarms: BTreeMap::new(),
            }),
            origin: tokio::time::Instant::now(),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorldState> {
        self.state.lock().expect("world lock")
    }

    fn mix(state: &mut WorldState, bytes: &[u8]) {
        state.hash ^= fnv1a64(bytes);
        state.hash = state.hash.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(7);
    }

    /// Counts one occurrence of something the sweep's coverage summary reports.
    pub fn count(&self, what: &str) {
        *self.lock().coverage.entry(what.to_string()).or_default() += 1;
    }

    pub fn record_snapshot(&self, saved: crate::kv_model::SavedSnapshot) {
        let mut state = self.lock();
        Self::mix(&mut state, format!("backup|{}|{}|{}|{}", saved.member, saved.revision, saved.kvs.len(), saved.error.is_some()).as_bytes());
        state.snapshots.push(saved);
    }

    pub fn record_lock_hold(&self, hold: crate::kv_model::LockHold) {
        let mut state = self.lock();
        Self::mix(&mut state, format!("lock|{}|{}|{}|{}", hold.client, hold.key, hold.create_revision, hold.acquired_revision).as_bytes());
        *state.coverage.entry("locks acquired".into()).or_default() += 1;
        state.lock_holds.push(hold);
    }

    /// A point in the history's global order (for the auth workload's record).
    pub fn auth_seq(&self, what: &str) -> u64 {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        Self::mix(&mut state, format!("auth|{seq}|{what}").as_bytes());
        seq
    }

    pub fn record_permission_change(&self, change: crate::auth_checker::PermissionChange) {
        let mut state = self.lock();
        Self::mix(&mut state, format!("permission|{}|{}|{}", change.granted, change.invoked_seq, change.completed_seq).as_bytes());
        *state.coverage.entry(if change.granted { "auth: permission granted" } else { "auth: permission revoked" }.into()).or_default() += 1;
        state.auth.changes.push(change);
    }

    pub fn record_permitted_write(&self, write: crate::auth_checker::PermittedWrite) {
        let mut state = self.lock();
        Self::mix(&mut state, format!("permitted|{}|{}|{}", write.client, write.key, write.revision).as_bytes());
        *state.coverage.entry("auth: writes permitted".into()).or_default() += 1;
        state.auth.writes.push(write);
    }

    pub fn record_write_refused(&self) {
        let mut state = self.lock();
        state.auth.refused += 1;
        *state.coverage.entry("auth: writes refused".into()).or_default() += 1;
    }

    pub fn auth_record(&self) -> crate::auth_checker::AuthRecord {
        self.lock().auth.clone()
    }

    pub fn lock_holds(&self) -> Vec<crate::kv_model::LockHold> {
        self.lock().lock_holds.clone()
    }

    pub fn snapshots(&self) -> Vec<crate::kv_model::SavedSnapshot> {
        self.lock().snapshots.clone()
    }

    /// The memory-corruption fault damaged `member_id`'s in-memory state.
    pub fn memory_corrupted(&self, member_id: u64) {
        let now = self.now_ms();
        let mut state = self.lock();
        state.memory_corrupted.insert(member_id, now);
        state.corruption_episodes.push((member_id, now, None));
        *state.coverage.entry("memory corruptions".into()).or_default() += 1;
    }

    /// The memory-corruption fault could not damage `member_id` after all (it stopped).
    pub fn memory_corruption_aborted(&self, member_id: u64) {
        let mut state = self.lock();
        if state.memory_corrupted.remove(&member_id).is_some() {
            if let Some(position) = state.corruption_episodes.iter().rposition(|(m, _, until)| *m == member_id && until.is_none()) {
                state.corruption_episodes.remove(position);
            }
            *state.coverage.entry("memory corruptions".into()).or_default() -= 1;
        }
    }

    /// Whether `member_id`'s memory is damaged now (until it restarts).
    pub fn is_memory_corrupted(&self, member_id: u64) -> bool {
        self.lock().memory_corrupted.contains_key(&member_id)
    }

    /// Memory corruptions and CORRUPT alarm changes, for the corruption-check check.
    pub fn corruption_record(&self) -> (Vec<(u64, u64, Option<u64>)>, Vec<(u64, Vec<u64>)>) {
        let state = self.lock();
        (state.corruption_episodes.clone(), state.corrupt_alarms.values().cloned().collect())
    }

    /// What `member_id` reported when it last opened its disks.
    pub fn last_recovery(&self, member_id: u64) -> Option<(bool, usize)> {
        self.lock().last_recovery.get(&member_id).copied()
    }

    pub fn coverage(&self) -> BTreeMap<String, u64> {
        self.lock().coverage.clone()
    }

    /// Number of timeline events so far (a fault that acted added one).
    pub fn timeline_len(&self) -> usize {
        self.lock().timeline.len()
    }

    /// Adds an event to the timeline and the hash.
    /// A new member took slot `index` (a replaced member).
    pub fn register_member(&self, member_id: u64, index: usize) {
        self.lock().member_index.insert(member_id, index);
    }

    pub fn event(&self, kind: &str, member: Option<usize>, detail: String) {
        let at_ms = self.now_ms();
        let mut state = self.lock();
        Self::mix(&mut state, format!("{at_ms}|{kind}|{member:?}|{detail}").as_bytes());
        state.timeline.push(TimelineEvent { at_ms, kind: kind.to_string(), member, detail, term: None, role: None });
    }

    /// Records an invocation; returns the op's id.
    pub fn invoke(&self, client: u64, member: u64, incarnation: u64, kind: OpKind) -> u64 {
        let now = self.now_ms();
        let mut state = self.lock();
        state.seq += 1;
        let id = state.history.ops.len() as u64;
        let op = Op::invoked(id, client, member, incarnation, kind, state.seq, now);
        let line = format!("invoke|{now}|{id}|{client}|{member}|{:?}", op.kind);
        Self::mix(&mut state, line.as_bytes());
        state.history.ops.push(op);
        id
    }

    /// Records how op `id` ended; `fill` sets its results.
    pub fn complete(&self, id: u64, outcome: Outcome, fill: impl FnOnce(&mut Op)) {
        let now = self.now_ms();
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        let op = &mut state.history.ops[id as usize];
        op.outcome = outcome;
        if outcome != Outcome::Unknown {
            op.complete_seq = Some(seq);
        }
        op.complete_ms = Some(now);
        fill(op);
        let line = format!("complete|{now}|{id}|{:?}|{:?}|{:?}|{}|{}|{}", op.outcome, op.read_value, op.read_kvs, op.deleted, op.succeeded, op.revision);
        Self::mix(&mut state, line.as_bytes());
    }

    pub fn history(&self) -> History {
        self.lock().history.clone()
    }

    pub fn timeline(&self) -> Vec<TimelineEvent> {
        self.lock().timeline.clone()
    }

    pub fn trace_hash(&self) -> u64 {
        self.lock().hash
    }

    /// Raft invariant violations seen so far, and the membership check over the
    /// history: a member that applied its own removal answers no client request
    /// invoked after that (etcd: a removed member serves nothing).
    pub fn invariant_violations(&self) -> Vec<Verdict> {
        let state = self.lock();
        let mut violations = state.invariants.violations.clone();
        let left_when = |op: &crate::history::Op| {
            let intervals = state.invariants.left_seqs.get(&op.member)?;
            intervals.iter().find(|(from, to)| op.invoke_seq > *from && op.invoke_seq < *to).map(|(from, _)| *from)
        };
        let served_after_leaving = state.history.ops.iter().filter(|op| op.outcome == crate::history::Outcome::Ok).find_map(|op| Some((op, left_when(op)?)));
        if let Some((op, left)) = served_after_leaving {
            let detail = format!(
                "{:016x} answered op {} (invoked at seq {}) although it had applied its own removal at seq {left}",
                op.member, op.id, op.invoke_seq
            );
            violations.push(Verdict::Violation { check: "removed-member-serves-nothing".into(), detail, ops: vec![op.id] });
        }
        violations
    }

    /// Terms in which someone campaigned but nobody became leader.
    pub fn leaderless_terms(&self) -> Vec<u64> {
        let state = self.lock();
        state
            .invariants
            .campaign_terms
            .iter()
            .filter(|term| !state.invariants.leader_of_term.contains_key(term))
            .copied()
            .collect()
    }

    /// Where crash points send the members they want killed (index, reason).
    pub fn set_crash_requests(&self, sender: tokio::sync::mpsc::UnboundedSender<(usize, String)>) {
        self.lock().crash_requests = Some(sender);
    }

    /// Arms `member_id` to crash right after its next durable vote for another member.
    pub fn arm_crash_after_vote(&self, member_id: u64) {
        self.lock().crash_after_vote.insert(member_id);
    }

    /// Arms `member_id` to crash right after its next durable batch of entries.
    pub fn arm_crash_after_persist(&self, member_id: u64) {
        self.lock().crash_after_persist.insert(member_id);
    }

    /// Records a violation found by the harness itself (not by a member's events).
    pub fn violation(&self, check: &str, detail: String) {
        let mut state = self.lock();
        Self::mix(&mut state, format!("violation|{check}|{detail}").as_bytes());
        state.invariants.violations.push(Verdict::Violation { check: check.into(), detail, ops: vec![] });
    }

    /// The leader of each term as any member saw it (see `Invariants::leader_of_term`).
    pub fn leaders_by_term(&self) -> BTreeMap<u64, u64> {
        self.lock().invariants.leader_of_term.clone()
    }

    /// Starts a watch chain; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn watch_chain(&self, client: u64, key: &str, range_end: &str, prev_kv: bool, no_put: bool, no_delete: bool) -> u64 {
        let mut state = self.lock();
        let id = state.watches.chains.len() as u64;
        Self::mix(&mut state, format!("watch-chain|{id}|{client}|{key}|{range_end}|{prev_kv}|{no_put}|{no_delete}").as_bytes());
        state.watches.chains.push(WatchChain {
            id,
            client,
            key: key.into(),
            range_end: range_end.into(),
            prev_kv,
            no_put,
            no_delete,
            segments: Vec::new(),
            final_progress_required: false,
        });
        id
    }

    /// A new stream of chain `chain` on `member`, asking to start at `requested_start`.
    pub fn watch_segment(&self, chain: u64, member: u64, incarnation: u64, requested_start: i64) {
        let now = self.now_ms();
        let mut state = self.lock();
        Self::mix(&mut state, format!("watch-segment|{now}|{chain}|{member}|{incarnation}|{requested_start}").as_bytes());
        state.watches.chains[chain as usize].segments.push(WatchSegment {
            member,
            incarnation,
            requested_start,
            opened_ms: now,
            responses: Vec::new(),
            ended: String::new(),
        });
    }

    /// A response on the newest stream of `chain`.
    pub fn watch_response(&self, chain: u64, entry: WatchEntry) {
        let at_ms = self.now_ms();
        let mut state = self.lock();
        Self::mix(&mut state, format!("watch-response|{at_ms}|{chain}|{entry:?}").as_bytes());
        if let Some(segment) = state.watches.chains[chain as usize].segments.last_mut() {
            segment.responses.push(TimedWatchEntry { at_ms, entry });
        }
    }

    /// The newest stream of `chain` ended.
    pub fn watch_segment_ended(&self, chain: u64, why: &str) {
        let mut state = self.lock();
        Self::mix(&mut state, format!("watch-ended|{chain}|{why}").as_bytes());
        if let Some(segment) = state.watches.chains[chain as usize].segments.last_mut() {
            segment.ended = why.to_string();
        }
    }

    /// `chain` is open when the run settles: it must answer a final progress request.
    pub fn require_final_progress(&self, chain: u64) {
        self.lock().watches.chains[chain as usize].final_progress_required = true;
    }

    pub fn watch_record(&self) -> WatchRecord {
        self.lock().watches.clone()
    }

    /// Records a lease operation's invocation; returns its id.
    pub fn lease_invoke(&self, client: u64, lease: i64, kind: LeaseOpKind, member: u64) -> u64 {
        let now = self.now_ms();
        let mut state = self.lock();
        let id = state.leases.ops.len() as u64;
        Self::mix(&mut state, format!("lease-invoke|{now}|{id}|{client}|{lease}|{kind:?}|{member}").as_bytes());
        state.leases.ops.push(LeaseOp { id, client, lease, kind, member, invoke_ms: now, complete_ms: None, outcome: Outcome::Unknown, ttl: 0, error: None });
        id
    }

    /// How lease operation `id` ended; `lease` is the lease it concerned (a grant learns
    /// its id from the answer).
    pub fn lease_complete(&self, id: u64, outcome: Outcome, lease: i64, ttl: i64, error: Option<String>) {
        let now = self.now_ms();
        let mut state = self.lock();
        Self::mix(&mut state, format!("lease-complete|{now}|{id}|{outcome:?}|{lease}|{ttl}|{error:?}").as_bytes());
        let op = &mut state.leases.ops[id as usize];
        op.outcome = outcome;
        op.complete_ms = (outcome != Outcome::Unknown).then_some(now);
        op.lease = lease;
        op.ttl = ttl;
        op.error = error;
    }

    pub fn lease_record(&self) -> LeaseRecord {
        self.lock().leases.clone()
    }

    /// NOSPACE alarm transitions: (store revision when applied, active), in apply order.
    pub fn nospace_transitions(&self) -> Vec<(i64, bool)> {
        self.lock().nospace.values().copied().collect()
    }
}

impl Observer for World {
    fn wants_changes(&self) -> bool {
        true
    }

    fn on_event(&self, member_id: u64, event: NodeEvent) {
        let at_ms = self.now_ms();
        let mut state = self.lock();
        let member = state.member_index.get(&member_id).copied();
        match event {
            NodeEvent::RoleChanged { term, role, leader_id } => {
                Self::mix(&mut state, format!("role|{at_ms}|{member_id}|{term}|{role:?}|{leader_id}").as_bytes());
                if role == Role::Candidate {
                    state.invariants.campaign_terms.insert(term);
                    *state.coverage.entry("elections started".into()).or_default() += 1;
                }
                // Every member's view of a term's leader must agree: its own claim, and
                // the leader each follower followed.
                if leader_id != 0 {
                    match state.invariants.leader_of_term.get(&term) {
                        Some(other) if *other != leader_id => {
                            let detail = format!("term {term} has two leaders: {other:016x} and {leader_id:016x} (as {member_id:016x} saw it)");
                            state.invariants.violations.push(Verdict::Violation { check: "one-leader-per-term".into(), detail, ops: vec![] });
                        }
                        Some(_) => {}
                        None => {
                            state.invariants.leader_of_term.insert(term, leader_id);
                            *state.coverage.entry("leaders elected".into()).or_default() += 1;
                        }
                    }
                }
                state.timeline.push(TimelineEvent {
                    at_ms,
                    kind: "role".into(),
                    member,
                    detail: format!("{role:?} in term {term}, leader {leader_id:016x}"),
                    term: Some(term),
                    role: Some(format!("{role:?}")),
                });
            }
            NodeEvent::Applied { index, term, digest, state_digest } => {
                let digest = digest.expect("the simulator's observer wants changes, so every applied entry comes with its digest");
                Self::mix(&mut state, format!("applied|{member_id}|{index}|{term}|{digest}|{state_digest:?}").as_bytes());
                // A member with damaged memory is not the cluster's state (the corruption
                // check must catch it instead).
                let state_digest = state_digest.filter(|_| !state.memory_corrupted.contains_key(&member_id));
                if let Some(state_digest) = state_digest {
                    match state.invariants.state_after.get(&index).copied() {
                        None => {
                            state.invariants.state_after.insert(index, (state_digest, member_id));
                        }
                        Some((first, first_member)) if first != state_digest && !state.invariants.state_diverged => {
                            state.invariants.state_diverged = true;
                            let detail = format!(
                                "after applying index {index} the replicated state of {member_id:016x} differs from that of {first_member:016x} (state digest {state_digest:016x} vs {first:016x})"
                            );
                            state.invariants.violations.push(Verdict::Violation { check: "state-identical-at-every-index".into(), detail, ops: vec![] });
                        }
                        Some(_) => {}
                    }
                }
                match state.invariants.applied.get(&index) {
                    Some((t, d, first)) if (*t, *d) != (term, digest) && !state.invariants.changed_indexes.contains(&index) => {
                        let detail = format!(
                            "index {index} applied as term {t} by {first:016x} but as term {term} by {member_id:016x}: committed content changed"
                        );
                        state.invariants.changed_indexes.insert(index);
                        state.invariants.violations.push(Verdict::Violation { check: "committed-entries-immutable".into(), detail, ops: vec![] });
                    }
                    Some(_) => {}
                    None => {
                        state.invariants.applied.insert(index, (term, digest, member_id));
                    }
                }
            }
            NodeEvent::VotePersisted { term, vote } => {
                Self::mix(&mut state, format!("vote|{at_ms}|{member_id}|{term}|{vote}").as_bytes());
                if vote != member_id && state.crash_after_vote.remove(&member_id) {
                    *state.coverage.entry("crash point: after a vote".into()).or_default() += 1;
                    if let (Some(sender), Some(index)) = (state.crash_requests.as_ref(), member) {
                        let _ = sender.send((index, format!("crash point: right after voting for {vote:016x} in term {term}")));
                    }
                }
            }
            NodeEvent::EntriesPersisted { last_index } => {
                Self::mix(&mut state, format!("persisted|{at_ms}|{member_id}|{last_index}").as_bytes());
                if state.crash_after_persist.remove(&member_id) {
                    *state.coverage.entry("crash point: after an entries sync".into()).or_default() += 1;
                    if let (Some(sender), Some(index)) = (state.crash_requests.as_ref(), member) {
                        let _ = sender.send((index, format!("crash point: right after syncing entries up to {last_index}, before replying")));
                    }
                }
            }
            NodeEvent::Changes { revision, .. } if state.memory_corrupted.contains_key(&member_id) => {
                // Its changes are not the cluster's, but it did apply the revision.
                let seq = state.seq;
                state.watches.first_applied_seq.entry(revision).or_insert(seq);
            }
            NodeEvent::Changes { revision, events } => {
                let events: Vec<WatchedEvent> = events.iter().map(watched_event).collect();
                let first = state.watches.authoritative.get(&revision).cloned();
                match first {
                    None => {
                        state.watches.authoritative.insert(revision, events);
                        let seq = state.seq;
                        state.watches.first_applied_seq.entry(revision).or_insert(seq);
                    }
                    Some(first) if first != events && state.diverged_revisions.insert(revision) => {
                        let detail = format!("revision {revision} changed {first:?} on one member but {events:?} on {member_id:016x}");
                        state.invariants.violations.push(Verdict::Violation { check: "changes-identical-everywhere".into(), detail, ops: vec![] });
                    }
                    Some(_) => {}
                }
            }
            NodeEvent::Corrupt { index, active, members } => {
                Self::mix(&mut state, format!("corrupt|{member_id}|{index}|{active}|{members:?}").as_bytes());
                if !state.corrupt_alarms.contains_key(&index) {
                    if active {
                        *state.coverage.entry("corruption alarms raised".into()).or_default() += 1;
                    }
                    state.corrupt_alarms.insert(index, (at_ms, members));
                }
            }
            NodeEvent::Compacted { revision } => {
                Self::mix(&mut state, format!("compacted|{member_id}|{revision}").as_bytes());
                state.watches.compactions.entry(revision).or_insert(at_ms);
            }
            NodeEvent::Lease(change) => {
                Self::mix(&mut state, format!("lease|{member_id}|{change:?}").as_bytes());
                if let detcd_node::apply::LeaseChange::Ended { id, expired, revision } = change {
                    state.leases.ends.entry(id).or_insert(LeaseEnd { at_ms, revision, expired });
                }
            }
            NodeEvent::ConfChanged { index, voters, learners } => {
                Self::mix(&mut state, format!("conf|{member_id}|{index}|{voters:?}|{learners:?}").as_bytes());
                if !voters.contains(&member_id) && !learners.contains(&member_id) {
                    let seq = state.seq;
                    let intervals = state.invariants.left_seqs.entry(member_id).or_default();
                    if intervals.last().is_none_or(|(_, to)| *to != u64::MAX) {
                        intervals.push((seq, u64::MAX));
                    }
                }
                *state.coverage.entry("membership: configuration changes applied".into()).or_default() += 1;
                match state.invariants.conf_after.get(&index).cloned() {
                    None => {
                        state.invariants.conf_after.insert(index, (voters.clone(), learners.clone()));
                    }
                    Some(first) if first != (voters.clone(), learners.clone()) => {
                        let detail = format!("the configuration change at index {index} left voters {:?} learners {:?} on one member but voters {voters:?} learners {learners:?} on {member_id:016x}", first.0, first.1);
                        state.invariants.violations.push(Verdict::Violation { check: "configuration-identical-everywhere".into(), detail, ops: vec![] });
                    }
                    Some(_) => {}
                }
            }
            NodeEvent::NoSpace { index, active, revision } => {
                Self::mix(&mut state, format!("nospace|{member_id}|{index}|{active}|{revision}").as_bytes());
                match state.nospace.get(&index).copied() {
                    None => {
                        state.nospace.insert(index, (revision, active));
                    }
                    Some(first) if first != (revision, active) => {
                        let detail = format!("the entry at index {index} moved the NOSPACE alarm to {first:?} on one member but to ({revision}, {active}) on {member_id:016x}");
                        state.invariants.violations.push(Verdict::Violation { check: "alarms-identical-everywhere".into(), detail, ops: vec![] });
                    }
                    Some(_) => {}
                }
            }
            NodeEvent::Recovered { torn_tail_cut, damaged_snapshots_skipped } => {
                Self::mix(&mut state, format!("recovered|{at_ms}|{member_id}|{torn_tail_cut}|{damaged_snapshots_skipped}").as_bytes());
                *state.coverage.entry("member starts".into()).or_default() += 1;
                state.last_recovery.insert(member_id, (torn_tail_cut, damaged_snapshots_skipped));
                let seq = state.seq;
                if let Some(open) = state.invariants.left_seqs.get_mut(&member_id).and_then(|i| i.last_mut()).filter(|(_, to)| *to == u64::MAX) {
                    open.1 = seq;
                }
                // A restart rebuilds memory from the disk (the scenarios that damage
                // memory take no snapshot, so the disk never saw the damage).
                if state.memory_corrupted.remove(&member_id).is_some() {
                    if let Some(episode) = state.corruption_episodes.iter_mut().rev().find(|(m, _, until)| *m == member_id && until.is_none()) {
                        episode.2 = Some(at_ms);
                    }
                }
                if torn_tail_cut {
                    *state.coverage.entry("torn WAL tails cut at start".into()).or_default() += 1;
                }
                if damaged_snapshots_skipped > 0 {
                    *state.coverage.entry("damaged snapshot files passed over".into()).or_default() += damaged_snapshots_skipped as u64;
                }
            }
            NodeEvent::PeerReadRefused { .. } => {
                *state.coverage.entry("raft: read-index requests delivered again, refused".into()).or_default() += 1;
            }
            NodeEvent::SnapshotBegun { stretched, .. } => {
                *state.coverage.entry("own snapshots begun".into()).or_default() += 1;
                if stretched {
                    *state.coverage.entry("own snapshots begun past --snapshot-count (store dwarfs the changes)".into()).or_default() += 1;
                }
            }
            NodeEvent::SnapshotInstalled { index, term } => {
                Self::mix(&mut state, format!("snapshot|{at_ms}|{member_id}|{index}|{term}").as_bytes());
                *state.coverage.entry("snapshots installed".into()).or_default() += 1;
                state.timeline.push(TimelineEvent {
                    at_ms,
                    kind: "snapshot".into(),
                    member,
                    detail: format!("installed snapshot at index {index} (term {term})"),
                    term: None,
                    role: None,
                });
            }
        }
    }
}
