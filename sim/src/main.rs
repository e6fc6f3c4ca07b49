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
use detcd_sim::history::History;
use detcd_sim::report::Summary;
#[cfg(madsim)]
use detcd_sim::scenario::Options;
use std::io::IsTerminal;
use detcd_sim::scenario::Scenario;

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
        /// Plant a bug in every member (canary): ack-before-fsync, local-linearizable-read,
        /// forget-vote, apply-before-commit, accept-stale-term.
        #[arg(long)]
        planted_bug: Option<String>,
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
    },
    /// Check a history file (a bare history or a run's JSON report).
    Check { history: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Run { scenario, seed, reports, check_determinism, summary_only, reports_on_failure, planted_bug } => {
            let flags = RunFlags { check_determinism, summary_only, reports_on_failure, planted_bug };
            run_command(&scenario, seed, &reports, &flags)
        }
        Commands::Sweep { scenarios, seeds, jobs, determinism_every, reports, planted_bug } => {
            sweep_command(&scenarios, &seeds, jobs, determinism_every, &reports, planted_bug.as_deref())
        }
        Commands::Check { history } => check_command(&history),
    }
}

/// How one `run` behaves.
#[cfg_attr(not(madsim), allow(dead_code))]
struct RunFlags {
    check_determinism: bool,
    summary_only: bool,
    reports_on_failure: bool,
    planted_bug: Option<String>,
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
    let RunFlags { check_determinism, summary_only, reports_on_failure, planted_bug } = flags;
    let (check_determinism, summary_only, reports_on_failure) = (*check_determinism, *summary_only, *reports_on_failure);
    if let Some(name) = planted_bug {
        if detcd_node::consensus::PlantedBug::parse(name).is_none() {
            let known: Vec<&str> = detcd_node::consensus::PlantedBug::ALL.iter().map(|b| b.name()).collect();
            eprintln!("detcd-sim: unknown planted bug {name:?}; known: {}", known.join(", "));
            return ExitCode::from(2);
        }
    }
    let scenario = match Scenario::load(scenario_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let mut options = Options::derive(&scenario, seed);
    options.planted_bug = planted_bug.clone();
    if !summary_only {
        println!("scenario {} seed {seed}; options:\n{}", scenario.name, options.describe());
    }
    let started = std::time::Instant::now();
    let report = detcd_sim::run::run_seed_in_fresh_thread(&scenario, seed, planted_bug.clone());
    let wall_ms = started.elapsed().as_millis();
    let mut passed = report.passed;
    let mut determinism_note = String::new();
    if check_determinism {
        let again = detcd_sim::run::run_seed_in_fresh_thread(&scenario, seed, planted_bug.clone());
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
            println!("seed {seed} failed; replay with: {}", replay_command(scenario_path, seed, planted_bug.as_deref()));
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
}

fn sweep_command(
    scenarios: &[PathBuf],
    seeds: &str,
    jobs: usize,
    determinism_every: u64,
    reports: &Path,
    planted_bug: Option<&str>,
) -> ExitCode {
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
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("detcd-sim: cannot find my own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut work: Vec<(PathBuf, u64)> = Vec::new();
    for scenario in scenarios {
        for seed in first..end {
            work.push((scenario.clone(), seed));
        }
    }
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
            std::thread::spawn(move || loop {
                let Some((scenario, seed)) = queue.lock().expect("queue").pop() else { return };
                let determinism = determinism_every > 0 && seed % determinism_every == 0;
                let result = run_child(&exe, &scenario, seed, determinism, &reports, planted_bug.as_deref());
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
    let wall_s = started.elapsed().as_secs_f64();
    println!("{} seeds in {:.1} s wall ({:.1} seeds/minute)", total, wall_s, total as f64 * 60.0 / wall_s.max(0.001));
    let failures: Vec<&SeedResult> = results.iter().filter(|r| r.failure.is_some()).collect();
    println!("sweep: {} passed, {} failed", total - failures.len(), failures.len());
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

fn run_child(exe: &Path, scenario: &Path, seed: u64, determinism: bool, reports: &Path, planted_bug: Option<&str>) -> SeedResult {
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
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => return SeedResult { scenario: scenario.to_path_buf(), seed, summary: None, failure: Some(format!("cannot start: {e}")) },
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
    SeedResult { scenario: scenario.to_path_buf(), seed, summary, failure }
}

fn check_command(path: &Path) -> ExitCode {
    let history = match History::load(path) {
        Ok(history) => history,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
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
    let elapsed = started.elapsed();
    let mut violated = false;
    for (name, verdict) in &verdicts {
        violated |= verdict.is_violation();
        println!("{name}: {verdict:?}");
    }
    println!("checked {} operations in {:.1} ms", history.ops.len(), elapsed.as_secs_f64() * 1000.0);
    if violated {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
