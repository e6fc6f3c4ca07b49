//! The watch hub driven directly: a store, a hub and channels, no runtime.

use detcd_node::mvcc::Mvcc;
use detcd_node::pb::etcdserverpb::{
    request_op, watch_create_request, watch_request, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp,
    ResponseHeader, TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use detcd_node::pb::mvccpb::Event;
use detcd_node::watch::{WatchHub, WatchLimits, DUPLICATE_WATCH_ID, EMPTY_WATCH_RANGE};
use tokio::sync::mpsc;

struct Fixture {
    store: Mvcc,
    hub: WatchHub,
    header: ResponseHeader,
}

impl Fixture {
    fn new() -> Self {
        Self::with_hub(WatchHub::new(1 << 20))
    }

    fn with_hub(hub: WatchHub) -> Self {
        Self { store: Mvcc::new(), hub, header: ResponseHeader { cluster_id: 1, member_id: 2, revision: 0, raft_term: 3 } }
    }

    fn stream(&mut self, capacity: usize) -> (u64, mpsc::Receiver<WatchResponse>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (self.hub.open_stream(sender).expect("open"), receiver)
    }

    fn publish(&mut self, events: Vec<Event>) {
        if !events.is_empty() {
            self.hub.publish(self.store.current_revision(), &events, &self.header);
        }
        self.hub.sync_step(&self.store, &self.header);
    }

    fn put(&mut self, key: &str, value: &str) {
        let mut events = Vec::new();
        self.store.apply_put(&PutRequest { key: key.into(), value: value.as_bytes().to_vec().into(), ..Default::default() }, &mut events).expect("put");
        self.publish(events);
    }

    fn delete(&mut self, key: &str) {
        let mut events = Vec::new();
        self.store.apply_delete_range(&DeleteRangeRequest { key: key.into(), ..Default::default() }, &mut events);
        self.publish(events);
    }

    fn request(&mut self, stream: u64, request: watch_request::RequestUnion) {
        self.hub.handle(stream, WatchRequest { request_union: Some(request) }, &self.store, &self.header);
    }

    fn create(&mut self, stream: u64, create: WatchCreateRequest) {
        self.request(stream, watch_request::RequestUnion::CreateRequest(create));
    }
}

fn prefix(key: &str) -> WatchCreateRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().expect("non-empty") += 1;
    WatchCreateRequest { key: key.into(), range_end: end, ..Default::default() }
}

fn drain(receiver: &mut mpsc::Receiver<WatchResponse>) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    while let Ok(response) = receiver.try_recv() {
        out.push(response);
    }
    out
}

/// (revision, key, value) of every event, in order.
fn events_of(responses: &[WatchResponse]) -> Vec<(i64, String, String)> {
    responses
        .iter()
        .flat_map(|r| r.events.iter())
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            (kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned())
        })
        .collect()
}

#[test]
fn a_watch_from_the_past_catches_up_then_follows_live() {
    let mut f = Fixture::new();
    f.put("w/a", "1");
    f.put("w/b", "2");
    f.put("x", "other");
    let (stream, mut rx) = f.stream(16);
    f.create(stream, WatchCreateRequest { start_revision: 1, ..prefix("w/") });
    f.hub.sync_step(&f.store, &f.header);
    f.put("w/a", "3");
    f.delete("w/b");
    let responses = drain(&mut rx);
    assert!(responses[0].created && responses[0].watch_id == 0);
    assert_eq!(
        events_of(&responses),
        vec![(2, "w/a".into(), "1".into()), (3, "w/b".into(), "2".into()), (5, "w/a".into(), "3".into()), (6, "w/b".into(), "".into())]
    );
    // Revisions only increase; the header of each response covers its events.
    for response in &responses[1..] {
        let last = response.events.last().and_then(|e| e.kv.as_ref()).map_or(0, |kv| kv.mod_revision);
        assert!(response.header.as_ref().expect("header").revision >= last);
    }
}

#[test]
fn a_txn_is_one_response_in_the_order_it_was_made() {
    let mut f = Fixture::new();
    let (stream, mut rx) = f.stream(16);
    f.create(stream, WatchCreateRequest { prev_kv: true, ..prefix("t/") });
    f.put("t/z", "old");
    let put = |k: &str, v: &str| RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: k.into(), value: v.as_bytes().to_vec().into(), ..Default::default() })) };
    let mut events = Vec::new();
    f.store.apply_txn(&TxnRequest { compare: vec![], success: vec![put("t/z", "new"), put("t/a", "1")], failure: vec![] }, &mut events).expect("txn");
    f.publish(events);
    let responses = drain(&mut rx);
    let txn_response = responses.last().expect("txn response");
    assert_eq!(events_of(std::slice::from_ref(txn_response)), vec![(3, "t/z".into(), "new".into()), (3, "t/a".into(), "1".into())]);
    assert_eq!(txn_response.events[0].prev_kv.as_ref().map(|kv| kv.value.to_vec()), Some(b"old".to_vec()));
    // The same order when read back from history.
    let (late, mut late_rx) = f.stream(16);
    f.create(late, WatchCreateRequest { start_revision: 3, ..prefix("t/") });
    f.hub.sync_step(&f.store, &f.header);
    assert_eq!(events_of(&drain(&mut late_rx)), vec![(3, "t/z".into(), "new".into()), (3, "t/a".into(), "1".into())]);
}

#[test]
fn filters_prev_kv_cancel_and_refusals_answer_as_etcd() {
    let mut f = Fixture::new();
    let (stream, mut rx) = f.stream(16);
    let no_put = watch_create_request::FilterType::Noput as i32;
    f.create(stream, WatchCreateRequest { watch_id: 7, filters: vec![no_put], ..prefix("f/") });
    f.create(stream, WatchCreateRequest { watch_id: 7, ..prefix("f/") });
    f.create(stream, WatchCreateRequest { key: "b".into(), range_end: "a".into(), ..Default::default() });
    f.put("f/a", "1");
    f.delete("f/a");
    f.request(stream, watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 7 }));
    f.request(stream, watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 99 }));
    f.put("f/b", "2");
    let responses = drain(&mut rx);
    assert!(responses[0].created && responses[0].watch_id == 7);
    assert!(responses[1].canceled && responses[1].cancel_reason == DUPLICATE_WATCH_ID);
    assert!(responses[2].canceled && responses[2].cancel_reason == EMPTY_WATCH_RANGE);
    assert_eq!(responses[3].events.len(), 1, "only the delete passes NOPUT");
    assert!(responses[3].events[0].prev_kv.is_none(), "prev_kv only when asked");
    assert!(responses[4].canceled && responses[4].watch_id == 7);
    assert_eq!(responses.len(), 5, "an unknown id gets no answer; a cancelled watcher no events");
}

#[test]
fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compaction_point() {
    let mut f = Fixture::new();
    for i in 0..5 {
        f.put("c", &i.to_string());
    }
    f.store.compact(&CompactionRequest { revision: 4, physical: true }).expect("compact");
    let (stream, mut rx) = f.stream(16);
    f.create(stream, WatchCreateRequest { key: "c".into(), start_revision: 2, ..Default::default() });
    f.hub.sync_step(&f.store, &f.header);
    let responses = drain(&mut rx);
    assert!(responses[0].created);
    assert!(responses[1].canceled);
    assert_eq!(responses[1].compact_revision, 4);
}

#[test]
fn a_slow_consumer_is_moved_aside_and_caught_up_without_gap_or_duplicate() {
    let mut f = Fixture::new();
    let (stream, mut rx) = f.stream(3);
    f.create(stream, prefix("s/"));
    let mut received = drain(&mut rx);
    for i in 0..50 {
        f.put(&format!("s/{}", i % 4), &i.to_string());
        if i % 10 == 9 {
            received.extend(drain(&mut rx));
        }
    }
    assert!(f.hub.unsynced_count() > 0, "the full stream moved its watcher aside");
    for _ in 0..100 {
        received.extend(drain(&mut rx));
        f.hub.sync_step(&f.store, &f.header);
    }
    received.extend(drain(&mut rx));
    let revisions: Vec<i64> = events_of(&received).iter().map(|(r, _, _)| *r).collect();
    assert_eq!(revisions, (2..=51).collect::<Vec<_>>(), "every revision once, in order");
    assert_eq!(f.hub.unsynced_count(), 0);
}

#[test]
fn a_progress_request_waits_until_every_watcher_of_the_stream_is_synced() {
    let mut f = Fixture::new();
    for i in 0..3 {
        f.put("p", &i.to_string());
    }
    let (stream, mut rx) = f.stream(16);
    f.create(stream, WatchCreateRequest { key: "p".into(), start_revision: 1, ..Default::default() });
    f.request(stream, watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {}));
    let before = drain(&mut rx);
    assert!(before.iter().all(|r| r.watch_id != -1), "no progress while the watcher still owes history");
    f.hub.sync_step(&f.store, &f.header);
    let after = drain(&mut rx);
    let progress = after.last().expect("progress");
    assert_eq!(progress.watch_id, -1);
    assert_eq!(progress.header.as_ref().expect("header").revision, 4);
    assert_eq!(events_of(&after).len(), 3, "the events came first");
}

#[test]
fn after_a_gap_watchers_catch_up_from_history() {
    let mut f = Fixture::new();
    let (stream, mut rx) = f.stream(16);
    f.create(stream, prefix("g/"));
    // Changes the hub never saw (a snapshot installed under it).
    for i in 0..3 {
        f.store.put(&PutRequest { key: format!("g/{i}").into(), value: "v".into(), ..Default::default() }).expect("put");
    }
    f.hub.resync_all();
    f.hub.sync_step(&f.store, &f.header);
    f.put("g/x", "live");
    assert_eq!(events_of(&drain(&mut rx)).iter().map(|(r, _, _)| *r).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
}

/// A fragmenting hub: responses over `fragment_bytes_max` come in pieces to watchers
/// that ask.
fn fragmenting(fragment_bytes_max: usize) -> Fixture {
    Fixture::with_hub(WatchHub::with_limits(WatchLimits::with_fragment_bytes(fragment_bytes_max)))
}

/// Deletes `count` keys under `f/` written one by one: one revision of `count` events.
fn delete_many(f: &mut Fixture, count: usize) -> i64 {
    for i in 0..count {
        f.put(&format!("f/{i:04}"), "v");
    }
    let mut events = Vec::new();
    f.store.apply_delete_range(&DeleteRangeRequest { key: b"f/".to_vec().into(), range_end: b"f0".to_vec().into(), ..Default::default() }, &mut events);
    assert_eq!(events.len(), count);
    f.publish(events);
    f.store.current_revision()
}

#[test]
fn a_large_response_comes_in_fragments_to_a_watcher_that_asks() {
    let mut f = fragmenting(64);
    let (stream, mut rx) = f.stream(256);
    f.create(stream, WatchCreateRequest { fragment: true, ..prefix("f/") });
    f.create(stream, prefix("f/"));
    let created = drain(&mut rx);
    let (fragmenting_id, whole_id) = (created[0].watch_id, created[1].watch_id);
    let revision = delete_many(&mut f, 20);
    let responses: Vec<WatchResponse> = drain(&mut rx).into_iter().filter(|r| r.events.first().and_then(|e| e.kv.as_ref()).is_some_and(|kv| kv.mod_revision == revision)).collect();
    let pieces: Vec<&WatchResponse> = responses.iter().filter(|r| r.watch_id == fragmenting_id).collect();
    let whole: Vec<&WatchResponse> = responses.iter().filter(|r| r.watch_id == whole_id).collect();
    assert_eq!(whole.len(), 1, "a watcher that did not ask gets the revision whole");
    assert!(!whole[0].fragment);
    assert!(pieces.len() > 1, "20 deletes exceed 64 bytes");
    assert!(pieces[..pieces.len() - 1].iter().all(|r| r.fragment) && !pieces[pieces.len() - 1].fragment, "all but the last piece say fragment");
    use prost::Message as _;
    assert!(pieces.iter().all(|r| r.events.len() == 1 || r.events.iter().map(|e| e.encoded_len()).sum::<usize>() <= 64));
    let joined: Vec<Event> = pieces.iter().flat_map(|r| r.events.iter().cloned()).collect();
    assert_eq!(joined, whole[0].events, "the pieces join into the revision");
}

#[test]
fn a_revision_needing_more_fragments_than_its_stream_holds_comes_in_larger_pieces() {
    // 300 deletes of ~20 bytes at 64 bytes a piece would be ~100 pieces; the stream
    // holds 8 responses. Before, the watcher waited for room for all of them forever.
    let mut f = fragmenting(64);
    let revision = delete_many(&mut f, 300);
    let (stream, mut rx) = f.stream(8);
    f.create(stream, WatchCreateRequest { fragment: true, start_revision: revision, ..prefix("f/") });
    let mut responses = Vec::new();
    for _ in 0..10 {
        f.hub.sync_step(&f.store, &f.header);
        responses.extend(drain(&mut rx));
    }
    let pieces: Vec<&WatchResponse> = responses.iter().filter(|r| !r.events.is_empty()).collect();
    assert!((2..=8).contains(&pieces.len()), "{} pieces", pieces.len());
    assert!(pieces[..pieces.len() - 1].iter().all(|r| r.fragment) && !pieces[pieces.len() - 1].fragment);
    let joined: Vec<(i64, String, String)> = events_of(&pieces.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
    assert_eq!(joined.len(), 300);
    assert!(joined.iter().all(|(r, _, _)| *r == revision));
}

