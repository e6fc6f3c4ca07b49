//! The operator: when the NOSPACE alarm is raised, compact to the current revision,
//! defragment every member, and disarm — the recovery of etcd's runbook (and of
//! `../shared/nospace-reference.txt`). And the backup client: `Maintenance.Snapshot`
//! from a random member now and then, decoded as `detcd snapshot restore` would and
//! recorded for the whole-state model to compare with the key space at its revision.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::pb::etcdserverpb::{alarm_request, AlarmRequest, AlarmType, CompactionRequest};

use crate::cluster::Cluster;

/// Recovers from a NOSPACE alarm if one is raised; returns whether it disarmed one.
pub async fn recover_from_nospace(cluster: &Cluster) -> bool {
    let running: Vec<usize> = (0..cluster.members.len()).filter(|i| cluster.members[*i].handle().is_some()).collect();
    let Some(&first) = running.first() else { return false };
    let Some((handle, _)) = cluster.members[first].handle() else { return false };
    let Ok(Some(status)) = tokio::time::timeout(Duration::from_millis(500), handle.status()).await else { return false };
    let alarms: Vec<(u64, i32)> = status.alarms.into_iter().filter(|(_, alarm)| *alarm == AlarmType::Nospace as i32).collect();
    if alarms.is_empty() {
        return false;
    }
    let timeout = Duration::from_millis(3000);
    if status.revision > status.compact_revision {
        let _ = tokio::time::timeout(timeout, handle.compact(CompactionRequest { revision: status.revision, physical: true })).await;
    }
    for index in &running {
        if let Some((member, _)) = cluster.members[*index].handle() {
            let _ = tokio::time::timeout(timeout, member.defragment()).await;
        }
    }
    let mut disarmed = false;
    for (member_id, alarm) in alarms {
        let request = AlarmRequest { action: alarm_request::AlarmAction::Deactivate as i32, member_id, alarm };
        disarmed |= matches!(tokio::time::timeout(timeout, handle.alarm(request)).await, Ok(Ok(_)));
    }
    cluster.world.event("maintenance", Some(first), format!("NOSPACE: compacted to {}, defragmented, disarmed: {disarmed}", status.revision));
    disarmed
}

/// Saves a client snapshot from a random running member every `interval_ms` (±50%)
/// and records what it holds (or why it could not be read back).
pub async fn run_backup_client(cluster: Arc<Cluster>, interval_ms: u64, stop: Arc<AtomicBool>, seed: u64) {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6261_636b_7570_2121);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(interval_ms / 2..=interval_ms * 3 / 2))).await;
        let running: Vec<usize> = (0..cluster.members.len()).filter(|i| cluster.members[*i].handle().is_some()).collect();
        let Some(&member) = running.choose(&mut rng) else { continue };
        let Some((handle, _)) = cluster.members[member].handle() else { continue };
        if cluster.world.is_memory_corrupted(cluster.members[member].member_id()) {
            // Its memory is not the cluster's state; the corruption check's business.
            continue;
        }
        let Ok(Ok((revision, bytes))) = tokio::time::timeout(Duration::from_millis(3000), handle.client_snapshot()).await else { continue };
        let saved = match detcd_node::storage::client_snapshot::decode(&bytes) {
            Ok(state) => {
                let mvcc = state.mvcc();
                let request = detcd_node::pb::etcdserverpb::RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
                let kvs = mvcc.range(&request).map(|r| r.kvs).unwrap_or_default();
                crate::kv_model::SavedSnapshot {
                    member,
                    at_ms: cluster.world.now_ms(),
                    header_revision: revision,
                    revision: mvcc.current_revision(),
                    kvs: kvs.iter().map(crate::world::read_kv_of).collect(),
                    error: None,
                }
            }
            Err(error) => crate::kv_model::SavedSnapshot { member, at_ms: cluster.world.now_ms(), header_revision: revision, revision: 0, kvs: Vec::new(), error: Some(error) },
        };
        cluster.world.event("backup", Some(member), format!("snapshot saved at revision {revision} ({} bytes)", bytes.len()));
        cluster.world.record_snapshot(saved);
    }
}

/// Disarms the CORRUPT alarm of `member_id` through whichever member answers.
pub async fn disarm_corrupt(members: &[Option<detcd_node::NodeHandle>], member_id: u64) {
    let request = AlarmRequest { action: alarm_request::AlarmAction::Deactivate as i32, member_id, alarm: AlarmType::Corrupt as i32 };
    for handle in members.iter().flatten() {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(2000), handle.alarm(request)).await {
            return;
        }
    }
}

/// Disarms every CORRUPT alarm (after healing, when no member's memory is damaged).
pub async fn disarm_every_corrupt(cluster: &Cluster) {
    let members: Vec<Option<detcd_node::NodeHandle>> = cluster.members.iter().map(|m| m.handle().map(|(h, _)| h)).collect();
    let Some(handle) = members.iter().flatten().next() else { return };
    let Ok(Some(status)) = tokio::time::timeout(Duration::from_millis(500), handle.status()).await else { return };
    for (member_id, alarm) in status.alarms {
        if alarm == AlarmType::Corrupt as i32 {
            disarm_corrupt(&members, member_id).await;
        }
    }
}

/// Checks every `interval_ms` and recovers (see [`recover_from_nospace`]).
pub async fn run_operator(cluster: Arc<Cluster>, interval_ms: u64, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        recover_from_nospace(&cluster).await;
    }
}
