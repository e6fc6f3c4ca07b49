//! One seeded run: start the members on madsim with simulated disks, network and clocks,
//! drive the workload while the fault driver injects faults, heal everything, require
//! convergence within the liveness bound, then check the history and the invariants.
//!
//! The pieces live in their own modules: `cluster` (members across incarnations),
//! `faults` (the fault table and healing), `workload` (clients), `liveness` (healing
//! and convergence). This file only orders them.
//!
//! Everything here runs inside madsim's single-threaded, seeded runtime; every random
//! choice comes from generators seeded by the run's seed. Only built with `--cfg madsim`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::ids;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{self, Verdict};
use crate::cluster::Cluster;
use crate::faults::{heal, inject, restart_after_armed_power_loss, Heal};
use crate::history::{OpKind, Outcome, KEY_PREFIX, KEY_PREFIX_END};
use crate::kv_model;
use crate::liveness::{catch_up_under_load, converge};
use crate::net::{LinkQuality, SimNet};
use crate::report::RunReport;
use crate::scenario::{DiskKind, FaultKind, Options, Scenario, LIVENESS_BOUND_ELECTIONS};
use crate::alarm_checker;
use crate::lease_checker;
use crate::auth_workload::{run_auth_client, run_auth_operator};
use crate::lock_workload::{run_lock_client, LOCK_NAME};
use crate::maintenance_workload::{run_backup_client, run_operator};
use crate::lease_workload::{run_lease_client, LEASE_TTL_SECS_MAX};
use crate::report::EXPECTED_FINDING_PREFIX;
use crate::watch_checker::check_watches;
use crate::watch_workload::{run_compactor, run_watch_client};
use crate::workload::{key_name, perform, run_client};
use crate::world::World;

/// Runs one seed of a scenario. Must be called inside a madsim runtime seeded with
/// `options.seed`.
pub async fn run(scenario: Scenario, options: Options) -> RunReport {
    let member_names: Vec<String> = (0..options.members).map(|i| format!("m{i}")).collect();
    let token = format!("sim-{}", options.scenario);
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
    if let Some(crash) = options.crash_at_write {
        // Counted from the first write: the members have not run yet.
        let slot = &cluster.members[crash.member.min(cluster.members.len() - 1)];
        let disk = if crash.disk == DiskKind::Wal { &slot.wal_disk } else { &slot.data_disk };
        disk.arm_power_loss(crash.write);
        world.event("fault", Some(slot.index), format!("armed: power loss at write {} of its {:?} disk", crash.write, crash.disk));
        restart_after_armed_power_loss(cluster.clone(), slot.index, options.torn_write_probability, options.duration_ms, options.seed ^ crash.write);
    }
    world.event("phase", None, "chaos".into());

    // Fault driver: the timeline and the swarm, each fault healed after its duration.
    let faults = options.fault_plan(&scenario);
    let driver_cluster = cluster.clone();
    let driver_options = options.clone();
    let driver = tokio::spawn(async move {
        let start = driver_cluster.world.now_ms();
        let mut pending_heals: Vec<(u64, Heal)> = Vec::new();
        for planned in faults {
            let at = planned.at_ms;
            // Each fault's choices come from its own seed: dropping one fault from a plan
            // (as shrinking does) leaves the others' choices as they were.
            let mut fault_rng = ChaCha8Rng::seed_from_u64(planned.seed.expect("the plan seeds every fault"));
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
            let events_before = driver_cluster.world.timeline_len();
            let heals = inject(&driver_cluster, planned.fault, &mut fault_rng, &driver_options).await;
            // A fault that found nothing to act on (no leader to crash) adds no event.
            let acted = driver_cluster.world.timeline_len() > events_before;
            let label = serde_json::to_value(planned.fault).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            driver_cluster.world.count(&format!("fault {}: {label}", if acted { "fired" } else { "found nothing to act on" }));
            let duration = fault_rng.gen_range(driver_options.fault_duration_ms / 2..=driver_options.fault_duration_ms.max(1));
            let due = driver_cluster.world.now_ms() - start + duration;
            pending_heals.extend(heals.into_iter().map(|h| (due, h)));
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for client in 0..scenario.workload.watch_clients as u64 {
        watchers.push(tokio::spawn(run_watch_client(client, cluster.clone(), options.keys, watch_stop.clone(), options.seed)));
    }
    let mut lease_clients = Vec::new();
    for client in 0..scenario.workload.lease_clients as u64 {
        lease_clients.push(tokio::spawn(run_lease_client(client, cluster.clone(), stop.clone(), scenario.workload.client_timeout_ms, scenario.workload.late_keep_alives, options.seed)));
    }
    if scenario.workload.maintenance_interval_ms > 0 {
        tokio::spawn(run_operator(cluster.clone(), scenario.workload.maintenance_interval_ms, stop.clone()));
    }
    if scenario.workload.backup_interval_ms > 0 {
        tokio::spawn(run_backup_client(cluster.clone(), scenario.workload.backup_interval_ms, stop.clone(), options.seed));
    }
    if scenario.workload.compact_interval_ms > 0 {
        tokio::spawn(run_compactor(
            cluster.clone(),
            scenario.workload.compact_interval_ms,
            scenario.workload.compact_retain_revisions,
            stop.clone(),
            options.seed,
        ));
    }
    let skip_wait = options.planted_bug.as_deref() == Some("lock-skips-the-wait");
    let mut lock_clients = Vec::new();
    for client in 0..scenario.workload.lock_clients as u64 {
        let timeout_ms = scenario.workload.client_timeout_ms;
        lock_clients.push(tokio::spawn(run_lock_client(client, cluster.clone(), stop.clone(), timeout_ms, options.seed, skip_wait)));
    }
    let mut auth_clients = Vec::new();
    if scenario.workload.auth_clients > 0 {
        let timeout_ms = scenario.workload.client_timeout_ms;
        let enabled = Arc::new(AtomicBool::new(false));
        auth_clients.push(tokio::spawn(run_auth_operator(cluster.clone(), stop.clone(), timeout_ms, options.seed, enabled.clone())));
        for client in 0..scenario.workload.auth_clients as u64 {
            auth_clients.push(tokio::spawn(run_auth_client(client, cluster.clone(), stop.clone(), timeout_ms, options.seed, enabled.clone())));
        }
    }
    let mut clients = Vec::new();
    for client in 0..options.clients as u64 {
        clients.push(tokio::spawn(run_client(client, cluster.clone(), scenario.clone(), stop.clone(), options.seed, options.large_value_percent)));
    }
    tokio::time::sleep(Duration::from_millis(options.duration_ms)).await;
    // Catch-up under load: the faults end, the clients write on.
    let catch_up = if scenario.expect.catch_up_under_load_ms > 0 {
        driver.abort();
        let window_ms = scenario.expect.catch_up_under_load_ms + LIVENESS_BOUND_ELECTIONS * options.election_slowdown_ms(&scenario);
        Some(catch_up_under_load(&cluster, window_ms).await)
    } else {
        None
    };
    stop.store(true, Ordering::SeqCst);
    driver.abort();
    for client in clients {
        let _ = client.await;
    }
    for client in lease_clients {
        let _ = client.await;
    }
    for client in lock_clients {
        let _ = client.await;
    }
    for client in auth_clients {
        let _ = client.await;
    }
    // Nobody renews a lease from here on.
    let leases_abandoned_ms = world.now_ms();

    let liveness = converge(&cluster, &options).await;
    // Final linearizable reads of every key: durability of acknowledged writes.
    for key_index in 0..options.keys {
        let kind = OpKind::Get { key: key_name(key_index), serializable: false };
        perform(&cluster, u64::MAX, key_index % options.members, kind, false, false, 5000).await;
    }
    // Watches settle: each open chain must answer a final progress request.
    world.event("phase", None, "settle watches".into());
    watch_stop.store(true, Ordering::SeqCst);
    for watcher in watchers {
        let _ = watcher.await;
    }
    let lease_liveness = check_lease_liveness(&cluster, options.election_slowdown_ms(&scenario), leases_abandoned_ms).await;
    let member_list = check_member_lists(&cluster, options.election_slowdown_ms(&scenario)).await;
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
    let watch_record = world.watch_record();
    let key_space = kv_model::KeySpace::build(&watch_record);
    verdicts.extend(kv_model::check_kv_model(&history, &watch_record, &key_space, KEY_PREFIX, KEY_PREFIX_END));
    verdicts.push(kv_model::check_snapshots(&key_space, &world.snapshots()));
    verdicts.push(kv_model::check_locks(&key_space, &world.lock_holds(), &format!("{LOCK_NAME}/")));
    verdicts.push(("auth-revoke-respected".into(), crate::auth_checker::check_revokes_respected(&world.auth_record())));
    verdicts.extend(check_watches(&watch_record));
    let lease_record = world.lease_record();
    let skews_clocks = options.swarm_enabled.contains(&FaultKind::ClockSkew) || scenario.faults.timeline.iter().any(|f| f.fault == FaultKind::ClockSkew);
    let drift_bound_ppm = if skews_clocks { options.clock_drift_ppm_max } else { 0 };
    let safety = lease_checker::check_lease_safety(&lease_record, drift_bound_ppm);
    if scenario.lease_safety_promised() {
        verdicts.push(("lease-safety".into(), safety));
    } else {
        // Beyond the clock bound leases are not promised to be safe: an early expiry is
        // an expected finding, reported but not a failure.
        verdicts.push((format!("{EXPECTED_FINDING_PREFIX}lease-safety"), safety));
    }
    verdicts.push(("lease-linearizable".into(), lease_checker::check_lease_linearizable(&lease_record)));
    verdicts.push(("lease-atomic".into(), lease_checker::check_lease_atomicity(&lease_record, &watch_record.authoritative)));
    verdicts.push(("lease-liveness".into(), lease_liveness));
    verdicts.push(("member-list".into(), member_list));
    let (episodes, corrupt_alarms) = world.corruption_record();
    verdicts.push(("corruption-detected".into(), check_corruption_detected(&episodes, &corrupt_alarms, scenario.node.corrupt_check_interval_ms, options.election_slowdown_ms(&scenario))));
    verdicts.push(("nospace-respected".into(), alarm_checker::check_nospace_respected(&world.nospace_transitions(), &watch_record.authoritative)));
    if let Some(catch_up) = catch_up {
        verdicts.push(("catch-up-under-load".into(), catch_up));
    }
    verdicts.push(("liveness".into(), liveness));
    let leaderless = world.leaderless_terms();
    let mut coverage = world.coverage();
    for slot in &cluster.members {
        coverage.insert(format!("disk writes: m{} wal", slot.index), slot.wal_disk.writes());
        coverage.insert(format!("disk writes: m{} data", slot.index), slot.data_disk.writes());
    }
    // Spares a cut took (a WAL disk renames nothing else); the other cuts created their
    // segment in place.
    coverage.insert("wal segments taken from spares".into(), cluster.members.iter().map(|slot| slot.wal_disk.renames()).sum());
    coverage.insert("terms without a leader (split votes)".into(), leaderless.len() as u64);
    let (settled_applied, settled_not) = kv_model::settle_unknown_writes(&history, &watch_record);
    coverage.insert("unknown writes settled: applied".into(), settled_applied);
    coverage.insert("unknown writes settled: never applied".into(), settled_not);
    if scenario.expect.split_vote {
        let verdict = if leaderless.is_empty() {
            Verdict::Violation { check: "expect-split-vote".into(), detail: "no term ended without a leader".into(), ops: vec![] }
        } else {
            Verdict::Ok
        };
        verdicts.push(("expect-split-vote".into(), verdict));
    }
    let ok_ops = history.count(Outcome::Ok);
    let ok_operations_min = options.ok_operations_min(&scenario);
    if ok_ops < ok_operations_min {
        verdicts.push((
            "expect-progress".into(),
            Verdict::Violation {
                check: "expect-progress".into(),
                detail: format!("only {ok_ops} operations succeeded, the scenario expects {ok_operations_min}"),
                ops: vec![],
            },
        ));
    }
    RunReport::new(options, verdicts, history, world.timeline(), world.trace_hash(), net.stats(), leaderless, world.leaders_by_term(), world.now_ms())
        .with_watches(watch_record)
        .with_leases(lease_record)
        .with_coverage(coverage)
}

/// Memory damage must be found by the corruption check — a CORRUPT alarm for the damaged
/// member within a bound (four check intervals and 4 s: a new leader waits one interval,
/// an election takes a few — four elections' worth more when the seed's take longer)
/// unless the member restarted sooner — and no CORRUPT alarm may name a member whose
/// memory was not damaged.
fn check_corruption_detected(episodes: &[(u64, u64, Option<u64>)], alarms: &[(u64, Vec<u64>)], interval_ms: u64, election_slowdown_ms: u64) -> Verdict {
    let bound_ms = 4 * interval_ms + 4_000 + 4 * election_slowdown_ms;
    let raised = |member: u64, from: u64, to: u64| alarms.iter().any(|(at, members)| *at >= from && *at <= to && members.contains(&member));
    if interval_ms > 0 {
        for (member, since, until) in episodes {
            let until = until.unwrap_or(u64::MAX);
            if until.saturating_sub(*since) >= bound_ms && !raised(*member, *since, since + bound_ms) {
                return Verdict::Violation {
                    check: "corruption-detected".into(),
                    detail: format!("the memory of {member:016x} was damaged at {since} ms and no CORRUPT alarm named it within {bound_ms} ms"),
                    ops: vec![],
                };
            }
        }
    }
    // An alarm may come long after the damage was repaired (the reports of a check wait
    // for a majority of voters to agree), but never for a member whose memory was
    // never damaged before it.
    for (at, members) in alarms {
        for member in members {
            let damaged = episodes.iter().any(|(m, since, _)| m == member && *since <= *at);
            if !damaged {
                return Verdict::Violation {
                    check: "corruption-detected".into(),
                    detail: format!("a CORRUPT alarm named {member:016x} at {at} ms, but its memory was never damaged"),
                    ops: vec![],
                };
            }
        }
    }
    Verdict::Ok
}

/// After healing, every member lists every member, started, with the name and URLs it
/// published through raft — the same list everywhere — within a bound (three
/// elections' worth more when the seed's elections are slower than the scenario's).
async fn check_member_lists(cluster: &Cluster, election_slowdown_ms: u64) -> Verdict {
    const MEMBER_LIST_BOUND_MS: u64 = 5_000;
    let bound_ms = MEMBER_LIST_BOUND_MS + 3 * election_slowdown_ms;
    let due_ms = cluster.world.now_ms() + bound_ms;
    let last = loop {
        let mut lists = Vec::new();
        for slot in cluster.members.iter().filter(|m| !m.is_retired()) {
            let list = match slot.handle() {
                Some((handle, _)) => tokio::time::timeout(Duration::from_millis(500), handle.member_list()).await.ok().flatten().map(|(_, members)| members),
                None => None,
            };
            lists.push(list);
        }
        type Listed = (u64, String, Vec<String>, Vec<String>);
        let mut expected: Vec<Listed> = cluster
            .members
            .iter()
            .filter(|m| !m.is_retired())
            .map(|m| (m.member_id(), format!("m{}", m.index), vec![format!("http://m{}:2379", m.index)], m.expected_peer_urls.lock().expect("slot lock").clone()))
            .collect();
        expected.sort();
        let shown: Vec<Option<Vec<Listed>>> = lists
            .iter()
            .map(|list| list.as_ref().map(|members| members.iter().map(|m| (m.id, m.name.clone(), m.client_ur_ls.clone(), m.peer_ur_ls.clone())).collect()))
            .collect();
        if shown.iter().all(|list| list.as_ref() == Some(&expected)) {
            return Verdict::Ok;
        }
        if cluster.world.now_ms() >= due_ms {
            break format!("{shown:?}, expected {expected:?} on every member");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Verdict::Violation { check: "member-list".into(), detail: format!("member lists did not converge within {bound_ms} ms: {last}"), ops: vec![] }
}

/// After every lease client stopped (at `abandoned_ms`) and the cluster healed, every
/// lease must be gone within the longest TTL plus a bound: a new leader's extension
/// (one election timeout), its first ticks, a revoke retry, and commit — and two more
/// elections' worth when the seed's elections are slower than the scenario's.
async fn check_lease_liveness(cluster: &Cluster, election_slowdown_ms: u64, abandoned_ms: u64) -> Verdict {
    const LEASE_EXPIRY_BOUND_MS: u64 = 8_000;
    let bound_ms = LEASE_EXPIRY_BOUND_MS + 2 * election_slowdown_ms;
    let due_ms = abandoned_ms.max(cluster.world.now_ms()) + LEASE_TTL_SECS_MAX as u64 * 1000 + bound_ms;
    let mut remaining: Option<Vec<i64>> = None;
    while cluster.world.now_ms() < due_ms + 5_000 {
        let wait = due_ms.saturating_sub(cluster.world.now_ms()).max(200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        for slot in &cluster.members {
            let Some((handle, _)) = slot.handle() else { continue };
            let request = detcd_node::pb::etcdserverpb::LeaseLeasesRequest {};
            if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_millis(2000), handle.lease_leases(request)).await {
                remaining = Some(answer.leases.iter().map(|l| l.id).collect());
                break;
            }
        }
        if remaining.as_ref().is_some_and(Vec::is_empty) {
            return Verdict::Ok;
        }
    }
    Verdict::Violation {
        check: "lease-liveness".into(),
        detail: match remaining {
            Some(leases) => format!(
                "leases {:?} still exist {} ms after their clients stopped renewing them (longest TTL {} s)",
                leases.iter().map(|l| format!("{l:016x}")).collect::<Vec<_>>(),
                cluster.world.now_ms() - abandoned_ms,
                LEASE_TTL_SECS_MAX
            ),
            None => "no member answered LeaseLeases after the run settled".into(),
        },
        ops: vec![],
    }
}

/// Runs one seed in a fresh thread with a fresh madsim runtime, so no static or
/// thread-local state of an earlier run can leak into it.
pub fn run_seed_in_fresh_thread(scenario: &Scenario, seed: u64, planted_bug: Option<String>) -> RunReport {
    let mut options = Options::derive(scenario, seed);
    options.planted_bug = planted_bug;
    run_options_in_fresh_thread(scenario, options)
}

/// [`run_seed_in_fresh_thread`] with options set by the caller (a crash point, a
/// planted bug) on top of what the seed derived.
pub fn run_options_in_fresh_thread(scenario: &Scenario, options: Options) -> RunReport {
    let scenario = scenario.clone();
    let seed = options.seed;
    let thread = std::thread::Builder::new().name(format!("seed-{seed}")).spawn(move || {
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
