//! The simulated network between members: the simulator's twin of the TCP transport.
//!
//! Every message is judged per directed link when sent: cut links drop it, clogged links
//! hold it, and otherwise it may be dropped, duplicated, and is delayed (with a slow
//! tail, which reorders). One delivery task hands due messages to the receiver's inbox;
//! a link cut by the time of delivery drops them too. Held messages are released in a
//! random order. All choices come from the run's seeded generator.
//!
//! As the TCP transport does, a member refuses the messages of a member its applied
//! table removed (`Transport::set_peers`) and answers with the removal notice, which
//! reaches the removed member unless the link back is cut
//! (`Transport::removal_notices`: who told it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_node::env::Transport;
use detcd_node::PeerInbox;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use raft::eraftpb::Message;
use tokio::sync::Notify;

pub use crate::report::NetStats;

/// Messages held on clogged links before the oldest are dropped.
pub const CLOGGED_MESSAGES_MAX: usize = 100_000;
/// Messages in flight before new ones are dropped.
pub const IN_FLIGHT_MESSAGES_MAX: usize = 200_000;

/// Loss, duplication and delay applied to every link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkQuality {
    pub drop_rate: f64,
    pub duplicate_rate: f64,
    pub delay_ms_min: u64,
    pub delay_ms_max: u64,
    /// Probability of a slow message (10–50× the maximum delay).
    pub slow_tail_rate: f64,
}

impl LinkQuality {
    pub fn good(delay_ms_max: u64) -> Self {
        Self { drop_rate: 0.0, duplicate_rate: 0.0, delay_ms_min: 0, delay_ms_max: delay_ms_max.max(1), slow_tail_rate: 0.01 }
    }
}

struct NetState {
    inboxes: BTreeMap<u64, PeerInbox>,
    /// Directed links (from, to) that drop everything.
    cut: BTreeSet<(u64, u64)>,
    /// Directed links that hold everything until released.
    clogged: BTreeSet<(u64, u64)>,
    held: Vec<(u64, u64, Message)>,
    quality: LinkQuality,
    rng: ChaCha8Rng,
    /// (deliver at ms, sequence) → (from, to, message).
    in_flight: BTreeMap<(u64, u64), (u64, u64, Message)>,
    next_seq: u64,
    stats: NetStats,
    /// Probability that a delivered message is delivered again later, and the most
    /// simulated milliseconds "later" may be (0: never).
    redeliver_rate: f64,
    redeliver_delay_ms_max: u64,
    /// Links whose connection was reset: everything sent before `until_ms` is dropped,
    /// as the production transport drops while it reconnects.
    reconnecting_until_ms: BTreeMap<(u64, u64), u64>,
    /// Per member: the members its applied table removed.
    removed_by: BTreeMap<u64, BTreeSet<u64>>,
    /// Per member a peer told it was removed: the peers that told it.
    told_removed: BTreeMap<u64, BTreeSet<u64>>,
}

/// The network shared by all simulated members.
pub struct SimNet {
    state: Mutex<NetState>,
    wake: Notify,
    origin: tokio::time::Instant,
}

impl SimNet {
    pub fn new(seed: u64, quality: LinkQuality) -> Arc<SimNet> {
        Arc::new(SimNet {
            state: Mutex::new(NetState {
                inboxes: BTreeMap::new(),
                cut: BTreeSet::new(),
                clogged: BTreeSet::new(),
                held: Vec::new(),
                quality,
                rng: ChaCha8Rng::seed_from_u64(seed),
                in_flight: BTreeMap::new(),
                next_seq: 0,
                stats: NetStats::default(),
                redeliver_rate: 0.0,
                redeliver_delay_ms_max: 0,
                reconnecting_until_ms: BTreeMap::new(),
                removed_by: BTreeMap::new(),
                told_removed: BTreeMap::new(),
            }),
            wake: Notify::new(),
            origin: tokio::time::Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().expect("net lock")
    }

    /// A (re)started member's inbox.
    pub fn register(&self, member_id: u64, inbox: PeerInbox) {
        self.lock().inboxes.insert(member_id, inbox);
    }

    /// The transport one member sends through.
    pub fn transport(self: &Arc<Self>, member_id: u64) -> Arc<dyn Transport> {
        Arc::new(SimTransport { from: member_id, net: self.clone() })
    }

    /// Makes some messages arrive a second time, up to `delay_ms_max` later, to whichever
    /// incarnation of the receiver is running then. `rate` 0 turns it off.
    pub fn set_redelivery(&self, rate: f64, delay_ms_max: u64) {
        let mut state = self.lock();
        state.redeliver_rate = rate;
        state.redeliver_delay_ms_max = delay_ms_max;
    }

    pub fn set_quality(&self, quality: LinkQuality) {
        self.lock().quality = quality;
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, side_a: &[u64], side_b: &[u64]) {
        let mut state = self.lock();
        for a in side_a {
            for b in side_b {
                state.cut.insert((*a, *b));
                state.cut.insert((*b, *a));
            }
        }
    }

    /// Clogs the directed link `from → to`: messages wait instead of arriving.
    pub fn clog(&self, from: u64, to: u64) {
        self.lock().clogged.insert((from, to));
    }

    /// Heals every cut and clog and restores good links; held messages are released in
    /// a random order with random small delays.
    pub fn heal_all(&self, quality: LinkQuality) {
        let mut state = self.lock();
        state.cut.clear();
        state.clogged.clear();
        state.quality = quality;
        let mut held = std::mem::take(&mut state.held);
        let now = self.now_ms();
        while !held.is_empty() {
            let pick = state.rng.gen_range(0..held.len());
            let (from, to, message) = held.swap_remove(pick);
            let delay = state.rng.gen_range(0..=20);
            let seq = state.next_seq;
            state.next_seq += 1;
            state.in_flight.insert((now + delay, seq), (from, to, message));
        }
        drop(state);
        self.wake.notify_one();
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats.clone()
    }

    /// Resets the connection `from` → `to`, as a TCP reset does to the production
    /// transport: what was in flight on it is lost, and what is sent while it
    /// reconnects (`reconnect_ms`) is dropped. Returns the messages lost in flight.
    pub fn reset_connection(&self, from: u64, to: u64, reconnect_ms: u64) -> usize {
        let now = self.now_ms();
        let mut state = self.lock();
        let lost: Vec<(u64, u64)> = state.in_flight.iter().filter(|(_, (f, t, _))| (*f, *t) == (from, to)).map(|(key, _)| *key).collect();
        for key in &lost {
            state.in_flight.remove(key);
        }
        state.stats.dropped_cut += lost.len() as u64;
        state.reconnecting_until_ms.insert((from, to), now + reconnect_ms);
        lost.len()
    }

    fn send_one(&self, state: &mut NetState, from: u64, message: Message, now: u64) {
        let to = message.to;
        state.stats.sent += 1;
        if detcd_node::consensus::membership::is_membership_probe(&message) {
            state.stats.membership_probes += 1;
        }
        match detcd_node::consensus::keep_alive_forward::decode(&message) {
            Some(Ok(detcd_node::consensus::keep_alive_forward::KeepAliveMessage::Forward(_))) => state.stats.keep_alive_forwards += 1,
            Some(Ok(detcd_node::consensus::keep_alive_forward::KeepAliveMessage::Answer(_))) => state.stats.keep_alive_answers += 1,
            _ => {}
        }
        if state.reconnecting_until_ms.get(&(from, to)).is_some_and(|until| now < *until) {
            state.stats.dropped_cut += 1;
            return;
        }
        if state.cut.contains(&(from, to)) {
            state.stats.dropped_cut += 1;
            return;
        }
        if state.clogged.contains(&(from, to)) {
            state.stats.clogged += 1;
            if state.held.len() < CLOGGED_MESSAGES_MAX {
                state.held.push((from, to, message));
            }
            return;
        }
        let quality = state.quality.clone();
        if quality.drop_rate > 0.0 && state.rng.gen_bool(quality.drop_rate) {
            state.stats.dropped_lossy += 1;
            return;
        }
        let copies = if quality.duplicate_rate > 0.0 && state.rng.gen_bool(quality.duplicate_rate) {
            state.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if state.in_flight.len() >= IN_FLIGHT_MESSAGES_MAX {
                state.stats.dropped_lossy += 1;
                continue;
            }
            let mut delay = state.rng.gen_range(quality.delay_ms_min..=quality.delay_ms_max.max(quality.delay_ms_min));
            if quality.slow_tail_rate > 0.0 && state.rng.gen_bool(quality.slow_tail_rate) {
                delay = delay.max(1) * state.rng.gen_range(10..=50);
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.in_flight.insert((now + delay, seq), (from, to, message.clone()));
        }
        if state.redeliver_rate > 0.0 && state.redeliver_delay_ms_max > 0 && state.rng.gen_bool(state.redeliver_rate) {
            if state.in_flight.len() < IN_FLIGHT_MESSAGES_MAX {
                let late_ms = state.rng.gen_range(state.redeliver_delay_ms_max / 4..=state.redeliver_delay_ms_max);
                let seq = state.next_seq;
                state.next_seq += 1;
                state.stats.duplicated += 1;
                state.in_flight.insert((now + late_ms, seq), (from, to, message));
            }
        }
    }

    /// Delivers messages as they fall due. Runs for the whole simulation.
    pub async fn run_delivery(self: Arc<Self>) {
        loop {
            let next_due = self.lock().in_flight.keys().next().map(|(at, _)| *at);
            match next_due {
                None => self.wake.notified().await,
                Some(at) => {
                    let now = self.now_ms();
                    if at > now {
                        tokio::select! {
                            biased;
                            _ = self.wake.notified() => continue,
                            _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                        }
                    }
                    self.deliver_due();
                }
            }
        }
    }

    fn deliver_due(&self) {
        let now = self.now_ms();
        let mut state = self.lock();
        loop {
            let Some(key) = state.in_flight.keys().next().copied() else { break };
            if key.0 > now {
                break;
            }
            let (from, to, message) = state.in_flight.remove(&key).expect("key listed above");
            if state.cut.contains(&(from, to)) {
                state.stats.dropped_cut += 1;
                continue;
            }
            if state.removed_by.get(&to).is_some_and(|removed| removed.contains(&from)) {
                state.stats.refused_removed += 1;
                if !state.cut.contains(&(to, from)) && state.told_removed.entry(from).or_default().insert(to) {
                    state.stats.removal_notices += 1;
                }
                continue;
            }
            let delivered = state.inboxes.get(&to).is_some_and(|inbox| inbox.try_send(message).is_ok());
            if delivered {
                state.stats.delivered += 1;
            } else {
                state.stats.dropped_unreachable += 1;
            }
        }
    }
}

struct SimTransport {
    from: u64,
    net: Arc<SimNet>,
}

impl Transport for SimTransport {
    fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        if messages.is_empty() {
            return Vec::new();
        }
        let now = self.net.now_ms();
        {
            let mut state = self.net.lock();
            for message in messages {
                self.net.send_one(&mut state, self.from, message, now);
            }
        }
        self.net.wake.notify_one();
        // Like a TCP connection, the simulated network only learns of loss later.
        Vec::new()
    }

    fn set_peers(&self, peers: &detcd_node::env::PeerDirectory) {
        self.net.lock().removed_by.insert(self.from, peers.removed.clone());
    }

    fn removal_notices(&self) -> BTreeSet<u64> {
        self.net.lock().told_removed.get(&self.from).cloned().unwrap_or_default()
    }
}
