//! Jepsen's single-register logs (`INFO  jepsen.util - 3	:invoke	:cas	[1 4]`), read as
//! a [`History`] so `detcd-sim check` can judge them: the Jepsen etcd tests' format, and
//! the test data linearizability checkers are commonly compared on.
//!
//! Each line is a process, an event type (`:invoke`, `:ok`, `:fail`, `:info`), a function
//! (`:read`, `:write`, `:cas`) and a value (`nil`, an integer, or `[expected new]`). One
//! register: every op is on the key [`JEPSEN_REGISTER_KEY`], initially absent (`nil`).
//! - `:ok` completes the process's open op (a read returns its value; a cas held).
//! - `:fail` of a cas: answered, the compare did not hold (`succeeded = false`); of a
//!   read or write: refused, no effect.
//! - `:info`: the outcome is unknown (a timeout); Jepsen then gives the client a new
//!   process number. Ops still open at the end of the log are unknown too.
//! Lines of other loggers are skipped; a malformed `jepsen.util` line is an error, never
//! a guess.

use std::collections::BTreeMap;

use crate::history::{History, Op, OpKind, Outcome};

/// The one key a Jepsen register log's operations act on.
pub const JEPSEN_REGISTER_KEY: &str = "jepsen-register";

/// Log lines read at most (a Jepsen register history is hundreds to thousands of lines).
pub const JEPSEN_LOG_LINES_MAX: usize = 10_000_000;

/// The marker of an event line.
const EVENT_MARKER: &str = "jepsen.util - ";

/// Whether `text` looks like a Jepsen register log: an invoke event on some line (raw
/// tabs cannot occur in JSON, so a history file never matches).
pub fn is_jepsen_log(text: &str) -> bool {
    text.lines().any(|line| line.contains(EVENT_MARKER) && line.contains("\t:invoke\t"))
}

/// Parses a Jepsen register log into a history (see the module header for the rules).
pub fn parse_jepsen_log(text: &str) -> Result<History, String> {
    let mut ops: Vec<Op> = Vec::new();
    // Process -> index in `ops` of its open operation.
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut seq: u64 = 0;
    for (line_index, line) in text.lines().enumerate() {
        if line_index >= JEPSEN_LOG_LINES_MAX {
            return Err(format!("more than {JEPSEN_LOG_LINES_MAX} lines"));
        }
        let Some(at) = line.find(EVENT_MARKER) else { continue };
        let line_number = line_index + 1;
        let fields: Vec<&str> = line[at + EVENT_MARKER.len()..].split('\t').map(str::trim).collect();
        let [process, event, function, value] = fields[..] else {
            return Err(format!("line {line_number}: expected process, event, function and value separated by tabs"));
        };
        let process: u64 = process.parse().map_err(|_| format!("line {line_number}: process {process:?} is not a number"))?;
        seq += 1;
        match event {
            ":invoke" => {
                if open.contains_key(&process) {
                    return Err(format!("line {line_number}: process {process} invokes while its previous op is open"));
                }
                let kind = match (function, value) {
                    (":read", _) => OpKind::Get { key: JEPSEN_REGISTER_KEY.into(), serializable: false },
                    (":write", value) => OpKind::Put { key: JEPSEN_REGISTER_KEY.into(), value: integer(value, line_number)? },
                    (":cas", pair) => {
                        let (expected, new) = cas_pair(pair, line_number)?;
                        OpKind::Cas { key: JEPSEN_REGISTER_KEY.into(), expected: Some(expected), value: new }
                    }
                    (other, _) => return Err(format!("line {line_number}: unknown function {other:?} (read, write or cas)")),
                };
                let id = ops.len() as u64;
                open.insert(process, ops.len());
                ops.push(Op::invoked(id, process, 0, 0, kind, seq, seq));
            }
            ":ok" | ":fail" | ":info" => {
                let Some(index) = open.remove(&process) else {
                    return Err(format!("line {line_number}: process {process} completes an op it never invoked"));
                };
                let op = &mut ops[index];
                let same_function = matches!(
                    (&op.kind, function),
                    (OpKind::Get { .. }, ":read") | (OpKind::Put { .. }, ":write") | (OpKind::Cas { .. }, ":cas")
                );
                if !same_function {
                    return Err(format!("line {line_number}: process {process} completes {function} but invoked {:?}", op.kind));
                }
                if event == ":info" {
                    continue; // Unknown outcome: no completion.
                }
                op.complete_seq = Some(seq);
                op.complete_ms = Some(seq);
                match (event, &op.kind) {
                    (":ok", OpKind::Get { .. }) => {
                        op.outcome = Outcome::Ok;
                        op.read_value = if value == "nil" { None } else { Some(integer(value, line_number)?) };
                    }
                    (":ok", OpKind::Cas { .. }) => {
                        op.outcome = Outcome::Ok;
                        op.succeeded = true;
                    }
                    (":fail", OpKind::Cas { .. }) => {
                        op.outcome = Outcome::Ok;
                        op.succeeded = false;
                    }
                    (":ok", _) => op.outcome = Outcome::Ok,
                    _ => op.outcome = Outcome::Fail,
                }
            }
            other => return Err(format!("line {line_number}: unknown event {other:?} (:invoke, :ok, :fail or :info)")),
        }
    }
    if ops.is_empty() {
        return Err("no jepsen.util events".into());
    }
    let history = History { ops };
    history.validate()?;
    Ok(history)
}

/// A register value: an integer, kept as its decimal text.
fn integer(text: &str, line_number: usize) -> Result<String, String> {
    text.parse::<i64>().map(|v| v.to_string()).map_err(|_| format!("line {line_number}: value {text:?} is not an integer"))
}

/// A cas argument `[expected new]`.
fn cas_pair(text: &str, line_number: usize) -> Result<(String, String), String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("line {line_number}: cas argument {text:?} is not [expected new]"))?;
    let mut parts = inner.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(expected), Some(new), None) => Ok((integer(expected, line_number)?, integer(new, line_number)?)),
        _ => Err(format!("line {line_number}: cas argument {text:?} is not [expected new]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{check_linearizability, Verdict};

    fn line(process: u64, event: &str, function: &str, value: &str) -> String {
        format!("INFO  jepsen.util - {process}\t{event}\t{function}\t{value}\n")
    }

    fn verdict(log: &str) -> Verdict {
        let history = parse_jepsen_log(log).unwrap();
        let verdicts = check_linearizability(&history);
        assert_eq!(verdicts.len(), 1, "one register");
        verdicts.into_iter().next().unwrap().1
    }

    #[test]
    fn events_become_operations_with_their_outcomes() {
        let log = [
            "2017-01-01 other logger line\n".to_string(),
            line(0, ":invoke", ":read", "nil"),
            line(1, ":invoke", ":write", "3"),
            line(0, ":ok", ":read", "nil"),
            line(1, ":ok", ":write", "3"),
            line(2, ":invoke", ":cas", "[3 4]"),
            line(2, ":ok", ":cas", "[3 4]"),
            line(3, ":invoke", ":cas", "[0 1]"),
            line(3, ":fail", ":cas", "[0 1]"),
            line(4, ":invoke", ":write", "2"),
            line(4, ":info", ":write", ":timed-out"),
            line(9, ":invoke", ":read", "nil"),
        ]
        .concat();
        assert!(is_jepsen_log(&log));
        let history = parse_jepsen_log(&log).unwrap();
        let ops = &history.ops;
        assert_eq!(ops.len(), 6);
        assert_eq!((ops[0].outcome, ops[0].read_value.clone()), (Outcome::Ok, None));
        assert_eq!(ops[1].kind, OpKind::Put { key: JEPSEN_REGISTER_KEY.into(), value: "3".into() });
        assert_eq!((ops[2].outcome, ops[2].succeeded), (Outcome::Ok, true));
        assert_eq!((ops[3].outcome, ops[3].succeeded), (Outcome::Ok, false), "a failed cas is a definite compare that did not hold");
        assert_eq!((ops[4].outcome, ops[4].complete_seq), (Outcome::Unknown, None), ":info is unknown");
        assert_eq!((ops[5].outcome, ops[5].complete_seq), (Outcome::Unknown, None), "open at the end: unknown");
        assert!(ops.windows(2).all(|w| w[0].invoke_seq < w[1].invoke_seq));
        assert_eq!(verdict(&log), Verdict::Ok);
    }

    #[test]
    fn a_stale_read_and_an_impossible_cas_are_violations() {
        // Write 1 finishes, then a read that starts later sees the initial nil.
        let stale = [line(0, ":invoke", ":write", "1"), line(0, ":ok", ":write", "1"), line(1, ":invoke", ":read", "nil"), line(1, ":ok", ":read", "nil")]
            .concat();
        assert!(verdict(&stale).is_violation());
        // A cas from 5 held, but nobody ever wrote 5.
        let impossible = [line(0, ":invoke", ":write", "1"), line(0, ":ok", ":write", "1"), line(1, ":invoke", ":cas", "[5 2]"), line(1, ":ok", ":cas", "[5 2]")]
            .concat();
        assert!(verdict(&impossible).is_violation());
        // A failed cas from 1 while the register certainly held 1.
        let failed = [line(0, ":invoke", ":write", "1"), line(0, ":ok", ":write", "1"), line(1, ":invoke", ":cas", "[1 2]"), line(1, ":fail", ":cas", "[1 2]")]
            .concat();
        assert!(verdict(&failed).is_violation());
    }

    #[test]
    fn an_unknown_write_may_or_may_not_have_happened() {
        // The timed-out write of 7 explains a later read of 7, and a read of nil too.
        let took_effect = [line(0, ":invoke", ":write", "7"), line(0, ":info", ":write", ":timed-out"), line(1, ":invoke", ":read", "nil"), line(1, ":ok", ":read", "7")]
            .concat();
        assert_eq!(verdict(&took_effect), Verdict::Ok);
        let did_not = [line(0, ":invoke", ":write", "7"), line(0, ":info", ":write", ":timed-out"), line(1, ":invoke", ":read", "nil"), line(1, ":ok", ":read", "nil")]
            .concat();
        assert_eq!(verdict(&did_not), Verdict::Ok);
    }

    #[test]
    fn a_log_file_loads_as_a_history() {
        let path = std::env::temp_dir().join(format!("detcd-jepsen-{}.log", std::process::id()));
        std::fs::write(&path, [line(0, ":invoke", ":write", "1"), line(0, ":ok", ":write", "1")].concat()).unwrap();
        let history = History::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(history.unwrap().ops.len(), 1);
    }

    #[test]
    fn malformed_lines_are_errors_that_name_the_line() {
        let cases = [
            (line(0, ":invoke", ":read", "nil") + &line(0, ":invoke", ":read", "nil"), "line 2: process 0 invokes while its previous op is open"),
            (line(0, ":ok", ":read", "1"), "line 1: process 0 completes an op it never invoked"),
            (line(0, ":invoke", ":cas", "[1]"), "line 1: cas argument \"[1]\" is not [expected new]"),
            (line(0, ":invoke", ":write", "x"), "line 1: value \"x\" is not an integer"),
            (line(0, ":invoke", ":append", "1"), "line 1: unknown function \":append\" (read, write or cas)"),
            (line(0, ":invoke", ":write", "1") + &line(0, ":ok", ":read", "1"), "line 2: process 0 completes :read but invoked"),
            ("INFO  jepsen.util - 0\t:invoke\n".to_string(), "line 1: expected process, event, function and value separated by tabs"),
            ("nothing here\n".to_string(), "no jepsen.util events"),
        ];
        for (log, expected) in cases {
            let error = parse_jepsen_log(&log).unwrap_err();
            assert!(error.starts_with(expected), "{error:?} should start with {expected:?}");
        }
    }
}
