//! Crash at every write, as redb's fuzzer crashes at every I/O: one seed is run once
//! without a crash to count the writes of one member's disk, then once per write N
//! (every `stride`-th), losing power at exactly the N-th write — mid-Ready, between a
//! write and its sync, inside a snapshot step or a segment cut — and restarting the
//! member. Every run is checked like any other: no acknowledged write lost, no member
//! refusing to start from a disk it should recover, every invariant.
//!
//! Each run after the crash is a different run (the member comes back later, clients
//! retry elsewhere): the point is the state on disk at each crash point, which the
//! rest of the run then exercises.
//!
//! How each crash run runs is the caller's: the `crash-every-write` command starts a
//! child process per run, as `sweep` does per seed — a simulation leaves tasks pending
//! when it ends, and madsim frees none of them with its runtime (madsim issue 242), so
//! thousands of runs in one process grew it by ~1 MB each (membership-chaos seed 5:
//! 15 GB before it was stopped); [`run_in_fresh_thread`] keeps them in this process,
//! for tests of a few hundred runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::run::run_options_in_fresh_thread;
use crate::scenario::{CrashAtWrite, DiskKind, Options, Scenario};

/// Write numbers one sweep may try.
pub const CRASH_RUNS_MAX: usize = 20_000;

/// What one run with a crash point gave.
pub struct CrashRun {
    /// Power went at the armed write (a run that diverged before reaching it never
    /// crashes there).
    pub struck: bool,
    /// The run's first violation, if it failed.
    pub failure: Option<String>,
}

/// The coverage counter a run reports when power went at its armed write.
pub const CRASH_STRUCK_COVERAGE: &str = "crash point: power loss at an exact write";

pub struct CrashSweep {
    /// Writes of the disk in the run without a crash.
    pub writes_total: u64,
    pub runs: usize,
    /// Runs in which power went at the armed write (a run that diverged before reaching
    /// it never crashes there).
    pub struck: usize,
    /// Each failing crash point with its first violation.
    pub failures: Vec<(CrashAtWrite, String)>,
}

/// Runs one crash point in a fresh thread of this process.
pub fn run_in_fresh_thread(scenario: &Scenario, options: &Options, crash: CrashAtWrite) -> CrashRun {
    let report = run_options_in_fresh_thread(scenario, Options { crash_at_write: Some(crash), ..options.clone() });
    let struck = report.coverage.get(CRASH_STRUCK_COVERAGE).copied().unwrap_or(0) > 0;
    let failure = report.first_violation().map(|(name, verdict)| match verdict {
        crate::checker::Verdict::Violation { detail, .. } | crate::checker::Verdict::Unknown { detail, .. } => format!("{name}: {detail}"),
        _ => name.to_string(),
    });
    CrashRun { struck, failure }
}

/// Crashes at every write of one member's disk, each run in a fresh thread of this
/// process (see the module header for when that is too many).
pub fn crash_every_write(scenario: &Scenario, seed: u64, member: usize, disk: DiskKind, stride: u64, jobs: usize, planted_bug: Option<&str>) -> CrashSweep {
    let mut options = Options::derive(scenario, seed);
    options.planted_bug = planted_bug.map(str::to_string);
    crash_every_write_with(scenario, &options, member, disk, stride, jobs, &|crash| run_in_fresh_thread(scenario, &options, crash))
}

/// Crashes at every write of one member's disk, each crash point run by `run_crash`
/// (the run without a crash, which counts the writes, runs here).
pub fn crash_every_write_with(
    scenario: &Scenario,
    options: &Options,
    member: usize,
    disk: DiskKind,
    stride: u64,
    jobs: usize,
    run_crash: &(dyn Fn(CrashAtWrite) -> CrashRun + Sync),
) -> CrashSweep {
    let baseline = run_options_in_fresh_thread(scenario, options.clone());
    let label = format!("disk writes: m{member} {}", if disk == DiskKind::Wal { "wal" } else { "data" });
    let writes_total = baseline.coverage.get(&label).copied().unwrap_or(0);
    let crash_points: Vec<CrashAtWrite> =
        (1..=writes_total).step_by(stride.max(1) as usize).take(CRASH_RUNS_MAX).map(|write| CrashAtWrite { member, disk, write }).collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(CrashAtWrite, bool, Option<String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(crash) = crash_points.get(i).copied() else { return };
                let CrashRun { struck, failure } = run_crash(crash);
                results.lock().expect("results").push((crash, struck, failure));
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(crash, _, _)| crash.write);
    CrashSweep {
        writes_total,
        runs: results.len(),
        struck: results.iter().filter(|(_, struck, _)| *struck).count(),
        failures: results.into_iter().filter_map(|(crash, _, failure)| failure.map(|f| (crash, f))).collect(),
    }
}
