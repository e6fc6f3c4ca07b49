//! Watch: etcd's watchers on a member, fed from the member's own applied state.
//!
//! The hub is synchronous and owned by the member's loop (`server`); it knows nothing
//! of raft. The loop hands it the changes of every applied revision (`publish`), lets it
//! catch up watchers that are behind (`sync_step`), and forwards stream requests. Each
//! stream is a bounded channel of `WatchResponse`s read by its client (the gRPC stream,
//! or a simulated client).
//!
//! A watcher is *synced* when it has been given every change up to the store's current
//! revision; it then receives each new revision as it is applied, all of a revision's
//! events in one response. A watcher that starts in the past, whose stream was full
//! when a revision arrived (a slow consumer: etcd's "victim"), or that was on a member
//! which just installed a snapshot (whose changes it never saw one by one) is *unsynced*
//! and catches up from the store's history in bounded steps, then rejoins the synced
//! ones. Nothing is ever dropped and no buffer grows without bound: a full stream only
//! moves its watchers aside.
//!
//! Guarantees (the simulator checks them): revisions strictly increase per watcher; no
//! event twice; no gap; every event of a revision in one response (or one fragmented
//! sequence); a progress response (`watch_id` -1 for a stream-wide request, the
//! watcher's id for periodic ones) is only sent when the watchers it speaks for have
//! been given everything up to its header revision; a watcher whose next revision was
//! compacted away is cancelled with `compact_revision` set.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use tokio::sync::mpsc;

use crate::errors::EtcdError;
use crate::mvcc::Mvcc;
use crate::pb::etcdserverpb::{watch_create_request, watch_request, ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::pb::mvccpb::{event::EventType, Event};

/// Responses buffered per stream. A stream that is full when a revision arrives has its
/// watchers moved aside to catch up from history later.
pub const WATCH_STREAM_RESPONSES_MAX: usize = 1024;
/// Streams on one member at once; more are refused with "too many requests".
pub const WATCH_STREAMS_MAX: usize = 100_000;
/// Watchers on one stream at once.
pub const WATCHERS_PER_STREAM_MAX: usize = 100_000;
/// Unsynced watchers advanced per loop turn (each reads at most one history batch).
pub const WATCH_SYNC_WATCHERS_PER_TURN_MAX: usize = 64;
/// Events in one catch-up response (a revision is never split to honour it).
pub const WATCH_HISTORY_EVENTS_PER_RESPONSE_MAX: usize = 1000;

/// A hub's limits: the defaults above in production (the fragment size is etcd's
/// request limit); the simulator draws each member's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// Bytes above which a watcher that asked for `fragment` gets a response in pieces.
    pub fragment_bytes_max: usize,
    /// Events in one catch-up response ([`WATCH_HISTORY_EVENTS_PER_RESPONSE_MAX`]).
    pub history_events_per_response_max: usize,
    /// Unsynced watchers advanced per loop turn ([`WATCH_SYNC_WATCHERS_PER_TURN_MAX`]).
    pub sync_watchers_per_turn_max: usize,
}

impl WatchLimits {
    /// The defaults, with `fragment_bytes_max`.
    pub fn with_fragment_bytes(fragment_bytes_max: usize) -> Self {
        Self {
            fragment_bytes_max,
            history_events_per_response_max: WATCH_HISTORY_EVENTS_PER_RESPONSE_MAX,
            sync_watchers_per_turn_max: WATCH_SYNC_WATCHERS_PER_TURN_MAX,
        }
    }
}

/// etcd's error texts for refused watch creations (`cancel_reason`).
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
pub const EMPTY_WATCH_RANGE: &str = "mvcc: watcher range is empty";
pub const TOO_MANY_WATCHERS: &str = "etcdserver: too many requests";

/// Bugs planted on purpose for the simulator's watch canaries (simulator builds only).
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchPlantedBugs {
    /// Catching up from history skips the first revision of every batch after the first.
    pub skip_on_catch_up: bool,
    /// A watcher created with a start revision starts one revision later.
    pub start_off_by_one: bool,
    /// The event that would open a new fragment is dropped (an off-by-one at the
    /// boundary; only responses larger than the fragment size reach it).
    pub fragment_drops_boundary_event: bool,
}

/// How a watcher that asked for fragments gets a large response: in pieces of at most
/// `bytes_max` encoded bytes.
#[derive(Clone, Copy, Debug)]
struct FragmentRule {
    bytes_max: usize,
    #[cfg(madsim)]
    drops_boundary_event: bool,
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// The first revision this watcher has not been given yet.
    next_revision: i64,
    synced: bool,
}

impl Watcher {
    fn covers(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key.as_slice()
        } else if self.range_end == [0] {
            key >= self.key.as_slice()
        } else {
            key >= self.key.as_slice() && key < self.range_end.as_slice()
        }
    }

    /// The events of `events` this watcher wants, shaped as it asked.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|event| {
                let is_put = event.r#type == EventType::Put as i32;
                let key = event.kv.as_ref().map_or(&[][..], |kv| kv.key.as_slice());
                let filtered_out = if is_put { self.no_put } else { self.no_delete };
                self.covers(key) && !filtered_out
            })
            .map(|event| {
                let mut event = event.clone();
                if !self.prev_kv {
                    event.prev_kv = None;
                }
                event
            })
            .collect()
    }
}

struct Stream {
    sender: mpsc::Sender<WatchResponse>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    progress_requested: bool,
}

/// See the module documentation.
pub struct WatchHub {
    streams: BTreeMap<u64, Stream>,
    next_stream_id: u64,
    /// Watchers waiting to catch up, in the order they fell behind: (stream, watch id).
    unsynced: BTreeSet<(u64, i64)>,
    /// Where the last `sync_step` stopped, so every unsynced watcher gets its turn.
    sync_cursor: (u64, i64),
    /// When a watcher that asked for `fragment` gets a response in pieces.
    fragment_rule: FragmentRule,
    history_events_per_response_max: usize,
    sync_watchers_per_turn_max: usize,
    #[cfg(madsim)]
    planted: WatchPlantedBugs,
}

/// A stream's channel could not take a response.
enum SendOutcome {
    Sent,
    Full,
    Closed,
}

fn try_send(sender: &mpsc::Sender<WatchResponse>, response: WatchResponse) -> SendOutcome {
    match sender.try_send(response) {
        Ok(()) => SendOutcome::Sent,
        Err(mpsc::error::TrySendError::Full(_)) => SendOutcome::Full,
        Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::Closed,
    }
}

fn header_at(base: &ResponseHeader, revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..*base })
}

/// Splits `events` (one or more whole revisions) into responses of at most
/// `rule.bytes_max` encoded bytes each (an event larger than that alone); all but the
/// last are marked `fragment`. Never more than `pieces_max` responses (what the stream's
/// channel can ever hold — a response that needed more would wait for room forever): a
/// larger one gets larger pieces. Greedy pieces of at most B bytes number at most
/// 2 * total / B + 1 (two neighbours always exceed B together), so B is raised to
/// 2 * total / (pieces_max - 1) when that is larger.
fn fragments(events: Vec<Event>, rule: FragmentRule, pieces_max: usize) -> Vec<(Vec<Event>, bool)> {
    let sized: Vec<(usize, Event)> = events.into_iter().map(|event| (event.encoded_len(), event)).collect();
    let total_bytes: usize = sized.iter().map(|(size, _)| size).sum();
    let bytes_max = rule.bytes_max.max((2 * total_bytes).div_ceil(pieces_max.max(2) - 1));
    let mut pieces: Vec<Vec<Event>> = vec![Vec::new()];
    let mut bytes = 0;
    for (size, event) in sized {
        let current = pieces.last_mut().expect("one piece at least");
        if !current.is_empty() && bytes + size > bytes_max {
            pieces.push(Vec::new());
            bytes = 0;
            // The lost event still counts towards its piece, so the bound above holds.
            #[cfg(madsim)]
            if rule.drops_boundary_event {
                bytes += size;
                continue;
            }
        }
        bytes += size;
        pieces.last_mut().expect("one piece at least").push(event);
    }
    let last = pieces.len() - 1;
    assert!(pieces.len() <= pieces_max.max(1), "{} pieces for a stream of {pieces_max}", pieces.len());
    pieces.into_iter().enumerate().map(|(i, piece)| (piece, i != last)).collect()
}

impl WatchHub {
    /// A hub with the default limits and `fragment_bytes_max`.
    pub fn new(fragment_bytes_max: usize) -> Self {
        Self::with_limits(WatchLimits::with_fragment_bytes(fragment_bytes_max))
    }

    /// A hub with `limits` (the member's config, `NodeConfig::watch_limits`).
    pub fn with_limits(limits: WatchLimits) -> Self {
        Self {
            streams: BTreeMap::new(),
            next_stream_id: 1,
            unsynced: BTreeSet::new(),
            sync_cursor: (0, i64::MIN),
            fragment_rule: FragmentRule {
                bytes_max: limits.fragment_bytes_max.max(1),
                #[cfg(madsim)]
                drops_boundary_event: false,
            },
            history_events_per_response_max: limits.history_events_per_response_max.max(1),
            sync_watchers_per_turn_max: limits.sync_watchers_per_turn_max.max(1),
            #[cfg(madsim)]
            planted: WatchPlantedBugs::default(),
        }
    }

    #[cfg(madsim)]
    pub fn plant(&mut self, planted: WatchPlantedBugs) {
        self.planted = planted;
        self.fragment_rule.drops_boundary_event = planted.fragment_drops_boundary_event;
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn watcher_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    pub fn unsynced_count(&self) -> usize {
        self.unsynced.len()
    }

    /// Registers a stream whose responses go to `sender`; its id for later requests.
    pub fn open_stream(&mut self, sender: mpsc::Sender<WatchResponse>) -> Result<u64, EtcdError> {
        if self.streams.len() >= WATCH_STREAMS_MAX {
            return Err(EtcdError::TooManyRequests);
        }
        let id = self.next_stream_id;
        self.next_stream_id += 1;
        self.streams.insert(id, Stream { sender, watchers: BTreeMap::new(), next_auto_id: 0, progress_requested: false });
        Ok(id)
    }

    fn close_stream(&mut self, stream_id: u64) {
        if let Some(stream) = self.streams.remove(&stream_id) {
            for watch_id in stream.watchers.keys() {
                self.unsynced.remove(&(stream_id, *watch_id));
            }
        }
    }

    /// Drops streams whose client has gone (its receiver was dropped).
    pub fn drop_closed_streams(&mut self) {
        let closed: Vec<u64> = self.streams.iter().filter(|(_, s)| s.sender.is_closed()).map(|(id, _)| *id).collect();
        for id in closed {
            self.close_stream(id);
        }
    }

    /// Sends a control response (created, canceled, progress); a stream that cannot
    /// take it is closed — its client sees the stream end and resumes elsewhere.
    fn send_control(&mut self, stream_id: u64, response: WatchResponse) {
        let Some(stream) = self.streams.get(&stream_id) else { return };
        if !matches!(try_send(&stream.sender, response), SendOutcome::Sent) {
            self.close_stream(stream_id);
        }
    }

    /// Refuses a create request with `reason` (etcd's permission check happens before
    /// the hub sees the request).
    pub fn refuse_create(&mut self, stream_id: u64, watch_id: i64, reason: &str, store: &Mvcc, base: &ResponseHeader) {
        let response = WatchResponse {
            header: header_at(base, store.current_revision()),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        self.send_control(stream_id, response);
    }

    /// One request from a stream's client.
    pub fn handle(&mut self, stream_id: u64, request: WatchRequest, store: &Mvcc, base: &ResponseHeader) {
        match request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => self.create(stream_id, create, store, base),
            Some(watch_request::RequestUnion::CancelRequest(cancel)) => self.cancel(stream_id, cancel.watch_id, store, base),
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                if let Some(stream) = self.streams.get_mut(&stream_id) {
                    stream.progress_requested = true;
                }
                self.flush_progress(store, base);
            }
            None => {}
        }
    }

    fn create(&mut self, stream_id: u64, create: WatchCreateRequest, store: &Mvcc, base: &ResponseHeader) {
        let current = store.current_revision();
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        let refuse = |reason: &str| WatchResponse {
            header: header_at(base, current),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let empty_range = !create.range_end.is_empty() && create.range_end != [0] && create.range_end <= create.key;
        let refusal = if empty_range {
            Some(EMPTY_WATCH_RANGE)
        } else if create.watch_id != 0 && stream.watchers.contains_key(&create.watch_id) {
            Some(DUPLICATE_WATCH_ID)
        } else if stream.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            Some(TOO_MANY_WATCHERS)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.send_control(stream_id, refuse(reason));
            return;
        }
        let watch_id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while stream.watchers.contains_key(&stream.next_auto_id) {
                stream.next_auto_id += 1;
            }
            stream.next_auto_id
        };
        #[allow(unused_mut)]
        let mut next_revision = if create.start_revision <= 0 { current + 1 } else { create.start_revision };
        #[cfg(madsim)]
        if self.planted.start_off_by_one && create.start_revision > 0 {
            next_revision += 1;
        }
        let filters = &create.filters;
        let watcher = Watcher {
            key: create.key,
            range_end: create.range_end,
            prev_kv: create.prev_kv,
            no_put: filters.contains(&(watch_create_request::FilterType::Noput as i32)),
            no_delete: filters.contains(&(watch_create_request::FilterType::Nodelete as i32)),
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            next_revision,
            synced: next_revision > current,
        };
        let synced = watcher.synced;
        stream.watchers.insert(watch_id, watcher);
        if !synced {
            self.unsynced.insert((stream_id, watch_id));
        }
        let created = WatchResponse { header: header_at(base, current), watch_id, created: true, ..Default::default() };
        self.send_control(stream_id, created);
    }

    fn cancel(&mut self, stream_id: u64, watch_id: i64, store: &Mvcc, base: &ResponseHeader) {
        let Some(stream) = self.streams.get_mut(&stream_id) else { return };
        // As etcd: an unknown id gets no answer.
        if stream.watchers.remove(&watch_id).is_none() {
            return;
        }
        self.unsynced.remove(&(stream_id, watch_id));
        let canceled = WatchResponse {
            header: header_at(base, store.current_revision()),
            watch_id,
            canceled: true,
            ..Default::default()
        };
        self.send_control(stream_id, canceled);
        self.flush_progress(store, base);
    }

    /// Sends `events` (whole revisions, already selected for the watcher) as one
    /// response, or as fragments if the watcher asked and they are large.
    fn deliver(
        sender: &mpsc::Sender<WatchResponse>,
        watch_id: i64,
        watcher: &Watcher,
        events: Vec<Event>,
        header: Option<ResponseHeader>,
        fragment_rule: FragmentRule,
    ) -> SendOutcome {
        let pieces = if watcher.fragment { fragments(events, fragment_rule, sender.max_capacity()) } else { vec![(events, false)] };
        if sender.capacity() < pieces.len() {
            return SendOutcome::Full;
        }
        for (events, fragment) in pieces {
            let response = WatchResponse { header, watch_id, events, fragment, ..Default::default() };
            match try_send(sender, response) {
                SendOutcome::Sent => {}
                other => return other,
            }
        }
        SendOutcome::Sent
    }

    /// The changes of one applied revision, in the order they were made.
    pub fn publish(&mut self, revision: i64, events: &[Event], base: &ResponseHeader) {
        let mut closed = Vec::new();
        let mut fell_behind = Vec::new();
        for (stream_id, stream) in self.streams.iter_mut() {
            for (watch_id, watcher) in stream.watchers.iter_mut() {
                if !watcher.synced || revision < watcher.next_revision {
                    continue;
                }
                assert_eq!(watcher.next_revision, revision, "a synced watcher is given every revision in order");
                let selected = watcher.select(events);
                if !selected.is_empty() {
                    let header = header_at(base, revision);
                    match Self::deliver(&stream.sender, *watch_id, watcher, selected, header, self.fragment_rule) {
                        SendOutcome::Sent => {}
                        SendOutcome::Full => {
                            // A slow consumer: catch it up from history later.
                            watcher.synced = false;
                            fell_behind.push((*stream_id, *watch_id));
                            continue;
                        }
                        SendOutcome::Closed => {
                            closed.push(*stream_id);
                            break;
                        }
                    }
                }
                watcher.next_revision = revision + 1;
            }
        }
        self.unsynced.extend(fell_behind);
        for stream_id in closed {
            self.close_stream(stream_id);
        }
    }

    /// The member installed a snapshot: the revisions it jumped over were never
    /// published, so every watcher catches up from history.
    pub fn resync_all(&mut self) {
        for (stream_id, stream) in self.streams.iter_mut() {
            for (watch_id, watcher) in stream.watchers.iter_mut() {
                if watcher.synced {
                    watcher.synced = false;
                    self.unsynced.insert((*stream_id, *watch_id));
                }
            }
        }
    }

    /// Advances up to `sync_watchers_per_turn_max` ([`WATCH_SYNC_WATCHERS_PER_TURN_MAX`]
    /// by default) unsynced watchers by one history batch each; then answers progress
    /// requests that can now be answered.
    pub fn sync_step(&mut self, store: &Mvcc, base: &ResponseHeader) {
        self.drop_closed_streams();
        let current = store.current_revision();
        let per_turn_max = self.sync_watchers_per_turn_max;
        let mut turn: Vec<(u64, i64)> =
            self.unsynced.range((std::ops::Bound::Excluded(self.sync_cursor), std::ops::Bound::Unbounded)).copied().take(per_turn_max).collect();
        if turn.len() < per_turn_max {
            let wrap: Vec<(u64, i64)> = self
                .unsynced
                .iter()
                .copied()
                .filter(|w| !turn.contains(w))
                .take(per_turn_max - turn.len())
                .collect();
            turn.extend(wrap);
        }
        for (stream_id, watch_id) in turn {
            self.sync_cursor = (stream_id, watch_id);
            self.catch_up(stream_id, watch_id, store, base, current);
        }
        self.flush_progress(store, base);
    }

    fn catch_up(&mut self, stream_id: u64, watch_id: i64, store: &Mvcc, base: &ResponseHeader, current: i64) {
        let fragment_rule = self.fragment_rule;
        let events_per_response_max = self.history_events_per_response_max;
        #[cfg(madsim)]
        let skip_on_catch_up = self.planted.skip_on_catch_up;
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            self.unsynced.remove(&(stream_id, watch_id));
            return;
        };
        let Some(watcher) = stream.watchers.get_mut(&watch_id) else {
            self.unsynced.remove(&(stream_id, watch_id));
            return;
        };
        if watcher.next_revision > current {
            watcher.synced = true;
            self.unsynced.remove(&(stream_id, watch_id));
            return;
        }
        let batch = match store.history(&watcher.key, &watcher.range_end, watcher.next_revision, events_per_response_max) {
            Ok(batch) => batch,
            Err(_) => {
                // Compacted away: etcd cancels the watcher with the compaction point.
                stream.watchers.remove(&watch_id);
                self.unsynced.remove(&(stream_id, watch_id));
                let canceled = WatchResponse {
                    header: header_at(base, current),
                    watch_id,
                    canceled: true,
                    compact_revision: store.compact_revision(),
                    ..Default::default()
                };
                self.send_control(stream_id, canceled);
                return;
            }
        };
        #[allow(unused_mut)]
        let mut selected = watcher.select(&batch.events);
        #[cfg(madsim)]
        if skip_on_catch_up && watcher.next_revision > 1 {
            let skipped = watcher.next_revision;
            selected.retain(|e| e.kv.as_ref().is_none_or(|kv| kv.mod_revision != skipped));
        }
        if !selected.is_empty() {
            let header = header_at(base, batch.through_revision);
            match Self::deliver(&stream.sender, watch_id, watcher, selected, header, fragment_rule) {
                SendOutcome::Sent => {}
                SendOutcome::Full => return,
                SendOutcome::Closed => {
                    self.close_stream(stream_id);
                    return;
                }
            }
        }
        watcher.next_revision = batch.through_revision + 1;
        if watcher.next_revision > current {
            watcher.synced = true;
            self.unsynced.remove(&(stream_id, watch_id));
        }
    }

    /// Answers pending progress requests of streams whose watchers are all synced: a
    /// response with `watch_id` -1 and the current revision, as etcd does — never while
    /// a watcher of the stream still owes events below it.
    fn flush_progress(&mut self, store: &Mvcc, base: &ResponseHeader) {
        let current = store.current_revision();
        let ready: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.progress_requested && s.watchers.values().all(|w| w.synced))
            .map(|(id, _)| *id)
            .collect();
        for stream_id in ready {
            if let Some(stream) = self.streams.get_mut(&stream_id) {
                stream.progress_requested = false;
            }
            let progress = WatchResponse { header: header_at(base, current), watch_id: -1, ..Default::default() };
            self.send_control(stream_id, progress);
        }
    }

    /// The periodic progress notification (`--experimental-watch-progress-notify-
    /// interval`): every synced watcher that asked for it hears the current revision.
    pub fn progress_tick(&mut self, store: &Mvcc, base: &ResponseHeader) {
        let current = store.current_revision();
        let mut closed = Vec::new();
        for (stream_id, stream) in self.streams.iter() {
            for (watch_id, watcher) in stream.watchers.iter() {
                if watcher.progress_notify && watcher.synced {
                    let progress = WatchResponse { header: header_at(base, current), watch_id: *watch_id, ..Default::default() };
                    if let SendOutcome::Closed = try_send(&stream.sender, progress) {
                        closed.push(*stream_id);
                        break;
                    }
                }
            }
        }
        for stream_id in closed {
            self.close_stream(stream_id);
        }
    }
}
