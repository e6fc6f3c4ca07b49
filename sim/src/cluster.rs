//! The simulated cluster: each member as the harness sees it across crashes and
//! restarts (its disks, clock and madsim node outlive every incarnation), how members
//! are started, killed, restarted and asked for their status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_node::env::mem_disk::MemDisk;
use detcd_node::env::{DiskError, Env, Role};
use detcd_node::storage::wal::WalError;
use detcd_node::{FatalError, Node, NodeConfig, NodeHandle, NodeStatus};

use crate::clock::SimClock;
use crate::net::{LinkQuality, SimNet};
use crate::scenario::{Options, Scenario};
use crate::world::World;

/// One member as the harness sees it across crashes and restarts.
pub struct MemberSlot {
    pub index: usize,
    /// The member in this slot now: a replaced member's slot holds the new member (same
    /// name and URLs, new id, blank disks).
    member_id: AtomicU64,
    /// How the member in this slot is started (changes when the slot is replaced).
    config: Mutex<NodeConfig>,
    /// The member was removed from the cluster and its replacement is not running yet:
    /// nothing restarts it, and it counts in no check.
    pub retired: AtomicBool,
    /// Retired by an operator who waits until another member knows the removal is
    /// committed: until then the member may still be restarted from its disk (its
    /// supervisor restarts a crashed process, removed or not, and the others may still
    /// need it — membership-chaos seed 6160).
    pub removal_pending: AtomicBool,
    /// The last incarnation stopped on its own, having applied (or been told of) its
    /// removal — not stopped by a fault.
    pub stopped_removed: AtomicBool,
    /// The last incarnation stopped on a full disk (a write refused for space).
    pub stopped_for_space: AtomicBool,
    /// The peer URLs the member list must show for this slot's member: its own, or what
    /// an operator's MemberUpdate set (and saw applied).
    pub expected_peer_urls: Mutex<Vec<String>>,
    /// An update of those the operator gave up on: it may still apply (settled from the
    /// member list before the final checks).
    pub unsettled_peer_urls: Mutex<Option<Vec<String>>>,
    pub wal_disk: Arc<MemDisk>,
    pub data_disk: Arc<MemDisk>,
    pub clock: Arc<SimClock>,
    /// The running incarnation's handle, or None while down.
    pub running: Mutex<Option<(NodeHandle, u64)>>,
    pub incarnation: AtomicU64,
    pub madsim_node: Mutex<Option<madsim::runtime::NodeHandle>>,
    /// Set by the harness when it kills or pauses the member.
    pub down: AtomicBool,
    pub paused: AtomicBool,
    /// A byte flipped in a durable WAL record: (segment, offset). The member must refuse
    /// to start while it is there.
    pub corrupted: Mutex<Option<(String, usize)>>,
    /// A byte flipped in the member's newest snapshot file: (file, offset). At its next
    /// start it must pass over that file or refuse to start.
    /// The file is named with its id (`MemDisk::file_id`): a snapshot written again at
    /// the same index replaces the damaged file, and the damage is gone with it.
    pub snapshot_damaged: Mutex<Option<(String, usize, u64)>>,
    /// The token every client of the run sends once auth is enabled (the root user's;
    /// shared by all slots): workloads other than the auth workload are unaware of auth.
    pub client_token: Arc<Mutex<Option<String>>>,
    /// The scenario's floor on background job delays (`SimWorker`).
    pub worker_job_delay_ms_min: u64,
}

impl MemberSlot {
    /// The running incarnation's handle (sending the run's client token, if any).
    pub fn handle(&self) -> Option<(NodeHandle, u64)> {
        let token = self.client_token.lock().expect("token lock").clone();
        self.running.lock().expect("slot lock").clone().map(|(handle, incarnation)| (handle.with_token(token), incarnation))
    }

    /// The running incarnation's handle with no token (the auth workload's own clients).
    pub fn handle_without_token(&self) -> Option<(NodeHandle, u64)> {
        self.running.lock().expect("slot lock").clone()
    }

    pub fn member_id(&self) -> u64 {
        self.member_id.load(Ordering::SeqCst)
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Whether a member may run in this slot: one of the cluster's, or one being
    /// removed whose removal no other member knows yet.
    pub fn may_run(&self) -> bool {
        !self.is_retired() || self.removal_pending.load(Ordering::SeqCst)
    }
}

pub struct Cluster {
    pub members: Vec<Arc<MemberSlot>>,
    /// An operator is replacing a member (`membership_workload`): one at a time.
    pub replacing: AtomicBool,
    /// The auth operator stopped after its enable may have taken effect but before it
    /// handed root's token out: auth may be on while no client holds a token
    /// (`auth_workload::finish_abandoned_setup` logs in once the network is healed).
    pub auth_token_missing: AtomicBool,
    /// Members the operator removed: an id never comes back, so a list that still shows
    /// one (a leader that has not applied the removal yet) is not a list with the member
    /// added in its place.
    pub removed_ids: Mutex<std::collections::BTreeSet<u64>>,
    pub net: Arc<SimNet>,
    pub world: Arc<World>,
    pub good_links: LinkQuality,
}

impl Cluster {
    pub fn start(options: &Options, scenario: &Scenario, world: Arc<World>, net: Arc<SimNet>, member_ids: &[u64], cluster_id: u64) -> Cluster {
        let runtime = madsim::runtime::Handle::current();
        let mut members = Vec::new();
        let client_token = Arc::new(Mutex::new(None));
        // Spare slots hold no member (id 0) until an operator adds one (`replace`).
        let slot_ids = member_ids.iter().copied().chain(std::iter::repeat_n(0, scenario.spare_members));
        for (index, member_id) in slot_ids.enumerate() {
            let slot_config = Mutex::new(NodeConfig::with_defaults(member_id, cluster_id, member_ids.to_vec()));
            let slot = Arc::new(MemberSlot {
                index,
                member_id: AtomicU64::new(member_id),
                config: slot_config,
                retired: AtomicBool::new(member_id == 0),
                removal_pending: AtomicBool::new(false),
                stopped_removed: AtomicBool::new(false),
                stopped_for_space: AtomicBool::new(false),
                expected_peer_urls: Mutex::new(vec![format!("http://m{index}:2380")]),
                unsettled_peer_urls: Mutex::new(None),
                wal_disk: Arc::new(MemDisk::new()),
                data_disk: Arc::new(MemDisk::new()),
                clock: Arc::new(SimClock::new()),
                running: Mutex::new(None),
                incarnation: AtomicU64::new(0),
                madsim_node: Mutex::new(None),
                down: AtomicBool::new(false),
                paused: AtomicBool::new(false),
                corrupted: Mutex::new(None),
                snapshot_damaged: Mutex::new(None),
                client_token: client_token.clone(),
                worker_job_delay_ms_min: scenario.node.worker_job_delay_ms_min,
            });
            let mut config = NodeConfig::with_defaults(member_id, cluster_id, member_ids.to_vec());
            let settings = &scenario.node;
            config.heartbeat_interval_ms = options.timing.heartbeat_interval_ms;
            config.election_timeout_ms = options.timing.election_timeout_ms;
            let knobs = options.knobs(scenario, index);
            config.snapshot_count = knobs.snapshot_count;
            config.snapshot_catchup_entries = knobs.snapshot_catchup_entries;
            config.wal_segment_bytes_max = knobs.wal_segment_bytes_max;
            config.compaction_keys_per_turn_max = knobs.compaction_keys_per_turn_max;
            config.tunables = knobs.tunables;
            config.pending_request_bytes_max = knobs.pending_request_bytes_max;
            config.uncommitted_bytes_max = knobs.uncommitted_bytes_max;
            config.pre_vote = knobs.pre_vote;
            config.request_timeout_ms = knobs.request_timeout_ms;
            config.max_request_bytes = knobs.max_request_bytes;
            if settings.auto_compaction_retain_revisions > 0 {
                config.auto_compaction = detcd_node::consensus::auto_compaction::AutoCompaction::Revision {
                    retain: settings.auto_compaction_retain_revisions,
                    interval_ms: settings.auto_compaction_interval_ms,
                };
            }
            if settings.quota_backend_bytes > 0 {
                config.quota_backend_bytes = settings.quota_backend_bytes;
            }
            config.max_wals = settings.max_wals.max(1);
            config.corrupt_check_interval_ms = settings.corrupt_check_interval_ms;
            // Names and URLs the member publishes through raft (what MemberList shows).
            config.name = format!("m{index}");
            config.peer_urls = vec![format!("http://m{index}:2380")];
            config.client_urls = vec![format!("http://m{index}:2379")];
            config.initial_peer_urls = member_ids.iter().enumerate().map(|(i, id)| (*id, vec![format!("http://m{i}:2380")])).collect();
            if member_id == 0 {
                config.initial_voters = Vec::new();
            }
            config.max_snapshots = 2;
            config.planted_bug = options.planted_bug.as_deref().map(|name| {
                detcd_node::consensus::PlantedBug::parse(name).unwrap_or_else(|| panic!("unknown planted bug {name:?}"))
            });
            *slot.config.lock().expect("slot lock") = config;
            let seed = options.seed;
            let init_slot = slot.clone();
            let init_world = world.clone();
            let init_net = net.clone();
            let node = runtime
                .create_node()
                .name(format!("m{index}"))
                .init(move || {
                    let slot = init_slot.clone();
                    let world = init_world.clone();
                    let net = init_net.clone();
                    let config = slot.config.lock().expect("slot lock").clone();
                    async move {
                        // A spare slot starts nothing until a member is added into it.
                        if slot.may_run() {
                            run_member(slot, world, net, config, seed).await;
                        }
                    }
                })
                .build();
            *slot.madsim_node.lock().expect("slot lock") = Some(node);
            members.push(slot);
        }
        let good_links = LinkQuality::good(options.message_delay_ms_max);
        Cluster {
            members,
            replacing: AtomicBool::new(false),
            auth_token_missing: AtomicBool::new(false),
            removed_ids: Mutex::default(),
            net,
            world,
            good_links,
        }
    }

    pub fn madsim_id(&self, index: usize) -> madsim::task::NodeId {
        self.members[index].madsim_node.lock().expect("slot lock").as_ref().expect("node built").id()
    }

    /// Members down or paused (a free slot holds no member: not counted).
    pub fn down_count(&self) -> usize {
        self.members.iter().filter(|m| !m.is_retired() && (m.down.load(Ordering::SeqCst) || m.paused.load(Ordering::SeqCst))).count()
    }

    /// Slots that hold a member of the cluster now.
    pub fn member_count(&self) -> usize {
        self.members.iter().filter(|m| !m.is_retired()).count()
    }

    /// How many members may be down at once and the cluster still have a quorum.
    pub fn attrition_max(&self) -> usize {
        // A single member may go down (the cluster is unavailable meanwhile).
        (self.member_count().saturating_sub(1) / 2).max(1)
    }

    pub fn kill(&self, index: usize, reason: &str) {
        let slot = &self.members[index];
        madsim::runtime::Handle::current().kill(self.madsim_id(index));
        *slot.running.lock().expect("slot lock") = None;
        slot.down.store(true, Ordering::SeqCst);
        self.world.event("fault", Some(index), format!("crash ({reason})"));
    }

    pub fn restart(&self, index: usize) {
        let slot = &self.members[index];
        if !slot.may_run() {
            // Removed from the cluster: it stays down until its replacement starts.
            return;
        }
        madsim::runtime::Handle::current().restart(self.madsim_id(index));
        slot.down.store(false, Ordering::SeqCst);
        slot.paused.store(false, Ordering::SeqCst);
        self.world.event("heal", Some(index), "restart from disk".into());
    }

    pub async fn statuses(&self) -> Vec<Option<NodeStatus>> {
        let mut statuses = Vec::new();
        for slot in &self.members {
            let status = match slot.handle() {
                Some((handle, _)) if !slot.paused.load(Ordering::SeqCst) => {
                    tokio::time::timeout(Duration::from_millis(500), handle.status()).await.ok().flatten()
                }
                _ => None,
            };
            statuses.push(status);
        }
        statuses
    }

    /// Replaces the member in slot `index` (already removed from the cluster and
    /// stopped) by member `new_id` on blank disks, joining the running cluster whose
    /// members are `peer_urls` (as a member started with `--initial-cluster-state
    /// existing`): same name and URLs, new identity.
    pub fn replace(&self, index: usize, new_id: u64, peer_urls: std::collections::BTreeMap<u64, Vec<String>>) {
        let slot = &self.members[index];
        assert!(slot.handle().is_none(), "a member is replaced only once stopped");
        slot.wal_disk.replace_with_blank();
        slot.data_disk.replace_with_blank();
        {
            let mut config = slot.config.lock().expect("slot lock");
            config.member_id = new_id;
            config.initial_voters = Vec::new();
            config.initial_peer_urls = peer_urls;
        }
        slot.member_id.store(new_id, Ordering::SeqCst);
        *slot.corrupted.lock().expect("slot lock") = None;
        *slot.snapshot_damaged.lock().expect("slot lock") = None;
        self.world.register_member(new_id, index);
        *slot.expected_peer_urls.lock().expect("slot lock") = vec![format!("http://m{index}:2380")];
        *slot.unsettled_peer_urls.lock().expect("slot lock") = None;
        slot.retired.store(false, Ordering::SeqCst);
        self.world.event("heal", Some(index), format!("replaced by a new member {new_id:016x} on blank disks"));
        self.restart(index);
    }

    /// The member that is leader in the highest term, if any.
    pub async fn leader(&self) -> Option<usize> {
        let statuses = self.statuses().await;
        statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.role == Role::Leader).map(|s| (s.term, i)))
            .max()
            .map(|(_, i)| i)
    }
}

pub async fn run_member(slot: Arc<MemberSlot>, world: Arc<World>, net: Arc<SimNet>, config: NodeConfig, run_seed: u64) {
    let incarnation = slot.incarnation.fetch_add(1, Ordering::SeqCst) + 1;
    let member_seed = run_seed ^ slot.member_id().rotate_left(17) ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let env = Env {
        wal_disk: slot.wal_disk.clone(),
        data_disk: slot.data_disk.clone(),
        transport: net.transport(slot.member_id()),
        clock: slot.clock.clone(),
        observer: world.clone(),
        worker: Arc::new(crate::worker::SimWorker::new(member_seed, world.clone(), slot.worker_job_delay_ms_min)),
        seed: member_seed,
    };
    let corrupted = slot.corrupted.lock().expect("slot lock").clone();
    // An armed fsync failure may hit the sync that opening the WAL does: refusing to
    // start on a disk whose fsync fails is right, not a violation.
    let failing_fsync = slot.wal_disk.has_sync_fault() || slot.data_disk.has_sync_fault();
    // So may a start on a full disk, or one that read a damaged snapshot or saw a read fail.
    // The expectation holds while the damaged file is still the newest snapshot (a
    // later start may find a newer one written since).
    let snapshot_damaged = slot.snapshot_damaged.lock().expect("slot lock").clone().filter(|(file, _, id)| {
        slot.data_disk.file_id(file) == Some(*id)
            && slot.data_disk.files().into_iter().filter(|(name, _)| name.ends_with(".snap")).map(|(name, _)| name).last().as_ref() == Some(file)
    });
    let read_faults_before = slot.wal_disk.read_faults_struck() + slot.data_disk.read_faults_struck();
    let opened = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Node::open(config, env))) {
        Ok(opened) => opened,
        Err(payload) => {
            member_panicked(&slot, &world, "opening its disk", panic_message(payload.as_ref()));
            return;
        }
    };
    match opened {
        Ok((node, handle, inbox)) => {
            if let Some((segment, offset)) = corrupted {
                world.violation(
                    "corruption-detected",
                    format!("m{} started although byte {offset} of {segment} was corrupted: the damage was skipped silently", slot.index),
                );
            }
            if let Some((file, offset, _)) = &snapshot_damaged {
                if world.last_recovery(slot.member_id()).is_none_or(|(_, passed_over)| passed_over == 0) {
                    world.violation(
                        "corruption-detected",
                        format!("m{} started without passing over {file}, whose byte {offset} was flipped: it loaded a damaged snapshot", slot.index),
                    );
                }
            }
            net.register(slot.member_id(), inbox);
            *slot.running.lock().expect("slot lock") = Some((handle, incarnation));
            slot.stopped_removed.store(false, Ordering::SeqCst);
            slot.stopped_for_space.store(false, Ordering::SeqCst);
            world.event("member", Some(slot.index), format!("started (incarnation {incarnation})"));
            match (CatchPanic(Box::pin(node.run()))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    *slot.running.lock().expect("slot lock") = None;
                    slot.down.store(true, Ordering::SeqCst);
                    slot.stopped_removed.store(matches!(error, FatalError::Removed), Ordering::SeqCst);
                    let no_space = matches!(
                        error,
                        FatalError::Disk(DiskError::NoSpace { .. }) | FatalError::Wal(WalError::Disk(DiskError::NoSpace { .. }))
                    );
                    slot.stopped_for_space.store(no_space, Ordering::SeqCst);
                    world.event("member", Some(slot.index), format!("stopped: {error}"));
                }
                Err(message) => member_panicked(&slot, &world, "running", message),
            }
        }
        Err(error) => {
            slot.down.store(true, Ordering::SeqCst);
            world.event("member", Some(slot.index), format!("refused to start: {error}"));
            // Power lost at an exact write while opening: a crash during start-up (the
            // fault restarts it), not a refusal to start from an undamaged disk.
            let powered_off = slot.wal_disk.is_powered_off() || slot.data_disk.is_powered_off();
            let disk_full = slot.wal_disk.has_capacity_limit() || slot.data_disk.has_capacity_limit();
            let read_failed = slot.wal_disk.read_faults_struck() + slot.data_disk.read_faults_struck() > read_faults_before;
            let damaged = corrupted.is_some() || snapshot_damaged.is_some();
            if !damaged && !failing_fsync && !powered_off && !disk_full && !read_failed {
                world.violation("member-start", format!("m{} refused to start from an undamaged disk: {error}", slot.index));
            }
        }
    }
}


/// A member that panicked is a finding, not the end of the run: the violation names the
/// panic, the member stays down (the liveness phase restarts it), and the seed's report
/// is written as for any other violation.
fn member_panicked(slot: &MemberSlot, world: &World, while_doing: &str, message: String) {
    *slot.running.lock().expect("slot lock") = None;
    slot.down.store(true, Ordering::SeqCst);
    world.event("member", Some(slot.index), format!("panicked while {while_doing}: {message}"));
    world.violation("member-panic", format!("m{} panicked while {while_doing}: {message}", slot.index));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// Polls a future, turning a panic inside it into `Err(message)`.
struct CatchPanic<F: std::future::Future>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Err(payload) => std::task::Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}
