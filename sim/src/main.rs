//! `detcd-sim`: run a scenario under one seed, sweep many seeds (one process each), or
//! check a recorded history.
//!
//! Exit codes: 0 all checks passed, 1 a violation (or determinism mismatch), 2 bad usage
//! or input.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use detcd_sim::checker;
use detcd_sim::history::{History, KEY_PREFIX, KEY_PREFIX_END};
use detcd_sim::report::Summary;
#[cfg(madsim)]
use detcd_sim::scenario::Options;
use std::io::IsTerminal;
use detcd_sim::scenario::Scenario;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "detcd-sim", version, about = "Deterministic simulation testing of detcd")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one seed of a scenario; print the verdict, the trace hash and the report path.
    Run {
        scenario: PathBuf,
        #[arg(long)]
        seed: u64,
        /// Where the JSON and HTML reports go.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Run the seed twice (each in a fresh thread) and require equal trace hashes.
        #[arg(long)]
        check_determinism: bool,
        /// Print only the machine-readable summary line (used by sweep).
        #[arg(long)]
        summary_only: bool,
        /// Write reports only when the run fails.
        #[arg(long)]
        reports_on_failure: bool,
        /// Plant a bug in every member (canary); an unknown name lists them all.
        #[arg(long)]
        planted_bug: Option<String>,
        /// Lose power at one exact write of one member's disk: MEMBER:DISK:WRITE, e.g.
        /// `0:wal:153` (see `crash-every-write`).
        #[arg(long)]
        crash_at_write: Option<String>,
        /// Every member on the scenario's settings and the node's defaults, drawing no
        /// member knobs (as runs were before knobs were drawn; `sim/regressions.toml`
        /// replays its older seeds so).
        #[arg(long)]
        fixed_knobs: bool,
    },
    /// Crash at every write (as redb's fuzzer does): for a seed, lose power at the 1st,
    /// 2nd, ... Nth write of one member's disk, one run each, and check every run.
    CrashEveryWrite {
        scenario: PathBuf,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        member: usize,
        /// wal or data.
        #[arg(long, default_value = "wal")]
        disk: String,
        /// Try every Kth write only.
        #[arg(long, default_value_t = 1)]
        stride: u64,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        #[arg(long)]
        planted_bug: Option<String>,
        /// Where a failing run's report goes (each crash point runs in a child process).
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// Search for the smallest run that fails like this seed (fewer faults, a shorter
    /// chaos phase, fewer clients, keys and members) and write it as a scenario file
    /// that replays it: `cargo sim run FILE --seed N`.
    Shrink {
        scenario: PathBuf,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        planted_bug: Option<String>,
        /// Where the shrunk scenario goes.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Candidate runs to try at most.
        #[arg(long, default_value_t = 400)]
        runs_max: usize,
    },
    /// Run many seeds of one or more scenarios, one process per seed.
    Sweep {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Seeds as A..B (B exclusive).
        #[arg(long)]
        seeds: String,
        /// Seeds run at once.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Check determinism (run twice, compare hashes) for every Nth seed; 0 = never.
        #[arg(long, default_value_t = 0)]
        determinism_every: u64,
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Plant a bug in every member of every run (see `run --help`).
        #[arg(long)]
        planted_bug: Option<String>,
        /// Run only shard K of N (1-based): every Nth (scenario, seed) pair starting at
        /// the Kth, so N CI machines split one sweep between them.
        #[arg(long)]
        shard: Option<String>,
        /// Write a JUnit XML report (one test case per seed; failures carry the replay
        /// command) for CI pages.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Start no new seed after this many seconds; seeds not run are listed as
        /// skipped (in JUnit too), never as passed.
        #[arg(long)]
        time_budget: Option<u64>,
    },
    /// Check a history file (a bare history or a run's JSON report). Exit 0: every
    /// check passed; 1: a violation; 3: a check ran out of budget (unknown); 2: bad input.
    Check { history: PathBuf },
    /// Times the linearizability check of history files (bare histories, run reports or
    /// Jepsen register logs), best of `repeat` rounds, parsing not included; one line per
    /// file: path, operations, verdict (ok, violation, unknown), microseconds. For
    /// side-by-side runs against another checker (tests/checker-vs-porcupine.sh).
    BenchCheck {
        files: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// Prints a synthetic Jepsen single-register log (read, write, cas; 5 values as in
    /// Jepsen's etcd test), linearizable by construction unless --plant-stale-read.
    JepsenLog {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 200)]
        ops: usize,
        #[arg(long, default_value_t = 5)]
        processes: usize,
        /// Fraction of writes and cas whose process crashes with an unknown outcome.
        #[arg(long, default_value_t = 0.2)]
        crash_fraction: f64,
        #[arg(long, default_value_t = 5)]
        values: u32,
        /// Change one completed read in the log's second half to another value.
        #[arg(long)]
        plant_stale_read: bool,
    },
    /// Replays the seeds of a regressions file (scenario, seed, optional planted bug, and
    /// whether it must pass or fail), so that a fixed bug stays fixed and a canary stays
    /// found.
    Regressions {
        file: PathBuf,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Run { scenario, seed, reports, check_determinism, summary_only, reports_on_failure, planted_bug, crash_at_write, fixed_knobs } => {
            let flags = RunFlags { check_determinism, summary_only, reports_on_failure, planted_bug, crash_at_write, fixed_knobs };
            run_command(&scenario, seed, &reports, &flags)
        }
        Commands::Sweep { scenarios, seeds, jobs, determinism_every, reports, planted_bug, shard, junit, time_budget } => {
            let plan = SweepPlan { shard, junit, time_budget_s: time_budget };
            sweep_command(&scenarios, &seeds, jobs, determinism_every, &reports, planted_bug.as_deref(), &plan)
        }
        Commands::Check { history } => check_command(&history),
        Commands::BenchCheck { files, repeat } => bench_check_command(&files, repeat),
        Commands::JepsenLog { seed, ops, processes, crash_fraction, values, plant_stale_read } => {
            if processes == 0 || values == 0 || !(0.0..=1.0).contains(&crash_fraction) {
                eprintln!("detcd-sim: jepsen-log needs --processes >= 1, --values >= 1 and --crash-fraction in [0, 1]");
                return ExitCode::from(2);
            }
            let shape = detcd_sim::synthetic::RegisterLogShape { ops, processes, crash_fraction, values, plant_stale_read };
            // A reader that closed the pipe (`| head`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(detcd_sim::synthetic::jepsen_register_log(shape, seed).as_bytes());
            ExitCode::SUCCESS
        }
        Commands::CrashEveryWrite { scenario, seed, member, disk, stride, jobs, planted_bug, reports } => {
            let sweep = CrashSweepArgs { member, disk: &disk, stride, jobs, reports: &reports };
            crash_every_write_command(&scenario, seed, planted_bug.as_deref(), sweep)
        }
        Commands::Shrink { scenario, seed, planted_bug, reports, runs_max } => {
            shrink_command(&scenario, seed, planted_bug.as_deref(), &reports, runs_max)
        }
        Commands::Regressions { file, jobs, reports } => regressions_command(&file, jobs, &reports),
    }
}

/// How one `run` behaves.
#[cfg_attr(not(madsim), allow(dead_code))]
struct RunFlags {
    check_determinism: bool,
    summary_only: bool,
    reports_on_failure: bool,
    planted_bug: Option<String>,
    crash_at_write: Option<String>,
    fixed_knobs: bool,
}

fn replay_command(scenario: &Path, seed: u64, planted_bug: Option<&str>) -> String {
    match planted_bug {
        Some(bug) => format!("cargo sim run {} --seed {seed} --planted-bug {bug}", scenario.display()),
        None => format!("cargo sim run {} --seed {seed}", scenario.display()),
    }
}

#[cfg(not(madsim))]
fn run_command(_: &Path, _: u64, _: &Path, _: &RunFlags) -> ExitCode {
    eprintln!("detcd-sim: `run` needs the simulator build; use `cargo sim run SCENARIO --seed N`");
    ExitCode::from(2)
}

#[cfg(madsim)]
fn run_command(scenario_path: &Path, seed: u64, reports: &Path, flags: &RunFlags) -> ExitCode {
    let RunFlags { check_determinism, summary_only, reports_on_failure, planted_bug, crash_at_write, fixed_knobs } = flags;
    let (check_determinism, summary_only, reports_on_failure) = (*check_determinism, *summary_only, *reports_on_failure);
    if let Some(name) = planted_bug {
        if detcd_node::consensus::PlantedBug::parse(name).is_none() {
            let known: Vec<&str> = detcd_node::consensus::PlantedBug::ALL.iter().map(|b| b.name()).collect();
            eprintln!("detcd-sim: unknown planted bug {name:?}; known: {}", known.join(", "));
            return ExitCode::from(2);
        }
    }
    let mut scenario = match Scenario::load(scenario_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if *fixed_knobs {
        scenario.node.randomize_knobs = false;
    }
    let mut options = Options::derive(&scenario, seed);
    options.planted_bug = planted_bug.clone();
    if let Some(text) = crash_at_write {
        match detcd_sim::scenario::CrashAtWrite::parse(text) {
            Ok(crash) => options.crash_at_write = Some(crash),
            Err(e) => {
                eprintln!("detcd-sim: --crash-at-write: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if !summary_only {
        println!("scenario {} seed {seed}; options:\n{}", scenario.name, options.describe());
    }
    let started = std::time::Instant::now();
    let report = detcd_sim::run::run_options_in_fresh_thread(&scenario, options.clone());
    let wall_ms = started.elapsed().as_millis();
    let mut passed = report.passed;
    let mut determinism_note = String::new();
    if check_determinism {
        let again = detcd_sim::run::run_options_in_fresh_thread(&scenario, options.clone());
        if again.trace_hash != report.trace_hash {
            passed = false;
            determinism_note = format!("NONDETERMINISM: trace hash {} then {}", report.trace_hash, again.trace_hash);
        } else {
            determinism_note = format!("deterministic: second run gave the same trace hash {}", again.trace_hash);
        }
    }
    let report_path = if passed && reports_on_failure {
        None
    } else {
        match report.write(reports) {
            Ok(path) => Some(path),
            Err(e) => {
                eprintln!("detcd-sim: cannot write the report: {e}");
                None
            }
        }
    };
    let mut summary = report.summary();
    summary.passed = passed;
    if summary.first_violation.is_none() && !determinism_note.is_empty() && !passed {
        summary.first_violation = Some(determinism_note.clone());
    }
    if summary_only {
        println!("SUMMARY {}", serde_json::to_string(&summary).expect("summary serializes"));
    } else {
        for (name, verdict) in &report.verdicts {
            if verdict.is_violation() || matches!(verdict, checker::Verdict::Unknown { .. }) {
                println!("  {name}: {verdict:?}");
            }
        }
        println!(
            "{}: {} ok, {} failed, {} unknown operations; {} simulated ms in {} wall ms",
            if passed { "PASSED" } else { "FAILED" },
            report.operations.ok,
            report.operations.fail,
            report.operations.unknown,
            report.simulated_ms,
            wall_ms
        );
        if !determinism_note.is_empty() {
            println!("{determinism_note}");
        }
        println!("trace hash {}", report.trace_hash);
        if let Some(path) = &report_path {
            println!("report {}", path.display());
        }
        if !passed {
            let mut replay = replay_command(scenario_path, seed, planted_bug.as_deref());
            if let Some(crash) = &options.crash_at_write {
                replay.push_str(&format!(" --crash-at-write {}", crash.describe()));
            }
            if *fixed_knobs {
                replay.push_str(" --fixed-knobs");
            }
            println!("seed {seed} failed; replay with: {replay}");
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn parse_seed_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once("..").ok_or_else(|| format!("--seeds {text:?}: expected A..B"))?;
    let a: u64 = a.parse().map_err(|_| format!("--seeds {text:?}: bad start"))?;
    let b: u64 = b.parse().map_err(|_| format!("--seeds {text:?}: bad end"))?;
    if b <= a {
        return Err(format!("--seeds {text:?}: the range is empty"));
    }
    Ok((a, b))
}

struct SeedResult {
    scenario: PathBuf,
    seed: u64,
    summary: Option<Summary>,
    failure: Option<String>,
    planted_bug: Option<String>,
    wall_s: f64,
}

/// How a sweep is split and reported for CI.
struct SweepPlan {
    shard: Option<String>,
    junit: Option<PathBuf>,
    time_budget_s: Option<u64>,
}

/// `K/N` → (K-1, N), with 1 ≤ K ≤ N.
fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let (k, n) = text.split_once('/').ok_or_else(|| format!("--shard {text:?}: expected K/N"))?;
    let k: usize = k.parse().map_err(|_| format!("--shard {text:?}: bad K"))?;
    let n: usize = n.parse().map_err(|_| format!("--shard {text:?}: bad N"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("--shard {text:?}: K must be in 1..=N"));
    }
    Ok((k - 1, n))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// JUnit XML: a test suite per scenario, a test case per seed.
fn junit_xml(scenarios: &[PathBuf], results: &[SeedResult], skipped: &[(PathBuf, u64)]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"detcd-sim\">\n");
    for scenario in scenarios {
        let name = scenario.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let of: Vec<&SeedResult> = results.iter().filter(|r| &r.scenario == scenario).collect();
        let not_run: Vec<u64> = skipped.iter().filter(|(s, _)| s == scenario).map(|(_, seed)| *seed).collect();
        let failures = of.iter().filter(|r| r.failure.is_some()).count();
        let time: f64 = of.iter().map(|r| r.wall_s).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{}\" time=\"{time:.3}\">\n",
            xml_escape(&name),
            of.len() + not_run.len(),
            not_run.len()
        ));
        for result in of {
            xml.push_str(&format!("    <testcase classname=\"{}\" name=\"seed {}\" time=\"{:.3}\"", xml_escape(&name), result.seed, result.wall_s));
            match &result.failure {
                None => xml.push_str("/>\n"),
                Some(failure) => {
                    let replay = replay_command(&result.scenario, result.seed, result.planted_bug.as_deref());
                    xml.push_str(&format!(
                        ">\n      <failure message=\"{}\">replay: {}</failure>\n    </testcase>\n",
                        xml_escape(failure),
                        xml_escape(&replay)
                    ));
                }
            }
        }
        for seed in not_run {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"seed {seed}\"><skipped message=\"time budget\"/></testcase>\n",
                xml_escape(&name)
            ));
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn sweep_command(
    scenarios: &[PathBuf],
    seeds: &str,
    jobs: usize,
    determinism_every: u64,
    reports: &Path,
    planted_bug: Option<&str>,
    plan: &SweepPlan,
) -> ExitCode {
    let shard = match plan.shard.as_deref().map(parse_shard).transpose() {
        Ok(shard) => shard,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let (first, end) = match parse_seed_range(seeds) {
        Ok(range) => range,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    for scenario in scenarios {
        if let Err(e) = Scenario::load(scenario) {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(exe) = own_executable() else { return ExitCode::from(2) };
    let mut work: Vec<(PathBuf, u64)> = Vec::new();
    for scenario in scenarios {
        for seed in first..end {
            work.push((scenario.clone(), seed));
        }
    }
    if let Some((index, count)) = shard {
        work = work.into_iter().enumerate().filter(|(i, _)| i % count == index).map(|(_, w)| w).collect();
    }
    let deadline = plan.time_budget_s.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let skipped: Arc<Mutex<Vec<(PathBuf, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let total = work.len();
    let queue = Arc::new(Mutex::new(work.into_iter().rev().collect::<Vec<_>>()));
    let results: Arc<Mutex<Vec<SeedResult>>> = Arc::new(Mutex::new(Vec::new()));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let queue = queue.clone();
            let results = results.clone();
            let exe = exe.clone();
            let reports = reports.to_path_buf();
            let planted_bug = planted_bug.map(str::to_string);
            let skipped = skipped.clone();
            std::thread::spawn(move || loop {
                let Some((scenario, seed)) = queue.lock().expect("queue").pop() else { return };
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    skipped.lock().expect("skipped").push((scenario, seed));
                    continue;
                }
                let determinism = determinism_every > 0 && seed % determinism_every == 0;
                let result = run_child(&exe, &scenario, seed, &reports, RunVariant { determinism, planted_bug: planted_bug.as_deref(), ..RunVariant::default() });
                let mut results = results.lock().expect("results");
                results.push(result);
                let failed = results.iter().filter(|r| r.failure.is_some()).count();
                let done = results.len();
                // A live progress line on a terminal; a line per tenth of the work in logs.
                if std::io::stderr().is_terminal() {
                    eprint!("\r[{}/{}] seeds done, {} failed, {:.0}s", done, total, failed, started.elapsed().as_secs_f64());
                } else if done % (total / 10).max(1) == 0 || done == total {
                    eprintln!("[{}/{}] seeds done, {} failed, {:.0}s", done, total, failed, started.elapsed().as_secs_f64());
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    let mut skipped = std::mem::take(&mut *skipped.lock().expect("skipped"));
    skipped.sort();
    if let Some(path) = &plan.junit {
        let written = match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            Some(dir) => std::fs::create_dir_all(dir),
            None => Ok(()),
        }
        .and_then(|()| std::fs::write(path, junit_xml(scenarios, &results, &skipped)));
        if let Err(e) = written {
            eprintln!("detcd-sim: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    println!("{:<36} {:>6} {:>6} {:>6} {:>10} {:>10}", "scenario", "seeds", "passed", "failed", "ok ops/seed", "sim s/seed");
    for scenario in scenarios {
        let of: Vec<&SeedResult> = results.iter().filter(|r| &r.scenario == scenario).collect();
        let passed = of.iter().filter(|r| r.failure.is_none()).count();
        let summaries: Vec<&Summary> = of.iter().filter_map(|r| r.summary.as_ref()).collect();
        let count = summaries.len().max(1);
        let ok_avg = summaries.iter().map(|s| s.ok).sum::<usize>() / count;
        let sim_avg = summaries.iter().map(|s| s.simulated_ms).sum::<u64>() as f64 / count as f64 / 1000.0;
        let name = scenario.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        println!("{:<36} {:>6} {:>6} {:>6} {:>10} {:>10.1}", name, of.len(), passed, of.len() - passed, ok_avg, sim_avg);
    }
    print_coverage(scenarios, &results);
    let wall_s = started.elapsed().as_secs_f64();
    let ran = results.len();
    println!(
        "{} seeds in {:.1} s wall ({:.1} seeds/minute, {:.1} per core with {} jobs)",
        ran,
        wall_s,
        ran as f64 * 60.0 / wall_s.max(0.001),
        ran as f64 * 60.0 / wall_s.max(0.001) / jobs.max(1) as f64,
        jobs.max(1)
    );
    if !skipped.is_empty() {
        println!("{} seeds not run: the time budget ran out", skipped.len());
    }
    let failures: Vec<&SeedResult> = results.iter().filter(|r| r.failure.is_some()).collect();
    println!("sweep: {} passed, {} failed", ran - failures.len(), failures.len());
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!("failing seeds:");
    for failure in failures {
        println!("  {} seed {}: {}", failure.scenario.display(), failure.seed, failure.failure.as_deref().unwrap_or(""));
        println!("    replay: {}", replay_command(&failure.scenario, failure.seed, planted_bug));
    }
    ExitCode::from(1)
}

/// What the sweep reached, summed over its seeds, and every fault kind a scenario
/// enables that never acted — a sweep that never reaches a fault does not test it.
fn print_coverage(scenarios: &[PathBuf], results: &[SeedResult]) {
    let mut total: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for summary in results.iter().filter_map(|r| r.summary.as_ref()) {
        for (what, count) in &summary.coverage {
            *total.entry(what.as_str()).or_default() += count;
        }
    }
    if total.is_empty() {
        return;
    }
    println!("coverage (summed over every seed):");
    for (what, count) in &total {
        println!("  {what:<52} {count:>9}");
    }
    let mut enabled: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for path in scenarios {
        if let Ok(scenario) = Scenario::load(path) {
            for fault in scenario.faults.swarm.iter().chain(scenario.faults.timeline.iter().map(|f| &f.fault)) {
                if let Some(label) = serde_json::to_value(fault).ok().and_then(|v| v.as_str().map(str::to_string)) {
                    enabled.insert(label);
                }
            }
        }
    }
    let never: Vec<&String> = enabled.iter().filter(|label| !total.contains_key(format!("fault fired: {label}").as_str())).collect();
    if !never.is_empty() {
        println!("  NEVER FIRED: {}", never.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", "));
    }
}

/// This binary, to run each seed in a child process of its own.
fn own_executable() -> Option<PathBuf> {
    match std::env::current_exe() {
        Ok(exe) => Some(exe),
        Err(e) => {
            eprintln!("detcd-sim: cannot find my own executable: {e}");
            None
        }
    }
}

/// How a child run differs from the seed's plain run.
#[derive(Clone, Copy, Default)]
struct RunVariant<'a> {
    /// `--check-determinism`
    determinism: bool,
    planted_bug: Option<&'a str>,
    /// `--fixed-knobs`
    fixed_knobs: bool,
    /// `--crash-at-write MEMBER:DISK:WRITE`
    crash_at_write: Option<&'a str>,
}

fn run_child(exe: &Path, scenario: &Path, seed: u64, reports: &Path, variant: RunVariant) -> SeedResult {
    let RunVariant { determinism, planted_bug, fixed_knobs, crash_at_write } = variant;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(scenario)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--summary-only")
        .arg("--reports-on-failure")
        .arg("--reports")
        .arg(reports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if determinism {
        command.arg("--check-determinism");
    }
    if let Some(bug) = planted_bug {
        command.arg("--planted-bug").arg(bug);
    }
    if fixed_knobs {
        command.arg("--fixed-knobs");
    }
    if let Some(write) = crash_at_write {
        command.arg("--crash-at-write").arg(write);
    }
    let started = std::time::Instant::now();
    let planted = planted_bug.map(str::to_string);
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => {
            return SeedResult {
                scenario: scenario.to_path_buf(),
                seed,
                summary: None,
                failure: Some(format!("cannot start: {e}")),
                planted_bug: planted,
                wall_s: 0.0,
            }
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Option<Summary> = BufReader::new(stdout.as_bytes())
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix("SUMMARY ").and_then(|json| serde_json::from_str(json).ok()))
        .last();
    let failure = match &summary {
        Some(s) if s.passed => None,
        Some(s) => Some(s.first_violation.clone().unwrap_or_else(|| "failed".to_string())),
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            Some(format!("crashed (exit {:?}): {}", output.status.code(), tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
        }
    };
    SeedResult { scenario: scenario.to_path_buf(), seed, summary, failure, planted_bug: planted, wall_s: started.elapsed().as_secs_f64() }
}

/// One entry of a regressions file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Regression {
    scenario: PathBuf,
    seed: u64,
    #[serde(default)]
    planted_bug: Option<String>,
    /// "pass" (a fixed bug stays fixed) or "fail" (a canary stays found).
    expect: String,
    /// What the seed once showed, for people.
    why: String,
    /// Replay with every member on fixed settings (`run --fixed-knobs`): seeds found
    /// before member knobs were drawn show their bug only so.
    #[serde(default)]
    fixed_knobs: bool,
    /// Lose power at this write (`run --crash-at-write MEMBER:DISK:WRITE`): what
    /// `crash-every-write` found.
    #[serde(default)]
    crash_at_write: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegressionsFile {
    regression: Vec<Regression>,
}

/// `crash-every-write`'s own arguments.
#[cfg_attr(not(madsim), allow(dead_code))]
struct CrashSweepArgs<'a> {
    member: usize,
    disk: &'a str,
    stride: u64,
    jobs: usize,
    reports: &'a Path,
}

#[cfg(not(madsim))]
fn crash_every_write_command(_: &Path, _: u64, _: Option<&str>, _: CrashSweepArgs) -> ExitCode {
    eprintln!("detcd-sim: `crash-every-write` needs the simulator build; use `cargo sim crash-every-write SCENARIO --seed N`");
    ExitCode::from(2)
}

#[cfg(madsim)]
fn crash_every_write_command(scenario_path: &Path, seed: u64, planted_bug: Option<&str>, args: CrashSweepArgs) -> ExitCode {
    let CrashSweepArgs { member, disk, stride, jobs, reports } = args;
    let scenario = match Scenario::load(scenario_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let disk = match detcd_sim::scenario::CrashAtWrite::parse(&format!("{member}:{disk}:1")) {
        Ok(crash) => crash.disk,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(exe) = own_executable() else { return ExitCode::from(2) };
    let mut options = detcd_sim::scenario::Options::derive(&scenario, seed);
    options.planted_bug = planted_bug.map(str::to_string);
    // Each crash point in a child process (see `crash_sweep`'s header: one process
    // running thousands of simulations keeps what madsim never frees).
    let run_crash = |crash: detcd_sim::scenario::CrashAtWrite| {
        let point = crash.describe();
        let variant = RunVariant { planted_bug, crash_at_write: Some(&point), ..RunVariant::default() };
        let result = run_child(&exe, scenario_path, seed, reports, variant);
        let struck = result.summary.as_ref().and_then(|s| s.coverage.get(detcd_sim::crash_sweep::CRASH_STRUCK_COVERAGE)).copied().unwrap_or(0) > 0;
        detcd_sim::crash_sweep::CrashRun { struck, failure: result.failure }
    };
    let started = std::time::Instant::now();
    let sweep = detcd_sim::crash_sweep::crash_every_write_with(&scenario, &options, member, disk, stride, jobs, &run_crash);
    println!(
        "m{member}'s {disk:?} disk: {} writes in the run without a crash; {} runs, power lost at the armed write in {}; {} failed ({:.1} s)",
        sweep.writes_total,
        sweep.runs,
        sweep.struck,
        sweep.failures.len(),
        started.elapsed().as_secs_f64()
    );
    for (crash, failure) in &sweep.failures {
        println!("  write {}: {failure}", crash.write);
        println!(
            "    replay: {} --crash-at-write {}",
            replay_command(scenario_path, seed, planted_bug),
            crash.describe()
        );
    }
    if sweep.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(not(madsim))]
fn shrink_command(_: &Path, _: u64, _: Option<&str>, _: &Path, _: usize) -> ExitCode {
    eprintln!("detcd-sim: `shrink` needs the simulator build; use `cargo sim shrink SCENARIO --seed N`");
    ExitCode::from(2)
}

#[cfg(madsim)]
fn shrink_command(scenario_path: &Path, seed: u64, planted_bug: Option<&str>, reports: &Path, runs_max: usize) -> ExitCode {
    let scenario = match Scenario::load(scenario_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(shrunk) = detcd_sim::shrink::shrink(&scenario, seed, planted_bug, runs_max) else {
        println!("seed {seed} of {} passes: nothing to shrink", scenario_path.display());
        return ExitCode::from(1);
    };
    let text = match toml::to_string(&shrunk.scenario) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("detcd-sim: cannot write the shrunk scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let stem = scenario_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let path = reports.join(format!("{stem}-seed-{seed}-shrunk.toml"));
    if let Err(e) = std::fs::create_dir_all(reports).and_then(|()| std::fs::write(&path, &text)) {
        eprintln!("detcd-sim: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    // The file must replay the failure as written.
    let replayed = Scenario::load(&path).map(|s| detcd_sim::run::run_seed_in_fresh_thread(&s, seed, planted_bug.map(str::to_string)));
    let replays = matches!(&replayed, Ok(report) if detcd_sim::shrink::failure_signature(report).as_deref() == Some(shrunk.signature.as_str()));
    let (b, a) = (shrunk.before, shrunk.after);
    println!("fails {} — shrunk in {} runs:", shrunk.signature, shrunk.runs);
    println!("  faults   {:>6} -> {}", b.0, a.0);
    println!("  chaos ms {:>6} -> {}", b.1, a.1);
    println!("  clients  {:>6} -> {}", b.2, a.2);
    println!("  keys     {:>6} -> {}", b.3, a.3);
    println!("  members  {:>6} -> {}", b.4, a.4);
    for fault in &shrunk.scenario.faults.timeline {
        println!("  at {:>6} ms: {:?}", fault.at_ms, fault.fault);
    }
    println!("shrunk scenario: {}", path.display());
    println!("replay with: {}", replay_command(&path, seed, planted_bug));
    if replays {
        ExitCode::SUCCESS
    } else {
        eprintln!("detcd-sim: the written scenario does not replay the failure");
        ExitCode::from(2)
    }
}

fn regressions_command(file: &Path, jobs: usize, reports: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("detcd-sim: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let parsed: RegressionsFile = match toml::from_str(&text) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("detcd-sim: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    if let Some(bad) = parsed.regression.iter().find(|r| r.expect != "pass" && r.expect != "fail") {
        eprintln!("detcd-sim: {}: expect must be \"pass\" or \"fail\", not {:?}", file.display(), bad.expect);
        return ExitCode::from(2);
    }
    let Some(exe) = own_executable() else { return ExitCode::from(2) };
    let entries = Arc::new(parsed.regression);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<(usize, SeedResult)>>> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (entries, next, outcomes, exe, reports) = (entries.clone(), next.clone(), outcomes.clone(), exe.clone(), reports.to_path_buf());
            std::thread::spawn(move || loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(entry) = entries.get(index) else { return };
                let variant = RunVariant {
                    planted_bug: entry.planted_bug.as_deref(),
                    fixed_knobs: entry.fixed_knobs,
                    crash_at_write: entry.crash_at_write.as_deref(),
                    ..RunVariant::default()
                };
                let result = run_child(&exe, &entry.scenario, entry.seed, &reports, variant);
                outcomes.lock().expect("outcomes").push((index, result));
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    outcomes.sort_by_key(|(index, _)| *index);
    let mut wrong = 0;
    for (index, result) in &outcomes {
        let entry = &entries[*index];
        let passed = result.failure.is_none();
        let as_expected = passed == (entry.expect == "pass");
        if !as_expected {
            wrong += 1;
        }
        println!(
            "{} {} seed {}{}{}: expected {}, {} — {}",
            if as_expected { "ok  " } else { "FAIL" },
            entry.scenario.display(),
            entry.seed,
            entry.planted_bug.as_deref().map(|b| format!(" --planted-bug {b}")).unwrap_or_default(),
            entry.crash_at_write.as_deref().map(|w| format!(" --crash-at-write {w}")).unwrap_or_default(),
            entry.expect,
            result.failure.as_deref().map_or("passed".to_string(), |f| format!("failed: {f}")),
            entry.why
        );
        if !as_expected {
            let knobs = if entry.fixed_knobs { " --fixed-knobs" } else { "" };
            let crash = entry.crash_at_write.as_deref().map(|w| format!(" --crash-at-write {w}")).unwrap_or_default();
            println!("    replay: {}{knobs}{crash}", replay_command(&entry.scenario, entry.seed, entry.planted_bug.as_deref()));
        }
    }
    println!("regressions: {} as expected, {wrong} not", outcomes.len() - wrong);
    if wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The change record of a run report (`None` for a bare history).
fn load_change_record(path: &Path) -> Result<Option<detcd_sim::watch_history::WatchRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    // A Jepsen register log is a history alone.
    if detcd_sim::jepsen_log::is_jepsen_log(&text) {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    match value.get("watches") {
        Some(record) => serde_json::from_value(record.clone()).map(Some).map_err(|e| format!("not a change record: {e}")),
        None => Ok(None),
    }
}

/// Rounds of `bench-check` at most.
const BENCH_CHECK_REPEAT_MAX: usize = 1000;

fn bench_check_command(paths: &[PathBuf], repeat: usize) -> ExitCode {
    if repeat == 0 || repeat > BENCH_CHECK_REPEAT_MAX {
        eprintln!("detcd-sim: --repeat must be 1..={BENCH_CHECK_REPEAT_MAX}");
        return ExitCode::from(2);
    }
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for path in paths {
        let history = match History::load(path).and_then(|h| h.validate().map(|()| h)) {
            Ok(history) => history,
            Err(e) => {
                eprintln!("detcd-sim: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let mut best = std::time::Duration::MAX;
        let mut verdicts = Vec::new();
        for _ in 0..repeat {
            let started = std::time::Instant::now();
            verdicts = checker::check_linearizability(&history);
            best = best.min(started.elapsed());
            if verdicts.iter().any(|(_, v)| matches!(v, checker::Verdict::Unknown { .. })) {
                break; // Out of budget: every round would be.
            }
        }
        let verdict = if verdicts.iter().any(|(_, v)| v.is_violation()) {
            "violation"
        } else if verdicts.iter().any(|(_, v)| matches!(v, checker::Verdict::Unknown { .. })) {
            "unknown"
        } else {
            "ok"
        };
        // A reader that closed the pipe is not an error worth a panic.
        if writeln!(out, "{}\t{}\t{verdict}\t{}", path.display(), history.ops.len(), best.as_micros()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn check_command(path: &Path) -> ExitCode {
    use std::io::Write as _;
    let history = match History::load(path).and_then(|h| h.validate().map(|()| h)) {
        Ok(history) => history,
        Err(e) => {
            eprintln!("detcd-sim: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let mut verdicts: Vec<(String, checker::Verdict)> = checker::check_linearizability(&history)
        .into_iter()
        .map(|(key, verdict)| (format!("linearizability[{key}]"), verdict))
        .collect();
    verdicts.push(("serializable-reads".into(), checker::check_serializable_reads(&history)));
    verdicts.push(("revision-monotonic".into(), checker::check_revisions_monotonic(&history)));
    // A whole run report also holds the members' change record: check the model too.
    match load_change_record(path) {
        Ok(Some(record)) => {
            let key_space = detcd_sim::kv_model::KeySpace::build(&record);
            verdicts.extend(detcd_sim::kv_model::check_kv_model(&history, &record, &key_space, KEY_PREFIX, KEY_PREFIX_END));
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("detcd-sim: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let elapsed = started.elapsed();
    let violated = verdicts.iter().any(|(_, v)| v.is_violation());
    let unknown = verdicts.iter().any(|(_, v)| matches!(v, checker::Verdict::Unknown { .. }));
    // A reader that closed the pipe (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    for (name, verdict) in &verdicts {
        if writeln!(out, "{name}: {verdict:?}").is_err() {
            break;
        }
    }
    let _ = writeln!(out, "checked {} operations in {:.1} ms", history.ops.len(), elapsed.as_secs_f64() * 1000.0);
    if violated {
        ExitCode::from(1)
    } else if unknown {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
