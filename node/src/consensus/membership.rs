//! Membership changes: etcd's Cluster service on top of raft's configuration changes.
//!
//! Add, remove and promote are raft `ConfChangeV2`s with one change each (so raft never
//! needs joint consensus for them), carrying a `MemberChange` context: the proposer and
//! request id (to answer the waiting client) and the member with its peer URLs. Update
//! is a normal replicated request (raft has no notion of URLs). When a change is
//! applied, raft's configuration, the replicated member table (`apply`), the transport's
//! peers and the answer to the client change in that order, on every member alike.
//!
//! Before proposing, a change is checked against the applied configuration as etcd's
//! cluster checks it: valid and unused peer URLs, known (and never removed) ids, at most
//! [`LEARNERS_MAX`] learners, a learner promoted only once it caught up, one change at a
//! time, and — with `strict_reconfig_check` — no change that would leave fewer started
//! voters than a quorum. A committed change that raft refuses anyway (two members
//! proposed conflicting changes) changes nothing, on every member alike.
//!
//! A member that applies its own removal leaves: it answers no client from then on
//! (requests waiting fail with "server stopped", new ones are refused). A removed
//! leader steps down at once (raft-rs cannot lead a configuration without itself; the
//! append that committed the removal already told the others its commit index, as raft
//! broadcasts commits while a configuration change is pending). The member keeps raft
//! running — it still votes — until a voter of the configuration after its removal has
//! the removal's commit durable, then stops (`FatalError::Removed`). Before that the
//! others may need its vote: a follower of a two-member cluster needs it, and its ack of
//! the new leader's first entry, to learn the removal is committed — and a leader that
//! told it of the commit may yet lose that knowledge, for a leader sends before it
//! syncs (membership-chaos seed 6800: the removed follower of a cluster of two stopped
//! on its leader's word; the leader lost power before its commit index was durable and
//! came back needing the stopped member's vote, for good). Nor does another leader
//! committing past the removal tell it enough: that leader may lose its commit index
//! the same way. The others forget it for good (its id is never reused, the transport
//! refuses its messages and tells it it was removed, as etcd answers a removed member
//! "410 Gone") — the transport learns of a removal only once the commit covering it is
//! durable (`handle_ready`, step 5).
//!
//! A removed member's stay has no bound: the others may need its vote for as long as
//! none of them knows the removal is committed (a cluster of two whose other member
//! crashes again and again for minutes), and leaving then loses the cluster's quorum
//! for good — an old bound of 100 heartbeats did (simulator seed 5051 of
//! membership-chaos). A member that knows needs it no more and stops talking to it, so
//! the removed member cannot tell "they know" from "they are down" by silence: it asks.
//! Every [`REMOVED_MEMBER_PROBE_INTERVAL_TICKS`] it sends each member of its last
//! configuration a membership probe ([`membership_probe`]); a member whose transport
//! knows the removal answers there with the removal notice
//! (`Transport::removal_notices`), and it stops once a voter of the configuration after
//! its removal said so (a learner that knows cannot lead the others to the commit); the
//! others drop the probe. (etcd stops a removed member after a fixed delay,
//! `stopWithDelay`; the planted bug `removed-leader-leaves-without-successor` does so.)

use std::collections::BTreeSet;

use prost::Message as _;
use protobuf::Message as _;
use rand::Rng;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2};
use raft::StateRole;

use super::proposals::PendingRequest;
use super::{FatalError, NodeCore};
use crate::apply::{MemberRequest, MemberTableChange, Request, Response};
use crate::env::{NodeEvent, PeerDirectory};
use crate::errors::EtcdError;
use crate::pb::detcdpb::MemberChange;
use crate::pb::etcdserverpb::Member;

/// Learners a cluster may have at once (etcd's `maxLearners`).
pub const LEARNERS_MAX: usize = 1;
/// A learner may be promoted once its log reaches this share of the leader's (etcd's
/// `readyPercent`).
pub const LEARNER_READY_PERCENT: u64 = 90;
/// Heartbeats between the membership probes of a removed member.
pub const REMOVED_MEMBER_PROBE_INTERVAL_TICKS: u64 = 10;
/// What marks a membership probe (see [`membership_probe`]).
pub const MEMBERSHIP_PROBE_CONTEXT: &[u8] = b"detcd: membership probe";

/// A removed member waiting for a successor asks `to` whether it still counts `from` as
/// a member: a message no raft handles (`MsgUnreachable` is local to raft-rs, and a
/// peer's is refused), which the receiving member's transport answers with the removal
/// notice if its applied table removed `from`, and its core drops otherwise.
pub fn membership_probe(from: u64, to: u64) -> raft::eraftpb::Message {
    super::peer_messages::side_message(from, to, MEMBERSHIP_PROBE_CONTEXT.to_vec())
}

/// Whether `message` is a membership probe.
pub fn is_membership_probe(message: &raft::eraftpb::Message) -> bool {
    super::peer_messages::side_context(message) == Some(MEMBERSHIP_PROBE_CONTEXT)
}

/// Peer URLs a member may have.
pub const MEMBER_PEER_URLS_MAX: usize = 16;

/// Whether `url` is `http(s)://host:port` with a numeric port.
fn is_valid_peer_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
    let Some((host, port)) = rest.rsplit_once(':') else { return false };
    !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn check_peer_urls(peer_urls: &[String]) -> Result<(), EtcdError> {
    if peer_urls.is_empty() || peer_urls.len() > MEMBER_PEER_URLS_MAX || !peer_urls.iter().all(|u| is_valid_peer_url(u)) {
        return Err(EtcdError::MemberBadUrls);
    }
    Ok(())
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

impl NodeCore {
    fn voters(&self) -> BTreeSet<u64> {
        self.raw.raft.prs().conf().voters().ids().iter().collect()
    }

    fn learners(&self) -> BTreeSet<u64> {
        self.raw.raft.prs().conf().learners().iter().copied().collect()
    }

    /// A voter counts as started once it published its name; on the leader it must also
    /// have been heard from within an election timeout. (Not raft's `recent_active`:
    /// raft-rs resets it for every peer at each election timeout, until their next
    /// answers — a valid change checked in that moment was refused with "not enough
    /// started members", as the end-to-end test's MemberRemove once was in CI.)
    fn is_started(&self, id: u64) -> bool {
        let published = self.state.members().get(&id).is_some_and(|m| !m.name.is_empty()) || id == self.config.member_id;
        if self.raw.raft.state != StateRole::Leader || id == self.config.member_id {
            return published;
        }
        let now_ms = self.env.clock.now_ms();
        published && self.peers_heard_ms.get(&id).is_some_and(|heard_ms| now_ms.saturating_sub(*heard_ms) <= self.config.election_timeout_ms)
    }

    /// etcd's checks before a membership change is proposed.
    pub(super) fn check_member_request(&self, request: &MemberRequest) -> Result<(), EtcdError> {
        let voters = self.voters();
        let learners = self.learners();
        let strict = self.config.strict_reconfig_check;
        let url_in_use = |urls: &[String], except: Option<u64>| {
            self.state.members().iter().any(|(id, m)| Some(*id) != except && m.peer_urls.iter().any(|u| urls.contains(u)))
        };
        let known = |id: u64| {
            if voters.contains(&id) || learners.contains(&id) {
                Ok(())
            } else if self.state.removed_members().contains(&id) {
                Err(EtcdError::MemberIdRemoved)
            } else {
                Err(EtcdError::MemberNotFound)
            }
        };
        let started_voters = |except: Option<u64>| voters.iter().filter(|id| Some(**id) != except && self.is_started(**id)).count();
        match request {
            MemberRequest::Add { peer_urls, is_learner } => {
                check_peer_urls(peer_urls)?;
                if url_in_use(peer_urls, None) {
                    return Err(EtcdError::PeerUrlExists);
                }
                if *is_learner && learners.len() >= LEARNERS_MAX {
                    return Err(EtcdError::TooManyLearners);
                }
                // The new voter is not started: the others must still make a quorum —
                // except when growing a single member to two (etcd allows it: the way to
                // grow a cluster restored from a snapshot).
                let one_to_two = voters.len() == 1 && started_voters(None) == 1;
                if !is_learner && strict && !one_to_two && started_voters(None) < quorum(voters.len() + 1) {
                    return Err(EtcdError::NotEnoughStartedMembers);
                }
            }
            MemberRequest::Remove { id } => {
                known(*id)?;
                if voters.contains(id) {
                    if voters.len() == 1 {
                        // raft cannot remove its last voter.
                        return Err(EtcdError::NotEnoughStartedMembers);
                    }
                    if strict && started_voters(Some(*id)) < quorum(voters.len() - 1) {
                        return Err(EtcdError::NotEnoughStartedMembers);
                    }
                }
            }
            MemberRequest::Update { id, peer_urls } => {
                check_peer_urls(peer_urls)?;
                known(*id)?;
                if url_in_use(peer_urls, Some(*id)) {
                    return Err(EtcdError::PeerUrlExists);
                }
            }
            MemberRequest::Promote { id } => {
                known(*id)?;
                if voters.contains(id) {
                    return Err(EtcdError::MemberNotLearner);
                }
                // Only the leader knows how far a learner got (etcd forwards promote to
                // the leader; detcd answers "not leader" and the client retries there).
                if self.raw.raft.state != StateRole::Leader {
                    return Err(EtcdError::NotLeader);
                }
                let leader_match = self.raw.raft.raft_log.last_index();
                let learner_match = self.raw.raft.prs().get(*id).map_or(0, |p| p.matched);
                if learner_match * 100 < leader_match * LEARNER_READY_PERCENT {
                    return Err(EtcdError::LearnerNotReady);
                }
                if strict && started_voters(None) < quorum(voters.len() + 1) {
                    return Err(EtcdError::NotEnoughStartedMembers);
                }
            }
        }
        Ok(())
    }

    /// A fresh member id: random (from the member's seeded generator) mixed with the
    /// peer URLs, never 0 and never one the cluster has or had.
    fn new_member_id(&mut self, peer_urls: &[String]) -> u64 {
        let mut hasher = crate::digest::Fnv64::default();
        for url in peer_urls {
            hasher.update(url.as_bytes()).update(&[0]);
        }
        let urls_hash = hasher.finish();
        loop {
            let candidate = urls_hash ^ self.rng.gen::<u64>();
            let taken = self.state.members().contains_key(&candidate)
                || self.state.removed_members().contains(&candidate)
                || self.raw.raft.prs().conf().voters().contains(candidate)
                || self.raw.raft.prs().conf().learners().contains(&candidate);
            if candidate != 0 && !taken {
                return candidate;
            }
        }
    }

    /// Proposes an add, remove or promote (already checked) as a raft configuration
    /// change; the client is answered when it is applied.
    pub(super) fn propose_member_change(&mut self, pending: PendingRequest) {
        let Request::Member(request) = &pending.request else { panic!("not a membership change: {:?}", pending.request) };
        assert!(self.proposals_held.is_none(), "a membership change between raft's ready() and advance()");
        if self.raw.raft.leader_id == raft::INVALID_ID {
            pending.fail(EtcdError::NoLeader);
            return;
        }
        if self.raw.raft.has_pending_conf() {
            // raft takes one configuration change at a time.
            pending.fail(EtcdError::Unhealthy);
            return;
        }
        let (change_type, member) = match request.clone() {
            MemberRequest::Add { peer_urls, is_learner } => {
                let id = self.new_member_id(&peer_urls);
                let change_type = if is_learner { ConfChangeType::AddLearnerNode } else { ConfChangeType::AddNode };
                (change_type, Member { id, peer_ur_ls: peer_urls, is_learner, ..Member::default() })
            }
            MemberRequest::Remove { id } => (ConfChangeType::RemoveNode, Member { id, ..Member::default() }),
            MemberRequest::Promote { id } => {
                let peer_urls = self.state.members().get(&id).map(|m| m.peer_urls.clone()).unwrap_or_default();
                (ConfChangeType::AddNode, Member { id, peer_ur_ls: peer_urls, ..Member::default() })
            }
            MemberRequest::Update { .. } => panic!("an update is a normal request, not a configuration change"),
        };
        let request_id = self.proposals.new_id(&mut self.rng);
        let context = MemberChange { proposer: self.config.member_id, request_id, member: Some(member.clone()) };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = member.id;
        let mut change = ConfChangeV2::default();
        change.set_changes(vec![single].into());
        change.set_context(context.encode_to_vec().into());
        match self.raw.propose_conf_change(Vec::new(), change) {
            Ok(()) => self.proposals.insert(request_id, pending),
            Err(raft::Error::ProposalDropped) if self.raw.raft.state == StateRole::Leader => pending.fail(EtcdError::Unhealthy),
            Err(_) => pending.fail(EtcdError::NoLeader),
        }
    }

    /// Applies a committed configuration change entry (v1 or v2 bytes).
    pub(super) fn apply_conf_change_entry(&mut self, index: u64, data: &[u8], v2: bool) -> Result<(), FatalError> {
        let change = if v2 {
            let mut change = ConfChangeV2::default();
            change.merge_from_bytes(data).map_err(|e| FatalError::Raft(e.to_string()))?;
            change
        } else {
            let mut change = ConfChange::default();
            change.merge_from_bytes(data).map_err(|e| FatalError::Raft(e.to_string()))?;
            // A v1 change as the one-change v2 it is.
            let mut single = ConfChangeSingle::default();
            single.set_change_type(change.get_change_type());
            single.node_id = change.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.set_changes(vec![single].into());
            v2.set_context(change.get_context().to_vec().into());
            v2
        };
        let context = MemberChange::decode(change.get_context()).ok();
        let answer_to = context.as_ref().filter(|c| c.proposer == self.config.member_id).map(|c| c.request_id);
        let member = context.and_then(|c| c.member).unwrap_or_default();
        let learners_before = self.learners();
        // Work out the table changes first: a change raft or the table cannot take
        // changes nothing, on every member alike (they all see the same state).
        let mut table_changes = Vec::new();
        for single in change.get_changes() {
            let id = single.node_id;
            let table_change = match single.get_change_type() {
                ConfChangeType::AddNode if learners_before.contains(&id) => MemberTableChange::Promoted { id },
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if self.state.removed_members().contains(&id) || member.id != id {
                        table_changes.clear();
                        break;
                    }
                    MemberTableChange::Added { id, peer_urls: member.peer_ur_ls.clone() }
                }
                ConfChangeType::RemoveNode => MemberTableChange::Removed { id },
            };
            table_changes.push(table_change);
        }
        let refused = table_changes.len() != change.get_changes().len() && !change.get_changes().is_empty();
        let conf_state = if refused { None } else { self.raw.apply_conf_change(&change).ok() };
        let Some(conf_state) = conf_state else {
            self.invalid_entries_applied += 1;
            if let Some(pending) = answer_to.and_then(|id| self.proposals.remove(id)) {
                pending.fail(EtcdError::Unhealthy);
            }
            return Ok(());
        };
        self.storage.set_conf_state(conf_state.clone());
        for table_change in &table_changes {
            self.state.apply_member_change(table_change);
        }
        self.tell_transport_peers();
        let (mut voters, mut learners) = (conf_state.get_voters().to_vec(), conf_state.get_learners().to_vec());
        voters.sort_unstable();
        learners.sort_unstable();
        self.observe(NodeEvent::ConfChanged { index, voters, learners });
        if let Some(pending) = answer_to.and_then(|id| self.proposals.remove(id)) {
            // A removed member is in the table no more: answered as the change named it.
            // Answered once the commit index covering it is durable (`handle_ready`, step
            // 5): an operator stops a removed member once told, and this member may need
            // its vote again if a power loss takes that commit index.
            let changed = if self.state.members().contains_key(&member.id) { self.listed_member(member.id, &self.learners()) } else { member };
            self.member_answers_unsynced.push((pending.responder, Response::Member(changed)));
        }
        if table_changes.contains(&MemberTableChange::Removed { id: self.config.member_id }) {
            self.leave();
        }
        Ok(())
    }

    /// This member applied its own removal: it answers no client any more and stops
    /// once a voter of the configuration after the removal says it knows.
    fn leave(&mut self) {
        if self.leaving_since_tick.is_some() {
            return;
        }
        self.leaving_since_tick = Some(self.ticks);
        // Their outcome is unknown: entries proposed may still commit without us.
        self.proposals.fail_all(EtcdError::Stopped);
        self.reads.fail_all(EtcdError::Stopped);
        self.keep_alives_forwarded.fail_all(EtcdError::Stopped);
        if self.raw.raft.state == StateRole::Leader {
            // No message here: raft-rs forbids a non-leader's messages between a Ready
            // and its advance.
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    /// Whether this member left the cluster (applied its own removal).
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving_since_tick.is_some()
    }

    /// A removed member asks the members of its last configuration, every
    /// [`REMOVED_MEMBER_PROBE_INTERVAL_TICKS`], whether they know it was removed.
    pub(super) fn probe_while_leaving(&mut self) {
        if self.leaving_since_tick.is_none() || self.ticks % REMOVED_MEMBER_PROBE_INTERVAL_TICKS != 0 {
            return;
        }
        let own_id = self.config.member_id;
        let probes: Vec<raft::eraftpb::Message> =
            self.voters().union(&self.learners()).filter(|id| **id != own_id).map(|id| membership_probe(own_id, *id)).collect();
        // Lost probes are asked again at the next interval.
        let _ = self.env.transport.send(probes);
    }

    /// Whether a voter of the configuration after this member's removal has the
    /// removal's commit durable: this member must stop now.
    pub(super) fn must_stop_removed(&self) -> bool {
        #[cfg(madsim)]
        if self.planted(super::PlantedBug::RemovedLeaderLeavesWithoutSuccessor)
            && self.leaving_since_tick.is_some_and(|since| self.ticks >= since + super::planted::ETCD_REMOVED_MEMBER_STOP_DELAY_TICKS)
        {
            return true;
        }
        // A notice counts from a voter of the configuration after the removal: it will
        // lead (or vote) without this member. A learner's does not (grow-and-shrink seed
        // 6746: a removed leader heard it from the learner and stopped, while the only
        // voter left had not learned the removal was committed and needed its vote).
        // (Asked at every Ready: the configuration is looked at only once a peer told.)
        let notices = self.env.transport.removal_notices();
        !notices.is_empty() && {
            let voters = self.voters();
            notices.iter().any(|id| voters.contains(id))
        }
    }

    /// One member as etcd lists it: what the member table holds (a member the table
    /// lacks — only before a joining member's first snapshot, or in a data dir older
    /// than the table — shows its `--initial-cluster` peer URLs and no name, as etcd
    /// shows an unstarted member).
    fn listed_member(&self, id: u64, learners: &BTreeSet<u64>) -> Member {
        match self.state.members().get(&id) {
            Some(attributes) => Member {
                id,
                name: attributes.name.clone(),
                peer_ur_ls: attributes.peer_urls.clone(),
                client_ur_ls: attributes.client_urls.clone(),
                is_learner: learners.contains(&id),
            },
            None => Member {
                id,
                peer_ur_ls: self.config.initial_peer_urls.get(&id).cloned().unwrap_or_default(),
                is_learner: learners.contains(&id),
                ..Member::default()
            },
        }
    }

    /// etcd's MemberList: every voter and learner of the current configuration, in id
    /// order.
    pub fn member_list(&self) -> Vec<Member> {
        let learners = self.learners();
        let ids: BTreeSet<u64> = self.voters().union(&learners).copied().collect();
        ids.iter().map(|id| self.listed_member(*id, &learners)).collect()
    }

    /// Hands the applied member table to the transport, with the removals whose commit
    /// is durable here.
    pub(super) fn tell_transport_peers(&mut self) {
        let learners = self.learners();
        let mut directory = PeerDirectory { removed: self.transport_removed.clone(), ..PeerDirectory::default() };
        // A member that joined a running cluster knows nobody until the leader's snapshot
        // arrives, except the members it was told of when it joined.
        let mut ids: BTreeSet<u64> = self.voters().union(&learners).copied().collect();
        if self.state.members().is_empty() {
            ids.extend(self.config.initial_peer_urls.keys());
        }
        for id in &ids {
            let listed = self.listed_member(*id, &learners);
            directory.members.insert(*id, (listed.peer_ur_ls, listed.is_learner));
        }
        self.env.transport.set_peers(&directory);
    }
}
