//! The fault driver's table: [`inject`] turns one fault kind into changes to the
//! cluster and returns what healing it takes; [`heal`] undoes them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use detcd_node::env::mem_disk::UnsyncedFate;

use crate::cluster::{Cluster, MemberSlot};
use std::sync::Arc;
use crate::net::LinkQuality;
use crate::scenario::{FaultKind, Options};

/// Sector size for torn writes: a crash keeps whole sectors of unsynced data.
pub const SECTOR_BYTES: usize = 512;
/// Share of messages delivered a second time during a `stale_redelivery` fault.
pub const STALE_REDELIVERY_RATE: f64 = 0.5;
/// How late such a second copy may arrive: long enough to outlive a member's
/// incarnation, so old answers reach the next one.
pub const STALE_REDELIVERY_DELAY_MS_MAX: u64 = 2000;

/// How long a reset connection drops messages: the production transport's pause
/// between reconnection attempts (`env::tcp::PEER_RECONNECT_DELAY_MS`, not built here).
pub const PEER_RECONNECT_DELAY_MS: u64 = 100;

/// Injects one fault; returns what must be undone when it is healed.
pub async fn inject(cluster: &Arc<Cluster>, fault: FaultKind, rng: &mut ChaCha8Rng, options: &Options) -> Vec<Heal> {
    let n = cluster.members.len();
    let ids: Vec<u64> = cluster.members.iter().map(|m| m.member_id()).collect();
    let can_take_down = cluster.down_count() < cluster.attrition_max();
    // Slots that hold a member of the cluster (a free slot holds none).
    let members: Vec<usize> = (0..n).filter(|i| !cluster.members[*i].is_retired()).collect();
    let running: Vec<usize> =
        members.iter().copied().filter(|i| !cluster.members[*i].down.load(Ordering::SeqCst) && !cluster.members[*i].paused.load(Ordering::SeqCst)).collect();
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
                    world.arm_crash_after_vote(cluster.members[voter].member_id());
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
        FaultKind::MoveLeader => {
            let Some(leader) = leader else { return vec![] };
            let targets: Vec<usize> = running.iter().copied().filter(|i| *i != leader).collect();
            let (Some(&target), Some((handle, _))) = (targets.choose(rng), cluster.members[leader].handle()) else { return vec![] };
            let target_id = cluster.members[target].member_id();
            let terms_before = world.leaders_by_term().keys().next_back().copied().unwrap_or(0);
            world.event("fault", Some(leader), format!("operator: move leadership to m{target}"));
            let (world, handle) = (world.clone(), handle.clone());
            // Answered within the request timeout; the chaos goes on meanwhile.
            drop(madsim::task::spawn(async move {
                let answer = handle.move_leader(target_id).await;
                world.count(&format!("move leader: {}", if answer.is_ok() { "done" } else { "refused or timed out" }));
                if answer.is_ok() {
                    // Seen by any member: the target may have led, been followed and lost
                    // power before it reported its role (membership-chaos seed 3 with a
                    // power loss at m0's WAL write 192).
                    let led = world.leaders_by_term().range(terms_before..).any(|(_, id)| *id == target_id);
                    if !led {
                        world.violation("move-leader", format!("MoveLeader to m{target} answered success, but m{target} led no term since it was asked"));
                    }
                }
            }));
            vec![]
        }
        FaultKind::ReplaceMember | FaultKind::AddMember | FaultKind::RemoveMember | FaultKind::UpdateMember => {
            use crate::membership_workload::{operate, MembershipOperation};
            // One membership operation at a time; a removal only while the others can
            // make a quorum and at least three members are in the cluster.
            let free_slots: Vec<usize> = (0..n).filter(|i| cluster.members[*i].is_retired()).collect();
            let victim = if rng.gen_bool(0.3) { leader } else { running.choose(rng).copied() };
            let as_learner = rng.gen_bool(0.5);
            let operation = match fault {
                FaultKind::ReplaceMember => victim.filter(|_| can_take_down).map(|victim| MembershipOperation::Replace { victim, as_learner }),
                FaultKind::AddMember => free_slots.choose(rng).map(|slot| MembershipOperation::Add { slot: *slot, as_learner }),
                FaultKind::UpdateMember => running.choose(rng).map(|slot| MembershipOperation::Update { slot: *slot }),
                _ => victim.filter(|_| can_take_down && cluster.member_count() >= 3).map(|victim| MembershipOperation::Remove { victim }),
            };
            let Some(operation) = operation else { return vec![] };
            if cluster.replacing.swap(true, Ordering::SeqCst) {
                return vec![];
            }
            let (slot, what) = match operation {
                MembershipOperation::Replace { victim, as_learner } => {
                    (victim, format!("operator: replace m{victim} (remove it, add a new {} on blank disks)", if as_learner { "learner" } else { "voter" }))
                }
                MembershipOperation::Add { slot, as_learner } => (slot, format!("operator: add a {} as m{slot}", if as_learner { "learner" } else { "voter" })),
                MembershipOperation::Remove { victim } => (victim, format!("operator: remove m{victim}")),
                MembershipOperation::Update { slot } => (slot, format!("operator: change m{slot}'s peer URLs")),
            };
            world.event("fault", Some(slot), what);
            drop(madsim::task::spawn(operate(cluster.clone(), operation)));
            vec![]
        }
        FaultKind::CrashRandom => {
            let (Some(&victim), true) = (running.choose(rng), can_take_down) else { return vec![] };
            cluster.kill(victim, "random member");
            vec![Heal::Restart(victim)]
        }
        FaultKind::CrashLoseUnsynced => {
            let victim = if rng.gen_bool(0.5) { leader } else { running.choose(rng).copied() };
            let (Some(victim), true) = (victim, can_take_down) else { return vec![] };
            cluster.kill(victim, "power loss: unsynced writes lost, torn or zeroed");
            let slot = &cluster.members[victim];
            let torn = options.torn_write_probability;
            let mut fate = |_: &str, durable: usize, live: usize| power_loss_fate(rng, torn, durable, live);
            let mut losses = slot.wal_disk.power_loss(&mut fate);
            losses.extend(slot.data_disk.power_loss(&mut fate));
            for loss in losses {
                world.event("fault", Some(victim), format!("{}: lost {} of {} unsynced bytes", loss.path, loss.unsynced_bytes - loss.kept_bytes, loss.unsynced_bytes));
            }
            vec![Heal::Restart(victim)]
        }
        FaultKind::IsolateOne => {
            let Some(victim) = (!members.is_empty()).then(|| members[rng.gen_range(0..members.len())]) else { return vec![] };
            let others: Vec<u64> = ids.iter().copied().filter(|id| *id != ids[victim]).collect();
            cluster.net.partition(&[ids[victim]], &others);
            world.event("fault", Some(victim), "isolated".into());
            vec![Heal::Network]
        }
        FaultKind::PartitionLeaderMinority | FaultKind::PartitionMajorityMinority => {
            let mut order: Vec<usize> = members.clone();
            order.shuffle(rng);
            if fault == FaultKind::PartitionLeaderMinority {
                let Some(leader) = leader else { return vec![] };
                order.retain(|i| *i != leader);
                order.insert(0, leader);
            }
            let minority_size = ((order.len().max(1) - 1) / 2).max(1);
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
            let mut order: Vec<usize> = members.clone();
            order.shuffle(rng);
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            cluster.net.partition(&a.iter().map(|i| ids[*i]).collect::<Vec<_>>(), &b.iter().map(|i| ids[*i]).collect::<Vec<_>>());
            world.event("fault", Some(bridge), format!("bridge: {a:?} <-> {bridge} <-> {b:?}"));
            vec![Heal::Network]
        }
        FaultKind::PartitionAsymmetric => {
            let Some(a) = leader.or_else(|| (!members.is_empty()).then(|| members[rng.gen_range(0..members.len())])) else { return vec![] };
            let others: Vec<usize> = members.iter().copied().filter(|i| *i != a).collect();
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
            world.arm_crash_after_vote(cluster.members[victim].member_id());
            world.event("fault", Some(victim), "armed: crash right after its next vote".into());
            vec![Heal::Restart(victim)]
        }
        FaultKind::DiskFullFollower => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            fill_disk(victim)
        }
        FaultKind::CrashAfterPersist => {
            let (Some(leader), true) = (leader, can_take_down) else { return vec![] };
            world.arm_crash_after_persist(cluster.members[leader].member_id());
            world.event("fault", Some(leader), "armed: crash right after its next WAL sync, before replying".into());
            vec![Heal::Restart(leader)]
        }
        FaultKind::CorruptWalRecord | FaultKind::ReplaceCorruptedMember => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            let slot = &cluster.members[victim];
            let Some((segment, offset)) = choose_wal_damage(slot, rng) else { return vec![] };
            cluster.kill(victim, "stopped to damage its disk");
            slot.wal_disk.corrupt_byte(&segment, offset);
            *slot.corrupted.lock().expect("slot lock") = Some((segment.clone(), offset));
            world.event("fault", Some(victim), format!("flipped byte {offset} of {segment}; restarting it must fail"));
            cluster.restart(victim);
            if fault == FaultKind::ReplaceCorruptedMember && !cluster.replacing.swap(true, Ordering::SeqCst) {
                use crate::membership_workload::{operate, MembershipOperation};
                let as_learner = rng.gen_bool(0.5);
                let wait_ms = rng.gen_range(200..=2000);
                world.event("fault", Some(victim), format!("operator: replace m{victim}, whose disk lost data, in {wait_ms} ms"));
                let cluster = cluster.clone();
                drop(madsim::task::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    operate(cluster, MembershipOperation::Replace { victim, as_learner }).await;
                }));
                return vec![];
            }
            vec![Heal::RepairCorruption(victim)]
        }
        FaultKind::PowerLossMidIo => {
            let victim = if rng.gen_bool(0.5) { leader } else { running.choose(rng).copied() };
            let (Some(victim), true) = (victim, can_take_down) else { return vec![] };
            let slot = cluster.members[victim].clone();
            // The data disk writes only in snapshot steps (about five operations each):
            // small counts land inside one.
            let on_wal = rng.gen_bool(0.6);
            let ops = if on_wal { rng.gen_range(1..=40) } else { rng.gen_range(1..=6) };
            let disk = if on_wal { &slot.wal_disk } else { &slot.data_disk };
            disk.arm_power_loss(ops);
            world.event("fault", Some(victim), format!("armed: power loss at write {ops} of its {} disk", if on_wal { "WAL" } else { "data" }));
            let until_ms = world.now_ms() + options.fault_duration_ms.max(1000) * 3;
            restart_after_armed_power_loss(cluster.clone(), victim, options.torn_write_probability, until_ms, rng.gen());
            vec![]
        }
        FaultKind::PowerLossRack => {
            if running.len() < 2 {
                return vec![];
            }
            let mut rack = running.clone();
            rack.shuffle(rng);
            rack.truncate(rng.gen_range(2..=running.len()));
            rack.sort_unstable();
            let torn = options.torn_write_probability;
            world.event("fault", None, format!("power lost in a rack: members {rack:?} at once"));
            for &victim in &rack {
                cluster.kill(victim, "rack power loss");
                let slot = &cluster.members[victim];
                let mut fate = |_: &str, durable: usize, live: usize| power_loss_fate(rng, torn, durable, live);
                let mut losses = slot.wal_disk.power_loss(&mut fate);
                losses.extend(slot.data_disk.power_loss(&mut fate));
                for loss in losses.iter().filter(|l| l.unsynced_bytes > 0) {
                    world.event("fault", Some(victim), format!("{}: lost {} of {} unsynced bytes", loss.path, loss.unsynced_bytes - loss.kept_bytes, loss.unsynced_bytes));
                }
            }
            // Power comes back member by member within a second, not after the usual
            // fault duration: the cluster is down meanwhile.
            let restarter = cluster.clone();
            let delays: Vec<u64> = rack.iter().map(|_| rng.gen_range(0..=1000)).collect();
            tokio::spawn(async move {
                let mut order: Vec<(u64, usize)> = delays.into_iter().zip(rack).collect();
                order.sort_unstable();
                let start = restarter.world.now_ms();
                for (delay, victim) in order {
                    let now = restarter.world.now_ms() - start;
                    if delay > now {
                        tokio::time::sleep(Duration::from_millis(delay - now)).await;
                    }
                    if restarter.members[victim].down.load(Ordering::SeqCst) {
                        restarter.restart(victim);
                    }
                }
            });
            vec![]
        }
        FaultKind::DataDiskFault => {
            let (Some(&victim), true) = (running.choose(rng), can_take_down) else { return vec![] };
            let disk = &cluster.members[victim].data_disk;
            if rng.gen_bool(0.5) {
                disk.set_capacity_bytes(Some(disk.used_bytes()));
                world.event("fault", Some(victim), "data disk full: its next snapshot cannot be written".into());
            } else {
                disk.fail_next_sync();
                world.event("fault", Some(victim), "data disk: the next fsync fails".into());
            }
            vec![Heal::DataDisk(victim)]
        }
        FaultKind::CorruptSnapshotFile => {
            let (Some(&victim), true) = (followers.choose(rng), can_take_down) else { return vec![] };
            let slot = &cluster.members[victim];
            // One damage at a time per member: its heal undoes exactly that flip (a second
            // flip before the heal would stay behind, unrecorded — found when members
            // began falling back to their older snapshot file and running on).
            if slot.snapshot_damaged.lock().expect("slot lock").is_some() {
                return vec![];
            }
            let newest = slot.data_disk.files().into_iter().filter(|(name, len)| name.ends_with(".snap") && *len > 0).last();
            let Some((file, len)) = newest else { return vec![] };
            let offset = rng.gen_range(0..len);
            cluster.kill(victim, "stopped to damage its newest snapshot file");
            slot.data_disk.corrupt_byte(&file, offset);
            let id = slot.data_disk.file_id(&file).expect("the file was just damaged");
            *slot.snapshot_damaged.lock().expect("slot lock") = Some((file.clone(), offset, id));
            world.event("fault", Some(victim), format!("flipped byte {offset} of {file}; it must pass over that file or refuse to start"));
            cluster.restart(victim);
            vec![Heal::RepairSnapshot(victim)]
        }
        FaultKind::ReadErrors => {
            let victim = if rng.gen_bool(0.5) { leader } else { running.choose(rng).copied() };
            let Some(victim) = victim else { return vec![] };
            let slot = &cluster.members[victim];
            let count = rng.gen_range(1..=4);
            // Silent flips only on the data disk: every file there is checksummed as a
            // whole. (A flip in the WAL's last record cannot be told from a torn write:
            // see ARCHITECTURE.md, "faults the design does not claim to survive".)
            if rng.gen_bool(0.7) {
                let flip = rng.gen_bool(0.5).then(|| rng.gen());
                slot.data_disk.fail_next_reads(count, flip);
                world.event("fault", Some(victim), format!("data disk: the next {count} reads {}", if flip.is_some() { "return a flipped byte" } else { "fail" }));
            } else if can_take_down {
                // The WAL is read only at start: restart the member into the fault.
                slot.wal_disk.fail_next_reads(count, None);
                world.event("fault", Some(victim), format!("WAL disk: the next {count} reads fail"));
                cluster.kill(victim, "restarted to read its WAL");
                cluster.restart(victim);
            }
            vec![Heal::ReadFaults(victim)]
        }
        FaultKind::MemoryCorruption => {
            // One damaged member at a time: the check finds a minority that differs.
            let any_damaged = cluster.members.iter().any(|m| world.is_memory_corrupted(m.member_id()));
            let (Some(&victim), true, false) = (followers.choose(rng), can_take_down, any_damaged) else { return vec![] };
            let Some((handle, _)) = cluster.members[victim].handle() else { return vec![] };
            // A key of the fault's own, written through the victim (answered once the
            // victim applied it), then damaged in its memory only.
            let key = format!("memtest-{}", rng.gen::<u32>());
            let put = detcd_node::pb::etcdserverpb::PutRequest { key: key.clone().into_bytes(), value: b"payload".to_vec().into(), ..Default::default() };
            if !matches!(tokio::time::timeout(Duration::from_millis(2000), handle.put(put)).await, Ok(Ok(_))) {
                return vec![];
            }
            // Marked first: the member may apply (and report) more before the call returns.
            let member_id = cluster.members[victim].member_id();
            world.memory_corrupted(member_id);
            if handle.corrupt_memory_for_simulation(key.as_bytes()).await.is_none() {
                world.memory_corruption_aborted(member_id);
                return vec![];
            }
            world.event("fault", Some(victim), format!("memory corrupted: a byte of {key}'s value flipped in its store"));
            vec![Heal::MemoryCorruption(victim)]
        }
        FaultKind::ConnectionReset => {
            let mut lost = 0;
            let mut links = Vec::new();
            for _ in 0..rng.gen_range(1..=n.max(2)) {
                let from = rng.gen_range(0..n);
                let to = rng.gen_range(0..n);
                if from != to {
                    lost += cluster.net.reset_connection(ids[from], ids[to], PEER_RECONNECT_DELAY_MS);
                    links.push((from, to));
                }
            }
            world.event("fault", None, format!("connections reset on links {links:?}: {lost} messages in flight lost"));
            vec![]
        }
        FaultKind::StaleRedelivery => {
            cluster.net.set_redelivery(STALE_REDELIVERY_RATE, STALE_REDELIVERY_DELAY_MS_MAX);
            world.event("fault", None, "stale redelivery: some messages arrive again seconds later".into());
            vec![Heal::Network]
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
            let Some(victim) = (!members.is_empty()).then(|| members[rng.gen_range(0..members.len())]) else { return vec![] };
            let jump_ms = rng.gen_range(0..=options.clock_jump_ms_max);
            let drift = if options.clock_drift_ppm_max == 0 { 0 } else { rng.gen_range(-options.clock_drift_ppm_max..=options.clock_drift_ppm_max) };
            cluster.members[victim].clock.skew(jump_ms, drift);
            world.event("fault", Some(victim), format!("clock jumps {jump_ms} ms, drifts {drift} ppm"));
            vec![Heal::Clock(victim)]
        }
    }
}

/// Watches `victim`'s disks, armed with [`MemDisk::arm_power_loss`]: when power goes
/// at the armed write, the member dies, both disks lose (tear, zero) their unsynced
/// bytes, and it restarts shortly after. Disarms at `until_ms` if the write never came.
///
/// [`MemDisk::arm_power_loss`]: detcd_node::env::mem_disk::MemDisk::arm_power_loss
pub fn restart_after_armed_power_loss(cluster: Arc<Cluster>, victim: usize, torn: f64, until_ms: u64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tokio::spawn(async move {
        let slot = cluster.members[victim].clone();
        loop {
            // Looked at once more when the time is up: a power loss that struck since the
            // last look is a crash like any other (canary-crash-points seed 6391: it struck
            // in the last 2 ms, was disarmed unseen, and the member stopped on the failed
            // write with nobody to restart it).
            if slot.wal_disk.is_powered_off() || slot.data_disk.is_powered_off() {
                cluster.kill(victim, "power lost at an exact write");
                cluster.world.count(crate::crash_sweep::CRASH_STRUCK_COVERAGE);
                let mut fate = |_: &str, durable: usize, live: usize| power_loss_fate(&mut rng, torn, durable, live);
                let mut losses = slot.wal_disk.power_loss(&mut fate);
                losses.extend(slot.data_disk.power_loss(&mut fate));
                for loss in losses {
                    cluster.world.event("fault", Some(victim), format!("{}: lost {} of {} unsynced bytes", loss.path, loss.unsynced_bytes - loss.kept_bytes, loss.unsynced_bytes));
                }
                slot.wal_disk.restore_power();
                slot.data_disk.restore_power();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=50))).await;
                cluster.restart(victim);
                return;
            }
            if cluster.world.now_ms() >= until_ms {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // It did not write that much in time: disarm.
        slot.wal_disk.restore_power();
        slot.data_disk.restore_power();
    });
}

/// What power loss leaves of one file's unsynced bytes `[durable, live)`: with
/// probability `torn` a torn write — kept up to a sector boundary of the file (sectors
/// are aligned to the file, not to the write, so a record straddling a boundary is cut),
/// or, half of those times, the whole unsynced range reads back as zeros; otherwise lost.
fn power_loss_fate(rng: &mut ChaCha8Rng, torn: f64, durable: usize, live: usize) -> UnsyncedFate {
    if !rng.gen_bool(torn) {
        return UnsyncedFate::Lost;
    }
    if rng.gen_bool(0.5) {
        return UnsyncedFate::ZeroFilledFrom(durable);
    }
    // Sector boundaries inside (durable, live], plus the end of the write itself.
    let first_boundary = (durable / SECTOR_BYTES + 1) * SECTOR_BYTES;
    let boundaries: Vec<usize> = (first_boundary..live).step_by(SECTOR_BYTES).chain(std::iter::once(live)).collect();
    UnsyncedFate::KeptUpTo(boundaries[rng.gen_range(0..boundaries.len())])
}

/// A byte to flip in `slot`'s WAL that no design could mistake for a torn write: any
/// byte of an older segment, or in the newest segment a byte of the length field of a
/// record that has a valid record after it.
fn choose_wal_damage(slot: &MemberSlot, rng: &mut ChaCha8Rng) -> Option<(String, usize)> {
    // Segments only: a spare (`.spare`) holds no records and is never read.
    let files: Vec<(String, usize)> = slot.wal_disk.files().into_iter().filter(|(name, _)| name.ends_with(".wal")).collect();
    let (newest, _) = files.last()?.clone();
    let older: Vec<(String, usize)> = files.iter().take(files.len() - 1).filter(|(_, len)| *len > 64).cloned().collect();
    if !older.is_empty() && rng.gen_bool(0.5) {
        let (segment, len) = older.choose(rng)?.clone();
        return Some((segment, rng.gen_range(0..len)));
    }
    let spans = detcd_node::storage::wal::record_spans(&slot.wal_disk.bytes_of(&newest)?);
    // Not the last record: a valid one must follow the damage.
    let (start, _) = *spans[..spans.len().saturating_sub(1)].choose(rng)?;
    Some((newest, start + rng.gen_range(0..4)))
}

/// What healing a fault takes.
#[derive(Clone, Debug)]
pub enum Heal {
    Restart(usize),
    Resume(usize),
    Network,
    FreeDiskAndRestart(usize),
    LoseUnsyncedAndRestart(usize),
    RepairCorruption(usize),
    /// Restore a flipped byte of a snapshot file; restart the member if it is down.
    RepairSnapshot(usize),
    /// Free the data disk and clear an armed fsync failure; restart if it stopped.
    DataDisk(usize),
    /// Clear armed read faults; restart the member if a start refused.
    ReadFaults(usize),
    /// Restart the member (its memory is rebuilt from its disk) and disarm its CORRUPT
    /// alarm, as an operator would once the corruption check raised it.
    MemoryCorruption(usize),
    Clock(usize),
}

/// Restores the WAL byte `corrupt_wal_record` flipped on member `i`, if one is flipped.
pub fn undo_wal_damage(cluster: &Cluster, i: usize) -> bool {
    let slot = &cluster.members[i];
    let Some((segment, offset)) = slot.corrupted.lock().expect("slot lock").take() else { return false };
    slot.wal_disk.corrupt_byte(&segment, offset);
    cluster.world.event("heal", Some(i), format!("restored byte {offset} of {segment}"));
    true
}

/// Restores the snapshot-file byte `corrupt_snapshot_file` flipped on member `i`, if one
/// is flipped and the damaged file is still there — the same file: a member that fell
/// back to an older snapshot may write the same index again, under the same name, and
/// that file is whole (found by disk-faults seed 64, where restoring the byte damaged
/// the new file).
pub fn undo_snapshot_damage(cluster: &Cluster, i: usize) -> bool {
    let slot = &cluster.members[i];
    let Some((file, offset, id)) = slot.snapshot_damaged.lock().expect("slot lock").take() else { return false };
    if slot.data_disk.file_id(&file) == Some(id) && slot.data_disk.corrupt_byte(&file, offset) {
        cluster.world.event("heal", Some(i), format!("restored byte {offset} of {file}"));
    }
    true
}

pub fn heal(cluster: &Cluster, heal: &Heal) {
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
            cluster.net.set_redelivery(0.0, 0);
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
            if undo_wal_damage(cluster, *i) {
                cluster.restart(*i);
            }
        }
        Heal::RepairSnapshot(i) => {
            if undo_snapshot_damage(cluster, *i) && cluster.members[*i].down.load(Ordering::SeqCst) {
                cluster.restart(*i);
            }
        }
        Heal::DataDisk(i) => {
            let slot = &cluster.members[*i];
            slot.data_disk.set_capacity_bytes(None);
            if slot.down.load(Ordering::SeqCst) {
                // After a failed fsync nothing unsynced can be trusted: drop it all.
                slot.data_disk.crash(|_, _| 0);
                cluster.world.event("heal", Some(*i), "data disk healed".into());
                cluster.restart(*i);
            } else {
                slot.data_disk.disarm_sync_fault();
                cluster.world.event("heal", Some(*i), "data disk healed (the fault never struck)".into());
            }
        }
        Heal::ReadFaults(i) => {
            let slot = &cluster.members[*i];
            slot.wal_disk.fail_next_reads(0, None);
            slot.data_disk.fail_next_reads(0, None);
            if slot.down.load(Ordering::SeqCst) {
                cluster.restart(*i);
            }
        }
        Heal::MemoryCorruption(i) => {
            let slot = &cluster.members[*i];
            if cluster.world.is_memory_corrupted(slot.member_id()) {
                if !slot.down.load(Ordering::SeqCst) {
                    cluster.kill(*i, "restarted to rebuild its memory from disk");
                }
                cluster.restart(*i);
            }
            let disarmer = cluster.world.clone();
            let members: Vec<Option<detcd_node::NodeHandle>> = cluster.members.iter().map(|m| m.handle().map(|(h, _)| h)).collect();
            let member_id = slot.member_id();
            tokio::spawn(async move {
                crate::maintenance_workload::disarm_corrupt(&members, member_id).await;
                disarmer.event("heal", None, format!("CORRUPT alarm of {member_id:016x} disarmed"));
            });
        }
        Heal::Clock(i) => {
            cluster.members[*i].clock.stop_drift();
            cluster.world.event("heal", Some(*i), "clock drift stopped".into());
        }
    }
}

