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
