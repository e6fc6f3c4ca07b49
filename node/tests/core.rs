//! The member's core driven directly, with no runtime or network: time is an argument,
//! the disk is the in-memory twin that knows what is durable.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use detcd_node::{NodeConfig, NodeCore, Request, Response};
use detcd_node::env::mem_disk::MemDisk;
use detcd_node::env::{Env, InlineWorker, NoObserver, Role, RuntimeClock, Transport};
use detcd_node::errors::EtcdError;
use detcd_node::FatalError;
use detcd_node::pb::detcdpb::{internal_request, InternalRequest};
use detcd_node::pb::etcdserverpb::{PutRequest, RangeRequest};
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use tokio::sync::oneshot;

use common::Wire;

struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, _messages: Vec<Message>) -> Vec<u64> {
        Vec::new()
    }
}

struct Disks {
    wal: Arc<MemDisk>,
    data: Arc<MemDisk>,
}

const MEMBER: u64 = 7;

/// A member's world in tests: in-memory disks, the given transport, tokio's clock.
fn test_env(wal_disk: Arc<MemDisk>, data_disk: Arc<MemDisk>, transport: Arc<dyn Transport>, seed: u64) -> Env {
    Env { wal_disk, data_disk, transport, clock: Arc::new(RuntimeClock::new()), observer: Arc::new(NoObserver), worker: Arc::new(InlineWorker), seed }
}

fn open(disks: &Disks) -> NodeCore {
    let env = test_env(disks.wal.clone(), disks.data.clone(), Arc::new(NoPeers), 1);
    let mut config = NodeConfig::with_defaults(MEMBER, 99, vec![MEMBER]);
    config.snapshot_count = 5;
    config.snapshot_catchup_entries = 2;
    NodeCore::open(config, env).expect("open")
}

fn become_leader(core: &mut NodeCore) {
    for now_ms in 0..100 {
        core.tick(now_ms * 100);
        core.handle_ready().expect("ready");
        if core.status().role == Role::Leader {
            // Commit the leader's first entry of its term.
            core.handle_ready().expect("ready");
            return;
        }
    }
    panic!("a single member elects itself");
}

fn submit(core: &mut NodeCore, request: Request) -> Response {
    let (sender, mut receiver) = oneshot::channel();
    core.submit(request, sender, 0);
    core.issue_reads();
    for _ in 0..10 {
        core.handle_ready().expect("ready");
        if let Ok(result) = receiver.try_recv() {
            return result.expect("request succeeds");
        }
    }
    panic!("no answer");
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest { key: key.into(), value: value.as_bytes().to_vec().into(), ..Default::default() })
}

fn get(core: &mut NodeCore, key: &str) -> Option<Vec<u8>> {
    match submit(core, Request::Range(RangeRequest { key: key.into(), serializable: true, ..Default::default() })) {
        Response::Range(r) => r.kvs.first().map(|kv| kv.value.to_vec()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn acknowledged_writes_survive_power_loss_and_snapshots() {
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    let mut core = open(&disks);
    become_leader(&mut core);
    for i in 0..12 {
        match submit(&mut core, put(&format!("k{i}"), &format!("v{i}"))) {
            Response::Put(r) => assert_eq!(r.header.expect("header").revision, 2 + i),
            other => panic!("{other:?}"),
        }
    }
    let status = core.status();
    assert!(status.fsyncs <= status.entries_persisted, "never more than one fsync per persisted batch");
    drop(core);
    disks.wal.crash(|_, _| 0);
    disks.data.crash(|_, _| 0);
    let mut core = open(&disks);
    // Entries durable in the WAL but not yet known committed on disk are committed again
    // once the member leads (it is the whole cluster).
    become_leader(&mut core);
    assert_eq!(core.status().revision, 13, "every acknowledged write is back after replay");
    for i in 0..12 {
        assert_eq!(get(&mut core, &format!("k{i}")), Some(format!("v{i}").into_bytes()));
    }
    assert!(disks.data.files().iter().any(|(name, _)| name.starts_with("snap/")), "snapshot-count 5 made snapshots");
}

#[test]
fn a_proposal_delivered_twice_is_applied_once() {
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    let mut core = open(&disks);
    become_leader(&mut core);
    let request = InternalRequest {
        proposer: 12345,
        request_id: 42,
        op: Some(internal_request::Op::Put(PutRequest { key: "k".into(), value: "once".into(), ..Default::default() })),
        auth: None,
    };
    let mut entry = Entry::default();
    entry.data = request.encode_to_vec().into();
    let mut proposal = Message::default();
    proposal.set_msg_type(MessageType::MsgPropose);
    proposal.from = 12345;
    proposal.to = MEMBER;
    proposal.set_entries(vec![entry].into());
    let before = core.status().revision;
    core.step(proposal.clone());
    core.step(proposal);
    for _ in 0..5 {
        core.handle_ready().expect("ready");
    }
    assert_eq!(core.status().revision, before + 1, "two copies of one request change the store once");
}


struct Member {
    core: NodeCore,
    wire: Arc<Wire>,
}

/// Members 1..=count of one cluster, each with its own wire; the test pumps messages.
fn open_cluster(count: u64, configure: impl Fn(&mut NodeConfig)) -> BTreeMap<u64, Member> {
    open_cluster_on(None, count, configure)
}

/// [`open_cluster`], every member reading `clock` if given (tokio's otherwise).
fn open_cluster_on(clock: Option<Arc<ManualClock>>, count: u64, configure: impl Fn(&mut NodeConfig)) -> BTreeMap<u64, Member> {
    let voters: Vec<u64> = (1..=count).collect();
    let mut members = BTreeMap::new();
    for id in 1..=count {
        let wire = Arc::new(Wire::default());
        let mut env = test_env(Arc::new(MemDisk::new()), Arc::new(MemDisk::new()), wire.clone(), id);
        if let Some(clock) = &clock {
            env.clock = clock.clone();
        }
        let mut config = NodeConfig::with_defaults(id, 99, voters.clone());
        configure(&mut config);
        members.insert(id, Member { core: NodeCore::open(config, env).expect("open"), wire });
    }
    members
}

/// One round: every member handles its Ready, then every message sent is delivered
/// unless `deliver` says no. Returns the messages dropped.
fn pump(members: &mut BTreeMap<u64, Member>, mut deliver: impl FnMut(&Message) -> bool) -> Vec<Message> {
    let mut in_flight = Vec::new();
    for member in members.values_mut() {
        member.core.issue_reads();
        member.core.handle_ready().expect("ready");
        in_flight.extend(member.wire.take());
    }
    let mut dropped = Vec::new();
    for message in in_flight {
        match members.get_mut(&message.to) {
            Some(member) if deliver(&message) => member.core.step(message),
            _ => dropped.push(message),
        }
    }
    dropped
}

fn tick_all(members: &mut BTreeMap<u64, Member>, now_ms: u64) {
    for member in members.values_mut() {
        member.core.tick(now_ms);
    }
}

fn leader_of(members: &BTreeMap<u64, Member>) -> Option<u64> {
    members.values().map(|m| m.core.status()).find(|s| s.role == Role::Leader).map(|s| s.member_id)
}

fn elect(members: &mut BTreeMap<u64, Member>, candidate: u64) {
    members.get_mut(&candidate).expect("candidate").core.campaign();
    for round in 0..50 {
        pump(members, |_| true);
        if leader_of(members) == Some(candidate) && round > 5 {
            return;
        }
    }
    panic!("member {candidate} was not elected");
}

/// A follower that refuses its vote to a higher-term candidate whose log is behind keeps
/// its election timer running (raft §5.2) and campaigns on time. raft-rs restarts the
/// timer on every higher term: a member behind, campaigning again and again without
/// pre-vote, kept the up-to-date member of a cluster of two from ever campaigning
/// (simulator, grow-and-shrink seed 6033).
#[test]
fn a_refused_vote_does_not_restart_the_followers_election_timer() {
    let mut members = open_cluster(2, |config| config.pre_vote = false);
    let election_tick = members[&2].core.config().election_tick() as u64;
    elect(&mut members, 2);
    // An entry member 1 never receives: member 2's log is ahead of member 1's.
    let (sender, _receiver) = oneshot::channel();
    members.get_mut(&2).expect("leader").core.submit(put("k", "v"), sender, 0);
    pump(&mut members, |_| false);
    // Member 2 hears from nobody: a leader checking its quorum steps down after an
    // election timeout, its timer restarted.
    let leader = members.get_mut(&2).expect("leader");
    for tick in 0..10 * election_tick {
        leader.core.tick(tick);
        leader.core.handle_ready().expect("ready");
        if leader.core.status().role == Role::Follower {
            break;
        }
    }
    let stepped_down = members[&2].core.status();
    assert_eq!((stepped_down.role, stepped_down.leader_id), (Role::Follower, 0));
    let _ = members.get_mut(&2).expect("member 2").wire.take();
    // Nearly an election timeout passes on member 2 (no campaign yet: its drawn timeout
    // is at least the election timeout).
    let follower = members.get_mut(&2).expect("member 2");
    for tick in 0..election_tick - 1 {
        follower.core.tick(tick);
        follower.core.handle_ready().expect("ready");
    }
    assert_eq!(members[&2].core.status().role, Role::Follower);
    let _ = members.get_mut(&2).expect("member 2").wire.take();
    // Member 1 campaigns in a higher term; member 2 refuses (its log is longer).
    members.get_mut(&1).expect("member 1").core.campaign();
    let term_before = members[&2].core.status().term;
    pump(&mut members, |message| message.to == 2 && message.get_msg_type() == MessageType::MsgRequestVote);
    let refused = members[&2].core.status();
    assert!(refused.term > term_before, "member 2 saw the higher term");
    assert_eq!(refused.role, Role::Follower);
    // An election timeout and one tick more: member 2's timer, not restarted, has run
    // past any timeout it could have drawn (under twice the election timeout).
    let follower = members.get_mut(&2).expect("member 2");
    for tick in 0..election_tick + 1 {
        follower.core.tick(tick);
        follower.core.handle_ready().expect("ready");
    }
    let after = members[&2].core.status();
    assert!(after.term > refused.term && after.role == Role::Candidate, "member 2 did not campaign on time: {after:?}");
}

#[test]
fn a_read_index_answer_meant_for_another_incarnation_is_ignored() {
    let mut members = open_cluster(3, |_| {});
    elect(&mut members, 1);
    // A linearizable read on follower 2: it asks the leader for a read index.
    let (sender, mut receiver) = oneshot::channel();
    let follower = members.get_mut(&2).expect("follower");
    follower.core.submit(Request::Range(RangeRequest { key: "k".into(), ..Default::default() }), sender, 0);
    follower.core.issue_reads();
    follower.core.handle_ready().expect("ready");
    let asked: Vec<Message> = follower.wire.take();
    let request = asked.iter().find(|m| m.get_msg_type() == MessageType::MsgReadIndex).expect("read index asked");
    let term = follower.core.status().term;
    // A late answer from the leader to a read of an earlier incarnation of this member,
    // whose contexts were a counter starting at 1.
    let mut stale = Message::default();
    stale.set_msg_type(MessageType::MsgReadIndexResp);
    stale.from = 1;
    stale.to = 2;
    stale.term = term;
    stale.index = 0;
    let mut ctx = Entry::default();
    ctx.data = 1u64.to_le_bytes().to_vec().into();
    stale.set_entries(vec![ctx].into());
    follower.core.step(stale);
    follower.core.handle_ready().expect("ready");
    assert!(receiver.try_recv().is_err(), "a read was completed by an answer this incarnation never asked for");
    // The real answer completes it.
    let mut answer = stale_answer_to(request, term);
    answer.index = follower.core.status().applied_index;
    follower.core.step(answer);
    follower.core.handle_ready().expect("ready");
    assert!(receiver.try_recv().expect("answered").is_ok());
}

/// A follower's read-index request delivered again after the leader answered it must not
/// reach raft: late acknowledgements of its first heartbeat round would then answer every
/// read queued since — here a read of a leader cut off from the others, never confirmed.
#[test]
fn a_read_index_request_delivered_again_does_not_confirm_later_reads() {
    let mut members = open_cluster(3, |_| {});
    elect(&mut members, 1);
    // Follower 2 reads; the leader answers it after a heartbeat round with its context.
    let (sender, mut receiver) = oneshot::channel();
    let range = || Request::Range(RangeRequest { key: "k".into(), ..Default::default() });
    members.get_mut(&2).expect("follower").core.submit(range(), sender, 0);
    let mut seen = Vec::new();
    for _ in 0..5 {
        pump(&mut members, |m| {
            seen.push(m.clone());
            true
        });
    }
    assert!(receiver.try_recv().expect("the follower's read answered").is_ok());
    let request = seen.iter().find(|m| m.get_msg_type() == MessageType::MsgReadIndex && m.to == 1).expect("asked").clone();
    let late_ack = seen
        .iter()
        .find(|m| m.get_msg_type() == MessageType::MsgHeartbeatResponse && m.from == 3 && m.context == request.entries[0].data)
        .expect("acknowledged")
        .clone();
    // The leader is cut off from both followers; a read arrives at it.
    let (sender, mut receiver) = oneshot::channel();
    members.get_mut(&1).expect("leader").core.submit(range(), sender, 0);
    pump(&mut members, |_| false);
    // The follower's old request and a late acknowledgement of its round arrive again.
    let leader = members.get_mut(&1).expect("leader");
    leader.core.step(request);
    leader.core.step(late_ack);
    leader.core.handle_ready().expect("ready");
    assert!(receiver.try_recv().is_err(), "a read was answered without a quorum confirming the leader after it arrived");
    assert_eq!(leader.core.status().peer_reads_refused, 1);
}

/// The client proposals of one loop turn reach raft as one message: a follower forwards
/// them in one proposal, and the leader replicates them in one append to each follower.
#[test]
fn a_loop_turns_proposals_travel_as_one_message() {
    let mut members = open_cluster(3, |_| {});
    elect(&mut members, 1);
    let mut answers = Vec::new();
    let follower = members.get_mut(&2).expect("follower");
    for n in 0..3 {
        let (sender, receiver) = oneshot::channel();
        follower.core.submit(put(&format!("k{n}"), "v"), sender, 0);
        answers.push(receiver);
    }
    follower.core.handle_ready().expect("ready");
    let forwarded: Vec<Message> = follower.wire.take().into_iter().filter(|m| m.get_msg_type() == MessageType::MsgPropose).collect();
    assert_eq!(forwarded.len(), 1, "one forward for the turn's proposals");
    assert_eq!(forwarded[0].entries.len(), 3);
    let leader = members.get_mut(&1).expect("leader");
    leader.core.step(forwarded[0].clone());
    leader.core.handle_ready().expect("ready");
    let appends: Vec<Message> =
        leader.wire.take().into_iter().filter(|m| m.get_msg_type() == MessageType::MsgAppend && !m.entries.is_empty()).collect();
    assert_eq!(appends.len(), 2, "one append to each follower");
    assert!(appends.iter().all(|m| m.entries.len() == 3));
    for append in appends {
        members.get_mut(&append.to).expect("follower").core.step(append);
    }
    for _ in 0..5 {
        pump(&mut members, |_| true);
    }
    assert!(answers.iter_mut().all(|r| r.try_recv().expect("answered").is_ok()));
}

fn stale_answer_to(request: &Message, term: u64) -> Message {
    let mut answer = Message::default();
    answer.set_msg_type(MessageType::MsgReadIndexResp);
    answer.from = request.to;
    answer.to = request.from;
    answer.term = term;
    answer.set_entries(request.entries.clone());
    answer
}

#[test]
fn a_follower_that_missed_its_snapshot_catches_up_under_the_same_leader() {
    let mut members = open_cluster(3, |config| {
        config.snapshot_count = 5;
        config.snapshot_catchup_entries = 2;
    });
    elect(&mut members, 1);
    let term = members[&1].core.status().term;
    // Member 3 is cut off while the log moves past what the leader keeps.
    let cut_off = |m: &Message| m.to != 3 && m.from != 3;
    for i in 0..20 {
        let (sender, _receiver) = oneshot::channel();
        members.get_mut(&1).expect("leader").core.submit(put(&format!("k{i}"), "v"), sender, 0);
        for _ in 0..3 {
            pump(&mut members, cut_off);
        }
    }
    let leader_applied = members[&1].core.status().applied_index;
    assert!(members[&3].core.status().applied_index < leader_applied - 5);
    // Back on the network, but the first snapshot sent to it is lost.
    let mut snapshot_lost = false;
    for round in 0..300 {
        if round % 3 == 0 {
            tick_all(&mut members, round * 100);
        }
        pump(&mut members, |m| {
            if m.get_msg_type() == MessageType::MsgSnapshot && !snapshot_lost {
                snapshot_lost = true;
                return false;
            }
            true
        });
        if members[&3].core.status().applied_index >= leader_applied {
            break;
        }
    }
    assert!(snapshot_lost, "the leader sent a snapshot");
    assert_eq!(members[&1].core.status().term, term, "the same leader throughout");
    assert!(
        members[&3].core.status().applied_index >= leader_applied,
        "the follower never caught up: applied {} of {leader_applied}",
        members[&3].core.status().applied_index
    );
}

#[test]
fn a_bad_proposal_from_a_peer_is_refused_before_raft() {
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    let mut core = open(&disks);
    become_leader(&mut core);
    let before = core.status();
    for data in [b"not a request".to_vec(), InternalRequest { proposer: 5, request_id: 1, op: None, auth: None }.encode_to_vec()] {
        let mut entry = Entry::default();
        entry.data = data.into();
        let mut proposal = Message::default();
        proposal.set_msg_type(MessageType::MsgPropose);
        proposal.from = 12345;
        proposal.to = MEMBER;
        proposal.set_entries(vec![entry].into());
        core.step(proposal);
        for _ in 0..5 {
            core.handle_ready().expect("ready");
        }
    }
    let after = core.status();
    assert_eq!(after.peer_messages_refused, 2);
    assert_eq!(after.commit_index, before.commit_index, "nothing reached the log");
    // Even if such bytes were committed (a peer from before validation existed), apply
    // skips them the same way on every member instead of panicking.
    let mut state = detcd_node::StateMachine::new();
    let applied = state.apply(bytes::Bytes::from_static(b"not a request"));
    assert!(applied.invalid && applied.answer.is_none());
    assert_eq!(state, detcd_node::StateMachine::new());
}

#[test]
fn pending_requests_are_bounded_in_bytes() {
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    let env = test_env(disks.wal.clone(), disks.data.clone(), Arc::new(NoPeers), 1);
    let mut config = NodeConfig::with_defaults(MEMBER, 99, vec![MEMBER]);
    config.pending_request_bytes_max = 1000;
    let mut core = NodeCore::open(config, env).expect("open");
    become_leader(&mut core);
    let big = "x".repeat(600);
    let (first, mut first_answer) = oneshot::channel();
    core.submit(put("a", &big), first, 0);
    let (second, mut second_answer) = oneshot::channel();
    core.submit(put("b", &big), second, 0);
    assert_eq!(second_answer.try_recv().expect("refused at once"), Err(EtcdError::TooManyRequests));
    for _ in 0..5 {
        core.handle_ready().expect("ready");
    }
    assert!(first_answer.try_recv().expect("answered").is_ok());
    // Once the first is answered its bytes are free again.
    assert!(matches!(submit(&mut core, put("c", &big)), Response::Put(_)));
}

#[test]
fn uncommitted_proposals_are_bounded_in_bytes() {
    let mut members = open_cluster(3, |config| config.uncommitted_bytes_max = 2 * 1024 * 1024);
    elect(&mut members, 1);
    // The leader loses its followers: nothing commits, proposals pile up.
    let leader = &mut members.get_mut(&1).expect("leader").core;
    let mut refused = None;
    for i in 0..100 {
        let (sender, mut receiver) = oneshot::channel();
        leader.submit(put(&format!("k{i}"), &"v".repeat(100 * 1024)), sender, 0);
        leader.handle_ready().expect("ready");
        if let Ok(answer) = receiver.try_recv() {
            refused = Some((i, answer));
            break;
        }
    }
    let (at, answer) = refused.expect("raft refused proposals beyond the uncommitted limit");
    assert!(at < 40, "refused only after {at} proposals");
    assert_eq!(answer, Err(EtcdError::TooManyRequests));
}

#[test]
fn a_damaged_newest_snapshot_the_wal_no_longer_reaches_is_a_clean_error() {
    use detcd_node::storage::wal::Wal;
    use detcd_node::storage::{MemberMeta, SnapshotStore};
    // A member that installed a snapshot at index 10 from its leader (the WAL holds a
    // snapshot mark at 10 and entries after it) and still has an older one at 5. Now the
    // file of the newest is damaged: falling back to index 5 would need entries 6..10,
    // which are gone.
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    MemberMeta { cluster_id: 99, member_id: MEMBER, initial_voters: vec![MEMBER] }
        .save(disks.data.as_ref())
        .expect("meta");
    let files = SnapshotStore::new(disks.data.clone());
    for index in [5, 10] {
        let mut snapshot = raft::eraftpb::Snapshot::default();
        snapshot.set_data(detcd_node::StateMachine::new().encode().into());
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 1;
        snapshot.mut_metadata().mut_conf_state().set_voters(vec![MEMBER]);
        files.save(snapshot.get_metadata(), &snapshot.get_data(), detcd_node::storage::SnapshotWriter::Received).expect("save");
    }
    let (mut wal, _) = Wal::open(disks.wal.clone(), 0, 1 << 20).expect("wal");
    wal.append_snapshot_mark(10, 1).expect("mark");
    let mut entry = Entry::default();
    entry.index = 11;
    entry.term = 1;
    wal.append_entries(&[entry]).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let newest = disks.data.files().into_iter().map(|(name, _)| name).filter(|n| n.ends_with(".snap")).max().expect("snap");
    disks.data.corrupt_byte(&newest, 10);
    let env = test_env(disks.wal.clone(), disks.data.clone(), Arc::new(NoPeers), 1);
    match NodeCore::open(NodeConfig::with_defaults(MEMBER, 99, vec![MEMBER]), env) {
        Err(FatalError::Snapshot(detail)) => assert!(detail.contains("cannot recover"), "{detail}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started although entries 6..10 are gone"),
    }
}

/// A clock the test moves by hand.
#[derive(Default)]
struct ManualClock {
    now_ms: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl detcd_node::env::Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn sleep_ms(&self, _ms: u64) -> detcd_node::env::BoxFuture {
        Box::pin(std::future::pending())
    }
}

/// Ticks (without moving any clock) until the members left elect a leader, and lets it
/// handle the Ready that carries its role change. Its id.
fn elect_a_successor(members: &mut BTreeMap<u64, Member>) -> u64 {
    for _ in 0..100 {
        tick_all(members, 0);
        pump(members, |_| true);
        pump(members, |_| true);
        if let Some(leader) = leader_of(members) {
            // Until the new leader applied the first entry of its term (it acts on
            // leases only then).
            for _ in 0..5 {
                pump(members, |_| true);
            }
            return leader;
        }
    }
    panic!("no successor was elected");
}

fn lease_grant(id: i64, ttl: i64) -> Request {
    Request::LeaseGrant(detcd_node::pb::etcdserverpb::LeaseGrantRequest { id, ttl })
}

fn leased_put(key: &str, lease: i64) -> Request {
    Request::Put(PutRequest { key: key.into(), value: "v".into(), lease, ..Default::default() })
}

/// Ticks the member at its clock's time `ticks` times, handling Ready after each.
fn tick_at(core: &mut NodeCore, clock: &ManualClock, ticks: u64) {
    use detcd_node::env::Clock;
    for _ in 0..ticks {
        core.tick(clock.now_ms());
        core.handle_ready().expect("ready");
        core.handle_ready().expect("ready");
    }
}

#[test]
fn a_lease_expires_on_the_leaders_clock_and_its_keys_go_with_it() {
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    let clock = Arc::new(ManualClock::default());
    let mut env = test_env(disks.wal.clone(), disks.data.clone(), Arc::new(NoPeers), 1);
    env.clock = clock.clone();
    let mut core = NodeCore::open(NodeConfig::with_defaults(MEMBER, 99, vec![MEMBER]), env).expect("open");
    become_leader(&mut core);
    // TTL 1 is raised to the minimum (1.5 election timeouts = 2 s); id 0 is chosen.
    let id = match submit(&mut core, lease_grant(0, 1)) {
        Response::LeaseGrant(r) => {
            assert_eq!(r.ttl, 2);
            assert!(r.id > 0);
            r.id
        }
        other => panic!("{other:?}"),
    };
    let id5 = match submit(&mut core, lease_grant(77, 5)) {
        Response::LeaseGrant(r) => r.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(id5, 77);
    submit(&mut core, leased_put("short", id));
    submit(&mut core, leased_put("long1", id5));
    submit(&mut core, leased_put("long2", id5));
    clock.advance(1_500);
    tick_at(&mut core, &clock, 1);
    assert!(get(&mut core, "short").is_some(), "not yet expired");
    clock.advance(600);
    tick_at(&mut core, &clock, 1);
    assert!(get(&mut core, "short").is_none(), "expired after 2 s on the leader's clock");
    // A keep-alive at 4 s pushes lease 77 to 9 s.
    clock.advance(1_900);
    match submit(&mut core, Request::LeaseKeepAlive(detcd_node::pb::etcdserverpb::LeaseKeepAliveRequest { id: 77 })) {
        Response::LeaseKeepAlive(r) => assert_eq!(r.ttl, 5),
        other => panic!("{other:?}"),
    }
    clock.advance(4_000);
    tick_at(&mut core, &clock, 1);
    assert!(get(&mut core, "long1").is_some(), "renewed at 4 s: alive at 8 s");
    let revision = core.status().revision;
    clock.advance(1_100);
    tick_at(&mut core, &clock, 1);
    assert!(get(&mut core, "long1").is_none() && get(&mut core, "long2").is_none());
    assert_eq!(core.status().revision, revision + 1, "both keys went in one revision");
    match submit(&mut core, Request::LeaseTimeToLive(detcd_node::pb::etcdserverpb::LeaseTimeToLiveRequest { id: 77, keys: true })) {
        Response::LeaseTimeToLive(r) => assert_eq!(r.ttl, -1, "gone"),
        other => panic!("{other:?}"),
    }
    // Unknown leases and huge TTLs, as etcd answers.
    let (sender, mut receiver) = oneshot::channel();
    core.submit(lease_grant(5, 9_000_000_001), sender, 0);
    assert_eq!(receiver.try_recv().expect("refused at once"), Err(EtcdError::LeaseTtlTooLarge));
    match submit(&mut core, Request::LeaseKeepAlive(detcd_node::pb::etcdserverpb::LeaseKeepAliveRequest { id: 12345 })) {
        Response::LeaseKeepAlive(r) => assert_eq!(r.ttl, 0, "an unknown lease keeps alive with TTL 0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_leader_extends_every_lease_by_the_election_timeout() {
    let clock = Arc::new(ManualClock::default());
    let mut members = open_cluster_on(Some(clock.clone()), 3, |_| {});
    elect(&mut members, 1);
    let (sender, _answer) = oneshot::channel();
    members.get_mut(&1).expect("leader").core.submit(lease_grant(9, 3), sender, 0);
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    assert!(members.values().all(|m| m.core.state().mvcc().leases().contains(9)), "granted everywhere");
    // At 2 s the leader dies; member 2 takes over.
    clock.advance(2_000);
    members.remove(&1);
    let leader = elect_a_successor(&mut members);
    // etcd's promote: deadline = 2 s + 1 s (election timeout) + 3 s TTL = 6 s, not 5 s.
    clock.advance(3_500);
    tick_all(&mut members, 0);
    for _ in 0..5 {
        pump(&mut members, |_| true);
    }
    assert!(members[&leader].core.state().mvcc().leases().contains(9), "alive at 5.5 s");
    clock.advance(600);
    tick_all(&mut members, 0);
    for _ in 0..5 {
        pump(&mut members, |_| true);
    }
    let status = members[&leader].core.status();
    assert!(!members[&leader].core.state().mvcc().leases().contains(9), "expired after 6 s: {status:?}");
}

#[test]
fn with_checkpoints_a_new_leader_continues_from_the_remaining_ttl() {
    let clock = Arc::new(ManualClock::default());
    let mut members = open_cluster_on(Some(clock.clone()), 3, |config| {
        config.lease_checkpoint_enabled = true;
        config.lease_checkpoint_interval_ms = 1_000;
    });
    elect(&mut members, 1);
    let (sender, _answer) = oneshot::channel();
    members.get_mut(&1).expect("leader").core.submit(lease_grant(9, 20), sender, 0);
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    // 12 s pass; the leader checkpoints about 8 s remaining.
    for _ in 0..12 {
        clock.advance(1_000);
        tick_all(&mut members, 0);
        for _ in 0..3 {
            pump(&mut members, |_| true);
        }
    }
    let checkpointed = members[&2].core.state().mvcc().leases().get(9).expect("lease").checkpoint_remaining_secs;
    assert!((7..=9).contains(&checkpointed), "checkpoint replicated: {checkpointed} s remaining");
    // The leader dies; the new one gives the lease its remaining 8 s (+1 s extension),
    // not a fresh 20 s.
    members.remove(&1);
    let leader = elect_a_successor(&mut members);
    clock.advance(11_000);
    tick_all(&mut members, 0);
    for _ in 0..5 {
        pump(&mut members, |_| true);
    }
    assert!(!members[&leader].core.state().mvcc().leases().contains(9), "expired from its checkpointed remaining TTL");
}

#[test]
fn a_nospace_alarm_raised_on_one_member_is_respected_by_every_member() {
    let mut members = open_cluster(3, |config| config.quota_backend_bytes = 4096);
    elect(&mut members, 1);
    // Member 2 (a follower) sees the quota passed: it refuses and raises the alarm.
    let (sender, mut answer) = oneshot::channel();
    members.get_mut(&2).expect("follower").core.submit(put("big", &"x".repeat(5000)), sender, 0);
    assert_eq!(answer.try_recv().expect("refused at once"), Err(EtcdError::NoSpace));
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    for member in members.values() {
        assert_eq!(member.core.status().alarms, vec![(2, 1)], "member {} knows the alarm", member.core.member_id());
    }
    // A small put, well within the quota, is refused at apply on every member alike.
    let (sender, mut answer) = oneshot::channel();
    members.get_mut(&1).expect("leader").core.submit(put("small", "v"), sender, 0);
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    assert_eq!(answer.try_recv().expect("answered"), Err(EtcdError::NoSpace));
    assert!(members.values().all(|m| m.core.status().revision == 1), "nothing was written anywhere");
    // Deletes still go through.
    let (sender, mut answer) = oneshot::channel();
    members.get_mut(&1).expect("leader").core.submit(
        Request::DeleteRange(detcd_node::pb::etcdserverpb::DeleteRangeRequest { key: "small".into(), ..Default::default() }),
        sender,
        0,
    );
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    assert!(answer.try_recv().expect("answered").is_ok());
}

#[test]
fn the_leader_auto_compacts_on_its_clock_and_every_member_follows() {
    use detcd_node::consensus::auto_compaction::AutoCompaction;
    let clock = Arc::new(ManualClock::default());
    let mut members = open_cluster_on(Some(clock.clone()), 3, |config| {
        config.auto_compaction = AutoCompaction::Revision { retain: 5, interval_ms: 1_000 };
    });
    elect(&mut members, 1);
    for i in 0..20 {
        let (sender, _answer) = oneshot::channel();
        members.get_mut(&1).expect("leader").core.submit(put(&format!("a{i}"), "v"), sender, 0);
        pump(&mut members, |_| true);
    }
    for _ in 0..5 {
        pump(&mut members, |_| true);
    }
    clock.advance(1_100);
    tick_all(&mut members, 0);
    for _ in 0..5 {
        pump(&mut members, |_| true);
    }
    let current = members[&1].core.status().revision;
    assert_eq!(current, 21);
    for member in members.values() {
        assert_eq!(member.core.status().compact_revision, current - 5, "member {}", member.core.member_id());
    }
}

/// raft-rs takes no new entry between `ready()` and `advance()`. A leader serves the
/// reads its committed entries make servable before it syncs (step 0 of `handle_ready`),
/// and a keep-alive that waited for a read-index round is among those reads: when its
/// lease is already expiring it must go through raft — proposed only after `advance`
/// (raft-rs panicked otherwise: the simulator's move-leader seed 2475). Raft hands out
/// one committed entry per Ready here (two per `handle_ready`: step 0 and after
/// `advance`) while writes go on, so the leader's applied index trails its commit index, and the keep-alive's
/// read index — answered a few rounds later — is reached at a step 0 for every other
/// backlog size.
#[test]
fn a_keep_alive_served_with_a_readys_reads_is_proposed_after_raft_advanced() {
    use detcd_node::env::Clock;
    use detcd_node::pb::etcdserverpb::LeaseKeepAliveRequest;
    for backlog in 8..=11u64 {
        let clock = Arc::new(ManualClock::default());
        let mut members = open_cluster_on(Some(clock.clone()), 3, |config| config.tunables.raft_committed_bytes_per_ready_max = 1);
        elect(&mut members, 1);
        let (sender, _granted) = oneshot::channel();
        members.get_mut(&1).expect("leader").core.submit(lease_grant(9, 2), sender, 0);
        for _ in 0..10 {
            pump(&mut members, |_| true);
        }
        assert!(members[&1].core.state().mvcc().leases().contains(9), "granted (backlog {backlog})");
        // Long after the lease's TTL, with no read-index round since: the leader's
        // leadership is not confirmed recently, so a keep-alive waits for a round.
        clock.advance(10_000);
        let leader = &mut members.get_mut(&1).expect("leader").core;
        for n in 0..backlog {
            let (sender, _put) = oneshot::channel();
            leader.submit(put(&format!("k{n}"), "v"), sender, clock.now_ms());
        }
        // The puts commit (the followers acknowledge) but are applied one per Ready.
        pump(&mut members, |_| true);
        pump(&mut members, |_| true);
        let leader = &mut members.get_mut(&1).expect("leader").core;
        // The leader's clock passed the lease's deadline: it proposes the expiry...
        leader.tick(clock.now_ms());
        // ... and a keep-alive for it arrives, its read index ahead of what is applied.
        let (sender, mut renewed) = oneshot::channel();
        leader.submit(Request::LeaseKeepAlive(LeaseKeepAliveRequest { id: 9 }), sender, clock.now_ms());
        // Writes go on, so every Ready also carries new entries (raft checks what it
        // persisted against its log only for a Ready with entries).
        let mut answered = None;
        for round in 0..30 {
            let (sender, _put) = oneshot::channel();
            members.get_mut(&1).expect("leader").core.submit(put(&format!("w{round}"), "v"), sender, clock.now_ms());
            pump(&mut members, |_| true);
            if let Ok(answer) = renewed.try_recv() {
                answered = Some(answer);
                break;
            }
        }
        let answer = answered.unwrap_or_else(|| panic!("the keep-alive was answered (backlog {backlog})"));
        // The expiry was decided before the renewal: the lease is gone either way.
        match answer {
            Ok(Response::LeaseKeepAlive(r)) => assert_eq!(r.ttl, 0, "backlog {backlog}"),
            Err(e) => assert_eq!(e, EtcdError::LeaseNotFound, "backlog {backlog}"),
            Ok(other) => panic!("{other:?}"),
        }
        assert_eq!(leader_of(&members), Some(1), "the leader is still up (backlog {backlog})");
    }
}

/// A restarted member applies everything its WAL says is committed before it serves
/// anything, however small the batches raft hands out (`apply_committed_backlog`, what
/// the loop runs at start): one Ready alone would leave it answering serializable reads
/// from a state older than what it acknowledged.
#[test]
fn a_restarted_member_applies_its_whole_committed_backlog_before_serving() {
    let disks = Disks { wal: Arc::new(MemDisk::new()), data: Arc::new(MemDisk::new()) };
    let open_with_small_batches = |disks: &Disks| {
        let env = test_env(disks.wal.clone(), disks.data.clone(), Arc::new(NoPeers), 1);
        let mut config = NodeConfig::with_defaults(MEMBER, 99, vec![MEMBER]);
        config.tunables.raft_committed_bytes_per_ready_max = 1;
        NodeCore::open(config, env).expect("open")
    };
    let mut core = open_with_small_batches(&disks);
    become_leader(&mut core);
    for i in 0..20 {
        submit(&mut core, put(&format!("k{i}"), "v"));
    }
    let before = core.status();
    assert_eq!(before.revision, 21);
    drop(core);
    let mut one_ready = open_with_small_batches(&disks);
    one_ready.handle_ready().expect("ready");
    assert!(one_ready.status().revision < 21, "one Ready applies a batch only");
    drop(one_ready);
    let mut core = open_with_small_batches(&disks);
    core.apply_committed_backlog().expect("applied");
    let status = core.status();
    assert_eq!(status.revision, 21, "every acknowledged write before serving");
    assert_eq!(status.applied_index, status.commit_index);
    assert!(!core.has_committed_unapplied());
}

fn keep_alive(id: i64) -> Request {
    Request::LeaseKeepAlive(detcd_node::pb::etcdserverpb::LeaseKeepAliveRequest { id })
}

fn keep_alive_message(message: &Message) -> Option<detcd_node::consensus::keep_alive_forward::KeepAliveMessage> {
    detcd_node::consensus::keep_alive_forward::decode(message).map(|decoded| decoded.expect("decodes"))
}

/// A follower's keep-alive goes to the leader beside raft, as etcd's follower forwards
/// it over the peer port: renewed there without a log entry and answered with the
/// lease's TTL. A forward delivered again renews nothing (the leader declines it, and
/// nobody waits for that answer). A forward that was lost is sent again to the next
/// leader once one leads, and answered from there.
#[test]
fn a_followers_keep_alive_is_renewed_by_the_leader_without_a_log_entry() {
    use detcd_node::consensus::keep_alive_forward::KeepAliveMessage;
    let clock = Arc::new(ManualClock::default());
    let mut members = open_cluster_on(Some(clock.clone()), 3, |_| {});
    elect(&mut members, 1);
    let (sender, mut granted) = oneshot::channel();
    members.get_mut(&1).expect("leader").core.submit(lease_grant(9, 5), sender, 0);
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    assert!(granted.try_recv().is_ok_and(|answer| answer.is_ok()));
    let commit_index = members[&1].core.status().commit_index;

    let (sender, mut answered) = oneshot::channel();
    members.get_mut(&2).expect("follower").core.submit(keep_alive(9), sender, 0);
    let mut forwards = Vec::new();
    for _ in 0..10 {
        pump(&mut members, |message| {
            if matches!(keep_alive_message(message), Some(KeepAliveMessage::Forward(_))) {
                forwards.push(message.clone());
            }
            true
        });
    }
    match answered.try_recv().expect("answered").expect("renewed") {
        Response::LeaseKeepAlive(renewed) => {
            assert_eq!((renewed.id, renewed.ttl), (9, 5));
            assert_eq!(renewed.header.map(|h| h.member_id), Some(2), "answered by the follower");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(forwards.len(), 1, "{forwards:?}");
    assert_eq!(members[&1].core.status().commit_index, commit_index, "the renewal went through raft");

    // Delivered again: declined.
    members.get_mut(&1).expect("leader").core.step(forwards[0].clone());
    let sent = members[&1].wire.take();
    let answers: Vec<bool> = sent
        .iter()
        .filter_map(|m| match keep_alive_message(m) {
            Some(KeepAliveMessage::Answer(answer)) => Some(answer.renewed),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![false], "a forward delivered again was renewed");

    // Lost on its way (or a leader that does not know forwards): unanswered for an
    // election timeout, it is renewed through raft.
    let (sender, mut answered) = oneshot::channel();
    members.get_mut(&2).expect("follower").core.submit(keep_alive(9), sender, 0);
    let lost = pump(&mut members, |message| keep_alive_message(message).is_none());
    assert_eq!(lost.len(), 1, "{lost:?}");
    clock.advance(999);
    tick_all(&mut members, detcd_node::env::Clock::now_ms(&*clock));
    pump(&mut members, |_| true);
    assert!(answered.try_recv().is_err(), "answered before an election timeout passed");
    clock.advance(1);
    tick_all(&mut members, detcd_node::env::Clock::now_ms(&*clock));
    for _ in 0..10 {
        pump(&mut members, |_| true);
    }
    assert!(matches!(answered.try_recv(), Ok(Ok(Response::LeaseKeepAlive(ref r))) if r.ttl == 5), "never renewed through raft");
    assert!(members[&1].core.status().commit_index > commit_index, "the fallback renewal is a log entry");

    // Lost on its way, then the leader dies: the follower sends it to the next leader.
    let (sender, mut answered) = oneshot::channel();
    members.get_mut(&2).expect("follower").core.submit(keep_alive(9), sender, 0);
    let lost = pump(&mut members, |message| keep_alive_message(message).is_none());
    assert_eq!(lost.len(), 1, "{lost:?}");
    members.remove(&1);
    let leader = elect_a_successor(&mut members);
    for _ in 0..20 {
        tick_all(&mut members, 0);
        pump(&mut members, |_| true);
        if answered.try_recv().is_ok_and(|answer| matches!(answer, Ok(Response::LeaseKeepAlive(ref r)) if r.ttl == 5)) {
            return;
        }
    }
    panic!("the keep-alive lost on its way to the old leader was never renewed by member {leader}");
}
