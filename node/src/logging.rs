//! The member's log, written as etcd writes it, so that log shippers, alert rules and
//! operators' habits made for etcd keep working: `--logger zap` gives one JSON object per
//! line with etcd's keys (`level`, `ts`, `caller`, `msg`, then the event's fields);
//! `--logger capnslog` (etcd 3.4's default) gives `2026-11-26 16:29:33.053316 I | pkg:
//! msg`. `--log-level` (debug, info, warn, error, panic, fatal) and `--log-outputs`
//! (`default` and `stderr`: standard error; `stdout`; anything else: a file appended to)
//! as etcd takes them.
//!
//! Production only: the events come through `tracing` from the production modules and
//! from [`LogObserver`], which turns the core's observations (leader changes, alarms)
//! into log lines — the core itself knows nothing of logs.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::env::{NodeEvent, Observer, Role};

/// The line formats `--logger` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, etcd's zap encoder's keys.
    Zap,
    /// etcd 3.4's default text lines.
    Capnslog,
}

/// Where and how the member logs, from `--logger`, `--log-level` and `--log-outputs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: Level,
    /// `stderr`, `stdout` or a file path, in the order given.
    pub outputs: Vec<String>,
}

/// Checks the three flags as etcd does.
pub fn parse_log_flags(logger: &str, level: &str, outputs: &str) -> Result<LogConfig, String> {
    let format = match logger {
        "zap" => LogFormat::Zap,
        "capnslog" => LogFormat::Capnslog,
        other => return Err(format!("unknown logger option {other:?}")),
    };
    let level = match level {
        "debug" => Level::DEBUG,
        "info" => Level::INFO,
        "warn" => Level::WARN,
        // detcd has no panic or fatal level of its own: both keep the errors.
        "error" | "dpanic" | "panic" | "fatal" => Level::ERROR,
        other => return Err(format!("unknown log level {other:?}: only supports debug, info, warn, error, panic, or fatal")),
    };
    let mut targets: Vec<String> = Vec::new();
    for output in outputs.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let target = if output == "default" { "stderr".to_string() } else { output.to_string() };
        if targets.contains(&target) {
            return Err(format!("multiple {output:?} in --log-outputs"));
        }
        targets.push(target);
    }
    if targets.is_empty() {
        targets.push("stderr".to_string());
    }
    if format == LogFormat::Capnslog && targets != ["stderr"] && targets != ["stdout"] {
        return Err("--logger=capnslog supports only 'default', 'stderr' or 'stdout' in --log-outputs (use --logger=zap to log to files)".to_string());
    }
    Ok(LogConfig { format, level, outputs: targets })
}

/// Installs the process's log. Returns an error when an output file cannot be opened.
pub fn install(config: &LogConfig) -> Result<(), String> {
    let mut sinks: Vec<Sink> = Vec::new();
    for output in &config.outputs {
        sinks.push(match output.as_str() {
            "stderr" => Sink::Stderr,
            "stdout" => Sink::Stdout,
            path => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open log output {path:?}: {e}"))?,
            ),
        });
    }
    let writer = Outputs { sinks: Arc::new(Mutex::new(sinks)) };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    // Only detcd's own events: the libraries' (h2, tonic) debug chatter is not etcd's log.
    let targets = tracing_subscriber::filter::Targets::new().with_target("detcd_node", config.level).with_target("detcd", config.level);
    let layer = tracing_subscriber::fmt::layer().event_format(EtcdLineFormat { format: config.format }).with_writer(writer).with_filter(targets);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).map_err(|e| format!("cannot install the log: {e}"))
}

enum Sink {
    Stderr,
    Stdout,
    File(std::fs::File),
}

/// Every configured output; one formatted line is written to each whole, under one lock,
/// so lines of concurrent events never interleave.
#[derive(Clone)]
struct Outputs {
    sinks: Arc<Mutex<Vec<Sink>>>,
}

impl std::io::Write for Outputs {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        // A poisoned lock only means another thread panicked mid-line: keep logging.
        let mut sinks = self.sinks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for sink in sinks.iter_mut() {
            // A log that cannot be written must not stop the member; the line is lost.
            let _ = match sink {
                Sink::Stderr => std::io::stderr().write_all(line),
                Sink::Stdout => std::io::stdout().write_all(line),
                Sink::File(file) => file.write_all(line),
            };
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Outputs {
    type Writer = Outputs;
    fn make_writer(&'a self) -> Outputs {
        self.clone()
    }
}

/// The event's message and fields, in the order they were written.
#[derive(Default)]
struct EventFields {
    message: String,
    fields: Vec<(&'static str, FieldValue)>,
}

enum FieldValue {
    Text(String),
    Number(String),
    Bool(bool),
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), FieldValue::Text(value.to_string())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), FieldValue::Number(value.to_string())));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), FieldValue::Number(value.to_string())));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Bool(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), FieldValue::Text(format!("{value:?}"))));
        }
    }
}

struct EtcdLineFormat {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for EtcdLineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _context: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let line = match self.format {
            LogFormat::Zap => zap_line(*metadata.level(), now, &caller(metadata), &fields),
            LogFormat::Capnslog => capnslog_line(*metadata.level(), now, &package(metadata), &fields),
        };
        writer.write_str(&line)
    }
}

/// `consensus/mod.rs:123`, as zap's short caller (file path below the crate's `src`).
fn caller(metadata: &tracing::Metadata<'_>) -> String {
    let file = metadata.file().unwrap_or("?");
    let short = file.rsplit_once("src/").map(|(_, rest)| rest).unwrap_or(file);
    format!("{short}:{}", metadata.line().unwrap_or(0))
}

/// capnslog's package: the module below the crate (`consensus`, `grpc`, `detcd`).
fn package(metadata: &tracing::Metadata<'_>) -> String {
    let path = metadata.module_path().unwrap_or(metadata.target());
    let mut parts = path.split("::");
    let crate_name = parts.next().unwrap_or("detcd");
    if crate_name == "detcd" {
        // The binary's own lines (start, stop, fatal errors): etcd's `etcdmain`.
        return "detcd".to_string();
    }
    parts.next().unwrap_or(crate_name).to_string()
}

fn zap_line(level: Level, now: std::time::Duration, caller: &str, fields: &EventFields) -> String {
    let level_name = match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        _ => "debug",
    };
    let mut line = String::with_capacity(128);
    let _ = write!(line, "{{\"level\":\"{level_name}\",\"ts\":\"{}\",\"caller\":{},\"msg\":{}", utc_timestamp(now, 3, 'T', "Z"), json_string(caller), json_string(&fields.message));
    for (name, value) in &fields.fields {
        // etcd's keys are hyphenated (`local-member-id`); Rust's field names cannot be.
        let _ = write!(line, ",{}:", json_string(&name.replace('_', "-")));
        match value {
            FieldValue::Text(text) => line.push_str(&json_string(text)),
            FieldValue::Number(number) => line.push_str(number),
            FieldValue::Bool(flag) => line.push_str(if *flag { "true" } else { "false" }),
        }
    }
    line.push_str("}\n");
    line
}

fn capnslog_line(level: Level, now: std::time::Duration, package: &str, fields: &EventFields) -> String {
    let letter = match level {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        Level::INFO => 'I',
        _ => 'D',
    };
    let mut line = format!("{} {letter} | {package}: {}", utc_timestamp(now, 6, ' ', ""), fields.message);
    for (index, (name, value)) in fields.fields.iter().enumerate() {
        line.push_str(if index == 0 { " (" } else { ", " });
        let name = name.replace('_', "-");
        let _ = match value {
            FieldValue::Text(text) => write!(line, "{name}: {text}"),
            FieldValue::Number(number) => write!(line, "{name}: {number}"),
            FieldValue::Bool(flag) => write!(line, "{name}: {flag}"),
        };
    }
    if !fields.fields.is_empty() {
        line.push(')');
    }
    line.push('\n');
    line
}

/// A JSON string literal (quotes, backslashes and control characters escaped).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `2026-11-26T16:29:32.430Z` (zap: 3 fraction digits, `T`, `Z`) or
/// `2026-11-26 16:29:33.053316` (capnslog: 6 digits, a space, no zone), in UTC.
fn utc_timestamp(since_epoch: std::time::Duration, fraction_digits: u32, separator: char, zone: &str) -> String {
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let seconds_of_day = seconds % 86_400;
    let fraction = since_epoch.subsec_nanos() / 10u32.pow(9 - fraction_digits);
    format!(
        "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}.{fraction:0width$}{zone}",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60,
        width = fraction_digits as usize
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The production observer: the core's observations an operator must see, as log lines
/// — a leader elected or lost, an alarm raised or cleared, a snapshot installed, a
/// configuration change applied. Everything else the core reports is for the simulator.
pub struct LogObserver {
    /// (term, leader) last logged, so that a role change that keeps the leader logs once.
    last_leader: Mutex<(u64, u64)>,
}

impl LogObserver {
    pub fn new() -> LogObserver {
        LogObserver { last_leader: Mutex::new((0, 0)) }
    }
}

impl Default for LogObserver {
    fn default() -> Self {
        LogObserver::new()
    }
}

fn member_hex(id: u64) -> String {
    format!("{id:016x}")
}

impl Observer for LogObserver {
    fn on_event(&self, member_id: u64, event: NodeEvent) {
        match event {
            NodeEvent::RoleChanged { term, role, leader_id } => {
                let mut last = self.last_leader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if *last == (term, leader_id) {
                    return;
                }
                let had_leader = last.1 != 0;
                *last = (term, leader_id);
                if role == Role::Leader {
                    tracing::info!(local_member_id = member_hex(member_id).as_str(), term, "became leader at term {term}");
                }
                if leader_id != 0 {
                    tracing::info!(local_member_id = member_hex(member_id).as_str(), leader = member_hex(leader_id).as_str(), term, "elected leader {leader_id:016x} at term {term}");
                } else if had_leader {
                    tracing::warn!(local_member_id = member_hex(member_id).as_str(), term, "lost leader at term {term}");
                }
            }
            NodeEvent::NoSpace { index, active, revision } => {
                if active {
                    tracing::warn!(alarm = "NOSPACE", index, revision, "alarm raised: database space exceeded");
                } else {
                    tracing::info!(alarm = "NOSPACE", index, revision, "alarm cleared");
                }
            }
            NodeEvent::Corrupt { index, active, members } => {
                let members: Vec<String> = members.iter().map(|m| member_hex(*m)).collect();
                if active {
                    tracing::error!(alarm = "CORRUPT", index, members = members.join(",").as_str(), "alarm raised: data inconsistency found");
                } else {
                    tracing::info!(alarm = "CORRUPT", index, "alarm cleared");
                }
            }
            NodeEvent::SnapshotInstalled { index, term } => {
                tracing::info!(snapshot_index = index, term, "applied snapshot");
            }
            NodeEvent::SnapshotBegun { index, stretched } => {
                tracing::info!(local_member_applied_index = index, stretched, "triggering snapshot");
            }
            NodeEvent::ConfChanged { index, voters, learners } => {
                let voters: Vec<String> = voters.iter().map(|m| member_hex(*m)).collect();
                let learners: Vec<String> = learners.iter().map(|m| member_hex(*m)).collect();
                tracing::info!(index, voters = voters.join(",").as_str(), learners = learners.join(",").as_str(), "applied a configuration change");
            }
            NodeEvent::Recovered { torn_tail_cut, damaged_snapshots_skipped } => {
                if torn_tail_cut {
                    tracing::warn!("cut a torn write at the end of the WAL");
                }
                if damaged_snapshots_skipped > 0 {
                    tracing::warn!(damaged_snapshots_skipped, "skipped damaged snapshot files for an older intact one");
                }
            }
            _ => {}
        }
    }
}

/// etcd's threshold for a slow WAL sync warning.
pub const SLOW_FSYNC_WARN_MS: u128 = 1000;

/// Logs a sync slower than [`SLOW_FSYNC_WARN_MS`], as etcd's "slow fdatasync" warning.
pub fn note_fsync(took: std::time::Duration, what: &'static str) {
    if took.as_millis() >= SLOW_FSYNC_WARN_MS {
        tracing::warn!(took = format!("{took:?}").as_str(), expected_duration = "1s", disk = what, "slow fdatasync");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_etcd() {
        let config = parse_log_flags("zap", "warn", "default").unwrap();
        assert_eq!((config.format, config.level, config.outputs), (LogFormat::Zap, Level::WARN, vec!["stderr".to_string()]));
        assert_eq!(parse_log_flags("zap", "info", "stdout,/tmp/x.log").unwrap().outputs, vec!["stdout", "/tmp/x.log"]);
        assert!(parse_log_flags("glog", "info", "").unwrap_err().contains("unknown logger option"));
        assert!(parse_log_flags("zap", "loud", "").unwrap_err().contains("unknown log level"));
        assert!(parse_log_flags("zap", "info", "stderr,default").unwrap_err().contains("multiple"));
        assert!(parse_log_flags("capnslog", "info", "/tmp/x.log").is_err());
    }

    #[test]
    fn timestamps_in_utc() {
        // 2026-11-26T16:29:32.430Z
        let at = std::time::Duration::from_millis(1_795_710_572_430);
        assert_eq!(utc_timestamp(at, 3, 'T', "Z"), "2026-11-26T16:29:32.430Z");
        assert_eq!(utc_timestamp(at, 6, ' ', ""), "2026-11-26 16:29:32.430000");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn zap_lines_are_json_with_etcds_keys() {
        let fields = EventFields {
            message: "slow \"fdatasync\"".to_string(),
            fields: vec![("took", FieldValue::Text("1.2s".into())), ("snapshot_index", FieldValue::Number("7".into())), ("active", FieldValue::Bool(true))],
        };
        let line = zap_line(Level::WARN, std::time::Duration::from_millis(1_795_710_572_430), "consensus/mod.rs:1", &fields);
        assert_eq!(
            line,
            "{\"level\":\"warn\",\"ts\":\"2026-11-26T16:29:32.430Z\",\"caller\":\"consensus/mod.rs:1\",\"msg\":\"slow \\\"fdatasync\\\"\",\"took\":\"1.2s\",\"snapshot-index\":7,\"active\":true}\n"
        );
        let text = capnslog_line(Level::INFO, std::time::Duration::from_millis(1_795_710_572_430), "grpc", &fields);
        assert_eq!(text, "2026-11-26 16:29:32.430000 I | grpc: slow \"fdatasync\" (took: 1.2s, snapshot-index: 7, active: true)\n");
    }
}
