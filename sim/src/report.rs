//! What a run leaves behind: a JSON file (options, timeline, history, verdicts, trace
//! hash) and an HTML page a person can read at a glance — client operations per client,
//! faults and member roles per member on one time axis, the first violation marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checker::Verdict;
use crate::lease_history::LeaseRecord;
use crate::watch_history::WatchRecord;
use crate::history::{History, OpKind, Outcome};
use crate::scenario::Options;

/// One line of a run's timeline.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TimelineEvent {
    pub at_ms: u64,
    /// "fault", "heal", "role", "member", "snapshot", "phase".
    pub kind: String,
    /// Member index (0-based) the event is about, if any.
    pub member: Option<usize>,
    pub detail: String,
    /// For role events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Message counters of the simulated network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped_cut: u64,
    pub dropped_lossy: u64,
    pub dropped_unreachable: u64,
    pub duplicated: u64,
    pub clogged: u64,
    /// Messages of members the receiver removed, refused on delivery; removal notices
    /// that reached the removed member; membership probes sent (see
    /// `detcd_node::consensus::membership::membership_probe`).
    pub refused_removed: u64,
    pub removal_notices: u64,
    pub membership_probes: u64,
    /// Keep-alives followers forwarded to their leader, and its answers (see
    /// `detcd_node::consensus::keep_alive_forward`).
    pub keep_alive_forwards: u64,
    pub keep_alive_answers: u64,
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub options: Options,
    pub passed: bool,
    pub verdicts: Vec<(String, Verdict)>,
    pub trace_hash: String,
    pub simulated_ms: u64,
    pub operations: OperationCounts,
    pub network: NetStats,
    pub leaderless_terms: Vec<u64>,
    pub leaders_by_term: BTreeMap<u64, u64>,
    pub timeline: Vec<TimelineEvent>,
    pub history: History,
    /// Every watch chain and the authoritative changes they were checked against.
    pub watches: WatchRecord,
    /// Every lease operation and every lease's end.
    pub leases: LeaseRecord,
    /// What the run reached: faults fired, crash points hit, snapshots installed,
    /// elections, torn tails cut, unknown outcomes settled (see `World::count`).
    #[serde(default)]
    pub coverage: BTreeMap<String, u64>,
}

/// Verdicts whose name starts with this are expected findings (e.g. lease safety beyond
/// the declared clock bound): reported, never a failure.
pub const EXPECTED_FINDING_PREFIX: &str = "expected:";

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct OperationCounts {
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
}

/// The one-line summary `sweep` reads from each child process.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    pub trace_hash: String,
    pub first_violation: Option<String>,
    pub ok: usize,
    pub unknown: usize,
    pub simulated_ms: u64,
    #[serde(default)]
    pub coverage: BTreeMap<String, u64>,
}

impl RunReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        options: Options,
        verdicts: Vec<(String, Verdict)>,
        history: History,
        timeline: Vec<TimelineEvent>,
        trace_hash: u64,
        network: NetStats,
        leaderless_terms: Vec<u64>,
        leaders_by_term: BTreeMap<u64, u64>,
        simulated_ms: u64,
    ) -> RunReport {
        // A check that ran out of budget vouches for nothing: the run fails as unknown.
        let passed = !verdicts.iter().any(|(name, v)| v.fails_run() && !name.starts_with(EXPECTED_FINDING_PREFIX));
        let operations = OperationCounts {
            ok: history.count(Outcome::Ok),
            fail: history.count(Outcome::Fail),
            unknown: history.count(Outcome::Unknown),
        };
        RunReport {
            options,
            passed,
            verdicts,
            trace_hash: format!("{trace_hash:016x}"),
            simulated_ms,
            operations,
            network,
            leaderless_terms,
            leaders_by_term,
            timeline,
            history,
            watches: WatchRecord::default(),
            leases: LeaseRecord::default(),
            coverage: BTreeMap::new(),
        }
    }

    /// What the run reached, for the report and the sweep's coverage summary.
    pub fn with_coverage(mut self, coverage: BTreeMap<String, u64>) -> Self {
        self.coverage = coverage;
        self
    }

    /// The run's lease record, for the report.
    pub fn with_leases(mut self, leases: LeaseRecord) -> Self {
        self.leases = leases;
        self
    }

    /// The run's watch record, for the report.
    pub fn with_watches(mut self, watches: WatchRecord) -> Self {
        self.watches = watches;
        self
    }

    /// Expected findings that occurred (see [`EXPECTED_FINDING_PREFIX`]).
    pub fn expected_findings(&self) -> Vec<(&str, &Verdict)> {
        self.verdicts.iter().filter(|(name, v)| v.is_violation() && name.starts_with(EXPECTED_FINDING_PREFIX)).map(|(name, v)| (name.as_str(), v)).collect()
    }

    pub fn first_violation(&self) -> Option<(&str, &Verdict)> {
        self.verdicts
            .iter()
            .find(|(name, v)| v.fails_run() && !name.starts_with(EXPECTED_FINDING_PREFIX))
            .map(|(name, v)| (name.as_str(), v))
    }

    pub fn summary(&self) -> Summary {
        Summary {
            scenario: self.options.scenario.clone(),
            seed: self.options.seed,
            passed: self.passed,
            trace_hash: self.trace_hash.clone(),
            first_violation: self.first_violation().map(|(name, v)| match v {
                Verdict::Violation { detail, .. } => format!("{name}: {detail}"),
                Verdict::Unknown { detail, .. } => format!("{name}: UNKNOWN (the check could not decide): {detail}"),
                Verdict::Ok => name.to_string(),
            }),
            ok: self.operations.ok,
            unknown: self.operations.unknown,
            simulated_ms: self.simulated_ms,
            coverage: self.coverage.clone(),
        }
    }

    /// Writes `<dir>/<scenario>-<seed>.json` and `.html`; returns the HTML path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let stem = format!("{}-{}", self.options.scenario, self.options.seed);
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{stem}.json")), json)?;
        let html_path = dir.join(format!("{stem}.html"));
        std::fs::write(&html_path, self.html())?;
        Ok(html_path)
    }

    /// The report page: inline SVG, no scripts or external resources.
    pub fn html(&self) -> String {
        let total_ms = self.simulated_ms.max(1) as f64;
        let width = 1400.0;
        let left = 110.0;
        let x = |ms: u64| left + (ms as f64 / total_ms) * (width - left - 10.0);
        let members = self.options.members;
        let clients: Vec<u64> = {
            let mut c: Vec<u64> = self.history.ops.iter().map(|op| op.client).collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        let row_height = 22.0;
        let member_top = 30.0;
        let client_top = member_top + members as f64 * row_height + 30.0;
        let watch_top = client_top + clients.len() as f64 * row_height + 20.0;
        let height = watch_top + self.watches.chains.len() as f64 * row_height + 40.0;
        let violation_ops: Vec<u64> = match self.first_violation() {
            Some((_, Verdict::Violation { ops, .. })) => ops.clone(),
            _ => Vec::new(),
        };

        let mut svg = String::new();
        let _ = write!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#);
        // Time axis.
        for tick in 0..=10 {
            let ms = self.simulated_ms * tick / 10;
            let tx = x(ms);
            let _ = write!(svg, r##"<line x1="{tx}" y1="15" x2="{tx}" y2="{height}" stroke="#eee"/><text x="{tx}" y="12">{ms} ms</text>"##);
        }
        // Member rows: role spans, faults, heals.
        for member in 0..members {
            let y = member_top + member as f64 * row_height;
            let _ = write!(svg, r#"<text x="4" y="{}">member m{member}</text>"#, y + 14.0);
            let roles: Vec<&TimelineEvent> = self.timeline.iter().filter(|e| e.kind == "role" && e.member == Some(member)).collect();
            for (i, event) in roles.iter().enumerate() {
                let end = roles.get(i + 1).map_or(self.simulated_ms, |next| next.at_ms);
                let color = match event.role.as_deref() {
                    Some("Leader") => "#2e7d32",
                    Some("Candidate") | Some("PreCandidate") => "#f9a825",
                    _ => "#90caf9",
                };
                let (x1, x2) = (x(event.at_ms), x(end).max(x(event.at_ms) + 1.0));
                let _ = write!(
                    svg,
                    r#"<rect x="{x1}" y="{y}" width="{}" height="{}" fill="{color}"><title>{} ({} ms)</title></rect>"#,
                    x2 - x1,
                    row_height - 6.0,
                    escape(&event.detail),
                    event.at_ms
                );
            }
            for event in self.timeline.iter().filter(|e| e.member == Some(member) && matches!(e.kind.as_str(), "fault" | "heal" | "member" | "snapshot")) {
                let color = match event.kind.as_str() {
                    "fault" => "#c62828",
                    "heal" => "#6a1b9a",
                    "snapshot" => "#00838f",
                    _ => "#424242",
                };
                let ex = x(event.at_ms);
                let _ = write!(
                    svg,
                    r#"<path d="M{ex} {y} l4 8 l-4 8 l-4 -8 z" fill="{color}"><title>{} at {} ms: {}</title></path>"#,
                    event.kind,
                    event.at_ms,
                    escape(&event.detail)
                );
            }
        }
        // Cluster-wide faults.
        for event in self.timeline.iter().filter(|e| e.member.is_none() && matches!(e.kind.as_str(), "fault" | "heal" | "phase")) {
            let ex = x(event.at_ms);
            let color = if event.kind == "fault" { "#c62828" } else { "#6a1b9a" };
            let _ = write!(
                svg,
                r#"<line x1="{ex}" y1="{member_top}" x2="{ex}" y2="{}" stroke="{color}" stroke-dasharray="3,3"><title>{} at {} ms: {}</title></line>"#,
                client_top - 10.0,
                event.kind,
                event.at_ms,
                escape(&event.detail)
            );
        }
        // Client rows: one bar per operation.
        for (row, client) in clients.iter().enumerate() {
            let y = client_top + row as f64 * row_height;
            let label = if *client == u64::MAX { "checker".to_string() } else { format!("client {client}") };
            let _ = write!(svg, r#"<text x="4" y="{}">{label}</text>"#, y + 14.0);
            for op in self.history.ops.iter().filter(|op| op.client == *client) {
                let end = op.complete_ms.unwrap_or(self.simulated_ms);
                let color = if violation_ops.contains(&op.id) {
                    "#d50000"
                } else {
                    match op.outcome {
                        Outcome::Ok => match op.kind {
                            OpKind::Get { .. } => "#64b5f6",
                            _ => "#81c784",
                        },
                        Outcome::Fail => "#bdbdbd",
                        Outcome::Unknown => "#ffb74d",
                    }
                };
                let (x1, x2) = (x(op.invoke_ms), x(end).max(x(op.invoke_ms) + 1.5));
                let stroke = if violation_ops.contains(&op.id) { r#" stroke="black" stroke-width="2""# } else { "" };
                let _ = write!(
                    svg,
                    r#"<rect x="{x1}" y="{y}" width="{}" height="{}" fill="{color}"{stroke}><title>op {} {:?} {:?} on {:016x}: read {:?} rev {} {}</title></rect>"#,
                    x2 - x1,
                    row_height - 6.0,
                    op.id,
                    op.kind,
                    op.outcome,
                    op.member,
                    op.read_value,
                    op.revision,
                    escape(op.error.as_deref().unwrap_or(""))
                );
            }
        }
        // Watch rows: one per chain, a bar per stream (alternating shades), outlined in
        // red when the chain failed a watch check.
        let failed_chains: Vec<String> =
            self.verdicts.iter().filter(|(name, v)| name.starts_with("watch[") && v.is_violation()).map(|(name, _)| name.clone()).collect();
        for (row, chain) in self.watches.chains.iter().enumerate() {
            let y = watch_top + row as f64 * row_height;
            let failed = failed_chains.contains(&format!("watch[{}]", chain.id));
            let _ = write!(svg, r#"<text x="4" y="{}">watch {} (c{})</text>"#, y + 14.0, chain.id, chain.client);
            for (index, segment) in chain.segments.iter().enumerate() {
                let end = chain.segments.get(index + 1).map_or_else(
                    || segment.responses.last().map_or(segment.opened_ms, |r| r.at_ms).max(segment.opened_ms + 1),
                    |next| next.opened_ms,
                );
                let events: usize = segment
                    .responses
                    .iter()
                    .map(|r| match &r.entry {
                        crate::watch_history::WatchEntry::Events { events, .. } => events.len(),
                        _ => 0,
                    })
                    .sum();
                let color = if index % 2 == 0 { "#ce93d8" } else { "#ab47bc" };
                let stroke = if failed { r##" stroke="#d50000" stroke-width="2""## } else { "" };
                let (x1, x2) = (x(segment.opened_ms), x(end).max(x(segment.opened_ms) + 1.5));
                let _ = write!(
                    svg,
                    r#"<rect x="{x1}" y="{y}" width="{}" height="{}" fill="{color}"{stroke}><title>watch {} {:?}..{:?} on {:016x} from revision {}: {events} events; {}</title></rect>"#,
                    x2 - x1,
                    row_height - 6.0,
                    chain.id,
                    chain.key,
                    chain.range_end,
                    segment.member,
                    segment.requested_start,
                    escape(&segment.ended)
                );
            }
        }
        svg.push_str("</svg>");

        let mut verdict_rows = String::new();
        for (name, verdict) in &self.verdicts {
            let (class, text) = match verdict {
                Verdict::Ok => ("ok", "ok".to_string()),
                Verdict::Violation { detail, ops, .. } => ("bad", format!("VIOLATION: {detail} (ops {ops:?})")),
                Verdict::Unknown { detail, .. } => ("unknown", format!("unknown: {detail}")),
            };
            let _ = write!(verdict_rows, r#"<tr class="{class}"><td>{}</td><td>{}</td></tr>"#, escape(name), escape(&text));
        }
        let mut involved = String::new();
        for op in self.history.ops.iter().filter(|op| violation_ops.contains(&op.id)) {
            let _ = write!(involved, "<li>{}</li>", escape(&format!("{op:?}")));
        }
        let status = if self.passed { "PASSED" } else { "FAILED" };
        format!(
            r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>detcd-sim {scenario} seed {seed}: {status}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
h1.PASSED {{ color: #2e7d32; }} h1.FAILED {{ color: #c62828; }}
table {{ border-collapse: collapse; }} td {{ border: 1px solid #ccc; padding: 2px 6px; font-family: monospace; font-size: 12px; }}
tr.bad td {{ background: #ffcdd2; }} tr.unknown td {{ background: #fff9c4; }}
.legend span {{ display: inline-block; padding: 1px 6px; margin-right: 6px; font-size: 12px; }}
pre {{ background: #f5f5f5; padding: 8px; }}
</style></head><body>
<h1 class="{status}" id="verdict">detcd-sim {scenario} seed {seed}: {status}</h1>
<p>trace hash <code>{hash}</code> · {sim_ms} simulated ms · operations ok {ok}, failed {fail}, unknown {unknown} · replay: <code>cargo sim run scenarios/{scenario}.toml --seed {seed}{bug}</code></p>
<div class="legend"><span style="background:#2e7d32;color:white">leader</span><span style="background:#f9a825">candidate</span><span style="background:#90caf9">follower</span><span style="background:#81c784">write ok</span><span style="background:#64b5f6">read ok</span><span style="background:#ffb74d">unknown</span><span style="background:#bdbdbd">failed</span><span style="background:#d50000;color:white">in first violation</span> ◆ red: fault, purple: heal, teal: snapshot</div>
<div id="timeline">{svg}</div>
<h2>Verdicts</h2><table id="verdicts">{verdict_rows}</table>
<h2>Operations in the first violation</h2><ul>{involved}</ul>
<h2>Options</h2><pre>{options}</pre>
</body></html>
"#,
            scenario = escape(&self.options.scenario),
            seed = self.options.seed,
            hash = self.trace_hash,
            sim_ms = self.simulated_ms,
            ok = self.operations.ok,
            fail = self.operations.fail,
            unknown = self.operations.unknown,
            options = escape(&self.options.describe()),
            bug = self.options.planted_bug.as_ref().map(|b| format!(" --planted-bug {}", escape(b))).unwrap_or_default(),
        )
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
