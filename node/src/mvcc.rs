//! The multi-version key-value store: etcd's data model, in memory, deterministic.
//!
//! Every key keeps its history as records ordered by `mod_revision`; a delete writes a
//! tombstone, and a put after a tombstone starts a new generation (version 1, new
//! `create_revision`). One store-wide revision counter starts at 1; each write request
//! that changes something advances it by exactly one, and every change a txn makes shares
//! that revision.
//!
//! Invariants:
//! - `compact_revision <= current_revision`; reads below `compact_revision` fail with
//!   `Compacted`, above `current_revision` with `FutureRevision`.
//! - Per key, records are strictly increasing in `mod_revision`, and each record's
//!   `mod_revision <= current_revision` outside an open write.
//! - Iteration is over `BTreeMap`s only: the same operations give the same bytes on every
//!   member (the snapshot and `hash_kv` depend on it).
//!
//! The store does no I/O; it is saved whole inside raft snapshots (see ARCHITECTURE.md).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, CompactionRequest, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;

/// One version of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyRecord {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    lease: i64,
    value: Vec<u8>,
    tombstone: bool,
}

/// The key space with its history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mvcc {
    keys: BTreeMap<Vec<u8>, Vec<KeyRecord>>,
    current_revision: i64,
    compact_revision: i64,
}

/// Key bounds of a request: `[start, end)`, `end = None` meaning unbounded.
struct KeyRange<'a> {
    start: &'a [u8],
    end: Option<&'a [u8]>,
    single: bool,
}

fn key_range<'a>(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
    if range_end.is_empty() {
        KeyRange { start: key, end: None, single: true }
    } else if range_end == [0] {
        KeyRange { start: key, end: None, single: false }
    } else {
        KeyRange { start: key, end: Some(range_end), single: false }
    }
}

impl KeyRecord {
    fn to_key_value(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// The record of `records` visible at `revision`, if the key is live then.
fn visible_at(records: &[KeyRecord], revision: i64) -> Option<&KeyRecord> {
    let position = records.partition_point(|r| r.mod_revision <= revision);
    let record = records[..position].last()?;
    (!record.tombstone).then_some(record)
}

impl Mvcc {
    /// An empty store at revision 1, as a new etcd cluster starts.
    pub fn new() -> Self {
        Self { keys: BTreeMap::new(), current_revision: 1, compact_revision: 0 }
    }

    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The store's bytes, for a raft snapshot.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("mvcc state encodes")
    }

    /// Restores a store from snapshot bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let store: Mvcc = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        store.assert_invariants();
        Ok(store)
    }

    fn assert_invariants(&self) {
        assert!(self.current_revision >= 1, "revision starts at 1");
        assert!(self.compact_revision <= self.current_revision, "compaction beyond current revision");
        for records in self.keys.values() {
            assert!(!records.is_empty(), "a key with no records is removed");
            assert!(records.windows(2).all(|w| w[0].mod_revision < w[1].mod_revision), "records out of order");
        }
    }

    fn check_read_revision(&self, requested: i64) -> Result<i64, EtcdError> {
        if requested <= 0 {
            return Ok(self.current_revision);
        }
        if requested > self.current_revision {
            return Err(EtcdError::FutureRevision);
        }
        if requested < self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        Ok(requested)
    }

    /// Live key-values in a range at `revision`, in key order.
    fn collect(&self, range: &KeyRange<'_>, revision: i64) -> Vec<KeyValue> {
        if range.single {
            return self
                .keys
                .get(range.start)
                .and_then(|records| visible_at(records, revision))
                .map(|record| vec![record.to_key_value(range.start)])
                .unwrap_or_default();
        }
        if let Some(end) = range.end {
            if end <= range.start {
                return Vec::new();
            }
        }
        let upper = match range.end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        self.keys
            .range::<[u8], _>((Bound::Included(range.start), upper))
            .filter_map(|(key, records)| visible_at(records, revision).map(|r| r.to_key_value(key)))
            .collect()
    }

    /// A Range request (revision, sort, filters, limit, keys/count only). The caller sets
    /// the header.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.range_at_latest(request, self.current_revision)
    }

    fn range_at_latest(&self, request: &RangeRequest, latest: i64) -> Result<RangeResponse, EtcdError> {
        let revision = if request.revision <= 0 { latest } else { self.check_read_revision(request.revision)? };
        let mut kvs = self.collect(&key_range(&request.key, &request.range_end), revision);
        let count = kvs.len() as i64;
        if request.count_only {
            return Ok(RangeResponse { header: None, kvs: Vec::new(), more: false, count });
        }
        kvs.retain(|kv| {
            (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_create_revision == 0 || kv.create_revision >= request.min_create_revision)
                && (request.max_create_revision == 0 || kv.create_revision <= request.max_create_revision)
        });
        let target = range_request::SortTarget::try_from(request.sort_target).unwrap_or(range_request::SortTarget::Key);
        let mut order = range_request::SortOrder::try_from(request.sort_order).unwrap_or(range_request::SortOrder::None);
        if target != range_request::SortTarget::Key && order == range_request::SortOrder::None {
            order = range_request::SortOrder::Ascend;
        }
        if order != range_request::SortOrder::None {
            let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
                match target {
                    range_request::SortTarget::Key => a.key.cmp(&b.key),
                    range_request::SortTarget::Version => a.version.cmp(&b.version),
                    range_request::SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    range_request::SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    range_request::SortTarget::Value => a.value.cmp(&b.value),
                }
            };
            if order == range_request::SortOrder::Descend {
                kvs.sort_by(|a, b| by(b, a));
            } else {
                kvs.sort_by(by);
            }
        }
        let mut more = false;
        if request.limit > 0 && kvs.len() as i64 > request.limit {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { header: None, kvs, more, count })
    }

    /// Writes one record for `key` at `write_revision`, returning the previous live value.
    fn write_record(&mut self, key: &[u8], write_revision: i64, value: Vec<u8>, lease: i64) -> Option<KeyValue> {
        let records = self.keys.entry(key.to_vec()).or_default();
        let previous = records.last().filter(|r| !r.tombstone).cloned();
        let (create_revision, version) = match &previous {
            Some(p) => (p.create_revision, p.version + 1),
            None => (write_revision, 1),
        };
        let record = KeyRecord { mod_revision: write_revision, create_revision, version, lease, value, tombstone: false };
        match records.last_mut() {
            // A txn writes a key at most once, but stay exact if it ever did twice.
            Some(last) if last.mod_revision == write_revision => *last = record,
            _ => records.push(record),
        }
        previous.map(|p| p.to_key_value(key))
    }

    fn put_at(&mut self, request: &PutRequest, write_revision: i64) -> Result<PutResponse, EtcdError> {
        let previous = self.keys.get(&request.key).and_then(|r| r.last()).filter(|r| !r.tombstone).cloned();
        let value = if request.ignore_value {
            previous.as_ref().ok_or(EtcdError::KeyNotFound)?.value.clone()
        } else {
            request.value.clone()
        };
        let lease = if request.ignore_lease {
            previous.as_ref().ok_or(EtcdError::KeyNotFound)?.lease
        } else {
            request.lease
        };
        if lease != 0 {
            // No lease has been granted on this store (the lease service does not exist yet).
            return Err(EtcdError::LeaseNotFound);
        }
        let prev_kv = self.write_record(&request.key, write_revision, value, lease);
        Ok(PutResponse { header: None, prev_kv: if request.prev_kv { prev_kv } else { None } })
    }

    fn delete_at(&mut self, request: &DeleteRangeRequest, write_revision: i64) -> DeleteRangeResponse {
        let live = self.collect(&key_range(&request.key, &request.range_end), write_revision);
        for kv in &live {
            let records = self.keys.get_mut(&kv.key).expect("live key has records");
            let tombstone = KeyRecord {
                mod_revision: write_revision,
                create_revision: 0,
                version: 0,
                lease: 0,
                value: Vec::new(),
                tombstone: true,
            };
            match records.last_mut() {
                Some(last) if last.mod_revision == write_revision => *last = tombstone,
                _ => records.push(tombstone),
            }
        }
        DeleteRangeResponse {
            header: None,
            deleted: live.len() as i64,
            prev_kvs: if request.prev_kv { live } else { Vec::new() },
        }
    }

    /// Applies a Put; advances the revision.
    pub fn put(&mut self, request: &PutRequest) -> Result<PutResponse, EtcdError> {
        let write_revision = self.current_revision + 1;
        let response = self.put_at(request, write_revision)?;
        self.current_revision = write_revision;
        Ok(response)
    }

    /// Applies a DeleteRange; advances the revision only if something was deleted.
    pub fn delete_range(&mut self, request: &DeleteRangeRequest) -> DeleteRangeResponse {
        let write_revision = self.current_revision + 1;
        let response = self.delete_at(request, write_revision);
        if response.deleted > 0 {
            self.current_revision = write_revision;
        }
        response
    }

    fn compare_holds(&self, comparison: &Compare, revision: i64) -> bool {
        let kvs = self.collect(&key_range(&comparison.key, &comparison.range_end), revision);
        let target = compare::CompareTarget::try_from(comparison.target).unwrap_or(compare::CompareTarget::Version);
        if kvs.is_empty() {
            if target == compare::CompareTarget::Value {
                return false;
            }
            return compare_key_value(comparison, target, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_key_value(comparison, target, kv))
    }

    /// Applies a Txn atomically: every change shares one new revision.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let write_revision = self.current_revision + 1;
        let mut changed = false;
        let snapshot = self.clone_if_txn_can_fail(request);
        match self.txn_at(request, write_revision, &mut changed) {
            Ok(mut response) => {
                let revision = if changed { write_revision } else { self.current_revision };
                if changed {
                    self.current_revision = write_revision;
                }
                set_nested_revisions(&mut response.responses, revision);
                Ok(response)
            }
            Err(error) => {
                if let Some(before) = snapshot {
                    *self = before;
                }
                Err(error)
            }
        }
    }

    /// A txn can fail half-way only through an op error (ignore_value on a missing key,
    /// an unknown lease, a bad read revision). Keep a copy to roll back only then.
    fn clone_if_txn_can_fail(&self, request: &TxnRequest) -> Option<Mvcc> {
        fn risky(ops: &[RequestOp]) -> bool {
            ops.iter().any(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => p.ignore_value || p.ignore_lease || p.lease != 0,
                Some(request_op::Request::RequestRange(r)) => r.revision != 0,
                Some(request_op::Request::RequestTxn(t)) => risky(&t.success) || risky(&t.failure),
                _ => false,
            })
        }
        (risky(&request.success) || risky(&request.failure)).then(|| self.clone())
    }

    fn txn_at(&mut self, request: &TxnRequest, write_revision: i64, changed: &mut bool) -> Result<TxnResponse, EtcdError> {
        let read_revision = if *changed { write_revision } else { self.current_revision };
        let succeeded = request.compare.iter().all(|c| self.compare_holds(c, read_revision));
        let ops = if succeeded { &request.success } else { &request.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    let latest = if *changed { write_revision } else { self.current_revision };
                    response_op::Response::ResponseRange(self.range_at_latest(range, latest)?)
                }
                Some(request_op::Request::RequestPut(put)) => {
                    let response = self.put_at(put, write_revision)?;
                    *changed = true;
                    response_op::Response::ResponsePut(response)
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    let response = self.delete_at(delete, write_revision);
                    *changed |= response.deleted > 0;
                    response_op::Response::ResponseDeleteRange(response)
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    response_op::Response::ResponseTxn(self.txn_at(nested, write_revision, changed)?)
                }
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }

    /// Compacts history before `revision`: each key keeps its newest version at or below
    /// it (if live) and everything after.
    pub fn compact(&mut self, request: &CompactionRequest) -> Result<(), EtcdError> {
        let revision = request.revision;
        if revision <= self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        if revision > self.current_revision {
            return Err(EtcdError::FutureRevision);
        }
        self.keys.retain(|_, records| {
            let position = records.partition_point(|r| r.mod_revision <= revision);
            // Keep the newest record at or below the compaction point unless it is a tombstone.
            let keep_from = match position {
                0 => 0,
                p if records[p - 1].tombstone => p,
                p => p - 1,
            };
            records.drain(..keep_from);
            !records.is_empty()
        });
        self.compact_revision = revision;
        Ok(())
    }

    /// Hash of the key space at `revision` (keys, versions and values of every record at
    /// or below it), equal on every member that applied the same log.
    pub fn hash_kv(&self, revision: i64) -> u32 {
        let revision = if revision <= 0 { self.current_revision } else { revision };
        let mut hasher = crc32fast::Hasher::new();
        for (key, records) in &self.keys {
            for record in records.iter().filter(|r| r.mod_revision <= revision) {
                hasher.update(key);
                hasher.update(&record.mod_revision.to_le_bytes());
                hasher.update(&record.create_revision.to_le_bytes());
                hasher.update(&record.version.to_le_bytes());
                hasher.update(&record.lease.to_le_bytes());
                hasher.update(&[u8::from(record.tombstone)]);
                hasher.update(&record.value);
            }
        }
        hasher.finalize()
    }

    /// Bytes the store holds (keys, values and per-record overhead), reported as the
    /// database size.
    pub fn approximate_bytes(&self) -> u64 {
        const RECORD_OVERHEAD_BYTES: u64 = 48;
        self.keys
            .iter()
            .map(|(key, records)| {
                records.iter().map(|r| key.len() as u64 + r.value.len() as u64 + RECORD_OVERHEAD_BYTES).sum::<u64>()
            })
            .sum()
    }

    /// Number of live keys now.
    pub fn live_key_count(&self) -> usize {
        self.keys.values().filter(|r| r.last().is_some_and(|r| !r.tombstone)).count()
    }
}

fn compare_key_value(comparison: &Compare, target: compare::CompareTarget, kv: &KeyValue) -> bool {
    use compare::TargetUnion;
    let ordering = match target {
        compare::CompareTarget::Value => {
            let wanted: &[u8] = match &comparison.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(wanted)
        }
        _ => {
            let wanted = match comparison.target_union {
                Some(TargetUnion::Version(v))
                | Some(TargetUnion::CreateRevision(v))
                | Some(TargetUnion::ModRevision(v))
                | Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            };
            let actual = match target {
                compare::CompareTarget::Version => kv.version,
                compare::CompareTarget::Create => kv.create_revision,
                compare::CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            actual.cmp(&wanted)
        }
    };
    match compare::CompareResult::try_from(comparison.result).unwrap_or(compare::CompareResult::Equal) {
        compare::CompareResult::Equal => ordering == Ordering::Equal,
        compare::CompareResult::Greater => ordering == Ordering::Greater,
        compare::CompareResult::Less => ordering == Ordering::Less,
        compare::CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

/// etcd reports the txn's revision in every nested response header.
fn set_nested_revisions(responses: &mut [ResponseOp], revision: i64) {
    // Iterative walk (no recursion): a stack of response lists still to visit.
    let mut stack: Vec<&mut [ResponseOp]> = vec![responses];
    while let Some(list) = stack.pop() {
        for op in list.iter_mut() {
            let header = Some(ResponseHeader { revision, ..Default::default() });
            match &mut op.response {
                Some(response_op::Response::ResponseRange(r)) => r.header = header,
                Some(response_op::Response::ResponsePut(r)) => r.header = header,
                Some(response_op::Response::ResponseDeleteRange(r)) => r.header = header,
                Some(response_op::Response::ResponseTxn(r)) => {
                    r.header = header;
                    stack.push(&mut r.responses);
                }
                None => {}
            }
        }
    }
}
