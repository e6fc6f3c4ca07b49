//! The checker's speed on synthetic histories (`detcd_sim::synthetic`): a long history
//! (50k operations on 4 keys by 16 processes, 2% crashed) and Jepsen-style
//! single-register histories (5 processes, 200 operations, a fifth of the writes
//! crashed with unknown outcome) — the shapes issue 10 sets targets for.
//! Run: `cargo bench -p detcd-sim --bench checker`.

use criterion::{criterion_group, criterion_main, Criterion};
use detcd_sim::checker::{check_linearizability, Verdict};
use detcd_sim::synthetic::{history, Shape};

fn linearizability(c: &mut Criterion) {
    let long = history(Shape { ops: 50_000, keys: 4, processes: 16, crash_fraction: 0.02 }, 1);
    let mut group = c.benchmark_group("linearizability");
    group.sample_size(10);
    group.bench_function("50k ops, 4 keys, 16 processes", |b| {
        b.iter(|| {
            let verdicts = check_linearizability(&long);
            assert!(verdicts.iter().all(|(_, v)| *v == Verdict::Ok));
        })
    });
    let registers: Vec<_> =
        (0..20).map(|seed| history(Shape { ops: 200, keys: 1, processes: 5, crash_fraction: 0.2 }, seed)).collect();
    group.bench_function("20 Jepsen-style registers, 200 ops, 5 processes", |b| {
        b.iter(|| {
            for register in &registers {
                let verdicts = check_linearizability(register);
                assert!(verdicts.iter().all(|(_, v)| *v == Verdict::Ok));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, linearizability);
criterion_main!(benches);
