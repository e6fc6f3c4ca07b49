//! One seeded run: start the members on madsim with simulated disks, network and clocks,
//! drive the workload while the fault driver injects faults, heal everything, require
//! convergence within the liveness bound, then check the history and the invariants.
//!
//! Everything here runs inside madsim's single-threaded, seeded runtime; every random
//! choice comes from generators seeded by the run's seed. Only built with `--cfg madsim`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_node::core::NodeConfig;
use detcd_node::env::mem_disk::MemDisk;
use detcd_node::env::{Env, Role};
use detcd_node::errors::EtcdError;
use detcd_node::pb::etcdserverpb::{compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use detcd_node::{ids, Node, NodeHandle, NodeStatus};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{self, Verdict};
use crate::clock::SimClock;
use crate::history::{OpKind, Outcome};
use crate::net::{LinkQuality, SimNet};
use crate::report::RunReport;
use crate::scenario::{FaultKind, Options, Scenario};
use crate::world::World;

/// Sector size for torn writes: a crash keeps whole sectors of unsynced data.
pub const SECTOR_BYTES: usize = 512;
/// Client operations per client before it stops on its own.
pub const CLIENT_OPERATIONS_MAX: u64 = 100_000;
/// Polls of cluster status during the liveness phase (one every 100 ms).
pub const LIVENESS_POLLS_MAX: u64 = 10_000;

/// One member as the harness sees it across crashes and restarts.
struct MemberSlot {
    index: usize,
    member_id: u64,
    wal_disk: Arc<MemDisk>,
    data_disk: Arc<MemDisk>,
    clock: Arc<SimClock>,
    /// The running incarnation's handle, or None while down.
    running: Mutex<Option<(NodeHandle, u64)>>,
    incarnation: AtomicU64,
    madsim_node: Mutex<Option<madsim::runtime::NodeHandle>>,
    /// Set by the harness when it kills or pauses the member.
    down: AtomicBool,
    paused: AtomicBool,
    /// A byte flipped in a durable WAL record: (segment, offset). The member must refuse
    /// to start while it is there.
    corrupted: Mutex<Option<(String, usize)>>,
}

impl MemberSlot {
    fn handle(&self) -> Option<(NodeHandle, u64)> {
        self.running.lock().expect("slot lock").clone()
    }
}

struct Cluster {
    members: Vec<Arc<MemberSlot>>,
    net: Arc<SimNet>,
    world: Arc<World>,
    good_links: LinkQuality,
}

impl Cluster {
    fn start(options: &Options, scenario: &Scenario, world: Arc<World>, net: Arc<SimNet>, member_ids: &[u64], cluster_id: u64) -> Cluster {
        let runtime = madsim::runtime::Handle::current();
        let mut members = Vec::new();
        for (index, member_id) in member_ids.iter().copied().enumerate() {
            let slot = Arc::new(MemberSlot {
                index,
                member_id,
                wal_disk: Arc::new(MemDisk::new()),
                data_disk: Arc::new(MemDisk::new()),
                clock: Arc::new(SimClock::new()),
                running: Mutex::new(None),
                incarnation: AtomicU64::new(0),
                madsim_node: Mutex::new(None),
                down: AtomicBool::new(false),
                paused: AtomicBool::new(false),
                corrupted: Mutex::new(None),
            });
            let mut config = NodeConfig::with_defaults(member_id, cluster_id, member_ids.to_vec());
            let settings = &scenario.node;
            config.heartbeat_interval_ms = settings.heartbeat_interval_ms;
            config.election_timeout_ms = settings.election_timeout_ms;
            config.snapshot_count = settings.snapshot_count;
            config.snapshot_catchup_entries = settings.snapshot_catchup_entries;
            config.wal_segment_bytes_max = settings.wal_segment_bytes_max;
            config.request_timeout_ms = settings.request_timeout_ms;
            config.max_wals = 3;
            config.max_snapshots = 2;
            config.planted_bug = options.planted_bug.as_deref().map(|name| {
                detcd_node::core::PlantedBug::parse(name).unwrap_or_else(|| panic!("unknown planted bug {name:?}"))
            });
            let seed = options.seed;
            let init_slot = slot.clone();
            let init_world = world.clone();
            let init_net = net.clone();
            let node = runtime
                .create_node()
                .name(format!("m{index}"))
                .init(move || {
                    let slot = init_slot.clone();
                    let world = init_world.clone();
                    let net = init_net.clone();
                    let config = config.clone();
                    async move { run_member(slot, world, net, config, seed).await }
                })
                .build();
            *slot.madsim_node.lock().expect("slot lock") = Some(node);
            members.push(slot);
        }
        let good_links = LinkQuality::good(options.message_delay_ms_max);
        Cluster { members, net, world, good_links }
    }

    fn madsim_id(&self, index: usize) -> madsim::task::NodeId {
        self.members[index].madsim_node.lock().expect("slot lock").as_ref().expect("node built").id()
    }

    fn down_count(&self) -> usize {
        self.members.iter().filter(|m| m.down.load(Ordering::SeqCst) || m.paused.load(Ordering::SeqCst)).count()
    }

    /// How many members may be down at once and the cluster still have a quorum.
    fn attrition_max(&self) -> usize {
        // A single member may go down (the cluster is unavailable meanwhile).
        ((self.members.len() - 1) / 2).max(1)
    }

    fn kill(&self, index: usize, reason: &str) {
        let slot = &self.members[index];
        madsim::runtime::Handle::current().kill(self.madsim_id(index));
        *slot.running.lock().expect("slot lock") = None;
        slot.down.store(true, Ordering::SeqCst);
        self.world.event("fault", Some(index), format!("crash ({reason})"));
    }

    fn restart(&self, index: usize) {
        let slot = &self.members[index];
        madsim::runtime::Handle::current().restart(self.madsim_id(index));
        slot.down.store(false, Ordering::SeqCst);
        slot.paused.store(false, Ordering::SeqCst);
        self.world.event("heal", Some(index), "restart from disk".into());
    }

    async fn statuses(&self) -> Vec<Option<NodeStatus>> {
        let mut statuses = Vec::new();
        for slot in &self.members {
            let status = match slot.handle() {
                Some((handle, _)) if !slot.paused.load(Ordering::SeqCst) => {
                    tokio::time::timeout(Duration::from_millis(500), handle.status()).await.ok().flatten()
                }
                _ => None,
            };
            statuses.push(status);
        }
        statuses
    }

    /// The member that is leader in the highest term, if any.
    async fn leader(&self) -> Option<usize> {
        let statuses = self.statuses().await;
        statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.role == Role::Leader).map(|s| (s.term, i)))
            .max()
            .map(|(_, i)| i)
    }
}

async fn run_member(slot: Arc<MemberSlot>, world: Arc<World>, net: Arc<SimNet>, config: NodeConfig, run_seed: u64) {
    let incarnation = slot.incarnation.fetch_add(1, Ordering::SeqCst) + 1;
    let env = Env {
        wal_disk: slot.wal_disk.clone(),
        data_disk: slot.data_disk.clone(),
        transport: net.transport(slot.member_id),
        clock: slot.clock.clone(),
        observer: world.clone(),
        seed: run_seed ^ slot.member_id.rotate_left(17) ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    };
    let corrupted = slot.corrupted.lock().expect("slot lock").clone();
    match Node::open(config, env) {
        Ok((node, handle, inbox)) => {
            if let Some((segment, offset)) = corrupted {
                world.violation(
                    "corruption-detected",
                    format!("m{} started although byte {offset} of {segment} was corrupted: the damage was skipped silently", slot.index),
                );
            }
            net.register(slot.member_id, inbox);
            *slot.running.lock().expect("slot lock") = Some((handle, incarnation));
            world.event("member", Some(slot.index), format!("started (incarnation {incarnation})"));
            if let Err(error) = node.run().await {
                *slot.running.lock().expect("slot lock") = None;
                slot.down.store(true, Ordering::SeqCst);
                world.event("member", Some(slot.index), format!("stopped: {error}"));
            }
        }
        Err(error) => {
            slot.down.store(true, Ordering::SeqCst);
            world.event("member", Some(slot.index), format!("refused to start: {error}"));
            if corrupted.is_none() {
                world.violation("member-start", format!("m{} refused to start from an undamaged disk: {error}", slot.index));
            }
        }
    }
}

/// Injects one fault; returns what must be undone when it is healed.
async fn inject(cluster: &Cluster, fault: FaultKind, rng: &mut ChaCha8Rng, options: &Options) -> Vec<Heal> {
    let n = cluster.members.len();
    let ids: Vec<u64> = cluster.members.iter().map(|m| m.member_id).collect();
    let can_take_down = cluster.down_count() < cluster.attrition_max();
    let running: Vec<usize> = (0..n).filter(|i| !cluster.members[*i].down.load(Ordering::SeqCst) && !cluster.members[*i].paused.load(Ordering::SeqCst)).collect();
    let leader = cluster.leader().await;
    let followers: Vec<usize> = running.iter().copied().filter(|i| Some(*i) != leader).collect();
    let world = &cluster.world;
    // Fills `victim`'s WAL disk: its next append fails and it stops.
    let fill_disk = |victim: usize| {
        let slot = &cluster.members[victim];
        slot.wal_disk.set_capacity_bytes(Some(slot.wal_disk.used_bytes()));
        slot.down.store(true, Ordering::SeqCst);
        world.event("fault", Some(victim), "WAL disk full".into());
        vec![Heal::FreeDiskAndRestart(victim)]
    };
    match fault {
        FaultKind::CrashLeader | FaultKind::SplitVote => {
            let (Some(leader), true) = (leader, can_take_down) else { return vec![] };
            cluster.kill(leader, if fault == FaultKind::SplitVote { "leader, then two members campaign at once" } else { "leader" });
            if fault == FaultKind::SplitVote {
                // Two candidates in one instant; the others stay voters, and half the
                // time one voter crashes right after it votes (and restarts at once).
                let mut others: Vec<usize> = running.iter().copied().filter(|i| *i != leader).collect();
                others.shuffle(rng);
                let voters = others.split_off(others.len().min(2));
                if let Some(&voter) = voters.first().filter(|_| rng.gen_bool(0.5)) {
                    world.arm_crash_after_vote(cluster.members[voter].member_id);
                    world.event("fault", Some(voter), "armed: crash right after its next vote".into());
                }
                for i in others {
                    if let Some((handle, _)) = cluster.members[i].handle() {
                        handle.campaign().await;
                    }
                }
            }
            vec![Heal::Restart(leader)]
        }
        FaultKind::CrashRandom => {
            let (Some(&victim), true) = (running.choose(rng), can_take_down) else { return vec![] };
            cluster.kill(victim, "random member");
            vec![Heal::Restart(victim)]
        }
        FaultKind::CrashLoseUnsynced => {
            let victim = if rng.gen_bool(0.5) { leader } else { running.choose(rng).copied() };
            let (Some(victim), true) = (victim, can_take_down) else { return vec![] };
            cluster.kill(victim, "power loss: unsynced writes lost");
            let slot = &cluster.members[victim];
            let torn = options.torn_write_probability;
            let mut keep = |_: &str, unsynced: usize| -> usize {
                if rng.gen_bool(torn) {
                    rng.gen_range(0..=unsynced) / SECTOR_BYTES * SECTOR_BYTES
                } else {
                    0
                }
            };
            let mut losses = slot.wal_disk.crash(&mut keep);
            losses.extend(slot.data_disk.crash(&mut keep));
            for loss in losses {
                world.event("fault", Some(victim), format!("{}: lost {} of {} unsynced bytes", loss.path, loss.unsynced_bytes - loss.kept_bytes, loss.unsynced_bytes));
            }
            vec![Heal::Restart(victim)]
        }
        FaultKind::IsolateOne => {
            let victim = rng.gen_range(0..n);
            let others: Vec<u64> = ids.iter().copied().filter(|id| *id != ids[victim]).collect();
            cluster.net.partition(&[ids[victim]], &others);
            world.event("fault", Some(victim), "isolated".into());
            vec![Heal::Network]
        }
        FaultKind::PartitionLeaderMinority | FaultKind::PartitionMajorityMinority => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            if fault == FaultKind::PartitionLeaderMinority {
                let Some(leader) = leader else { return vec![] };
                order.retain(|i| *i != leader);
                order.insert(0, leader);
            }
            let minority_size = ((n - 1) / 2).max(1);
            let minority: Vec<u64> = order[..minority_size].iter().map(|i| ids[*i]).collect();
            let majority: Vec<u64> = order[minority_size..].iter().map(|i| ids[*i]).collect();
            cluster.net.partition(&minority, &majority);
            world.event("fault", None, format!("partition: minority {:?} | majority {:?}", &order[..minority_size], &order[minority_size..]));
            vec![Heal::Network]
        }
        FaultKind::PartitionBridge => {
            if n < 3 {
                return vec![];
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            cluster.net.partition(&a.iter().map(|i| ids[*i]).collect::<Vec<_>>(), &b.iter().map(|i| ids[*i]).collect::<Vec<_>>());
            world.event("fault", Some(bridge), format!("bridge: {a:?} <-> {bridge} <-> {b:?}"));
            vec![Heal::Network]
        }
        FaultKind::PartitionAsymmetric => {
            let a = leader.unwrap_or_else(|| rng.gen_range(0..n));
            let others: Vec<usize> = (0..n).filter(|i| *i != a).collect();
            let Some(&b) = others.choose(rng) else { return vec![] };
            // b hears nothing from a; a still hears b.
            cluster.net.cut(ids[a], ids[b]);
            world.event("fault", Some(a), format!("asymmetric: m{b} no longer hears m{a}"));
            vec![Heal::Network]
        }
        FaultKind::ClogAndRelease => {
            let mut clogged = Vec::new();
            for from in 0..n {
                for to in 0..n {
                    if from != to && rng.gen_bool(0.4) {
                        cluster.net.clog(ids[from], ids[to]);
                        clogged.push((from, to));
                    }
                }
            }
            world.event("fault", None, format!("clogged links {clogged:?}"));
            vec![Heal::Network]
        }
        FaultKind::LossyNetwork => {
            let quality = LinkQuality {
                drop_rate: options.lossy_drop_rate,
                duplicate_rate: options.lossy_duplicate_rate,
                delay_ms_min: 0,
                delay_ms_max: options.message_delay_ms_max * 4,
                slow_tail_rate: 0.05,
            };
            world.event("fault", None, format!("lossy network {quality:?}"));
            cluster.net.set_quality(quality);
            vec![Heal::Network]
        }
        FaultKind::PauseMember => {
            // Half the time the leader: it wakes up still believing it leads.
            let victim = if rng.gen_bool(0.5) { leader.filter(|l| running.contains(l)) } else { None };
            let (Some(victim), true) = (victim.or_else(|| running.choose(rng).copied()), can_take_down) else { return vec![] };
            madsim::runtime::Handle::current().pause(cluster.madsim_id(victim));
            cluster.members[victim].paused.store(true, Ordering::SeqCst);
            world.event("fault", Some(victim), "paused".into());
            vec![Heal::Resume(victim)]
        }
        FaultKind::DiskFullLeader => {
            let (Some(leader), true) = (leader, can_take_down) else { return vec![] };
            fill_disk(leader)
        }
        FaultKind::FsyncErrorFollower => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            cluster.members[victim].wal_disk.fail_next_sync();
            cluster.members[victim].down.store(true, Ordering::SeqCst);
            world.event("fault", Some(victim), "next fsync fails".into());
            vec![Heal::LoseUnsyncedAndRestart(victim)]
        }
        FaultKind::CrashAfterVote => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            world.arm_crash_after_vote(cluster.members[victim].member_id);
            world.event("fault", Some(victim), "armed: crash right after its next vote".into());
            vec![Heal::Restart(victim)]
        }
        FaultKind::DiskFullFollower => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            fill_disk(victim)
        }
        FaultKind::CrashAfterPersist => {
            let (Some(leader), true) = (leader, can_take_down) else { return vec![] };
            world.arm_crash_after_persist(cluster.members[leader].member_id);
            world.event("fault", Some(leader), "armed: crash right after its next WAL sync, before replying".into());
            vec![Heal::Restart(leader)]
        }
        FaultKind::CorruptWalRecord => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            let slot = &cluster.members[victim];
            // Only segments before the newest: a flip there can never pass for a torn tail.
            let files = slot.wal_disk.files();
            let older: Vec<&(String, usize)> = files.iter().take(files.len().saturating_sub(1)).filter(|(_, len)| *len > 64).collect();
            let Some((segment, len)) = older.choose(rng).map(|(s, l)| (s.clone(), *l)) else { return vec![] };
            cluster.kill(victim, "stopped to damage its disk");
            let offset = rng.gen_range(0..len);
            slot.wal_disk.corrupt_byte(&segment, offset);
            *slot.corrupted.lock().expect("slot lock") = Some((segment.clone(), offset));
            world.event("fault", Some(victim), format!("flipped byte {offset} of {segment}; restarting it must fail"));
            cluster.restart(victim);
            vec![Heal::RepairCorruption(victim)]
        }
        FaultKind::SlowDisk => {
            let (Some(&victim), true) = (running.choose(rng), can_take_down) else { return vec![] };
            let id = cluster.madsim_id(victim);
            let stall_cluster_member = cluster.members[victim].clone();
            let until_ms = world.now_ms() + options.fault_duration_ms;
            let mut stall_rng = ChaCha8Rng::seed_from_u64(rng.gen());
            let stall_world = cluster.world.clone();
            world.event("fault", Some(victim), "slow disk: fsyncs stall 5-100 ms".into());
            tokio::spawn(async move {
                let runtime = madsim::runtime::Handle::current();
                while stall_world.now_ms() < until_ms {
                    if stall_cluster_member.down.load(Ordering::SeqCst) || stall_cluster_member.paused.load(Ordering::SeqCst) {
                        break;
                    }
                    runtime.pause(id);
                    tokio::time::sleep(Duration::from_millis(stall_rng.gen_range(5..=100))).await;
                    runtime.resume(id);
                    tokio::time::sleep(Duration::from_millis(stall_rng.gen_range(5..=50))).await;
                }
            });
            vec![]
        }
        FaultKind::ClockSkew => {
            let victim = rng.gen_range(0..n);
            let jump_ms = rng.gen_range(0..5000);
            let drift = if options.clock_drift_ppm_max == 0 { 0 } else { rng.gen_range(-options.clock_drift_ppm_max..=options.clock_drift_ppm_max) };
            cluster.members[victim].clock.skew(jump_ms, drift);
            world.event("fault", Some(victim), format!("clock jumps {jump_ms} ms, drifts {drift} ppm"));
            vec![Heal::Clock(victim)]
        }
    }
}

/// What healing a fault takes.
#[derive(Clone, Debug)]
enum Heal {
    Restart(usize),
    Resume(usize),
    Network,
    FreeDiskAndRestart(usize),
    LoseUnsyncedAndRestart(usize),
    RepairCorruption(usize),
    Clock(usize),
}

fn heal(cluster: &Cluster, heal: &Heal) {
    match heal {
        Heal::Restart(i) => {
            if cluster.members[*i].down.load(Ordering::SeqCst) {
                cluster.restart(*i);
            }
        }
        Heal::Resume(i) => {
            if cluster.members[*i].paused.swap(false, Ordering::SeqCst) {
                madsim::runtime::Handle::current().resume(cluster.madsim_id(*i));
                cluster.world.event("heal", Some(*i), "resumed".into());
            }
        }
        Heal::Network => {
            cluster.net.heal_all(cluster.good_links.clone());
            cluster.world.event("heal", None, "network healed".into());
        }
        Heal::FreeDiskAndRestart(i) => {
            cluster.members[*i].wal_disk.set_capacity_bytes(None);
            cluster.world.event("heal", Some(*i), "disk space freed".into());
            cluster.restart(*i);
        }
        Heal::LoseUnsyncedAndRestart(i) => {
            // After a failed fsync nothing unsynced can be trusted: drop it all.
            cluster.members[*i].wal_disk.crash(|_, _| 0);
            cluster.restart(*i);
        }
        Heal::RepairCorruption(i) => {
            let slot = &cluster.members[*i];
            if let Some((segment, offset)) = slot.corrupted.lock().expect("slot lock").take() {
                slot.wal_disk.corrupt_byte(&segment, offset);
                cluster.world.event("heal", Some(*i), format!("restored byte {offset} of {segment}"));
                cluster.restart(*i);
            }
        }
        Heal::Clock(i) => {
            cluster.members[*i].clock.stop_drift();
            cluster.world.event("heal", Some(*i), "clock drift stopped".into());
        }
    }
}

fn key_name(index: usize) -> String {
    format!("k{index}")
}

/// One client: issues operations until told to stop, recording each.
async fn run_client(client: u64, cluster: Arc<Cluster>, scenario: Scenario, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0xa076_1d64_78bd_642f));
    let workload = &scenario.workload;
    let weights = [workload.put, workload.get, workload.serializable_get, workload.delete, workload.cas];
    let total: u32 = weights.iter().sum::<u32>().max(1);
    let mut last_seen: Vec<Option<String>> = vec![None; workload.keys];
    for n in 0..CLIENT_OPERATIONS_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=workload.think_ms_max))).await;
        let key_index = rng.gen_range(0..workload.keys);
        let key = key_name(key_index);
        let value = format!("c{client}-{n}");
        let mut pick = rng.gen_range(0..total);
        let mut kind_index = 0;
        while pick >= weights[kind_index] {
            pick -= weights[kind_index];
            kind_index += 1;
        }
        let kind = match kind_index {
            0 => OpKind::Put { key: key.clone(), value },
            1 => OpKind::Get { key: key.clone(), serializable: false },
            2 => OpKind::Get { key: key.clone(), serializable: true },
            3 => OpKind::Delete { key: key.clone() },
            _ => OpKind::Cas { key: key.clone(), expected: last_seen[key_index].clone(), value },
        };
        // A write that failed as unavailable is retried on another member, like etcd
        // clients do; every attempt is its own operation in the history.
        for _attempt in 0..=workload.write_retries_max {
            let member = rng.gen_range(0..cluster.members.len());
            let lose_request = workload.client_link_loss > 0.0 && rng.gen_bool(workload.client_link_loss);
            let lose_answer = workload.client_link_loss > 0.0 && rng.gen_bool(workload.client_link_loss);
            let (read, outcome) = perform(&cluster, client, member, kind.clone(), lose_request, lose_answer, workload.client_timeout_ms).await;
            if let Some(value) = read {
                last_seen[key_index] = value;
            }
            if outcome == Outcome::Ok || !kind.is_write() || stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..=200))).await;
        }
    }
}

/// Performs one operation on `member` and records it. Returns the value read (if a read
/// succeeded) and the outcome.
async fn perform(
    cluster: &Cluster,
    client: u64,
    member: usize,
    kind: OpKind,
    lose_request: bool,
    lose_answer: bool,
    timeout_ms: u64,
) -> (Option<Option<String>>, Outcome) {
    let slot = &cluster.members[member];
    let world = &cluster.world;
    let handle = slot.handle();
    let incarnation = handle.as_ref().map_or(0, |(_, inc)| *inc);
    let id = world.invoke(client, slot.member_id, incarnation, kind.clone());
    let Some((handle, _)) = handle else {
        world.complete(id, Outcome::Fail, |op| op.error = Some("member is down".into()));
        return (None, Outcome::Fail);
    };
    if lose_request {
        tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
        world.complete(id, Outcome::Unknown, |op| op.error = Some("request lost on the client link".into()));
        return (None, Outcome::Unknown);
    }
    let timeout = Duration::from_millis(timeout_ms);
    let result = tokio::time::timeout(timeout, execute(&handle, &kind)).await;
    let result = match result {
        Err(_) => {
            world.complete(id, Outcome::Unknown, |op| op.error = Some("client timeout".into()));
            return (None, Outcome::Unknown);
        }
        Ok(result) => result,
    };
    if lose_answer {
        world.complete(id, Outcome::Unknown, |op| op.error = Some("answer lost on the client link".into()));
        return (None, Outcome::Unknown);
    }
    match result {
        Ok(answer) => {
            let read = answer.read_value.clone();
            world.complete(id, Outcome::Ok, |op| {
                op.read_value = answer.read_value;
                op.deleted = answer.deleted;
                op.succeeded = answer.succeeded;
                op.revision = answer.revision;
            });
            (matches!(kind, OpKind::Get { .. }).then_some(read), Outcome::Ok)
        }
        Err(error) => {
            let outcome = if error.outcome_unknown() { Outcome::Unknown } else { Outcome::Fail };
            world.complete(id, outcome, |op| op.error = Some(error.message().to_string()));
            (None, outcome)
        }
    }
}

struct Answer {
    read_value: Option<String>,
    deleted: i64,
    succeeded: bool,
    revision: i64,
}

async fn execute(handle: &NodeHandle, kind: &OpKind) -> Result<Answer, EtcdError> {
    let revision_of = |header: Option<&detcd_node::pb::etcdserverpb::ResponseHeader>| header.map_or(0, |h| h.revision);
    match kind {
        OpKind::Put { key, value } => {
            let response = handle.put(PutRequest { key: key.clone().into_bytes(), value: value.clone().into_bytes(), ..Default::default() }).await?;
            Ok(Answer { read_value: None, deleted: 0, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Get { key, serializable } => {
            let response = handle.range(RangeRequest { key: key.clone().into_bytes(), serializable: *serializable, ..Default::default() }).await?;
            let read_value = response.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            Ok(Answer { read_value, deleted: 0, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Delete { key } => {
            let response = handle.delete_range(DeleteRangeRequest { key: key.clone().into_bytes(), ..Default::default() }).await?;
            Ok(Answer { read_value: None, deleted: response.deleted, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Cas { key, expected, value } => {
            let compare = match expected {
                Some(expected) => Compare {
                    key: key.clone().into_bytes(),
                    target: compare::CompareTarget::Value as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Value(expected.clone().into_bytes())),
                    range_end: Vec::new(),
                },
                None => Compare {
                    key: key.clone().into_bytes(),
                    target: compare::CompareTarget::Version as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Version(0)),
                    range_end: Vec::new(),
                },
            };
            let put = RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest { key: key.clone().into_bytes(), value: value.clone().into_bytes(), ..Default::default() })),
            };
            let response = handle.txn(TxnRequest { compare: vec![compare], success: vec![put], failure: Vec::new() }).await?;
            Ok(Answer { read_value: None, deleted: 0, succeeded: response.succeeded, revision: revision_of(response.header.as_ref()) })
        }
    }
}

/// Heals everything and waits for one leader, a committed write and identical state on
/// every member. Returns a liveness violation if the bound passes first.
async fn converge(cluster: &Cluster, options: &Options) -> Verdict {
    for i in 0..cluster.members.len() {
        heal(cluster, &Heal::Resume(i));
        heal(cluster, &Heal::RepairCorruption(i));
        cluster.members[i].wal_disk.set_capacity_bytes(None);
        cluster.members[i].clock.stop_drift();
        if cluster.members[i].down.load(Ordering::SeqCst) {
            cluster.members[i].wal_disk.crash(|_, _| 0);
            cluster.restart(i);
        }
    }
    heal(cluster, &Heal::Network);
    cluster.world.event("phase", None, "liveness: all faults healed".into());
    let deadline = cluster.world.now_ms() + options.liveness_bound_ms;
    // A write must commit: the leader has committed in its term and pending work is done.
    let mut committed = false;
    let mut attempt = 0;
    while !committed && cluster.world.now_ms() < deadline {
        let member = attempt % cluster.members.len();
        attempt += 1;
        let kind = OpKind::Put { key: "liveness".into(), value: format!("probe-{attempt}") };
        let (_, outcome) = perform(cluster, u64::MAX, member, kind, false, false, 2000).await;
        committed = outcome == Outcome::Ok;
        if !committed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !committed {
        return Verdict::Violation {
            check: "liveness".into(),
            detail: format!("no write committed within {} ms after healing", options.liveness_bound_ms),
            ops: vec![],
        };
    }
    let mut last = Vec::new();
    for _ in 0..LIVENESS_POLLS_MAX {
        let statuses = cluster.statuses().await;
        let all_up = statuses.iter().all(Option::is_some);
        let first = statuses[0].as_ref().map(|s| (s.revision, s.kv_hash));
        let same = statuses.iter().all(|s| s.as_ref().map(|s| (s.revision, s.kv_hash)) == first);
        if all_up && same {
            let (revision, kv_hash) = first.expect("all up");
            cluster.world.event("phase", None, format!("converged: every member at revision {revision} with kv hash {kv_hash:08x}"));
            return Verdict::Ok;
        }
        last = statuses;
        if cluster.world.now_ms() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<String> = last
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            Some(s) => format!("m{i}: rev {} hash {:08x} applied {} role {:?}", s.revision, s.kv_hash, s.applied_index, s.role),
            None => format!("m{i}: down"),
        })
        .collect();
    Verdict::Violation {
        check: "convergence".into(),
        detail: format!("members did not converge within {} ms: {}", options.liveness_bound_ms, summary.join("; ")),
        ops: vec![],
    }
}

/// Runs one seed of a scenario. Must be called inside a madsim runtime seeded with
/// `options.seed`.
pub async fn run(scenario: Scenario, options: Options) -> RunReport {
    let member_names: Vec<String> = (0..options.members).map(|i| format!("m{i}")).collect();
    let token = format!("sim-{}", scenario.name);
    let member_ids: Vec<u64> = member_names.iter().map(|n| ids::member_id(&token, n)).collect();
    let cluster_id = ids::cluster_id(&token, &member_ids);
    let world = World::new(&member_ids);
    let net = SimNet::new(options.seed ^ 0x6e65_7477_6f72_6b21, LinkQuality::good(options.message_delay_ms_max));
    tokio::spawn(net.clone().run_delivery());
    let cluster = Arc::new(Cluster::start(&options, &scenario, world.clone(), net.clone(), &member_ids, cluster_id));
    // Crash points: members the world asks to kill at a chosen moment, restarted shortly.
    let (crash_sender, mut crash_receiver) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    world.set_crash_requests(crash_sender);
    let crash_cluster = cluster.clone();
    let mut crash_rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x6372_6173_6821_2121);
    tokio::spawn(async move {
        while let Some((index, reason)) = crash_receiver.recv().await {
            if crash_cluster.members[index].down.load(Ordering::SeqCst) || crash_cluster.down_count() >= crash_cluster.attrition_max() {
                continue;
            }
            crash_cluster.kill(index, &reason);
            tokio::time::sleep(Duration::from_millis(crash_rng.gen_range(0..=5))).await;
            crash_cluster.restart(index);
        }
    });
    world.event("phase", None, "chaos".into());

    // Fault driver: the timeline and the swarm, each fault healed after its duration.
    let mut fault_rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x6661_756c_7473_2121);
    let mut faults: Vec<(u64, FaultKind)> = scenario.faults.timeline.iter().map(|f| (f.at_ms, f.fault)).collect();
    if !options.swarm_enabled.is_empty() && options.swarm_interval_ms > 0 {
        let mut at = options.swarm_interval_ms;
        while at < options.duration_ms {
            let kind = *options.swarm_enabled.choose(&mut fault_rng).expect("non-empty swarm");
            faults.push((at, kind));
            at += fault_rng.gen_range(options.swarm_interval_ms / 2..=options.swarm_interval_ms * 3 / 2).max(1);
        }
    }
    faults.sort_by_key(|(at, _)| *at);
    let driver_cluster = cluster.clone();
    let driver_options = options.clone();
    let driver = tokio::spawn(async move {
        let start = driver_cluster.world.now_ms();
        let mut pending_heals: Vec<(u64, Heal)> = Vec::new();
        for (at, kind) in faults {
            // Heal what is due before the next fault.
            loop {
                let now = driver_cluster.world.now_ms() - start;
                pending_heals.sort_by_key(|(due, _)| *due);
                match pending_heals.first() {
                    Some((due, _)) if *due <= at => {
                        if *due > now {
                            tokio::time::sleep(Duration::from_millis(due - now)).await;
                        }
                        let (_, h) = pending_heals.remove(0);
                        heal(&driver_cluster, &h);
                    }
                    _ => break,
                }
            }
            let now = driver_cluster.world.now_ms() - start;
            if at > now {
                tokio::time::sleep(Duration::from_millis(at - now)).await;
            }
            let heals = inject(&driver_cluster, kind, &mut fault_rng, &driver_options).await;
            let duration = fault_rng.gen_range(driver_options.fault_duration_ms / 2..=driver_options.fault_duration_ms.max(1));
            let due = driver_cluster.world.now_ms() - start + duration;
            pending_heals.extend(heals.into_iter().map(|h| (due, h)));
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..options.clients as u64 {
        clients.push(tokio::spawn(run_client(client, cluster.clone(), scenario.clone(), stop.clone(), options.seed)));
    }
    tokio::time::sleep(Duration::from_millis(options.duration_ms)).await;
    stop.store(true, Ordering::SeqCst);
    driver.abort();
    for client in clients {
        let _ = client.await;
    }

    let liveness = converge(&cluster, &options).await;
    // Final linearizable reads of every key: durability of acknowledged writes.
    for key_index in 0..options.keys {
        let kind = OpKind::Get { key: key_name(key_index), serializable: false };
        perform(&cluster, u64::MAX, key_index % options.members, kind, false, false, 5000).await;
    }
    world.event("phase", None, "done".into());

    let history = world.history();
    // Causes before consequences: raft invariants, then client-visible checks, then liveness.
    let mut verdicts: Vec<(String, Verdict)> = Vec::new();
    const INVARIANT_VIOLATIONS_REPORTED_MAX: usize = 20;
    for violation in world.invariant_violations().into_iter().take(INVARIANT_VIOLATIONS_REPORTED_MAX) {
        verdicts.push(("raft-invariants".into(), violation));
    }
    for (key, verdict) in checker::check_linearizability(&history) {
        verdicts.push((format!("linearizability[{key}]"), verdict));
    }
    verdicts.push(("serializable-reads".into(), checker::check_serializable_reads(&history)));
    verdicts.push(("revision-monotonic".into(), checker::check_revisions_monotonic(&history)));
    verdicts.push(("liveness".into(), liveness));
    let leaderless = world.leaderless_terms();
    if scenario.expect.split_vote {
        let verdict = if leaderless.is_empty() {
            Verdict::Violation { check: "expect-split-vote".into(), detail: "no term ended without a leader".into(), ops: vec![] }
        } else {
            Verdict::Ok
        };
        verdicts.push(("expect-split-vote".into(), verdict));
    }
    let ok_ops = history.count(Outcome::Ok);
    if ok_ops < scenario.expect.ok_operations_min {
        verdicts.push((
            "expect-progress".into(),
            Verdict::Violation {
                check: "expect-progress".into(),
                detail: format!("only {ok_ops} operations succeeded, the scenario expects {}", scenario.expect.ok_operations_min),
                ops: vec![],
            },
        ));
    }
    RunReport::new(options, verdicts, history, world.timeline(), world.trace_hash(), net.stats(), leaderless, world.leaders_by_term(), world.now_ms())
}

/// Runs one seed in a fresh thread with a fresh madsim runtime, so no static or
/// thread-local state of an earlier run can leak into it.
pub fn run_seed_in_fresh_thread(scenario: &Scenario, seed: u64, planted_bug: Option<String>) -> RunReport {
    let scenario = scenario.clone();
    let thread = std::thread::Builder::new().name(format!("seed-{seed}")).spawn(move || {
        let mut options = Options::derive(&scenario, seed);
        options.planted_bug = planted_bug;
        let mut runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        let limit_ms = options.duration_ms + options.liveness_bound_ms + 120_000;
        runtime.set_time_limit(Duration::from_millis(limit_ms));
        runtime.block_on(run(scenario, options))
    });
    match thread.map(|t| t.join()) {
        Ok(Ok(report)) => report,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => panic!("cannot start a simulation thread: {e}"),
    }
}
