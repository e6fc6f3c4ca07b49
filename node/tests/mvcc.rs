//! MVCC semantics against etcd's documented behaviour: revisions, versions,
//! generations, historical reads, compaction errors, range options and txn compares.

use detcd_node::errors::EtcdError;
use detcd_node::mvcc::Mvcc;
use detcd_node::pb::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, CompactionRequest, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};

fn put(store: &mut Mvcc, key: &str, value: &str) -> i64 {
    store.put(&PutRequest { key: key.into(), value: value.as_bytes().to_vec().into(), ..Default::default() }).expect("put");
    store.current_revision()
}

fn get(store: &Mvcc, key: &str, revision: i64) -> Result<Option<(String, i64, i64, i64)>, EtcdError> {
    let response = store.range(&RangeRequest { key: key.into(), revision, ..Default::default() })?;
    Ok(response.kvs.first().map(|kv| {
        (String::from_utf8(kv.value.to_vec()).expect("utf8"), kv.create_revision, kv.mod_revision, kv.version)
    }))
}

fn keys(response: &detcd_node::pb::etcdserverpb::RangeResponse) -> Vec<String> {
    response.kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).expect("utf8")).collect()
}

#[test]
fn revisions_versions_and_generations() {
    let mut store = Mvcc::new();
    assert_eq!(store.current_revision(), 1, "a new cluster starts at revision 1");
    assert_eq!(put(&mut store, "foo", "bar"), 2, "the first write produces revision 2");
    put(&mut store, "foo", "baz");
    assert_eq!(get(&store, "foo", 0).expect("get"), Some(("baz".into(), 2, 3, 2)));
    let deleted = store.delete_range(&DeleteRangeRequest { key: "foo".into(), ..Default::default() });
    assert_eq!(deleted.deleted, 1);
    assert_eq!(store.current_revision(), 4);
    assert_eq!(get(&store, "foo", 0).expect("get"), None);
    // Deleting nothing does not advance the revision.
    store.delete_range(&DeleteRangeRequest { key: "nothing".into(), ..Default::default() });
    assert_eq!(store.current_revision(), 4);
    // Re-creating starts a new generation.
    put(&mut store, "foo", "again");
    assert_eq!(get(&store, "foo", 0).expect("get"), Some(("again".into(), 5, 5, 1)));
    // History is readable.
    assert_eq!(get(&store, "foo", 2).expect("get"), Some(("bar".into(), 2, 2, 1)));
    assert_eq!(get(&store, "foo", 4).expect("get"), None);
}

#[test]
fn future_and_compacted_revisions() {
    let mut store = Mvcc::new();
    for i in 0..5 {
        put(&mut store, "k", &format!("v{i}"));
    }
    assert_eq!(store.current_revision(), 6);
    assert_eq!(get(&store, "k", 7), Err(EtcdError::FutureRevision));
    store.compact(&CompactionRequest { revision: 4, physical: true }).expect("compact");
    assert_eq!(get(&store, "k", 3), Err(EtcdError::Compacted));
    assert_eq!(get(&store, "k", 4).expect("at the compaction point").map(|v| v.0), Some("v2".into()));
    assert_eq!(store.compact(&CompactionRequest { revision: 4, physical: false }), Err(EtcdError::Compacted));
    assert_eq!(store.compact(&CompactionRequest { revision: 3, physical: false }), Err(EtcdError::Compacted));
    assert_eq!(store.compact(&CompactionRequest { revision: 99, physical: false }), Err(EtcdError::FutureRevision));
    assert_eq!(EtcdError::Compacted.message(), "etcdserver: mvcc: required revision has been compacted");
    assert_eq!(EtcdError::FutureRevision.message(), "etcdserver: mvcc: required revision is a future revision");
}

#[test]
fn compaction_drops_deleted_keys_and_keeps_latest() {
    let mut store = Mvcc::new();
    put(&mut store, "gone", "1");
    put(&mut store, "kept", "1");
    store.delete_range(&DeleteRangeRequest { key: "gone".into(), ..Default::default() });
    put(&mut store, "kept", "2");
    let hash_before = store.hash_kv(0);
    store.compact(&CompactionRequest { revision: store.current_revision(), physical: false }).expect("compact");
    assert_eq!(store.live_key_count(), 1);
    assert_eq!(get(&store, "kept", 0).expect("get").map(|v| v.0), Some("2".into()));
    assert_ne!(hash_before, store.hash_kv(0), "history was dropped");
}

/// etcd-io/etcd#18089: compacting at the revision of a delete must not lose the delete
/// for a watch that starts there (found here by the simulator, nospace seed 44).
#[test]
fn a_delete_at_the_compaction_revision_stays_in_history() {
    let mut store = Mvcc::new();
    for value in ["v2", "v3", "v4"] {
        put(&mut store, "k", value);
    }
    store.delete_range(&DeleteRangeRequest { key: "k".into(), ..Default::default() });
    let delete_revision = store.current_revision();
    put(&mut store, "k", "v6");
    store.compact(&CompactionRequest { revision: delete_revision, physical: true }).expect("compact");
    let batch = store.history(b"k", b"", delete_revision, 100).expect("history from the compaction revision");
    let seen: Vec<(i32, i64)> = batch.events.iter().map(|e| (e.r#type, e.kv.as_ref().expect("kv").mod_revision)).collect();
    assert_eq!(seen, vec![(1, delete_revision), (0, delete_revision + 1)], "the delete, then the put");
    assert_eq!(store.live_key_count(), 1);
    // A later compaction past it drops the tombstone with the rest of the old life.
    store.compact(&CompactionRequest { revision: delete_revision + 1, physical: true }).expect("compact");
    let batch = store.history(b"k", b"", delete_revision + 1, 100).expect("history");
    assert_eq!(batch.events.len(), 1);
    assert_eq!(store.approximate_bytes(), store.count_bytes());
}

#[test]
fn range_options() {
    let mut store = Mvcc::new();
    for (k, v) in [("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("foo3", "bar3"), ("zoo", "zebra")] {
        put(&mut store, k, v);
    }
    let prefix = RangeRequest { key: "foo".into(), range_end: "fop".into(), ..Default::default() };
    assert_eq!(keys(&store.range(&prefix).expect("range")), ["foo", "foo1", "foo2", "foo3"]);

    let limited = store.range(&RangeRequest { limit: 2, ..prefix.clone() }).expect("range");
    assert_eq!(keys(&limited), ["foo", "foo1"]);
    assert!(limited.more);
    assert_eq!(limited.count, 4, "count ignores the limit");

    let from_key = store.range(&RangeRequest { key: "foo2".into(), range_end: vec![0], ..Default::default() }).expect("range");
    assert_eq!(keys(&from_key), ["foo2", "foo3", "zoo"]);
    let all = store.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).expect("range");
    assert_eq!(all.count, 5);

    let descending = store
        .range(&RangeRequest {
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Mod as i32,
            keys_only: true,
            ..prefix.clone()
        })
        .expect("range");
    assert_eq!(keys(&descending), ["foo3", "foo2", "foo1", "foo"]);
    assert!(descending.kvs.iter().all(|kv| kv.value.is_empty()), "keys_only drops values");

    let counted = store.range(&RangeRequest { count_only: true, ..prefix.clone() }).expect("range");
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 4);

    let filtered = store
        .range(&RangeRequest { min_mod_revision: 3, max_mod_revision: 4, ..prefix.clone() })
        .expect("range");
    assert_eq!(keys(&filtered), ["foo1", "foo2"]);
    let created = store.range(&RangeRequest { min_create_revision: 5, ..prefix }).expect("range");
    assert_eq!(keys(&created), ["foo3"]);
}

#[test]
fn put_options() {
    let mut store = Mvcc::new();
    let missing = store.put(&PutRequest { key: "k".into(), ignore_value: true, ..Default::default() });
    assert_eq!(missing, Err(EtcdError::KeyNotFound));
    assert_eq!(store.current_revision(), 1, "a failed put writes nothing");
    put(&mut store, "k", "v1");
    let response = store
        .put(&PutRequest { key: "k".into(), ignore_value: true, prev_kv: true, ..Default::default() })
        .expect("ignore_value");
    assert_eq!(response.prev_kv.expect("prev").value, b"v1"[..]);
    assert_eq!(get(&store, "k", 0).expect("get").map(|v| (v.0, v.3)), Some(("v1".into(), 2)));
    let leased = store.put(&PutRequest { key: "k".into(), value: "v".into(), lease: 5, ..Default::default() });
    assert_eq!(leased, Err(EtcdError::LeaseNotFound));
}

fn cmp(key: &str, target: compare::CompareTarget, result: compare::CompareResult, value: compare::TargetUnion) -> Compare {
    Compare { key: key.into(), target: target as i32, result: result as i32, target_union: Some(value), range_end: vec![] }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: key.into(), value: value.as_bytes().to_vec().into(), ..Default::default() })) }
}

fn op_get(key: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() })) }
}

#[test]
fn txn_compares_and_atomic_revision() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let mut store = Mvcc::new();
    put(&mut store, "tk", "v1");
    let txn = TxnRequest {
        compare: vec![cmp("tk", T::Value, R::Equal, U::Value("v1".into()))],
        success: vec![op_put("tk", "v2"), op_put("other", "x"), op_get("tk")],
        failure: vec![op_put("tk", "failed")],
    };
    let response = store.txn(&txn).expect("txn");
    assert!(response.succeeded);
    assert_eq!(store.current_revision(), 3, "every change in one txn shares one revision");
    match &response.responses[2].response {
        Some(response_op::Response::ResponseRange(r)) => {
            assert_eq!(r.kvs[0].value, b"v2"[..], "reads in a txn see its writes");
            assert_eq!(r.header.as_ref().expect("header").revision, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The same txn now fails its compare and runs the failure branch.
    let response = store.txn(&txn).expect("txn");
    assert!(!response.succeeded);
    assert_eq!(get(&store, "tk", 0).expect("get").map(|v| v.0), Some("failed".into()));

    // Compares on a missing key: version/create/mod are 0, value never matches.
    let missing = |target, value| TxnRequest { compare: vec![cmp("nokey", target, R::Equal, value)], ..Default::default() };
    assert!(store.txn(&missing(T::Create, U::CreateRevision(0))).expect("txn").succeeded);
    assert!(store.txn(&missing(T::Version, U::Version(0))).expect("txn").succeeded);
    assert!(!store.txn(&missing(T::Value, U::Value(vec![]))).expect("txn").succeeded);
    // Greater / less / not-equal and lease.
    let on_tk = |target, result, value| TxnRequest { compare: vec![cmp("tk", target, result, value)], ..Default::default() };
    assert!(store.txn(&on_tk(T::Mod, R::Greater, U::ModRevision(0))).expect("txn").succeeded);
    assert!(store.txn(&on_tk(T::Version, R::Less, U::Version(10))).expect("txn").succeeded);
    assert!(store.txn(&on_tk(T::Value, R::NotEqual, U::Value("zzz".into()))).expect("txn").succeeded);
    assert!(store.txn(&on_tk(T::Lease, R::Equal, U::Lease(0))).expect("txn").succeeded);
    // A read-only txn does not advance the revision.
    let revision = store.current_revision();
    store.txn(&TxnRequest { success: vec![op_get("tk")], ..Default::default() }).expect("txn");
    assert_eq!(store.current_revision(), revision);
}

#[test]
fn failed_txn_op_rolls_back_every_change() {
    let mut store = Mvcc::new();
    let txn = TxnRequest {
        success: vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest { key: "missing".into(), ignore_value: true, ..Default::default() })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(store.txn(&txn), Err(EtcdError::KeyNotFound));
    assert_eq!(store.current_revision(), 1);
    assert_eq!(get(&store, "a", 0).expect("get"), None);
}

#[test]
fn txn_validation() {
    use detcd_node::validate::check_txn;
    let dup = TxnRequest { success: vec![op_put("a", "1"), op_put("a", "2")], ..Default::default() };
    assert_eq!(check_txn(&dup, 128), Err(EtcdError::DuplicateKey));
    let covered = TxnRequest {
        success: vec![
            op_put("a/1", "1"),
            RequestOp { request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: "a/".into(), range_end: "a0".into(), ..Default::default() })) },
        ],
        ..Default::default()
    };
    assert_eq!(check_txn(&covered, 128), Err(EtcdError::DuplicateKey));
    let separate_branches = TxnRequest { success: vec![op_put("a", "1")], failure: vec![op_put("a", "2")], ..Default::default() };
    assert_eq!(check_txn(&separate_branches, 128), Ok(()));
    let too_many = TxnRequest { success: (0..3).map(|i| op_put(&format!("k{i}"), "v")).collect(), ..Default::default() };
    assert_eq!(check_txn(&too_many, 2), Err(EtcdError::TooManyOps));
    assert_eq!(EtcdError::TooManyOps.message(), "etcdserver: too many operations in txn request");
    let empty_key = TxnRequest { success: vec![op_put("", "1")], ..Default::default() };
    assert_eq!(check_txn(&empty_key, 128), Err(EtcdError::EmptyKey));
}

#[test]
fn snapshot_round_trip_is_exact() {
    let mut store = Mvcc::new();
    for i in 0..50 {
        put(&mut store, &format!("k{}", i % 7), &format!("v{i}"));
    }
    let restored = Mvcc::decode(&store.encode()).expect("decode");
    assert_eq!(restored, store);
    assert_eq!(restored.hash_kv(0), store.hash_kv(0));
}

fn op_txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestTxn(TxnRequest { compare, success, failure })) }
}

fn value_is(key: &str, value: &str) -> Compare {
    cmp(key, compare::CompareTarget::Value, compare::CompareResult::Equal, compare::TargetUnion::Value(value.into()))
}

#[test]
fn nested_compares_see_the_state_before_the_txn() {
    // etcd evaluates the whole compare path before executing anything: the nested
    // compare sees k = v1 although the outer branch writes k = v2 first.
    let mut store = Mvcc::new();
    put(&mut store, "k", "v1");
    let txn = TxnRequest {
        compare: vec![],
        success: vec![op_put("k", "v2"), op_txn(vec![value_is("k", "v1")], vec![op_put("a", "then")], vec![op_put("b", "else")])],
        failure: vec![],
    };
    let response = store.txn(&txn).expect("txn");
    let nested = match &response.responses[1].response {
        Some(response_op::Response::ResponseTxn(nested)) => nested,
        other => panic!("{other:?}"),
    };
    assert!(nested.succeeded, "the nested compare saw the txn's own write");
    assert_eq!(get(&store, "a", 0).expect("get").map(|v| v.0), Some("then".into()));
    assert_eq!(get(&store, "b", 0).expect("get"), None);
}

#[test]
fn a_failing_op_deep_in_a_nested_txn_changes_nothing() {
    let mut store = Mvcc::new();
    put(&mut store, "k", "v1");
    let before = store.clone();
    let ignore_missing = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest { key: "missing".into(), ignore_value: true, ..Default::default() })),
    };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![op_put("k", "v2"), op_txn(vec![], vec![op_put("x", "1"), ignore_missing], vec![])],
        failure: vec![],
    };
    assert_eq!(store.txn(&txn), Err(EtcdError::KeyNotFound));
    assert_eq!(store, before, "nothing of the txn was applied");
}

#[test]
fn duplicate_writes_across_nesting_levels_are_refused_as_etcd_does() {
    use detcd_node::validate::check_txn;
    let dup = |success: Vec<RequestOp>| check_txn(&TxnRequest { compare: vec![], success, failure: vec![] }, 128);
    let delete = |key: &str, end: &str| RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: key.into(), range_end: end.into(), ..Default::default() })),
    };
    // An outer put and a nested put of the same key.
    assert_eq!(dup(vec![op_put("k", "1"), op_txn(vec![], vec![op_put("k", "2")], vec![])]), Err(EtcdError::DuplicateKey));
    // An outer delete range covering a nested put.
    assert_eq!(dup(vec![delete("a", "z"), op_txn(vec![], vec![op_put("k", "2")], vec![])]), Err(EtcdError::DuplicateKey));
    // A nested delete covering an outer put.
    assert_eq!(dup(vec![op_put("k", "1"), op_txn(vec![], vec![delete("k", "")], vec![])]), Err(EtcdError::DuplicateKey));
    // The same key in a nested txn's success and failure branches is fine: one runs.
    assert_eq!(dup(vec![op_txn(vec![], vec![op_put("k", "1")], vec![op_put("k", "2")])]), Ok(()));
    // Two sibling nested txns putting the same key are not.
    assert_eq!(
        dup(vec![op_txn(vec![], vec![op_put("k", "1")], vec![]), op_txn(vec![], vec![op_put("k", "2")], vec![])]),
        Err(EtcdError::DuplicateKey)
    );
}

#[test]
fn the_size_counter_matches_a_recount() {
    let mut store = Mvcc::new();
    for i in 0..20 {
        put(&mut store, &format!("k{}", i % 7), &"v".repeat(i));
    }
    store.delete_range(&DeleteRangeRequest { key: "k3".into(), ..Default::default() });
    assert_eq!(store.approximate_bytes(), store.count_bytes());
    store.compact(&CompactionRequest { revision: 15, physical: true }).expect("compact");
    assert_eq!(store.approximate_bytes(), store.count_bytes());
    let decoded = Mvcc::decode(&store.encode()).expect("decode");
    assert_eq!(decoded.approximate_bytes(), store.count_bytes());
}

#[test]
fn the_live_digest_follows_every_write_and_names_the_live_state_only() {
    let mut store = Mvcc::new();
    assert_eq!(store.live_digest(), 0, "nothing live");
    for i in 0..20 {
        put(&mut store, &format!("k{}", i % 7), &format!("v{i}"));
        assert_eq!(store.live_digest(), store.count_live_digest());
    }
    let before_delete = store.live_digest();
    store.delete_range(&DeleteRangeRequest { key: "k3".into(), ..Default::default() });
    assert_ne!(store.live_digest(), before_delete, "a delete changes the live state");
    assert_eq!(store.live_digest(), store.count_live_digest());
    let before_compaction = store.live_digest();
    store.compact(&CompactionRequest { revision: 15, physical: true }).expect("compact");
    assert_eq!(store.live_digest(), before_compaction, "compaction never changes the live state");
    assert_eq!(Mvcc::decode(&store.encode()).expect("decode").live_digest(), before_compaction);
    // The same live state reached by another path has the same digest only if every
    // field agrees: here the revisions differ.
    let mut other = Mvcc::new();
    for i in 13..20 {
        put(&mut other, &format!("k{}", i % 7), &format!("v{i}"));
    }
    other.delete_range(&DeleteRangeRequest { key: "k3".into(), ..Default::default() });
    assert_ne!(other.live_digest(), store.live_digest());
}

#[test]
fn leases_attach_detach_and_revoke_every_key_in_one_revision() {
    use detcd_node::pb::mvccpb::event::EventType;
    let mut store = Mvcc::new();
    let put_leased = |store: &mut Mvcc, key: &str, lease: i64| {
        store.put(&PutRequest { key: key.into(), value: "v".into(), lease, ..Default::default() })
    };
    assert_eq!(put_leased(&mut store, "a", 7), Err(EtcdError::LeaseNotFound));
    store.lease_grant(7, 10).expect("grant");
    assert_eq!(store.lease_grant(7, 10), Err(EtcdError::LeaseExists));
    store.lease_grant(8, 10).expect("grant");
    put_leased(&mut store, "a", 7).expect("put");
    put_leased(&mut store, "b", 7).expect("put");
    put_leased(&mut store, "c", 7).expect("put");
    put_leased(&mut store, "c", 8).expect("moved to lease 8");
    store.delete_range(&DeleteRangeRequest { key: "b".into(), ..Default::default() });
    let attached: Vec<Vec<u8>> = store.leases().get(7).expect("lease").keys.iter().cloned().collect();
    assert_eq!(attached, vec![b"a".to_vec()], "c moved away, b deleted");
    // A txn with an unknown lease changes nothing.
    let txn = TxnRequest {
        compare: vec![],
        success: vec![op_put("x", "1"), RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: "y".into(), lease: 99, ..Default::default() })) }],
        failure: vec![],
    };
    let before = store.clone();
    assert_eq!(store.txn(&txn), Err(EtcdError::LeaseNotFound));
    assert_eq!(store, before);
    // Revoking lease 8 deletes c in one new revision.
    let revision = store.current_revision();
    let mut events = Vec::new();
    store.lease_revoke(8, &mut events).expect("revoke");
    assert_eq!(store.current_revision(), revision + 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].r#type, EventType::Delete as i32);
    assert_eq!(get(&store, "c", 0).expect("get"), None);
    assert_eq!(store.lease_revoke(8, &mut events), Err(EtcdError::LeaseNotFound));
    // Leases travel in snapshots.
    let decoded = Mvcc::decode(&store.encode()).expect("decode");
    assert_eq!(decoded.leases(), store.leases());
}

#[test]
fn an_expiry_decided_before_a_renewal_is_void() {
    use detcd_node::pb::detcdpb::{internal_request, InternalRequest, LeaseExpiry};
    use detcd_node::pb::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    use prost::Message as _;
    let mut state = detcd_node::StateMachine::new();
    let apply = |state: &mut detcd_node::StateMachine, request_id: u64, op: internal_request::Op| {
        state.apply(InternalRequest { proposer: 1, request_id, op: Some(op), auth: None }.encode_to_vec().into())
    };
    apply(&mut state, 1, internal_request::Op::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 10 }));
    // The leader decides lease 5 expired (no renewal yet); a keep-alive overtakes it.
    apply(&mut state, 2, internal_request::Op::LeaseRenew(LeaseKeepAliveRequest { id: 5 }));
    let stale = apply(&mut state, 3, internal_request::Op::LeaseExpire(LeaseExpiry { id: 5, renewals: 0 }));
    assert!(stale.lease_changes.is_empty(), "the renewal voids the expiry");
    assert!(state.mvcc().leases().contains(5));
    let current = apply(&mut state, 4, internal_request::Op::LeaseExpire(LeaseExpiry { id: 5, renewals: 1 }));
    assert_eq!(current.lease_changes.len(), 1);
    assert!(!state.mvcc().leases().contains(5));
}

/// Applies internal requests to a state machine, each with a fresh request id (the
/// corruption check's tests).
struct Applying {
    state: detcd_node::StateMachine,
    next_id: u64,
}

impl Applying {
    fn new() -> Applying {
        Applying { state: detcd_node::StateMachine::new(), next_id: 0 }
    }

    fn apply(&mut self, proposer: u64, op: detcd_node::pb::detcdpb::internal_request::Op) -> detcd_node::apply::Applied {
        use prost::Message as _;
        self.next_id += 1;
        let request = detcd_node::pb::detcdpb::InternalRequest { proposer, request_id: self.next_id, op: Some(op), auth: None };
        self.state.apply(request.encode_to_vec().into())
    }

    fn corrupt_members(&self) -> Vec<u64> {
        let corrupt = detcd_node::pb::etcdserverpb::AlarmType::Corrupt as i32;
        self.state.alarms().iter().filter(|a| a.alarm == corrupt).map(|a| a.member_id).collect()
    }
}

/// The corruption check in the state machine: every member reports its hash at a
/// checked revision; once a majority of voters agree, a member that reported another
/// hash gets a CORRUPT alarm (even if it was the leader), a replayed report changes
/// nothing, and while the alarm is up writes are refused with etcd's error.
#[test]
fn a_hash_that_differs_from_the_majority_raises_a_corrupt_alarm_and_writes_stop() {
    use detcd_node::errors::EtcdError;
    use detcd_node::pb::detcdpb::{internal_request, HashCheck, HashReport};
    let mut members = Applying::new();
    members.apply(1, internal_request::Op::Put(PutRequest { key: b"k".to_vec(), value: bytes::Bytes::from_static(b"v"), ..Default::default() }));
    let checked = members.apply(1, internal_request::Op::HashCheck(HashCheck { revision: 2, leader_id: 1, voters: 3, nonce: 9 }));
    let report = checked.hash_to_report.expect("the revision is covered").run();
    assert_eq!((report.revision, report.hash), (2, members.state.mvcc().hash_kv(2)));
    // The leader (1) reports a damaged hash first: no majority yet, nobody blamed.
    members.apply(1, internal_request::Op::HashReport(HashReport { member_id: 1, hash: report.hash ^ 1, ..report }));
    members.apply(2, internal_request::Op::HashReport(HashReport { member_id: 2, ..report }));
    assert!(members.corrupt_members().is_empty());
    assert!(!members.state.corrupt());
    // The third member agrees with the second: the leader is the one that differs.
    members.apply(3, internal_request::Op::HashReport(HashReport { member_id: 3, ..report }));
    assert_eq!(members.corrupt_members(), vec![1]);
    // A replayed report of member 1, now healthy, changes nothing.
    members.apply(1, internal_request::Op::HashReport(HashReport { member_id: 1, ..report }));
    assert_eq!(members.corrupt_members(), vec![1]);
    let refused = members.apply(2, internal_request::Op::Put(PutRequest { key: b"k".to_vec(), value: bytes::Bytes::from_static(b"w"), ..Default::default() }));
    assert!(matches!(refused.answer, Some((_, _, Err(EtcdError::Corrupt)))), "{:?}", refused.answer);
    assert_eq!(EtcdError::Corrupt.message(), "etcdserver: corrupt cluster");
    // The check state and the alarm travel in snapshots.
    assert_eq!(detcd_node::StateMachine::decode(&members.state.encode()).expect("decode"), members.state);
}

/// A member's CORRUPT alarm disarmed (the operator repaired it): a check that was still
/// waiting for its majority when the member reported its damaged hash does not alarm it
/// again when the others' reports come in, nor does its damaged report arriving late;
/// a check after the repair still finds a member that is damaged.
#[test]
fn a_report_from_before_a_repair_does_not_alarm_the_repaired_member_again() {
    use detcd_node::pb::detcdpb::{internal_request, HashCheck, HashReport};
    use detcd_node::pb::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
    let mut members = Applying::new();
    members.apply(1, internal_request::Op::Put(PutRequest { key: b"k".to_vec(), value: bytes::Bytes::from_static(b"v"), ..Default::default() }));
    let check = |nonce| internal_request::Op::HashCheck(HashCheck { revision: 2, leader_id: 1, voters: 3, nonce });
    let report = members.apply(1, check(1)).hash_to_report.expect("covered").run();
    let damaged = |member_id, nonce| internal_request::Op::HashReport(HashReport { member_id, nonce, hash: report.hash ^ 1, ..report });
    let healthy = |member_id, nonce| internal_request::Op::HashReport(HashReport { member_id, nonce, ..report });
    // Check 1 finds member 3 damaged.
    for (member, op) in [(1, healthy(1, 1)), (2, healthy(2, 1)), (3, damaged(3, 1))] {
        members.apply(member, op);
    }
    assert_eq!(members.corrupt_members(), vec![3]);
    // Check 2: member 3's damaged report is in, the others' are not yet.
    members.apply(1, check(2));
    members.apply(3, damaged(3, 2));
    // Check 3: nobody has reported yet.
    members.apply(1, check(3));
    // Member 3 is repaired; the operator disarms its alarm.
    let disarm = AlarmRequest { action: AlarmAction::Deactivate as i32, member_id: 3, alarm: AlarmType::Corrupt as i32 };
    members.apply(1, internal_request::Op::Alarm(disarm));
    assert!(members.corrupt_members().is_empty());
    // The majority of check 2 comes, and member 3's old report of check 3 arrives late.
    for (member, op) in [(1, healthy(1, 2)), (2, healthy(2, 2)), (1, healthy(1, 3)), (2, healthy(2, 3)), (3, damaged(3, 3))] {
        members.apply(member, op);
    }
    assert!(members.corrupt_members().is_empty(), "the repaired member was alarmed again by a report from before its repair");
    // A check after the repair still finds damage.
    members.apply(1, check(4));
    for (member, op) in [(1, healthy(1, 4)), (3, damaged(3, 4)), (2, healthy(2, 4))] {
        members.apply(member, op);
    }
    assert_eq!(members.corrupt_members(), vec![3]);
}

/// A compaction applied on a member's loop removes what it drops in steps: until the
/// last step, hashes, reads and history are exactly those of a store compacted at once.
#[test]
fn compaction_removed_in_steps_looks_like_compaction_at_once() {
    let mut store = Mvcc::new();
    for round in 0..5u32 {
        for n in 0..300u32 {
            let key = format!("k{n:04}").into_bytes();
            if (n + round) % 7 == 0 {
                store.delete_range(&detcd_node::pb::etcdserverpb::DeleteRangeRequest { key, ..Default::default() });
            } else {
                store.put(&PutRequest { key, value: vec![round as u8; 8].into(), ..Default::default() }).expect("put");
            }
        }
    }
    let revision = store.current_revision() - 400;
    let mut at_once = store.clone();
    at_once.compact(&CompactionRequest { revision, physical: false }).expect("compact");
    let mut stepped = store.clone();
    stepped.compact_deferred(&CompactionRequest { revision, physical: false }).expect("compact");
    let all = RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() };
    let mut steps = 0;
    loop {
        assert_eq!(stepped.hash_kv(0), at_once.hash_kv(0), "hash after {steps} steps");
        assert_eq!(stepped.hash_kv(revision), at_once.hash_kv(revision));
        assert_eq!(stepped.range(&all), at_once.range(&all));
        assert_eq!(stepped.range(&RangeRequest { revision, ..all.clone() }), at_once.range(&RangeRequest { revision, ..all.clone() }));
        assert_eq!(stepped.history(b"k", b"l", revision, 100_000).map(|h| h.events), at_once.history(b"k", b"l", revision, 100_000).map(|h| h.events));
        if !stepped.compact_step(50) {
            break;
        }
        steps += 1;
    }
    assert!(steps >= 3, "a 300-key store in windows of 50 takes several steps ({steps})");
    assert_eq!(stepped, at_once, "every dropped record removed in the end");
    assert_eq!(stepped.approximate_bytes(), at_once.approximate_bytes());
    assert_eq!(stepped.approximate_bytes(), stepped.count_bytes());
}
