//! Linearizable reads through raft's ReadIndex: reads that arrive together share one
//! request; its answer (the leader's commit index, confirmed by a quorum) makes them
//! servable once this member has applied that far.
//!
//! Every request carries a context unique across members and incarnations: the member
//! id, a nonce drawn from the member's seeded generator at start, and a counter. raft
//! keys pending reads by context alone and a follower accepts any read-index answer, so
//! a late answer meant for another incarnation (TCP queues survive reconnects; the
//! simulated network delivers old messages to a restarted process) must not be able to
//! complete a read with an old index. Answers whose context this incarnation did not
//! issue are dropped.
//!
//! A leader admits each member's read-index request once ([`PeerReadContexts`]). raft
//! answers every request queued before one whose heartbeat round a quorum acknowledged:
//! sound only if that round was sent after they were queued. A request delivered again
//! (a duplicate, or a message the network held for seconds) after raft had answered it
//! went to the back of the queue with its old context — and late acknowledgements of
//! its first round, sent before the newer requests existed, then answered those too: a
//! leader paused while its successor was elected served a linearizable read from its
//! old state (the simulator found it: `everything` seed 77, drawn timing).

use std::collections::{BTreeMap, VecDeque};

use raft::RawNode;

use super::proposals::PendingRequest;
use crate::errors::EtcdError;
use crate::storage::NodeStorage;

/// A read batch with no answer after this many ticks is asked again (raft-rs drops read
/// requests silently when there is no leader or the leader has not committed in its term).
pub const READ_INDEX_RETRY_TICKS: u64 = 3;
/// Bytes of a read context: member id, incarnation nonce, counter.
pub const READ_CONTEXT_BYTES: usize = 24;
/// Incarnations per member whose read contexts a leader remembers (a request held back
/// over more restarts of its sender than this looks new again).
pub const PEER_READ_INCARNATIONS_MAX: usize = 16;

/// The read-index requests of other members a leader admitted: per member, the highest
/// counter of each of its recent incarnations. Members count their contexts up and ask
/// again under a new one, so a context at or below the highest admitted is a request
/// delivered again (or overtaken by a newer one, whose answer serves it as well: the
/// sender asks again if it waits too long).
#[derive(Debug, Default)]
pub struct PeerReadContexts {
    by_member: BTreeMap<u64, VecDeque<(u64, u64)>>,
}

impl PeerReadContexts {
    /// Whether raft may see the read-index request `ctx` that `from` sent: a context of
    /// the sender's own, newer than every one admitted from the same incarnation.
    pub fn admit(&mut self, from: u64, ctx: &[u8]) -> bool {
        if ctx.len() != READ_CONTEXT_BYTES {
            return false;
        }
        let field = |at: usize| u64::from_le_bytes(ctx[at..at + 8].try_into().expect("8 bytes"));
        let (member, nonce, counter) = (field(0), field(8), field(16));
        if member != from {
            return false;
        }
        let incarnations = self.by_member.entry(member).or_default();
        if let Some((_, highest)) = incarnations.iter_mut().find(|(known, _)| *known == nonce) {
            if counter <= *highest {
                return false;
            }
            *highest = counter;
            return true;
        }
        if incarnations.len() == PEER_READ_INCARNATIONS_MAX {
            incarnations.pop_front();
        }
        incarnations.push_back((nonce, counter));
        true
    }
}

struct ReadBatch {
    reads: Vec<PendingRequest>,
    issued_at_tick: u64,
    /// When it was last asked (the member's clock), and the term if this member asked as
    /// the leader: its answer then confirms that leadership as of that instant.
    issued_at_ms: u64,
    issued_as_leader_in_term: Option<u64>,
}

/// What an answered read-index request confirms: a quorum still followed the leader that
/// asked, at `issued_at_ms` — this member, if `issued_as_leader_in_term` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadConfirmation {
    pub issued_at_ms: u64,
    pub issued_as_leader_in_term: Option<u64>,
}

/// See the module documentation.
pub struct ReadIndex {
    member_id: u64,
    incarnation_nonce: u64,
    next_counter: u64,
    unissued: Vec<PendingRequest>,
    in_flight: BTreeMap<u64, ReadBatch>,
    /// Reads whose read index is known, waiting for apply to reach it.
    ready: Vec<(u64, PendingRequest)>,
    bytes: usize,
    /// Planted bug `reuse-read-contexts` (simulator builds only).
    #[cfg(madsim)]
    reuse_contexts: bool,
}

impl ReadIndex {
    /// The nonce that names this incarnation (drawn at start).
    pub fn incarnation_nonce(&self) -> u64 {
        self.incarnation_nonce
    }

    pub fn new(member_id: u64, incarnation_nonce: u64) -> Self {
        Self {
            member_id,
            incarnation_nonce,
            next_counter: 1,
            unissued: Vec::new(),
            in_flight: BTreeMap::new(),
            ready: Vec::new(),
            bytes: 0,
            #[cfg(madsim)]
            reuse_contexts: false,
        }
    }

    #[cfg(madsim)]
    pub fn plant_reuse_contexts(&mut self) {
        self.reuse_contexts = true;
    }

    /// Reads waiting in any stage.
    pub fn len(&self) -> usize {
        self.unissued.len() + self.in_flight.values().map(|b| b.reads.len()).sum::<usize>() + self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, read: PendingRequest) {
        self.bytes += read.size_bytes;
        self.unissued.push(read);
    }

    fn context(&self, counter: u64) -> Vec<u8> {
        #[cfg(madsim)]
        if self.reuse_contexts {
            return counter.to_le_bytes().to_vec();
        }
        let mut ctx = Vec::with_capacity(READ_CONTEXT_BYTES);
        ctx.extend_from_slice(&self.member_id.to_le_bytes());
        ctx.extend_from_slice(&self.incarnation_nonce.to_le_bytes());
        ctx.extend_from_slice(&counter.to_le_bytes());
        ctx
    }

    /// The counter of a context this incarnation issued, or `None`.
    fn counter_of(&self, ctx: &[u8]) -> Option<u64> {
        #[cfg(madsim)]
        if self.reuse_contexts {
            return Some(u64::from_le_bytes(ctx.get(..8)?.try_into().ok()?));
        }
        if ctx.len() != READ_CONTEXT_BYTES
            || ctx[0..8] != self.member_id.to_le_bytes()
            || ctx[8..16] != self.incarnation_nonce.to_le_bytes()
        {
            return None;
        }
        Some(u64::from_le_bytes(ctx[16..24].try_into().expect("8 bytes")))
    }

    /// Sends one ReadIndex request for every read that arrived since the last one.
    pub fn issue(&mut self, raw: &mut RawNode<NodeStorage>, tick: u64, now_ms: u64) {
        if self.unissued.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.unissued);
        self.issue_batch(raw, ReadBatch { reads, issued_at_tick: tick, issued_at_ms: now_ms, issued_as_leader_in_term: None }, tick, now_ms);
    }

    fn issue_batch(&mut self, raw: &mut RawNode<NodeStorage>, mut batch: ReadBatch, tick: u64, now_ms: u64) {
        let counter = self.next_counter;
        self.next_counter += 1;
        batch.issued_at_tick = tick;
        batch.issued_at_ms = now_ms;
        batch.issued_as_leader_in_term = (raw.raft.state == raft::StateRole::Leader).then_some(raw.raft.term);
        raw.read_index(self.context(counter));
        self.in_flight.insert(counter, batch);
    }

    /// raft answered a read-index request: its reads become servable at `index`, and
    /// what the answer confirms is returned. Answers to contexts this incarnation did not
    /// issue are ignored.
    pub fn on_read_state(&mut self, ctx: &[u8], index: u64) -> Option<ReadConfirmation> {
        let counter = self.counter_of(ctx)?;
        let batch = self.in_flight.remove(&counter)?;
        self.ready.extend(batch.reads.into_iter().map(|r| (index, r)));
        Some(ReadConfirmation { issued_at_ms: batch.issued_at_ms, issued_as_leader_in_term: batch.issued_as_leader_in_term })
    }

    /// Asks again for batches that had no answer for [`READ_INDEX_RETRY_TICKS`].
    pub fn retry_stale(&mut self, raw: &mut RawNode<NodeStorage>, tick: u64, now_ms: u64) {
        let stale: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, batch)| tick - batch.issued_at_tick >= READ_INDEX_RETRY_TICKS)
            .map(|(counter, _)| *counter)
            .collect();
        for counter in stale {
            let batch = self.in_flight.remove(&counter).expect("stale counter listed above");
            self.issue_batch(raw, batch, tick, now_ms);
        }
    }

    /// Fails reads whose deadline passed with "request timed out".
    pub fn expire(&mut self, now_ms: u64) {
        let mut expired = Vec::new();
        let unissued = std::mem::take(&mut self.unissued);
        let (gone, kept): (Vec<_>, Vec<_>) = unissued.into_iter().partition(|r| r.deadline_ms <= now_ms);
        expired.extend(gone);
        self.unissued = kept;
        for batch in self.in_flight.values_mut() {
            let reads = std::mem::take(&mut batch.reads);
            let (gone, kept): (Vec<_>, Vec<_>) = reads.into_iter().partition(|r| r.deadline_ms <= now_ms);
            expired.extend(gone);
            batch.reads = kept;
        }
        self.in_flight.retain(|_, batch| !batch.reads.is_empty());
        let ready = std::mem::take(&mut self.ready);
        let (gone, kept): (Vec<_>, Vec<_>) = ready.into_iter().partition(|(_, r)| r.deadline_ms <= now_ms);
        expired.extend(gone.into_iter().map(|(_, r)| r));
        self.ready = kept;
        for read in expired {
            self.bytes -= read.size_bytes;
            read.fail(EtcdError::Timeout);
        }
    }

    /// Fails every read waiting here (the member is leaving the cluster).
    pub fn fail_all(&mut self, error: EtcdError) {
        let in_flight = std::mem::take(&mut self.in_flight).into_values().flat_map(|batch| batch.reads);
        let ready = std::mem::take(&mut self.ready).into_iter().map(|(_, read)| read);
        for read in std::mem::take(&mut self.unissued).into_iter().chain(in_flight).chain(ready) {
            read.fail(error.clone());
        }
        self.bytes = 0;
    }

    /// The leader this member knew is gone: reads in flight ask the new leader.
    pub fn on_leader_lost(&mut self) {
        for (_, batch) in std::mem::take(&mut self.in_flight) {
            self.unissued.extend(batch.reads);
        }
    }

    /// Reads whose read index this member has applied, to be served now.
    pub fn take_servable(&mut self, applied_index: u64) -> Vec<PendingRequest> {
        if self.ready.is_empty() {
            return Vec::new();
        }
        let (servable, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.ready).into_iter().partition(|(index, _)| *index <= applied_index);
        self.ready = waiting;
        let servable: Vec<PendingRequest> = servable.into_iter().map(|(_, r)| r).collect();
        self.bytes -= servable.iter().map(|r| r.size_bytes).sum::<usize>();
        servable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(member: u64, nonce: u64, counter: u64) -> Vec<u8> {
        [member, nonce, counter].iter().flat_map(|field| field.to_le_bytes()).collect()
    }

    #[test]
    fn a_peer_read_context_is_admitted_once_and_only_newer_ones_after_it() {
        let mut admitted = PeerReadContexts::default();
        assert!(admitted.admit(7, &ctx(7, 100, 1)));
        assert!(!admitted.admit(7, &ctx(7, 100, 1)), "the same request delivered again");
        assert!(admitted.admit(7, &ctx(7, 100, 3)));
        assert!(!admitted.admit(7, &ctx(7, 100, 2)), "overtaken by a newer one");
        // Another member, and another incarnation of the same member, count on their own.
        assert!(admitted.admit(8, &ctx(8, 100, 1)));
        assert!(admitted.admit(7, &ctx(7, 200, 1)));
        assert!(!admitted.admit(7, &ctx(7, 100, 3)), "the older incarnation is still known");
        assert!(admitted.admit(7, &ctx(7, 100, 4)));
        // Contexts that are not the sender's own, or not a member's context at all.
        assert!(!admitted.admit(7, &ctx(8, 100, 9)));
        assert!(!admitted.admit(7, &[1, 2, 3]));
    }

    #[test]
    fn a_peer_remembers_a_bounded_number_of_incarnations() {
        let mut admitted = PeerReadContexts::default();
        for nonce in 0..=PEER_READ_INCARNATIONS_MAX as u64 {
            assert!(admitted.admit(7, &ctx(7, nonce, 5)));
        }
        assert_eq!(admitted.by_member[&7].len(), PEER_READ_INCARNATIONS_MAX);
        // The oldest incarnation was forgotten: its contexts look new again (a request
        // held back over that many restarts of its sender).
        assert!(admitted.admit(7, &ctx(7, 0, 5)));
        assert!(!admitted.admit(7, &ctx(7, PEER_READ_INCARNATIONS_MAX as u64, 5)));
    }
}
