//! Keep-alives a follower takes go to the leader beside raft's messages, as etcd's
//! follower forwards them over its peer port (`/leases`): the leader renews the lease
//! as it renews its own clients' (in memory under a recently confirmed leadership, or
//! through raft) and answers with the TTL; the follower then answers its client.
//! Through raft, a follower's keep-alive cost a log entry and an fsync on every member
//! (0.59x etcd's rate for one client on a follower).
//!
//! Both are side messages (`peer_messages::side_message`: beside raft's, through every
//! transport and simulated fault), marked by their context's tag. A forward names the follower's incarnation (a nonce) and a counter;
//! the leader admits each once, newest per incarnation (`PeerReadContexts`' rule): a
//! forward delivered again, or overtaken by a newer one, is answered "not renewed",
//! and a follower still waiting for it renews through raft instead — as it does when the
//! leader declines (not leading, too many answers waiting) and when no answer came within
//! an election timeout (the forward or its answer was lost, or the leader runs a detcd
//! that does not know forwards: a rolling upgrade). When its leader changes, a waiting
//! keep-alive goes to the new leader.
//! A follower answers its client only with a renewal the leader made, after the client
//! asked: the lease lasts at least the TTL from the moment the client asked.

use std::collections::BTreeMap;

use prost::Message as _;
use raft::eraftpb::Message;
use tokio::sync::oneshot;

use super::proposals::PendingRequest;
use super::read_index::PeerReadContexts;
use crate::apply::Response;
use crate::errors::EtcdError;
use crate::pb::detcdpb::{KeepAliveAnswer, KeepAliveForward};

/// Keep-alives a follower waits on the leader for, at most.
pub const FORWARDED_KEEP_ALIVES_MAX: usize = 4096;
/// Forwarded keep-alives a leader is renewing at once, at most (beyond, it declines).
pub const KEEP_ALIVE_ANSWERS_WAITING_MAX: usize = 4096;
/// Answers sent per call of [`KeepAliveAnswers::ready_answers`], at most.
pub const KEEP_ALIVE_ANSWERS_PER_TURN_MAX: usize = 4096;

const FORWARD_TAG: &[u8] = b"detcd: keep-alive forward\n";
const ANSWER_TAG: &[u8] = b"detcd: keep-alive answer\n";

/// A keep-alive message, decoded.
pub enum KeepAliveMessage {
    Forward(KeepAliveForward),
    Answer(KeepAliveAnswer),
}

fn side_message(from: u64, to: u64, tag: &[u8], body: &impl prost::Message) -> Message {
    let mut context = tag.to_vec();
    body.encode(&mut context).expect("a Vec grows as needed");
    super::peer_messages::side_message(from, to, context)
}

/// The keep-alive message `message` carries, if it is one (`Some(Err)`: one that does
/// not decode).
pub fn decode(message: &Message) -> Option<Result<KeepAliveMessage, String>> {
    let context = super::peer_messages::side_context(message)?;
    if let Some(body) = context.strip_prefix(FORWARD_TAG) {
        return Some(KeepAliveForward::decode(body).map(KeepAliveMessage::Forward).map_err(|e| format!("a keep-alive forward: {e}")));
    }
    if let Some(body) = context.strip_prefix(ANSWER_TAG) {
        return Some(KeepAliveAnswer::decode(body).map(KeepAliveMessage::Answer).map_err(|e| format!("a keep-alive answer: {e}")));
    }
    None
}

/// A follower's keep-alives waiting on the leader's answer.
pub struct ForwardedKeepAlives {
    member_id: u64,
    nonce: u64,
    next_counter: u64,
    /// counter → (the client's request, the leader it went to, when it went).
    waiting: BTreeMap<u64, (PendingRequest, u64, u64)>,
    bytes: usize,
}

impl ForwardedKeepAlives {
    pub fn new(member_id: u64, nonce: u64) -> Self {
        Self { member_id, nonce, next_counter: 1, waiting: BTreeMap::new(), bytes: 0 }
    }

    /// Forwards `pending` (a keep-alive of lease `lease_id`) to `leader` at `now_ms`: the
    /// message to send, or the request back when too many wait already.
    pub fn forward(&mut self, pending: PendingRequest, lease_id: i64, leader: u64, now_ms: u64) -> Result<Message, PendingRequest> {
        assert!(leader != self.member_id && leader != raft::INVALID_ID, "forwarding a keep-alive to {leader:x}");
        if self.waiting.len() >= FORWARDED_KEEP_ALIVES_MAX {
            return Err(pending);
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        self.bytes += pending.size_bytes;
        self.waiting.insert(counter, (pending, leader, now_ms));
        Ok(side_message(self.member_id, leader, FORWARD_TAG, &KeepAliveForward { nonce: self.nonce, counter, lease_id }))
    }

    /// The request `answer` answers, if this incarnation still waits for it.
    pub fn take_answered(&mut self, from: u64, answer: &KeepAliveAnswer) -> Option<PendingRequest> {
        if answer.nonce != self.nonce || self.waiting.get(&answer.counter).is_none_or(|(_, leader, _)| *leader != from) {
            return None;
        }
        self.remove(answer.counter)
    }

    fn remove(&mut self, counter: u64) -> Option<PendingRequest> {
        let (pending, _, _) = self.waiting.remove(&counter)?;
        self.bytes -= pending.size_bytes;
        Some(pending)
    }

    /// The requests to act on at `now_ms` (see [`FollowUp`]): past their deadline; sent
    /// to a member that no longer leads now that another does; unanswered for
    /// `answer_wait_ms`. While no member leads the others wait: the old leader may still
    /// answer.
    pub fn follow_up(&mut self, now_ms: u64, leader: u64, answer_wait_ms: u64) -> FollowUp {
        let mut follow_up = FollowUp::default();
        let orphaned_by = |to: u64| leader != raft::INVALID_ID && to != leader;
        let due = |(pending, to, sent_ms): &(PendingRequest, u64, u64)| {
            pending.deadline_ms <= now_ms || orphaned_by(*to) || sent_ms.saturating_add(answer_wait_ms) <= now_ms
        };
        let counters: Vec<u64> = self.waiting.iter().filter(|(_, waiting)| due(waiting)).map(|(counter, _)| *counter).collect();
        for counter in counters {
            let to = self.waiting[&counter].1;
            let pending = self.remove(counter).expect("listed above");
            if pending.deadline_ms <= now_ms {
                follow_up.expired.push(pending);
            } else if orphaned_by(to) {
                follow_up.orphaned.push(pending);
            } else {
                follow_up.unanswered.push(pending);
            }
        }
        follow_up
    }

    /// The request forwarded last (a planted bug answers it at once).
    #[cfg(madsim)]
    pub fn take_newest(&mut self) -> Option<PendingRequest> {
        let counter = *self.waiting.keys().next_back()?;
        self.remove(counter)
    }

    /// Fails every waiting request with `error`.
    pub fn fail_all(&mut self, error: EtcdError) {
        for (_, (pending, _, _)) in std::mem::take(&mut self.waiting) {
            pending.fail(error.clone());
        }
        self.bytes = 0;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What [`ForwardedKeepAlives::follow_up`] hands back: requests to fail (past their
/// deadline), to send to the new leader, and to renew through raft (no answer came).
#[derive(Default)]
pub struct FollowUp {
    pub expired: Vec<PendingRequest>,
    pub orphaned: Vec<PendingRequest>,
    pub unanswered: Vec<PendingRequest>,
}

/// A leader's renewals of forwarded keep-alives, waiting to be answered.
#[derive(Default)]
pub struct KeepAliveAnswers {
    admitted: PeerReadContexts,
    /// (follower, nonce, counter, the renewal's outcome).
    waiting: Vec<(u64, u64, u64, oneshot::Receiver<Result<Response, EtcdError>>)>,
}

impl KeepAliveAnswers {
    /// Whether the leader renews `forward` from `from`: each forward once, the newest of
    /// its incarnation, while few enough wait. If not, the answer to send.
    pub fn admit(&mut self, own_id: u64, from: u64, forward: &KeepAliveForward) -> Result<(), Message> {
        let context: Vec<u8> = [from, forward.nonce, forward.counter].iter().flat_map(|field| field.to_le_bytes()).collect();
        if self.waiting.len() >= KEEP_ALIVE_ANSWERS_WAITING_MAX || !self.admitted.admit(from, &context) {
            return Err(Self::declined(own_id, from, forward));
        }
        Ok(())
    }

    /// The answer "not renewed here" to `forward`.
    pub fn declined(own_id: u64, from: u64, forward: &KeepAliveForward) -> Message {
        let answer = KeepAliveAnswer { nonce: forward.nonce, counter: forward.counter, renewed: false, ttl: 0 };
        side_message(own_id, from, ANSWER_TAG, &answer)
    }

    /// A renewal of `forward` is under way; its outcome comes on `outcome`.
    pub fn wait(&mut self, from: u64, forward: &KeepAliveForward, outcome: oneshot::Receiver<Result<Response, EtcdError>>) {
        assert!(self.waiting.len() < KEEP_ALIVE_ANSWERS_WAITING_MAX, "admitted beyond the bound");
        self.waiting.push((from, forward.nonce, forward.counter, outcome));
    }

    /// The answers whose renewal has an outcome now (an error, or the renewal dropped
    /// when leadership was lost, answers "not renewed").
    pub fn ready_answers(&mut self, own_id: u64) -> Vec<Message> {
        let mut answers = Vec::new();
        let mut index = 0;
        while index < self.waiting.len() && answers.len() < KEEP_ALIVE_ANSWERS_PER_TURN_MAX {
            let outcome = match self.waiting[index].3.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    index += 1;
                    continue;
                }
                Ok(Ok(Response::LeaseKeepAlive(renewed))) => Some(renewed.ttl),
                Ok(Ok(other)) => panic!("a keep-alive answered {other:?}"),
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => None,
            };
            let (from, nonce, counter, _) = self.waiting.swap_remove(index);
            let answer = KeepAliveAnswer { nonce, counter, renewed: outcome.is_some(), ttl: outcome.unwrap_or(0) };
            answers.push(side_message(own_id, from, ANSWER_TAG, &answer));
        }
        answers
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}
