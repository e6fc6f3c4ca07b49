//! Criterion benchmarks of the hot paths of a member (issue 10): MVCC put, range, txn and
//! compaction, and a put and a get in a million-key store; the state machine's apply of a batch of committed entries; snapshot
//! encoding and decoding, the copy-on-write clone that lets a snapshot be taken
//! without stopping the loop, and a snapshot file's save; WAL append + sync of a batch (in memory, and on the real
//! disk with fdatasync). Run with `cargo bench -p detcd-node`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use detcd_node::apply::StateMachine;
use detcd_node::env::mem_disk::MemDisk;
use detcd_node::env::Disk;
use detcd_node::mvcc::Mvcc;
use detcd_node::pb::detcdpb::{internal_request, InternalRequest};
use detcd_node::pb::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use detcd_node::storage::wal::Wal;
use detcd_node::storage::{SnapshotStore, SnapshotWriter};
use prost::Message as _;
use raft::eraftpb::{Entry, SnapshotMetadata};

// The member's allocator (main.rs): glibc's, which these benchmarks used before, made
// the copy-heavy ones measure its free lists as much as the code.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VALUE_BYTES: usize = 256;

fn key(n: u64) -> Vec<u8> {
    format!("key{n:08}").into_bytes()
}

fn put_request(n: u64) -> PutRequest {
    PutRequest { key: key(n), value: vec![7; VALUE_BYTES].into(), ..Default::default() }
}

fn store_of(keys: u64) -> Mvcc {
    let mut store = Mvcc::new();
    for n in 0..keys {
        store.put(&put_request(n)).expect("put");
    }
    store
}

fn state_of(keys: u64) -> StateMachine {
    let mut state = StateMachine::new();
    for n in 0..keys {
        let request = InternalRequest { proposer: 1, request_id: n + 1, op: Some(internal_request::Op::Put(put_request(n))), auth: None };
        state.apply(request.encode_to_vec().into());
    }
    state
}

fn mvcc(c: &mut Criterion) {
    c.bench_function("mvcc put, 1k keys", |b| {
        let mut store = Mvcc::new();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            store.put(&put_request(n % 1000)).expect("put");
        });
    });
    let store = store_of(10_000);
    c.bench_function("mvcc range 100 of 10k keys", |b| {
        let request = RangeRequest { key: key(1000), range_end: key(1100), ..Default::default() };
        b.iter(|| store.range(&request).expect("range"));
    });
    c.bench_function("mvcc txn compare mod_revision + put, 10k keys", |b| {
        let mut store = store_of(10_000);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let k = key(n % 10_000);
            let request = TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Less as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: k.clone(),
                    target_union: Some(compare::TargetUnion::ModRevision(i64::MAX)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest { key: k, value: vec![9; VALUE_BYTES].into(), ..Default::default() })),
                }],
                failure: vec![],
            };
            store.txn(&request).expect("txn");
        });
    });
    // Locating a key in a big store: the key index's search leaves the caches (the scale
    // run's million keys). Requests built beforehand; keys in a scattered order.
    let mut group = c.benchmark_group("mvcc big store");
    group.sample_size(20);
    group.bench_function("put over 1M keys, scattered", |b| {
        let mut store = store_of(1_000_000);
        let requests: Vec<PutRequest> = (0..65_536u64).map(|i| put_request(i.wrapping_mul(2_654_435_761) % 1_000_000)).collect();
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % requests.len();
            store.put(&requests[i]).expect("put");
        });
    });
    group.bench_function("get over 1M keys, scattered", |b| {
        let store = store_of(1_000_000);
        let requests: Vec<RangeRequest> = (0..65_536u64).map(|i| RangeRequest { key: key(i.wrapping_mul(2_654_435_761) % 1_000_000), ..Default::default() }).collect();
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % requests.len();
            store.range(&requests[i]).expect("range")
        });
    });
    group.finish();
    let mut group = c.benchmark_group("mvcc compaction");
    group.sample_size(10);
    group.bench_function("compact 100k keys x 2 versions", |b| {
        b.iter_batched(
            || {
                let mut store = store_of(100_000);
                for n in 0..100_000 {
                    store.put(&put_request(n)).expect("put");
                }
                store
            },
            |mut store| {
                let revision = store.current_revision();
                store.compact(&CompactionRequest { revision, physical: false }).expect("compact");
                store
            },
            BatchSize::LargeInput,
        );
    });
    // One loop turn of compaction's removal in a live store: 1M keys x 2 versions, a
    // frozen copy (a snapshot job's) sharing every chunk, so each changed chunk is copied.
    group.bench_function("one removal step (16,384 keys) with a frozen copy, 1M keys", |b| {
        // (16,384 is not the member's step, `COMPACTION_KEYS_PER_TURN_MAX`: the figure in
        // its comment was measured with this.)
        let mut store = store_of(1_000_000);
        for n in 0..1_000_000 {
            store.put(&put_request(n)).expect("put");
        }
        let revision = store.current_revision();
        store.compact_deferred(&CompactionRequest { revision, physical: false }).expect("compact");
        b.iter_batched(
            || (store.clone(), store.clone()),
            |(mut live, frozen)| {
                live.compact_step(16_384);
                (live, frozen)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn state_machine(c: &mut Criterion) {
    c.bench_function("apply a batch of 100 committed puts", |b| {
        let mut state = StateMachine::new();
        let mut id = 0u64;
        b.iter(|| {
            for _ in 0..100 {
                id += 1;
                let request = InternalRequest { proposer: 1, request_id: id, op: Some(internal_request::Op::Put(put_request(id % 10_000))), auth: None };
                state.apply(request.encode_to_vec().into());
            }
        });
    });
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    let state = state_of(100_000);
    group.bench_function("clone (copy-on-write) of 100k keys", |b| b.iter(|| state.clone()));
    group.bench_function("encode 100k keys", |b| b.iter(|| state.encode()));
    let bytes = state.encode();
    group.bench_function("decode 100k keys", |b| b.iter(|| StateMachine::decode(&bytes).expect("decodes")));
    // A snapshot job's file, as a member writes it: sized, encoded onto the disk with
    // its CRC, synced, renamed.
    let dir = std::env::temp_dir().join(format!("detcd-bench-snapshot-{}", std::process::id()));
    let store = SnapshotStore::new(Arc::new(detcd_node::env::fs_disk::FsDisk::open(&dir).expect("disk")));
    let mut metadata = SnapshotMetadata::default();
    (metadata.term, metadata.index) = (1, 100_000);
    // The same name every time: each save replaces the last file (temp, sync, rename).
    group.bench_function("save the snapshot file of 100k keys (real disk)", |b| {
        b.iter(|| store.save(&metadata, &state.encoding(), SnapshotWriter::Own).expect("saved"))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn wal(c: &mut Criterion) {
    let batch: Vec<Entry> = (1..=64u64)
        .map(|index| {
            let mut entry = Entry::default();
            entry.index = index;
            entry.term = 1;
            entry.data = vec![7u8; 300].into();
            entry
        })
        .collect();
    let next_batch = |index: &mut u64| -> Vec<Entry> {
        batch
            .iter()
            .map(|e| {
                *index += 1;
                let mut entry = e.clone();
                entry.index = *index;
                entry
            })
            .collect()
    };
    c.bench_function("wal append + sync of 64 entries (memory disk)", |b| {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let (mut wal, _) = Wal::open(disk, 0, 64 << 20).expect("wal");
        let mut index = 0u64;
        b.iter(|| {
            wal.append_entries(&next_batch(&mut index)).expect("append");
            wal.sync().expect("sync");
        });
    });
    let dir = std::env::temp_dir().join(format!("detcd-bench-wal-{}", std::process::id()));
    let disk: Arc<dyn Disk> = Arc::new(detcd_node::env::fs_disk::FsDisk::open(&dir).expect("disk"));
    let (mut wal, _) = Wal::open(disk, 0, 64 << 20).expect("wal");
    let mut index = 0u64;
    c.bench_function("wal append + fdatasync of 64 entries (real disk)", |b| {
        b.iter(|| {
            wal.append_entries(&next_batch(&mut index)).expect("append");
            wal.sync().expect("sync");
        });
    });
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, mvcc, state_machine, wal);
criterion_main!(benches);
