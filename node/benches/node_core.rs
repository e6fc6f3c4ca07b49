//! Criterion benchmarks of the pure parts of a member: MVCC writes and reads, WAL record
//! encoding. Run with `cargo bench -p detcd-node`.

use criterion::{criterion_group, criterion_main, Criterion};
use detcd_node::mvcc::Mvcc;
use detcd_node::pb::etcdserverpb::{PutRequest, RangeRequest};

fn mvcc_put(c: &mut Criterion) {
    c.bench_function("mvcc_put_1k_keys", |b| {
        let mut store = Mvcc::new();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let request = PutRequest { key: format!("key{}", n % 1000).into_bytes(), value: vec![7; 64], ..Default::default() };
            store.put(&request).expect("put");
        });
    });
}

fn mvcc_range(c: &mut Criterion) {
    let mut store = Mvcc::new();
    for n in 0..10_000u64 {
        let request = PutRequest { key: format!("key{n:05}").into_bytes(), value: vec![7; 64], ..Default::default() };
        store.put(&request).expect("put");
    }
    c.bench_function("mvcc_range_prefix_100_of_10k", |b| {
        let request = RangeRequest { key: b"key001".to_vec(), range_end: b"key002".to_vec(), ..Default::default() };
        b.iter(|| store.range(&request).expect("range"));
    });
}

criterion_group!(benches, mvcc_put, mvcc_range);
criterion_main!(benches);
