//! Shrinking: from a failing (scenario, seed), search for a smaller run that fails the
//! same check — fewer faults, a shorter chaos phase, fewer clients, keys and members —
//! and write it as a scenario file that replays it with the same seed.
//!
//! The search works on the run's explicit fault plan ([`Options::fault_plan`]): every
//! fault carries its own seed, so dropping one leaves the choices of the others as they
//! were; the shrunk scenario pins the original run's options
//! ([`Scenario::pinned_options`]) so that nothing else the seed drew changes. The
//! workload, the network and the disks still follow the seed, so a smaller run is a
//! different run: a candidate is kept only if it fails the same check.
//!
//! Steps, repeated until none helps or the run budget is spent: drop chunks of faults
//! (delta debugging, halving the chunk size down to single faults), end the chaos phase
//! earlier, remove clients, keys and members.

use crate::report::RunReport;
use crate::run::run_seed_in_fresh_thread;
use crate::scenario::{Options, Scenario};

/// Candidate runs one shrink may try.
pub const SHRINK_RUNS_MAX: usize = 400;
/// The shortest chaos phase a shrink tries, in simulated ms.
const DURATION_MS_MIN: u64 = 1_000;

/// The check a run failed, as shrinking compares failures: the first violation's
/// check name (`linearizability`, `kv-model-writes`, `member-panic`, ...).
pub fn failure_signature(report: &RunReport) -> Option<String> {
    report.first_violation().map(|(name, verdict)| match verdict {
        crate::checker::Verdict::Violation { check, .. } => check.clone(),
        _ => name.to_string(),
    })
}

/// What a shrink found.
pub struct Shrunk {
    pub scenario: Scenario,
    pub signature: String,
    pub runs: usize,
    /// (faults, duration_ms, clients, keys, members) before and after.
    pub before: (usize, u64, usize, usize, usize),
    pub after: (usize, u64, usize, usize, usize),
}

/// The run `scenario` with `seed` gives, fully pinned: its fault plan as a timeline
/// with seeds and its options as they were drawn.
pub fn pinned(scenario: &Scenario, seed: u64) -> Scenario {
    let options = Options::derive(scenario, seed);
    let mut pinned = scenario.clone();
    pinned.faults.timeline = options.fault_plan(scenario);
    pinned.faults.swarm.clear();
    pinned.pinned_options = Some(Options { swarm_enabled: Vec::new(), ..options });
    pinned
}

fn size(scenario: &Scenario) -> (usize, u64, usize, usize, usize) {
    (scenario.faults.timeline.len(), scenario.duration_ms, scenario.workload.clients, scenario.workload.keys, scenario.members)
}

/// Applies a change to a candidate's scenario and its pinned options alike.
fn with(scenario: &Scenario, change: impl Fn(&mut Scenario)) -> Scenario {
    let mut candidate = scenario.clone();
    change(&mut candidate);
    if let Some(options) = candidate.pinned_options.as_mut() {
        options.members = candidate.members;
        options.duration_ms = candidate.duration_ms;
        options.clients = candidate.workload.clients;
        options.keys = candidate.workload.keys;
    }
    candidate
}

/// Shrinks a failing run. `None` if the run does not fail.
pub fn shrink(scenario: &Scenario, seed: u64, planted_bug: Option<&str>, runs_max: usize) -> Option<Shrunk> {
    let planted = planted_bug.map(str::to_string);
    let mut runs = 0usize;
    let mut current = pinned(scenario, seed);
    let first = run_seed_in_fresh_thread(&current, seed, planted.clone());
    runs += 1;
    let signature = failure_signature(&first)?;
    let before = size(&current);
    // Whether a candidate still fails the same check (counting the run).
    let fails_alike = |candidate: &Scenario, runs: &mut usize| -> bool {
        *runs += 1;
        let report = run_seed_in_fresh_thread(candidate, seed, planted.clone());
        failure_signature(&report).as_deref() == Some(signature.as_str())
    };
    let mut progressed = true;
    while progressed && runs < runs_max {
        progressed = false;
        // 1. Faults: drop chunks, halving the chunk size.
        let mut chunk = current.faults.timeline.len().div_ceil(2).max(1);
        while chunk >= 1 && runs < runs_max && !current.faults.timeline.is_empty() {
            let mut start = 0;
            let mut dropped_any = false;
            while start < current.faults.timeline.len() && runs < runs_max {
                let end = (start + chunk).min(current.faults.timeline.len());
                let candidate = with(&current, |s| {
                    s.faults.timeline.drain(start..end);
                });
                if fails_alike(&candidate, &mut runs) {
                    current = candidate;
                    dropped_any = true;
                    progressed = true;
                } else {
                    start = end;
                }
            }
            if !dropped_any {
                if chunk == 1 {
                    break;
                }
                chunk = chunk.div_ceil(2);
            }
        }
        // 2. A shorter chaos phase: right after the last fault, then halves.
        let last_fault_ms = current.faults.timeline.iter().map(|f| f.at_ms).max().unwrap_or(0);
        let mut targets = vec![(last_fault_ms + 1_000).max(DURATION_MS_MIN)];
        let mut half = current.duration_ms / 2;
        while half >= DURATION_MS_MIN && half > last_fault_ms {
            targets.push(half);
            half /= 2;
        }
        for target in targets {
            if target >= current.duration_ms || runs >= runs_max {
                continue;
            }
            let candidate = with(&current, |s| s.duration_ms = target);
            if fails_alike(&candidate, &mut runs) {
                current = candidate;
                progressed = true;
            }
        }
        // 3. Fewer clients, keys and members, one at a time.
        for step in 0..3 {
            loop {
                let (_, _, clients, keys, members) = size(&current);
                let candidate = match step {
                    0 if clients > 1 => with(&current, |s| s.workload.clients -= 1),
                    1 if keys > 1 => with(&current, |s| s.workload.keys -= 1),
                    2 if members > 1 => with(&current, |s| s.members -= if s.members > 3 { 2 } else { 1 }),
                    _ => break,
                };
                if runs >= runs_max || !fails_alike(&candidate, &mut runs) {
                    break;
                }
                current = candidate;
                progressed = true;
            }
        }
    }
    current.name = format!("{}-seed-{seed}-shrunk", scenario.name);
    current.description = format!(
        "Shrunk by `detcd-sim shrink` from {} seed {seed}{}: fails {signature} in {} faults over {} ms with {} clients, {} keys and {} members.",
        scenario.name,
        planted_bug.map(|b| format!(" (planted bug {b})")).unwrap_or_default(),
        current.faults.timeline.len(),
        current.duration_ms,
        current.workload.clients,
        current.workload.keys,
        current.members
    );
    let after = size(&current);
    Some(Shrunk { scenario: current, signature, runs, before, after })
}
