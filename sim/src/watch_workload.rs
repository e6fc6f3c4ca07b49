//! Watch clients and the compactor.
//!
//! A watch client keeps one logical watch (a *chain*) alive across members, like real
//! clients (Kubernetes' reflectors, etcd's own clientv3): it opens a stream on a member,
//! creates its watch, reads, asks for progress now and then, and when the stream breaks
//! (the member crashed or stopped) or it decides to move, resumes on another member from
//! the revision after the last one it was given or bookmarked. A chain cancelled for
//! compaction ends; the client starts a new one. When the run settles, each open chain
//! must answer a final progress request. Half the chains ask for fragments (etcd's
//! `fragment`): a response larger than the member's fragment size comes in pieces,
//! which the client joins before it records them, as clientv3 does — pieces of a
//! response the stream lost midway are dropped, and the watch resumes before them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::pb::etcdserverpb::{
    watch_create_request, watch_request, CompactionRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Cluster;
use crate::watch_history::WatchEntry;
use crate::world::watched_event;

/// Chains one watch client starts at most.
pub const WATCH_CHAINS_PER_CLIENT_MAX: u64 = 1000;
/// Streams one chain opens at most.
pub const WATCH_SEGMENTS_PER_CHAIN_MAX: u64 = 10_000;
/// How long a settling watch client waits for its final progress response.
pub const WATCH_SETTLE_MS_MAX: u64 = 10_000;

/// What a chain watches and how it was created.
struct ChainSpec {
    id: u64,
    key: String,
    range_end: String,
    prev_kv: bool,
    filters: Vec<i32>,
    /// Whether the chain asks for large responses in fragments.
    fragment: bool,
    /// Events of the fragments received so far of a response not yet complete.
    pending_fragments: Vec<crate::watch_history::WatchedEvent>,
    /// The first revision not yet given or bookmarked (0: from now, until created).
    next: i64,
    /// The compaction point a server gave when it cancelled the chain (0: none).
    compacted_at: i64,
}

/// How a stream of a chain ended.
enum SegmentEnd {
    /// The stream broke or the client moved: resume elsewhere.
    Resume,
    /// Cancelled for compaction (or refused): start a new chain.
    ChainOver,
    /// The run settled and the final progress was answered (or its wait ran out).
    Settled,
}

fn record_response(cluster: &Cluster, chain: &mut ChainSpec, response: &WatchResponse) -> Option<SegmentEnd> {
    let world = &cluster.world;
    let header_revision = response.header.as_ref().map_or(0, |h| h.revision);
    if response.created && !response.canceled {
        world.watch_response(chain.id, WatchEntry::Created { header_revision });
        if chain.next == 0 {
            chain.next = header_revision + 1;
        }
        return None;
    }
    if response.canceled {
        chain.compacted_at = response.compact_revision;
        world.watch_response(chain.id, WatchEntry::Canceled { compact_revision: response.compact_revision, reason: response.cancel_reason.clone() });
        return Some(SegmentEnd::ChainOver);
    }
    if response.fragment {
        chain.pending_fragments.extend(response.events.iter().map(watched_event));
        return None;
    }
    if response.events.is_empty() && chain.pending_fragments.is_empty() {
        world.watch_response(chain.id, WatchEntry::Progress { header_revision });
        chain.next = chain.next.max(header_revision + 1);
        return None;
    }
    let mut events = std::mem::take(&mut chain.pending_fragments);
    if !events.is_empty() {
        world.count("watch: responses joined from fragments");
    }
    events.extend(response.events.iter().map(watched_event));
    if let Some(last) = events.last() {
        chain.next = chain.next.max(last.revision + 1);
    }
    world.watch_response(chain.id, WatchEntry::Events { header_revision, events });
    None
}

/// One stream of `chain` on member `member`.
async fn run_segment(cluster: &Cluster, chain: &mut ChainSpec, member: usize, stop: &AtomicBool, rng: &mut ChaCha8Rng) -> SegmentEnd {
    let slot = &cluster.members[member];
    let Some((handle, incarnation)) = slot.handle() else { return SegmentEnd::Resume };
    let Ok(mut stream) = handle.watch().await else { return SegmentEnd::Resume };
    let create = WatchCreateRequest {
        key: chain.key.clone().into_bytes(),
        range_end: chain.range_end.clone().into_bytes(),
        start_revision: chain.next,
        prev_kv: chain.prev_kv,
        filters: chain.filters.clone(),
        fragment: chain.fragment,
        ..Default::default()
    };
    // Pieces of a response an earlier stream lost midway were never a response.
    chain.pending_fragments.clear();
    cluster.world.watch_segment(chain.id, slot.member_id(), incarnation, chain.next);
    if stream.request(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }).await.is_err() {
        cluster.world.watch_segment_ended(chain.id, "member stopped before the create request");
        return SegmentEnd::Resume;
    }
    let move_at_ms = cluster.world.now_ms() + rng.gen_range(1000..=6000);
    let mut next_progress_ms = cluster.world.now_ms() + rng.gen_range(300..=2000);
    let mut settle_deadline: Option<u64> = None;
    loop {
        let now = cluster.world.now_ms();
        if settle_deadline.is_none() && stop.load(Ordering::SeqCst) {
            settle_deadline = Some(now + WATCH_SETTLE_MS_MAX);
            cluster.world.require_final_progress(chain.id);
            let progress = WatchRequest { request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})) };
            if stream.request(progress).await.is_err() {
                cluster.world.watch_segment_ended(chain.id, "member stopped before the final progress request");
                return SegmentEnd::Settled;
            }
        }
        if let Some(deadline) = settle_deadline {
            if now >= deadline {
                cluster.world.watch_segment_ended(chain.id, "settle: no final progress in time");
                return SegmentEnd::Settled;
            }
        } else if now >= move_at_ms {
            cluster.world.watch_segment_ended(chain.id, "client moves to another member");
            return SegmentEnd::Resume;
        } else if now >= next_progress_ms {
            next_progress_ms = now + rng.gen_range(300..=2000);
            let progress = WatchRequest { request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})) };
            let _ = stream.request(progress).await;
        }
        let wait_ms = 100;
        let response = tokio::time::timeout(Duration::from_millis(wait_ms), stream.next()).await;
        match response {
            Err(_) => continue,
            Ok(None) => {
                cluster.world.watch_segment_ended(chain.id, "stream ended (member stopped)");
                return if settle_deadline.is_some() { SegmentEnd::Settled } else { SegmentEnd::Resume };
            }
            Ok(Some(response)) => {
                let is_final_progress = settle_deadline.is_some() && response.watch_id == -1 && response.events.is_empty();
                if let Some(end) = record_response(cluster, chain, &response) {
                    cluster.world.watch_segment_ended(chain.id, "cancelled by the server");
                    return end;
                }
                if is_final_progress {
                    cluster.world.watch_segment_ended(chain.id, "settled");
                    return SegmentEnd::Settled;
                }
            }
        }
    }
}

/// One watch client (see the module documentation).
pub async fn run_watch_client(client: u64, cluster: Arc<Cluster>, keys: usize, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7761_7463_6821);
    let mut compacted_at = 0;
    for _ in 0..WATCH_CHAINS_PER_CLIENT_MAX {
        let (key, range_end) = if rng.gen_bool(0.5) {
            ("k".to_string(), "l".to_string())
        } else {
            (crate::workload::key_name(rng.gen_range(0..keys)), String::new())
        };
        let filters = match rng.gen_range(0..10) {
            0 => vec![watch_create_request::FilterType::Noput as i32],
            1 => vec![watch_create_request::FilterType::Nodelete as i32],
            _ => vec![],
        };
        let prev_kv = rng.gen_bool(0.5);
        let fragment = rng.gen_bool(0.5);
        let id = cluster.world.watch_chain(
            client,
            &key,
            &range_end,
            prev_kv,
            filters.contains(&(watch_create_request::FilterType::Noput as i32)),
            filters.contains(&(watch_create_request::FilterType::Nodelete as i32)),
        );
        // After a compaction cancelled the last chain, half the time start again from the
        // compaction point the server named (the oldest revision a watch may ask for).
        let next = match std::mem::take(&mut compacted_at) {
            at if at > 0 && rng.gen_bool(0.5) => at,
            _ if rng.gen_bool(0.5) => 0,
            _ => 1,
        };
        let mut chain = ChainSpec { id, key, range_end, prev_kv, filters, fragment, pending_fragments: Vec::new(), next, compacted_at: 0 };
        for _ in 0..WATCH_SEGMENTS_PER_CHAIN_MAX {
            let member = rng.gen_range(0..cluster.members.len());
            match run_segment(&cluster, &mut chain, member, &stop, &mut rng).await {
                SegmentEnd::Resume => tokio::time::sleep(Duration::from_millis(rng.gen_range(10..=200))).await,
                SegmentEnd::ChainOver => {
                    compacted_at = chain.compacted_at;
                    break;
                }
                SegmentEnd::Settled => return,
            }
            if stop.load(Ordering::SeqCst) && cluster.members.iter().all(|m| m.handle().is_none()) {
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Compacts history every `interval_ms`, keeping the last `retain` revisions.
pub async fn run_compactor(cluster: Arc<Cluster>, interval_ms: u64, retain: i64, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x636f_6d70_6163_74);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        let running: Vec<usize> = (0..cluster.members.len()).filter(|i| cluster.members[*i].handle().is_some()).collect();
        let Some(&member) = running.choose(&mut rng) else { continue };
        let Some((handle, _)) = cluster.members[member].handle() else { continue };
        let Ok(Some(status)) = tokio::time::timeout(Duration::from_millis(500), handle.status()).await else { continue };
        // Now and then right up to the newest revision, as an operator clearing space does.
        let revision = if rng.gen_bool(0.2) { status.revision } else { status.revision - retain };
        if revision <= status.compact_revision {
            continue;
        }
        let result = tokio::time::timeout(Duration::from_millis(3000), handle.compact(CompactionRequest { revision, physical: false })).await;
        if let Ok(Ok(_)) = result {
            cluster.world.event("compact", Some(member), format!("compacted history before revision {revision}"));
        }
    }
}
