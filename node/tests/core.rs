//! The member's core driven directly, with no runtime or network: time is an argument,
//! the disk is the in-memory twin that knows what is durable.

use std::sync::Arc;

use detcd_node::core::{NodeConfig, NodeCore, Request, Response};
use detcd_node::env::mem_disk::MemDisk;
use detcd_node::env::{Env, NoObserver, Role, RuntimeClock, Transport};
use detcd_node::pb::detcdpb::{internal_request, InternalRequest};
use detcd_node::pb::etcdserverpb::{PutRequest, RangeRequest};
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use tokio::sync::oneshot;

struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, _messages: Vec<Message>) {}
}

struct Disks {
    wal: Arc<MemDisk>,
    data: Arc<MemDisk>,
}

const MEMBER: u64 = 7;

fn open(disks: &Disks) -> NodeCore {
    let env = Env {
        wal_disk: disks.wal.clone(),
        data_disk: disks.data.clone(),
        transport: Arc::new(NoPeers),
        clock: Arc::new(RuntimeClock::new()),
        observer: Arc::new(NoObserver),
        seed: 1,
    };
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
    Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

fn get(core: &mut NodeCore, key: &str) -> Option<Vec<u8>> {
    match submit(core, Request::Range(RangeRequest { key: key.into(), serializable: true, ..Default::default() })) {
        Response::Range(r) => r.kvs.first().map(|kv| kv.value.clone()),
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
