//! Membership changes driven through the core directly (no runtime, no network): the
//! test delivers every message by hand, so each step is deterministic.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use detcd_node::apply::MemberRequest;
use detcd_node::env::mem_disk::{MemDisk, UnsyncedFate};
use detcd_node::env::{Env, InlineWorker, NoObserver, Role, RuntimeClock};
use detcd_node::errors::EtcdError;
use detcd_node::pb::etcdserverpb::{Member, PutRequest, RangeRequest};
use detcd_node::{FatalError, NodeConfig, NodeCore, Request, Response};
use tokio::sync::oneshot;

use common::Wire;


struct Running {
    core: NodeCore,
    wire: Arc<Wire>,
}

fn open_member(id: u64, voters: Vec<u64>) -> Running {
    open_member_on(id, voters, &(Arc::new(MemDisk::new()), Arc::new(MemDisk::new())), id)
}

/// A member on these disks (WAL, data): a new one, or one restarted from them (with
/// another `seed`, as every incarnation has: its request ids must not repeat).
fn open_member_on(id: u64, voters: Vec<u64>, disks: &(Arc<MemDisk>, Arc<MemDisk>), seed: u64) -> Running {
    let wire = Arc::new(Wire::default());
    let env = Env {
        wal_disk: disks.0.clone(),
        data_disk: disks.1.clone(),
        transport: wire.clone(),
        clock: Arc::new(RuntimeClock::new()),
        observer: Arc::new(NoObserver),
        worker: Arc::new(InlineWorker),
        seed,
    };
    let mut config = NodeConfig::with_defaults(id, 99, voters);
    config.snapshot_count = 1000;
    // A member counts as started (strict reconfiguration check) once it published this.
    config.name = format!("m{id}");
    config.peer_urls = vec![format!("http://m{id}:2380")];
    Running { core: NodeCore::open(config, env).expect("open"), wire }
}

/// One round: every member handles its Ready (a member that stops for having been
/// removed is taken out and named), then every message is delivered.
fn pump(members: &mut BTreeMap<u64, Running>) -> Vec<u64> {
    let mut in_flight = Vec::new();
    let mut stopped = Vec::new();
    for (id, member) in members.iter_mut() {
        member.core.issue_reads();
        match member.core.handle_ready() {
            Ok(()) => {}
            Err(FatalError::Removed) => stopped.push(*id),
            Err(other) => panic!("member {id} stopped: {other}"),
        }
        in_flight.extend(member.wire.take());
    }
    for id in &stopped {
        members.remove(id);
    }
    for message in in_flight {
        let sender = members.get(&message.from).map(|m| m.wire.clone());
        if let Some(member) = members.get_mut(&message.to) {
            if sender.is_some_and(|sender| member.wire.refuses(message.to, &sender, message.from)) {
                continue;
            }
            member.core.step(message);
        }
    }
    stopped
}


fn leader_of(members: &BTreeMap<u64, Running>) -> Option<u64> {
    members.values().map(|m| m.core.status()).filter(|s| s.role == Role::Leader).max_by_key(|s| s.term).map(|s| s.member_id)
}

/// Ticks and pumps until `done` holds (bounded).
fn run_until(members: &mut BTreeMap<u64, Running>, now_ms: &mut u64, what: &str, mut done: impl FnMut(&BTreeMap<u64, Running>) -> bool) {
    for _ in 0..2000 {
        if done(members) {
            return;
        }
        *now_ms += 100;
        for member in members.values_mut() {
            member.core.tick(*now_ms);
        }
        for _ in 0..5 {
            pump(members);
        }
    }
    panic!("never: {what}");
}

/// Submits `request` to member `to` and pumps until it is answered.
fn call(members: &mut BTreeMap<u64, Running>, to: u64, request: Request, now_ms: u64) -> Result<Response, EtcdError> {
    let (sender, mut receiver) = oneshot::channel();
    members.get_mut(&to).expect("member").core.submit(request, sender, now_ms);
    for _ in 0..200 {
        if let Ok(answer) = receiver.try_recv() {
            return answer;
        }
        pump(members);
    }
    panic!("no answer");
}

fn change(members: &mut BTreeMap<u64, Running>, to: u64, request: MemberRequest, now_ms: u64) -> Result<Member, EtcdError> {
    call(members, to, Request::Member(request), now_ms).map(|response| match response {
        Response::Member(member) => member,
        other => panic!("a membership change answered {other:?}"),
    })
}

fn put(members: &mut BTreeMap<u64, Running>, to: u64, key: &str, now_ms: u64) {
    let request = Request::Put(PutRequest { key: key.into(), value: bytes::Bytes::from_static(b"v"), ..Default::default() });
    call(members, to, request, now_ms).expect("put");
}

/// Member 1 of two campaigns and leads, both publish their names, and one put commits;
/// returns the time reached.
fn member_1_leads_two(members: &mut BTreeMap<u64, Running>) -> u64 {
    let mut now_ms = 0;
    members.get_mut(&1).expect("member 1").core.campaign();
    run_until(members, &mut now_ms, "member 1 leads and both published", |m| {
        leader_of(m) == Some(1) && m.values().all(|member| member.core.member_list().iter().all(|listed| !listed.name.is_empty()))
    });
    put(members, 1, "k", now_ms);
    now_ms
}

/// The index of the configuration change entry `message` carries, if any.
fn conf_change_index(message: &raft::eraftpb::Message) -> Option<u64> {
    message.entries.iter().find(|e| e.get_entry_type() == raft::eraftpb::EntryType::EntryConfChangeV2).map(|e| e.index)
}

fn keys_on(member: &mut Running) -> usize {
    let (sender, mut receiver) = oneshot::channel();
    let request = Request::Range(RangeRequest { key: vec![0], range_end: vec![0], serializable: true, ..Default::default() });
    member.core.submit(request, sender, 0);
    match receiver.try_recv().expect("served at once").expect("range") {
        Response::Range(range) => range.kvs.len(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_member_added_later_joins_from_a_fresh_snapshot_and_a_removed_leader_leaves() {
    let mut members: BTreeMap<u64, Running> = (1..=3).map(|id| (id, open_member(id, vec![1, 2, 3]))).collect();
    let mut now_ms = 0;
    members.get_mut(&1).expect("member 1").core.campaign();
    run_until(&mut members, &mut now_ms, "member 1 leads and everyone published", |m| {
        leader_of(m) == Some(1) && m.values().all(|member| member.core.member_list().iter().all(|listed| !listed.name.is_empty()))
    });
    for i in 0..10 {
        put(&mut members, 1, &format!("k{i}"), now_ms);
    }

    // etcd's refusals.
    let voter = change(&mut members, 1, MemberRequest::Promote { id: 2 }, now_ms);
    assert_eq!(voter.unwrap_err(), EtcdError::MemberNotLearner);
    let unknown = change(&mut members, 1, MemberRequest::Remove { id: 77 }, now_ms);
    assert_eq!(unknown.unwrap_err(), EtcdError::MemberNotFound);
    let bad = change(&mut members, 1, MemberRequest::Add { peer_urls: vec!["ftp://x".into()], is_learner: false }, now_ms);
    assert_eq!(bad.unwrap_err(), EtcdError::MemberBadUrls);

    // A learner: added through a follower (raft forwards it), refused twice.
    let learner = change(&mut members, 2, MemberRequest::Add { peer_urls: vec!["http://m4:2380".into()], is_learner: true }, now_ms).expect("added");
    assert!(learner.is_learner && learner.id != 0);
    let again = change(&mut members, 1, MemberRequest::Add { peer_urls: vec!["http://m4:2380".into()], is_learner: true }, now_ms);
    assert_eq!(again.unwrap_err(), EtcdError::PeerUrlExists);
    let second = change(&mut members, 1, MemberRequest::Add { peer_urls: vec!["http://m5:2380".into()], is_learner: true }, now_ms);
    assert_eq!(second.unwrap_err(), EtcdError::TooManyLearners);

    // The new member starts with no configuration; its log would start at index 2, so
    // the leader must send it a snapshot that has it (the first one, at index 1, does
    // not: the leader takes a fresh one).
    members.insert(learner.id, open_member(learner.id, Vec::new()));
    let leader_applied = members[&1].core.status().applied_index;
    run_until(&mut members, &mut now_ms, "the learner catches up", |m| m[&learner.id].core.status().applied_index >= leader_applied);
    assert_eq!(keys_on(members.get_mut(&learner.id).expect("learner")), 10);
    assert!(members[&learner.id].core.status().is_learner);
    let refused = call(&mut members, learner.id, Request::Put(PutRequest { key: b"x".to_vec(), ..Default::default() }), now_ms);
    assert_eq!(refused.unwrap_err(), EtcdError::NotSupportedForLearner);
    let promoted = change(&mut members, 1, MemberRequest::Promote { id: learner.id }, now_ms).expect("promoted");
    assert!(!promoted.is_learner);
    assert!(members.values().all(|m| m.core.member_list().len() == 4));

    // Remove the leader itself: it leaves (answers nobody), steps down, and stops once
    // another leader is elected; the other three go on with every write.
    let removed = change(&mut members, 1, MemberRequest::Remove { id: 1 }, now_ms);
    assert!(removed.is_ok(), "{removed:?}");
    let late = call(&mut members, 1, Request::Put(PutRequest { key: b"late".to_vec(), ..Default::default() }), now_ms);
    // etcd's "server stopped", and certainly not applied (refused before raft).
    let late = late.unwrap_err();
    assert_eq!((late.clone(), late.message(), late.outcome_unknown()), (EtcdError::StoppedBeforeProposal, "etcdserver: server stopped", false));
    run_until(&mut members, &mut now_ms, "the removed leader stops and another leads", |m| !m.contains_key(&1) && leader_of(m).is_some());
    let leader = leader_of(&members).expect("a leader");
    put(&mut members, leader, "after", now_ms);
    run_until(&mut members, &mut now_ms, "every member has every key", |m| {
        let applied = m[&leader].core.status().applied_index;
        m.values().all(|member| member.core.status().applied_index >= applied)
    });
    for member in members.values_mut() {
        assert_eq!(keys_on(member), 11);
        assert_eq!(member.core.member_list().iter().map(|m| m.id).filter(|id| *id == 1).count(), 0);
    }
    // Its id is gone for good.
    let again = change(&mut members, leader, MemberRequest::Remove { id: 1 }, now_ms);
    assert_eq!(again.unwrap_err(), EtcdError::MemberIdRemoved);
}

/// A member whose snapshot shows it as the only voter, with a voter added after the
/// snapshot (its log says so), does not lead at once when it restarts: it would lead
/// with the snapshot's configuration, alone, a cluster that has two voters (simulator
/// seed 1455 of membership-chaos: a removed member restarted from its disk led in the
/// term its successor led). Raft's timeout-driven election decides instead, after the
/// member applied what its disk says is committed — and the commit covering an applied
/// configuration change is on its disk, synced (seed 190 of grow-and-shrink: the last
/// member of a cluster of two lost it in a power loss and waited for a removed member's
/// vote for good).
#[test]
fn a_lone_voter_with_a_configuration_change_after_its_snapshot_does_not_lead_at_restart() {
    let (wal_disk, data_disk) = (Arc::new(MemDisk::new()), Arc::new(MemDisk::new()));
    let open = |wal_disk: &Arc<MemDisk>, data_disk: &Arc<MemDisk>| {
        let wire = Arc::new(Wire::default());
        let env = Env {
            wal_disk: wal_disk.clone(),
            data_disk: data_disk.clone(),
            transport: wire.clone(),
            clock: Arc::new(RuntimeClock::new()),
            observer: Arc::new(NoObserver),
            worker: Arc::new(InlineWorker),
            seed: 1,
        };
        let mut config = NodeConfig::with_defaults(1, 99, vec![1]);
        config.snapshot_count = 1000;
        config.name = "m1".into();
        config.peer_urls = vec!["http://m1:2380".into()];
        Running { core: NodeCore::open(config, env).expect("open"), wire }
    };
    let mut members: BTreeMap<u64, Running> = BTreeMap::from([(1, open(&wal_disk, &data_disk))]);
    let mut now_ms = 0;
    run_until(&mut members, &mut now_ms, "the only voter leads and published", |m| {
        leader_of(m) == Some(1) && m[&1].core.member_list().iter().all(|listed| !listed.name.is_empty())
    });
    put(&mut members, 1, "k", now_ms);
    change(&mut members, 1, MemberRequest::Add { peer_urls: vec!["http://m2:2380".into()], is_learner: false }, now_ms).expect("added");
    pump(&mut members);
    drop(members);

    // Restarted: the snapshot (index 1) says {1}; the log adds the second voter.
    let mut restarted = open(&wal_disk, &data_disk);
    assert_ne!(restarted.core.status().role, Role::Leader, "led at once with the snapshot's configuration");
    restarted.core.handle_ready().expect("ready");
    assert_ne!(restarted.core.status().role, Role::Leader);
    // The commit covering the change was made durable when it was applied: after a power
    // loss that keeps only synced bytes, the member comes back with both voters.
    drop(restarted);
    wal_disk.crash(|_, _| 0);
    data_disk.crash(|_, _| 0);
    let mut recovered = open(&wal_disk, &data_disk);
    recovered.core.handle_ready().expect("ready");
    assert_eq!(recovered.core.member_list().len(), 2, "the configuration change applied before the power loss was lost");
    // A lone voter whose log holds no configuration change still leads at once.
    let (wal_disk, data_disk) = (Arc::new(MemDisk::new()), Arc::new(MemDisk::new()));
    drop(open(&wal_disk, &data_disk));
    assert_eq!(open(&wal_disk, &data_disk).core.status().role, Role::Leader);
}

/// A removed leader of a cluster of two whose other member never heard that the removal
/// committed waits for it however long it is down: the other needs its vote to elect
/// itself and commit (simulator seed 5051 of membership-chaos: the leader gave up after
/// 100 heartbeats while the other crashed again and again, and the cluster never had a
/// quorum again). Meanwhile it asks whether the other knows, with membership probes.
#[test]
fn a_removed_leader_of_two_waits_for_its_successor_however_long_it_is_down() {
    let mut members: BTreeMap<u64, Running> = (1..=2).map(|id| (id, open_member(id, vec![1, 2]))).collect();
    let mut now_ms = member_1_leads_two(&mut members);

    // The removal commits with member 2's ack, but member 2 hears of no commit past it.
    let (sender, mut receiver) = oneshot::channel();
    members.get_mut(&1).expect("member 1").core.submit(Request::Member(MemberRequest::Remove { id: 1 }), sender, now_ms);
    let mut removal_index = None;
    for _ in 0..50 {
        for member in members.values_mut() {
            member.core.handle_ready().expect("ready");
        }
        let mut in_flight = members[&1].wire.take();
        in_flight.extend(members[&2].wire.take());
        for message in in_flight {
            if message.from == 1 && removal_index.is_none() {
                removal_index = conf_change_index(&message);
            }
            if message.from == 1 && removal_index.is_some_and(|index| message.commit >= index) {
                continue;
            }
            members.get_mut(&message.to).expect("member").core.step(message);
        }
        if receiver.try_recv().is_ok() {
            break;
        }
    }
    let removal_index = removal_index.expect("the removal was replicated");
    assert!(members[&1].core.status().applied_index >= removal_index, "the removal was not applied on its leader");
    assert!(members[&2].core.status().commit_index < removal_index, "member 2 heard of the commit");

    // Member 2 is down for far longer than the old bound (100 heartbeats): member 1
    // keeps running, asking member 2 whether it knows.
    let mut probes = 0;
    for _ in 0..300 {
        now_ms += 100;
        let leaving = members.get_mut(&1).expect("member 1");
        leaving.core.tick(now_ms);
        leaving.core.handle_ready().expect("a removed leader stopped while its successor may need its vote");
        probes += leaving.wire.take().iter().filter(|m| detcd_node::consensus::membership::is_membership_probe(m) && m.to == 2).count();
    }
    assert!((25..=35).contains(&probes), "{probes} membership probes in 300 heartbeats");

    // Back: member 2 elects itself with member 1's vote, commits the removal, and member
    // 1 stops; member 2 alone is the cluster.
    run_until(&mut members, &mut now_ms, "member 2 leads alone", |m| !m.contains_key(&1) && leader_of(m) == Some(2));
    put(&mut members, 2, "after", now_ms);
    assert_eq!(members[&2].core.member_list().iter().map(|m| m.id).collect::<Vec<_>>(), vec![2]);
}

/// A leader sends before it syncs, so the commit index it tells its followers may not be
/// durable on it yet. A removed follower of a cluster of two that stopped on that word
/// left its leader — which lost power before its commit index was durable and came back
/// with the removal in its log but not known committed — needing the stopped member's
/// vote for good (simulator seed 6800 of membership-chaos, where the leader's transport
/// had also told the follower it was removed). The removed member stays until a voter
/// of the configuration after its removal has the commit durable, and nobody — the
/// operator who asked for the removal, or the transport — is told of it before then.
#[test]
fn a_removed_follower_of_two_outlives_a_leader_that_lost_the_removals_commit() {
    let disks: BTreeMap<u64, (Arc<MemDisk>, Arc<MemDisk>)> = (1..=2).map(|id| (id, (Arc::new(MemDisk::new()), Arc::new(MemDisk::new())))).collect();
    let mut members: BTreeMap<u64, Running> = (1..=2).map(|id| (id, open_member_on(id, vec![1, 2], &disks[&id], id))).collect();
    let mut now_ms = member_1_leads_two(&mut members);

    // Member 1 loses power at its first write after member 2 acked the removal: in the
    // Ready that commits it, after sending the commit index and applying the removal.
    let (sender, mut receiver) = oneshot::channel();
    members.get_mut(&1).expect("member 1").core.submit(Request::Member(MemberRequest::Remove { id: 2 }), sender, now_ms);
    let mut removal_index = None;
    let mut powered_off = false;
    for _ in 0..50 {
        if let Err(error) = members.get_mut(&1).expect("member 1").core.handle_ready() {
            assert!(disks[&1].0.is_powered_off(), "member 1 stopped: {error}");
            powered_off = true;
        }
        members.get_mut(&2).expect("member 2").core.handle_ready().expect("member 2's ready");
        let mut in_flight = members[&1].wire.take();
        in_flight.extend(members[&2].wire.take());
        for message in in_flight {
            if message.from == 1 && removal_index.is_none() {
                removal_index = conf_change_index(&message);
            }
            if message.to == 1 && powered_off {
                continue;
            }
            let acked = message.get_msg_type() == raft::eraftpb::MessageType::MsgAppendResponse
                && removal_index.is_some_and(|index| message.index >= index);
            if message.to == 1 && acked {
                disks[&1].0.arm_power_loss(1);
            }
            let sender = members[&message.from].wire.clone();
            if !members[&message.to].wire.refuses(message.to, &sender, message.from) {
                members.get_mut(&message.to).expect("member").core.step(message);
            }
        }
        if powered_off {
            break;
        }
    }
    assert!(powered_off, "the power loss never struck");
    let removal_index = removal_index.expect("the removal was replicated");
    assert!(!matches!(receiver.try_recv(), Ok(Ok(_))), "the removal was answered before its commit index was durable");
    members.get_mut(&2).expect("member 2").core.handle_ready().expect("member 2's ready");
    assert!(members[&2].core.member_list().iter().all(|m| m.id != 2), "member 2 did not apply its removal");

    // Member 1 comes back without the commit index: the removal is in its log, not known
    // committed. Meanwhile member 2 waits, however long.
    members.remove(&1);
    disks[&1].0.power_loss(|_, _, _| UnsyncedFate::Lost);
    disks[&1].1.power_loss(|_, _, _| UnsyncedFate::Lost);
    disks[&1].0.restore_power();
    disks[&1].1.restore_power();
    for _ in 0..50 {
        now_ms += 100;
        let removed = members.get_mut(&2).expect("member 2");
        removed.core.tick(now_ms);
        removed.core.handle_ready().expect("a removed member stopped while the only voter left may need its vote");
        removed.wire.take();
    }
    let restarted = open_member_on(1, vec![1, 2], &disks[&1], 101);
    assert!(restarted.core.status().commit_index < removal_index, "member 1 kept the removal's commit index: nothing to test");
    members.insert(1, restarted);

    // Member 2's vote elects member 1, which commits and applies the removal, makes it
    // durable and only then tells member 2, which stops.
    run_until(&mut members, &mut now_ms, "member 1 leads alone", |m| !m.contains_key(&2) && leader_of(m) == Some(1));
    put(&mut members, 1, "after", now_ms);
    assert_eq!(members[&1].core.member_list().iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
}
