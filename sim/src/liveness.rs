//! The liveness phase: heal every fault, then require a committed write and identical
//! state on every member within the scenario's bound.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::checker::Verdict;
use crate::cluster::Cluster;
use crate::faults::{heal, undo_snapshot_damage, undo_wal_damage, Heal};
use crate::history::{OpKind, Outcome};
use crate::scenario::Options;
use crate::workload::perform;

/// Polls of cluster status during the liveness phase (one every 100 ms).
pub const LIVENESS_POLLS_MAX: u64 = 10_000;

/// Heals everything and waits for one leader, a committed write and identical state on
/// every member. Returns a liveness violation if the bound passes first.
pub async fn converge(cluster: &Cluster, options: &Options) -> Verdict {
    heal_everything(cluster);
    cluster.world.event("phase", None, "liveness: all faults healed".into());
    let mut late_stops = 0;
    let deadline = cluster.world.now_ms() + options.liveness_bound_ms;
    // An operator replacing a member finishes first (its steps are bounded).
    while cluster.replacing.load(Ordering::SeqCst) && cluster.world.now_ms() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A write must commit: the leader has committed in its term and pending work is done.
    let mut committed = false;
    let mut attempt = 0;
    while !committed && cluster.world.now_ms() < deadline {
        restart_late_stops(cluster, &mut late_stops);
        // An operator clears a NOSPACE alarm left from the chaos phase, as etcd's runbook.
        crate::maintenance_workload::recover_from_nospace(cluster).await;
        crate::maintenance_workload::disarm_every_corrupt(cluster).await;
        // An auth setup the chaos phase ended in the middle of is finished too.
        crate::auth_workload::finish_abandoned_setup(cluster, attempt as u64).await;
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
    crate::membership_workload::settle(cluster).await;
    let mut last = Vec::new();
    for _ in 0..LIVENESS_POLLS_MAX {
        restart_late_stops(cluster, &mut late_stops);
        let statuses = cluster.statuses().await;
        let mut digests = Vec::new();
        // A removed member whose replacement never started is out of the cluster.
        let statuses: Vec<_> = statuses.into_iter().enumerate().filter(|(i, _)| !cluster.members[*i].is_retired()).map(|(_, s)| s).collect();
        for slot in cluster.members.iter().filter(|m| !m.is_retired()) {
            let digest = match slot.handle() {
                Some((handle, _)) => tokio::time::timeout(Duration::from_millis(500), handle.state_digest()).await.ok().flatten(),
                None => None,
            };
            digests.push(digest);
        }
        let all_up = statuses.iter().all(Option::is_some) && digests.iter().all(Option::is_some);
        let first = digests[0];
        let same = digests.iter().all(|d| *d == first);
        if all_up && same {
            let (revision, kv_hash) = first.expect("all up");
            cluster.world.event("phase", None, format!(
                    "converged: every member at revision {revision} with state digest {kv_hash:016x}, compacted at {:?}",
                    statuses.iter().flatten().map(|s| s.compact_revision).collect::<Vec<_>>()
                ));
            return Verdict::Ok;
        }
        last = statuses.into_iter().zip(digests).collect();
        if cluster.world.now_ms() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<String> = last
        .iter()
        .enumerate()
        .map(|(i, (s, digest))| match (s, digest) {
            (Some(s), Some((_, hash))) => format!("m{i}: rev {} digest {hash:016x} applied {} role {:?}", s.revision, s.applied_index, s.role),
            _ => format!("m{i}: down"),
        })
        .collect();
    Verdict::Violation {
        check: "convergence".into(),
        detail: format!("members did not converge within {} ms: {}", options.liveness_bound_ms, summary.join("; ")),
        ops: vec![],
    }
}

/// The catch-up check (`[expect] catch_up_under_load_ms`), run while the clients go on
/// writing: heals every fault, notes the highest index any member has applied, waits
/// `window_ms`, then requires every member of the cluster to have applied that index.
/// A follower a leader cannot catch up while writes go on (a fresh snapshot the log is
/// compacted past before it is ready, made again and again) ends the window behind;
/// the liveness phase, with the writes stopped, would see it catch up.
pub async fn catch_up_under_load(cluster: &Cluster, window_ms: u64) -> Verdict {
    heal_everything(cluster);
    let statuses = cluster.statuses().await;
    let target = statuses.iter().flatten().map(|s| s.applied_index).max().unwrap_or(0);
    cluster.world.event("phase", None, format!("catch-up under load: all faults healed; every member must apply index {target} within {window_ms} ms"));
    tokio::time::sleep(Duration::from_millis(window_ms)).await;
    let statuses = cluster.statuses().await;
    let mut behind = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        if cluster.members[i].is_retired() {
            continue;
        }
        match status {
            Some(s) if s.applied_index >= target => {}
            Some(s) => behind.push(format!("m{i}: applied {} role {:?}", s.applied_index, s.role)),
            None => behind.push(format!("m{i}: down")),
        }
    }
    if behind.is_empty() {
        cluster.world.event("phase", None, format!("caught up: every member applied index {target}"));
        return Verdict::Ok;
    }
    Verdict::Violation {
        check: "catch-up-under-load".into(),
        detail: format!("{window_ms} ms after every fault was healed, with the clients writing, not every member had applied index {target}: {}", behind.join("; ")),
        ops: vec![],
    }
}

/// Ends every fault: resumes paused members, clears disk faults and clock drift,
/// restarts what is down or holds bad RAM, and heals the network.
fn heal_everything(cluster: &Cluster) {
    for i in 0..cluster.members.len() {
        heal(cluster, &Heal::Resume(i));
        // Clear every disk fault first, then restart what is down once: a restart on a
        // disk still failing would only stop again.
        let slot = &cluster.members[i];
        undo_wal_damage(cluster, i);
        undo_snapshot_damage(cluster, i);
        for disk in [&slot.wal_disk, &slot.data_disk] {
            disk.set_capacity_bytes(None);
            disk.fail_next_reads(0, None);
            disk.disarm_sync_fault();
        }
        slot.clock.stop_drift();
        if cluster.world.is_memory_corrupted(slot.member_id()) && !slot.down.load(Ordering::SeqCst) {
            cluster.kill(i, "restarted to rebuild its memory from disk");
        }
        if slot.down.load(Ordering::SeqCst) {
            // A machine restart: nothing unsynced survives, and a failed fsync's poison
            // is gone with the page cache.
            slot.wal_disk.crash(|_, _| 0);
            slot.data_disk.crash(|_, _| 0);
            cluster.restart(i);
        }
    }
    heal(cluster, &Heal::Network);
}

/// Members a fault that struck before the heal stopped only after it: a disk fsync that
/// failed, or a snapshot write refused for space, before the heal but reported to the
/// member's loop later (a snapshot job's) stops it with nobody left to restart it
/// (disk-faults 3842: the fsync; disk-faults 10110: the full disk, 3 ms after the heal).
/// Restarted as the heal would have (a machine restart: the failed fsync's poison goes
/// with the page cache; the disk's space was freed by the heal), at most
/// `LATE_STOPS_RESTARTED_MAX` times. A member that keeps running on a poisoned disk is
/// left alone: what it does then is for the checks to judge.
fn restart_late_stops(cluster: &Cluster, restarted: &mut u64) {
    for (i, slot) in cluster.members.iter().enumerate() {
        let poisoned = slot.wal_disk.is_poisoned() || slot.data_disk.is_poisoned();
        let for_space = slot.stopped_for_space.load(Ordering::SeqCst);
        if *restarted < LATE_STOPS_RESTARTED_MAX && slot.down.load(Ordering::SeqCst) && (poisoned || for_space) {
            *restarted += 1;
            slot.wal_disk.crash(|_, _| 0);
            slot.data_disk.crash(|_, _| 0);
            let cause = if poisoned { "an fsync that failed" } else { "a write refused for space" };
            cluster.world.event("heal", Some(i), format!("restart: stopped after the heal by {cause} before it"));
            cluster.restart(i);
        }
    }
}

/// Members restarted by [`restart_late_stops`] in one liveness phase.
pub const LATE_STOPS_RESTARTED_MAX: u64 = 8;
