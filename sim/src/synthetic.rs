//! Synthetic histories for measuring the checker: linearizable by construction.
//!
//! Why it exists: the checker's speed targets (a 50k-operation history in under half a
//! second; Jepsen-style single-register histories faster than Porcupine) need histories
//! of a chosen shape without running the simulator for minutes. `processes` clients
//! work on `keys` registers; each op is invoked, takes effect on the true register at
//! one instant, and completes later, with other processes' events interleaved at
//! random — so many ops overlap. A crashed op (a fraction `crash_fraction`) gets an
//! unknown outcome and may or may not have taken effect; its process is replaced by a
//! fresh one, as in Jepsen. Seeded: the same arguments give the same history.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::{History, Op, OpKind, Outcome};

/// The shape of a synthetic history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub ops: usize,
    pub keys: usize,
    pub processes: usize,
    /// Fraction of ops whose process crashes before it hears the answer.
    pub crash_fraction: f64,
}

/// One process's op in flight.
struct InFlight {
    op: Op,
    took_effect: bool,
}

/// A linearizable history of the given shape (see the module documentation).
pub fn history(shape: Shape, seed: u64) -> History {
    assert!(shape.keys > 0 && shape.processes > 0, "a history needs keys and processes");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut registers: Vec<Option<String>> = vec![None; shape.keys];
    let mut in_flight: Vec<Option<InFlight>> = (0..shape.processes).map(|_| None).collect();
    let mut client_of: Vec<u64> = (0..shape.processes as u64).collect();
    let mut next_client = shape.processes as u64;
    let mut ops: Vec<Op> = Vec::with_capacity(shape.ops);
    let mut invoked = 0usize;
    let mut seq = 0u64;
    // Bounded: every turn moves one op forward, and each op needs at most three turns.
    let turns_max = shape.ops * 3 + shape.processes * 3;
    for _ in 0..turns_max {
        if invoked == shape.ops && in_flight.iter().all(Option::is_none) {
            break;
        }
        let process = rng.gen_range(0..shape.processes);
        seq += 1;
        match in_flight[process].take() {
            None if invoked < shape.ops => {
                let key_index = rng.gen_range(0..shape.keys);
                let key = format!("k{key_index}");
                let value = format!("v{invoked}");
                let kind = match rng.gen_range(0..10) {
                    0..=3 => OpKind::Put { key, value },
                    4..=7 => OpKind::Get { key, serializable: false },
                    8 => OpKind::Delete { key },
                    _ => {
                        let expected = if rng.gen_bool(0.5) { registers[key_index].clone() } else { None };
                        OpKind::Cas { key, expected, value }
                    }
                };
                let mut op = Op::invoked(invoked as u64, client_of[process], 0, 1, kind, seq, seq);
                op.outcome = Outcome::Ok;
                invoked += 1;
                in_flight[process] = Some(InFlight { op, took_effect: false });
            }
            None => {}
            Some(mut flight) if !flight.took_effect => {
                let key_index: usize = flight.op.kind.key()[1..].parse().expect("synthetic key");
                let register = &mut registers[key_index];
                match &flight.op.kind {
                    OpKind::Put { value, .. } => *register = Some(value.clone()),
                    OpKind::Get { .. } => flight.op.read_value = register.clone(),
                    OpKind::Delete { .. } => flight.op.deleted = i64::from(register.take().is_some()),
                    OpKind::Cas { expected, value, .. } => {
                        flight.op.succeeded = register == expected;
                        if flight.op.succeeded {
                            *register = Some(value.clone());
                        }
                    }
                    OpKind::Range { .. } => unreachable!("no ranges here"),
                }
                flight.took_effect = true;
                in_flight[process] = Some(flight);
            }
            Some(mut flight) => {
                if flight.op.kind.is_write() && rng.gen_bool(shape.crash_fraction) {
                    // The process crashes before the answer: unknown outcome, and a fresh
                    // process takes its place.
                    flight.op.outcome = Outcome::Unknown;
                    client_of[process] = next_client;
                    next_client += 1;
                } else {
                    flight.op.complete_seq = Some(seq);
                    flight.op.complete_ms = Some(seq);
                }
                ops.push(flight.op);
            }
        }
    }
    ops.sort_by_key(|op| op.invoke_seq);
    History { ops }
}

/// The shape of a synthetic Jepsen register log ([`jepsen_register_log`]).
#[derive(Clone, Copy, Debug)]
pub struct RegisterLogShape {
    pub ops: usize,
    pub processes: usize,
    /// Fraction of writes and cas whose process crashes (`:info`) before the answer.
    pub crash_fraction: f64,
    /// Values are drawn from `0..values`: Jepsen's etcd test uses 5, and the repeats are
    /// what makes its histories hard to check.
    pub values: u32,
    /// Change one completed read in the second half of the log to another value: most
    /// often a violation (not always: a concurrent write may have written that value).
    pub plant_stale_read: bool,
}

/// A call of the register: read, write, or compare-and-set.
#[derive(Clone, Copy)]
enum RegisterCall {
    Read,
    Write(u32),
    Cas(u32, u32),
}

impl RegisterCall {
    /// The function and argument fields of a log line.
    fn fields(self) -> (&'static str, String) {
        match self {
            RegisterCall::Read => (":read", "nil".into()),
            RegisterCall::Write(v) => (":write", v.to_string()),
            RegisterCall::Cas(from, to) => (":cas", format!("[{from} {to}]")),
        }
    }

    /// Applies the call to the register; whether a cas held.
    fn apply(self, register: &mut Option<u32>) -> bool {
        match self {
            RegisterCall::Read => true,
            RegisterCall::Write(v) => {
                *register = Some(v);
                true
            }
            RegisterCall::Cas(from, to) => {
                let held = *register == Some(from);
                if held {
                    *register = Some(to);
                }
                held
            }
        }
    }
}

/// One process slot of the register log's generator.
enum RegisterSlot {
    Idle,
    Invoked(RegisterCall),
    /// Took effect: the value read, or whether a cas held.
    Effected(RegisterCall, Option<u32>, bool),
}

/// A Jepsen single-register log (`INFO  jepsen.util - 3\t:invoke\t:cas\t[1 4]`, the
/// format of Jepsen's etcd tests and of Porcupine's test data), linearizable by
/// construction unless `plant_stale_read`: each op takes effect on the true register at
/// one instant between its invoke and its completion. A crashed op (`:info`, after which
/// Jepsen gives the client a new process number, the old one plus `processes`) may have
/// taken effect before the crash, may take effect at any later instant, or never.
/// Seeded: the same arguments give the same log. For measuring checkers side by side.
pub fn jepsen_register_log(shape: RegisterLogShape, seed: u64) -> String {
    assert!(shape.processes > 0 && shape.values > 0, "a register log needs processes and values");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut register: Option<u32> = None;
    let mut slots: Vec<RegisterSlot> = (0..shape.processes).map(|_| RegisterSlot::Idle).collect();
    let mut process_of: Vec<usize> = (0..shape.processes).collect();
    // Crashed before taking effect: may still take effect later.
    let mut crashed_pending: Vec<RegisterCall> = Vec::new();
    let mut lines: Vec<String> = Vec::with_capacity(shape.ops * 2);
    // (line index, true value) of completed reads, for the planted stale read.
    let mut reads: Vec<(usize, Option<u32>)> = Vec::new();
    let mut invoked = 0usize;
    let line = |process: usize, event: &str, call: RegisterCall, value: Option<String>| {
        let (function, argument) = call.fields();
        format!("INFO  jepsen.util - {process}\t{event}\t{function}\t{}", value.unwrap_or(argument))
    };
    // Bounded: each op needs at most three turns, and a crashed op one more to land late.
    let turns_max = shape.ops * 4 + shape.processes * 3;
    for _ in 0..turns_max {
        if invoked == shape.ops && slots.iter().all(|s| matches!(s, RegisterSlot::Idle)) {
            break;
        }
        if !crashed_pending.is_empty() && rng.gen_bool(0.05) {
            let late = crashed_pending.swap_remove(rng.gen_range(0..crashed_pending.len()));
            late.apply(&mut register);
        }
        let slot_index = rng.gen_range(0..shape.processes);
        let process = process_of[slot_index];
        let slot = std::mem::replace(&mut slots[slot_index], RegisterSlot::Idle);
        slots[slot_index] = match slot {
            RegisterSlot::Idle if invoked < shape.ops => {
                let call = match rng.gen_range(0..3) {
                    0 => RegisterCall::Read,
                    1 => RegisterCall::Write(rng.gen_range(0..shape.values)),
                    _ => RegisterCall::Cas(rng.gen_range(0..shape.values), rng.gen_range(0..shape.values)),
                };
                invoked += 1;
                lines.push(line(process, ":invoke", call, None));
                RegisterSlot::Invoked(call)
            }
            RegisterSlot::Idle => RegisterSlot::Idle,
            RegisterSlot::Invoked(call) => {
                let crashes = !matches!(call, RegisterCall::Read) && rng.gen_bool(shape.crash_fraction / 2.0);
                if crashes {
                    lines.push(line(process, ":info", call, None));
                    crashed_pending.push(call);
                    process_of[slot_index] += shape.processes;
                    RegisterSlot::Idle
                } else {
                    let read = register;
                    let held = call.apply(&mut register);
                    RegisterSlot::Effected(call, read, held)
                }
            }
            RegisterSlot::Effected(call, read, held) => {
                let crashes = !matches!(call, RegisterCall::Read) && rng.gen_bool(shape.crash_fraction / 2.0);
                if crashes {
                    lines.push(line(process, ":info", call, None));
                    process_of[slot_index] += shape.processes;
                } else {
                    match call {
                        RegisterCall::Read => {
                            reads.push((lines.len(), read));
                            lines.push(line(process, ":ok", call, Some(read.map_or("nil".into(), |v| v.to_string()))));
                        }
                        RegisterCall::Cas(..) if !held => lines.push(line(process, ":fail", call, None)),
                        _ => lines.push(line(process, ":ok", call, None)),
                    }
                }
                RegisterSlot::Idle
            }
        };
    }
    if shape.plant_stale_read {
        let second_half: Vec<&(usize, Option<u32>)> = reads.iter().filter(|(index, _)| *index >= lines.len() / 2).collect();
        if !second_half.is_empty() {
            let (index, truth) = *second_half[rng.gen_range(0..second_half.len())];
            let other = (0..shape.values).map(Some).chain([None]).filter(|v| *v != truth).nth(rng.gen_range(0..shape.values as usize));
            let text = other.flatten().map_or("nil".into(), |v| v.to_string());
            let process_field = lines[index].split('\t').next().unwrap_or_default().to_string();
            lines[index] = format!("{process_field}\t:ok\t:read\t{text}");
        }
    }
    let mut log = lines.join("\n");
    log.push('\n');
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_histories_are_valid_linearizable_and_seeded() {
        let shape = Shape { ops: 2000, keys: 3, processes: 8, crash_fraction: 0.05 };
        let history = history(shape, 7);
        assert_eq!(history.ops.len(), 2000);
        history.validate().expect("valid");
        assert!(history.ops.iter().any(|op| op.outcome == Outcome::Unknown), "some ops crashed");
        for (key, verdict) in crate::checker::check_linearizability(&history) {
            assert_eq!(verdict, crate::checker::Verdict::Ok, "key {key}");
        }
        assert_eq!(history, super::history(shape, 7), "same seed, same history");
    }

    #[test]
    fn jepsen_register_logs_are_linearizable_seeded_and_crash_some_writes() {
        let shape = RegisterLogShape { ops: 200, processes: 5, crash_fraction: 0.2, values: 5, plant_stale_read: false };
        for seed in 0..20 {
            let log = jepsen_register_log(shape, seed);
            assert_eq!(log, jepsen_register_log(shape, seed), "same seed, same log");
            let history = crate::jepsen_log::parse_jepsen_log(&log).expect("the generator writes valid logs");
            assert_eq!(history.ops.len(), 200);
            assert!(history.ops.iter().any(|op| op.outcome == Outcome::Unknown), "seed {seed}: some ops crashed");
            for (key, verdict) in crate::checker::check_linearizability(&history) {
                assert_eq!(verdict, crate::checker::Verdict::Ok, "seed {seed} key {key}");
            }
        }
    }

    /// A planted stale read makes most register logs violations when no op crashed (a
    /// concurrent write of the planted value can excuse it, so not every one; with
    /// crashed writes of every value pending, almost none is).
    #[test]
    fn a_stale_read_planted_in_register_logs_is_mostly_found() {
        let shape = RegisterLogShape { ops: 200, processes: 5, crash_fraction: 0.0, values: 5, plant_stale_read: true };
        let violations = (0..20)
            .filter(|seed| {
                let history = crate::jepsen_log::parse_jepsen_log(&jepsen_register_log(shape, *seed)).expect("valid log");
                crate::checker::check_linearizability(&history).iter().any(|(_, v)| v.is_violation())
            })
            .count();
        assert!(violations >= 10, "only {violations} of 20 planted stale reads were violations");
    }

    /// A stale read planted into a synthetic history is found.
    #[test]
    fn a_planted_stale_read_is_found() {
        let shape = Shape { ops: 3000, keys: 2, processes: 6, crash_fraction: 0.0 };
        let mut history = history(shape, 11);
        // A read that completed after a later put completed, returning the value before.
        let (read_index, stale) = history
            .ops
            .iter()
            .enumerate()
            .find_map(|(i, op)| {
                let OpKind::Get { key, .. } = &op.kind else { return None };
                // The put on the key that finished last before the read began.
                let later_put = history
                    .ops
                    .iter()
                    .filter(|w| {
                        matches!(&w.kind, OpKind::Put { key: k, .. } if k == key)
                            && w.complete_seq.is_some_and(|c| c < op.invoke_seq)
                    })
                    .max_by_key(|w| w.complete_seq)?;
                let earlier = history.ops.iter().find(|w| {
                    matches!(&w.kind, OpKind::Put { key: k, .. } if k == key) && w.complete_seq.is_some_and(|c| c < later_put.invoke_seq)
                })?;
                Some((i, earlier.kind.written_value().map(str::to_string)))
            })
            .expect("a read after two puts");
        history.ops[read_index].read_value = stale;
        let verdicts = crate::checker::check_linearizability(&history);
        assert!(verdicts.iter().any(|(_, v)| v.is_violation()), "{verdicts:?}");
    }
}
