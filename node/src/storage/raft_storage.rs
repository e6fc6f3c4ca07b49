//! [`NodeStorage`]: the `raft` crate's `Storage` for this member — the log in memory
//! ([`RaftLog`], mirroring the WAL) plus the latest snapshot's metadata.
//! The snapshot's data is not kept in memory a second time: when raft needs to send a
//! snapshot, it is read back from its file — by a job on the env's worker (a store-sized
//! file read on the loop would stop the leader for as long); raft is told the snapshot
//! is temporarily unavailable meanwhile and asks again, and the loaded copy is handed
//! over once, then dropped.

use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::Storage;
use raft::{GetEntriesContext, RaftState, StorageError};

use super::raft_log::RaftLog;
use super::SnapshotStore;

/// The raft log in memory (mirroring the WAL) and the latest snapshot's metadata.
#[derive(Clone)]
pub struct NodeStorage {
    log: Arc<Mutex<RaftLog>>,
    /// The latest snapshot without its data (index 0: none yet).
    latest_snapshot: Arc<Mutex<Snapshot>>,
    snapshots: Arc<SnapshotStore>,
    /// Where [`NodeStorage::compact_step`] is heading: the log's first index once done.
    compact_target: Arc<Mutex<u64>>,
    /// Runs the file reads raft's `snapshot()` asks for.
    worker: Arc<dyn crate::env::Worker>,
    /// The snapshot a read job loaded, waiting for raft to ask again; and whether a read
    /// job is running.
    loaded: Arc<Mutex<Option<Snapshot>>>,
    loading: Arc<std::sync::atomic::AtomicBool>,
    /// The index of the snapshot file being loaded or loaded and waiting (0: none): the
    /// loop keeps the log from it on, as for a fresh snapshot (see
    /// [`NodeStorage::snapshot_kept_for_index`]).
    loading_index: Arc<std::sync::atomic::AtomicU64>,
    /// raft asked for a snapshot for a member the latest one's configuration does not
    /// have (it was added after): the loop must make a fresh one.
    fresh_snapshot_wanted: Arc<std::sync::atomic::AtomicBool>,
    /// A fresh snapshot made in memory for such a member (never written to a file: the
    /// receiver makes it durable), and whether a job is making one.
    fresh: Arc<Mutex<Option<Snapshot>>>,
    fresh_making: Arc<std::sync::atomic::AtomicBool>,
    /// The index of the fresh snapshot being made or waiting for raft's next ask (0:
    /// none): the loop keeps the log from it on (see `NodeCore::log_kept_from`).
    fresh_index: Arc<std::sync::atomic::AtomicU64>,
    /// Planted bug `snapshot-predates-new-member` (simulator builds only).
    #[cfg(madsim)]
    pub planted_snapshot_predates_new_member: bool,
    /// Planted bug `snapshot-behind-compacted-log` (simulator builds only).
    #[cfg(madsim)]
    pub planted_snapshot_behind_compacted_log: bool,
    /// Planted bug `loaded-snapshot-must-be-newest` (simulator builds only).
    #[cfg(madsim)]
    pub planted_loaded_snapshot_must_be_newest: bool,
}

/// `snapshot` with its data dropped.
fn metadata_only(snapshot: &Snapshot) -> Snapshot {
    let mut kept = Snapshot::default();
    kept.set_metadata(snapshot.get_metadata().clone());
    kept
}

impl NodeStorage {
    /// Storage for a member that starts from `snapshot` (if any), then `entries`.
    /// The caller has checked that `entries` continue right after the snapshot. The log
    /// has room for `entries_reserved` entries before it grows (see `raft_log`).
    pub fn recover(
        conf_state: ConfState,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        snapshots: Arc<SnapshotStore>,
        worker: Arc<dyn crate::env::Worker>,
        entries_reserved: usize,
    ) -> raft::Result<Self> {
        let mut log = RaftLog::with_reserved(entries_reserved.max(entries.len()));
        let latest = match snapshot {
            Some(snapshot) => {
                let kept = metadata_only(snapshot);
                log.apply_snapshot(&kept)?;
                kept
            }
            None => {
                log.set_conf_state(conf_state.clone());
                let mut empty = Snapshot::default();
                empty.mut_metadata().set_conf_state(conf_state);
                empty
            }
        };
        log.append(entries);
        if let Some(mut hard_state) = hard_state {
            // A snapshot is only ever taken of committed state: its index is committed
            // even if the newest durable hard state predates it.
            let snapshot_meta = latest.get_metadata();
            hard_state.commit = hard_state.commit.max(snapshot_meta.index);
            hard_state.term = hard_state.term.max(snapshot_meta.term);
            log.set_hard_state(hard_state);
        }
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            latest_snapshot: Arc::new(Mutex::new(latest)),
            snapshots,
            compact_target: Arc::new(Mutex::new(0)),
            worker,
            loaded: Arc::new(Mutex::new(None)),
            loading: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            loading_index: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            fresh_snapshot_wanted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            fresh: Arc::new(Mutex::new(None)),
            fresh_making: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            fresh_index: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            #[cfg(madsim)]
            planted_snapshot_predates_new_member: false,
            #[cfg(madsim)]
            planted_snapshot_behind_compacted_log: false,
            #[cfg(madsim)]
            planted_loaded_snapshot_must_be_newest: false,
        })
    }

    fn log(&self) -> MutexGuard<'_, RaftLog> {
        self.log.lock().expect("raft log lock")
    }

    pub fn append(&self, entries: &[Entry]) -> raft::Result<()> {
        self.log().append(entries);
        Ok(())
    }

    pub fn set_hard_state(&self, hard_state: HardState) {
        self.log().set_hard_state(hard_state);
    }

    pub fn set_commit(&self, commit: u64) {
        self.log().set_commit(commit);
    }

    pub fn set_conf_state(&self, conf_state: ConfState) {
        self.log().set_conf_state(conf_state);
    }

    /// Installs a snapshot received from the leader (the log restarts after it). Its
    /// file must already be durable.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> raft::Result<()> {
        let kept = metadata_only(snapshot);
        self.log().apply_snapshot(&kept)?;
        *self.latest_snapshot.lock().expect("snapshot lock") = kept;
        Ok(())
    }

    /// Records a snapshot this member made (its file is durable); log entries before
    /// `compact_index` are dropped by later [`NodeStorage::compact_step`]s.
    pub fn set_snapshot(&self, snapshot: &Snapshot, compact_index: u64) {
        *self.latest_snapshot.lock().expect("snapshot lock") = metadata_only(snapshot);
        self.compact_towards(compact_index);
    }

    /// Moves the compaction point to `first_index` if that is further: the log in
    /// memory need not reach back to the latest snapshot (see `NodeStorage::snapshot`:
    /// a follower behind the log is then sent a fresh snapshot).
    pub fn compact_towards(&self, first_index: u64) {
        let mut target = self.compact_target.lock().expect("compact lock");
        *target = (*target).max(first_index);
    }

    /// Drops at most `entries_max` log entries towards the compaction point (the latest
    /// own snapshot's, or a further one, see [`NodeStorage::compact_towards`]), but none
    /// from `kept_from` on (a snapshot a follower is being caught up from: it goes on
    /// from there): freeing a hundred thousand entries at once stopped the loop for tens
    /// of milliseconds, a bounded step per turn does not.
    pub fn compact_step(&self, entries_max: u64, kept_from: Option<u64>) -> raft::Result<()> {
        let target = *self.compact_target.lock().expect("compact lock");
        let target = target.min(kept_from.unwrap_or(u64::MAX));
        let mut log = self.log();
        let first = log.first_index();
        if target <= first {
            return Ok(());
        }
        let step_to = target.min(first + entries_max).min(log.last_index() + 1);
        log.compact(step_to);
        Ok(())
    }

    /// Whether raft asked for a snapshot the latest one cannot serve (see
    /// `fresh_snapshot_wanted`) and no job is making one yet; a true answer means the
    /// caller starts that job (and hands its result to [`NodeStorage::set_fresh`]).
    pub fn take_fresh_snapshot_wanted(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.fresh_snapshot_wanted.swap(false, Ordering::SeqCst) && !self.fresh_making.swap(true, Ordering::SeqCst)
    }

    /// The job [`NodeStorage::take_fresh_snapshot_wanted`] asked for makes a snapshot at
    /// `index`: see [`NodeStorage::fresh_index`].
    pub fn note_fresh_index(&self, index: u64) {
        assert!(index > 0, "a fresh snapshot is of applied state");
        self.fresh_index.store(index, std::sync::atomic::Ordering::SeqCst);
    }

    /// The index of the fresh snapshot being made or not yet handed to raft, if any.
    /// Why the log keeps it: a snapshot is only sent if the follower can go on from it
    /// (see `Storage::snapshot`), and a log compacted past it while it was being made
    /// would have it refused on arrival — again and again, as long as making one takes
    /// longer than the compaction takes to pass it (a large store under steady writes).
    pub fn fresh_index(&self) -> Option<u64> {
        Some(self.fresh_index.load(std::sync::atomic::Ordering::SeqCst)).filter(|index| *index > 0)
    }

    /// The index of the snapshot file a job is loading for raft or has loaded and not
    /// yet handed over, if any. The log is kept from it for the same reason as from a
    /// fresh snapshot's: a load that takes longer than the leader takes to make its
    /// next snapshot (and compact its log to that one) would otherwise have every
    /// loaded snapshot refused, for as long as the writes go on (canary-slow-snapshots
    /// seed 197: a follower behind for the whole 8 s of writes).
    pub fn snapshot_kept_for_index(&self) -> Option<u64> {
        Some(self.loading_index.load(std::sync::atomic::Ordering::SeqCst)).filter(|index| *index > 0)
    }

    /// A fresh snapshot made in memory (by a job on the worker) for raft's next ask.
    pub fn set_fresh(&self, snapshot: Snapshot) {
        *self.fresh.lock().expect("fresh lock") = Some(snapshot);
        self.fresh_making.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn latest_snapshot_index(&self) -> u64 {
        self.latest_snapshot.lock().expect("snapshot lock").get_metadata().index
    }

    pub fn entry_term(&self, index: u64) -> raft::Result<u64> {
        self.log().term(index)
    }
}

impl Storage for NodeStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.log().raft_state())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        // Never fetched asynchronously: the log is in memory.
        self.log().entries(low, high, max_size.into())
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.log().term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.log().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.log().last_index())
    }

    /// The latest snapshot, read back from its file by a job on the worker (raft asks
    /// only to send it to a follower that is too far behind): the first ask starts the
    /// read and is told "temporarily unavailable"; an ask after the job finished gets it.
    /// If the file cannot be read, raft tries later and the read is started again.
    ///
    /// A member added after the latest snapshot is not in its configuration, and raft
    /// would refuse it there (a member must find itself in a snapshot's configuration):
    /// the loop is asked for a fresh snapshot — encoded in memory from a frozen copy of
    /// the state on the worker, never written here (a file write and read back of a
    /// gigabyte took 17 s of a 30 s join) — and raft hears "temporarily unavailable"
    /// until it exists; it is handed over once. The same when the latest snapshot does
    /// not reach the log in memory (compacted past it while a snapshot interval was
    /// stretched: `NodeStorage::compact_towards`): the follower would need entries the
    /// log no longer has right after it.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        use std::sync::atomic::Ordering;
        let unavailable = || Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        let latest = self.latest_snapshot.lock().expect("snapshot lock").get_metadata().clone();
        if latest.index < request_index || latest.index == 0 {
            return unavailable();
        }
        let log_first_index = self.log().first_index();
        // A follower at snapshot index S goes on with appends after S only if the leader
        // still knows S's term: the log holds S, or S is the log's own snapshot point. A
        // log compacted to exactly S + 1 by a stretched interval (not by this snapshot)
        // no longer does: raft then found S's term compacted, sent S again, the follower
        // (already at S) ignored it — for good (crash-every-write of canary-compacted-log
        // seed 7, member 1's WAL, write 964).
        let continues_from = |index: u64| index + 1 >= log_first_index && self.log().term(index).is_ok();
        let lists_to = |conf: &ConfState| conf.get_voters().iter().chain(conf.get_learners()).chain(conf.get_voters_outgoing()).chain(conf.get_learners_next()).any(|id| *id == to);
        // A file loaded for an earlier ask goes if the follower can go on from it, the
        // newest or not: a load that takes longer than the leader takes to make its next
        // snapshot would otherwise be dropped every time, for as long as writes go on
        // (the log is kept from it meanwhile: `snapshot_kept_for_index`).
        if let Some(snapshot) = self.loaded.lock().expect("loaded lock").take() {
            self.loading_index.store(0, Ordering::SeqCst);
            let metadata = snapshot.get_metadata();
            #[allow(unused_mut)]
            let mut fits = metadata.index >= request_index && continues_from(metadata.index) && lists_to(metadata.get_conf_state());
            #[cfg(madsim)]
            {
                let newest = metadata.index == latest.index;
                fits = (fits && (newest || !self.planted_loaded_snapshot_must_be_newest))
                    || (newest && self.planted_snapshot_behind_compacted_log && lists_to(metadata.get_conf_state()));
            }
            if fits {
                return Ok(snapshot);
            }
        }
        #[allow(unused_mut)]
        let mut reaches_log = continues_from(latest.index);
        #[cfg(madsim)]
        if self.planted_snapshot_behind_compacted_log {
            reaches_log = true;
        }
        #[allow(unused_mut)]
        let mut has_to = lists_to(latest.get_conf_state());
        #[cfg(madsim)]
        if self.planted_snapshot_predates_new_member {
            has_to = true;
        }
        if !has_to || !reaches_log {
            let mut fresh = self.fresh.lock().expect("fresh lock");
            let fits = |s: &Snapshot| {
                let conf = s.get_metadata().get_conf_state();
                s.get_metadata().index >= request_index
                    && continues_from(s.get_metadata().index)
                    && conf.get_voters().iter().chain(conf.get_learners()).any(|id| *id == to)
            };
            if let Some(snapshot) = fresh.take_if(|s| fits(s)) {
                // Raft now holds the follower in its snapshot state at this index (the
                // loop keeps the log from there while it does).
                self.fresh_index.store(0, Ordering::SeqCst);
                return Ok(snapshot);
            }
            self.fresh_snapshot_wanted.store(true, Ordering::SeqCst);
            return unavailable();
        }
        if !self.loading.swap(true, Ordering::SeqCst) {
            self.loading_index.store(latest.index, Ordering::SeqCst);
            let (files, loaded, loading, loading_index) = (self.snapshots.clone(), self.loaded.clone(), self.loading.clone(), self.loading_index.clone());
            self.worker.run(Box::new(move || {
                match files.load(latest.term, latest.index) {
                    Ok(snapshot) => *loaded.lock().expect("loaded lock") = Some(snapshot),
                    Err(_) => loading_index.store(0, Ordering::SeqCst),
                }
                loading.store(false, Ordering::SeqCst);
            }));
        }
        unavailable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry { index, term: 1, ..Default::default() }
    }

    /// Storage recovered from a snapshot at 1 (voters 1, 2, 3) and entries 2..=20.
    fn storage_after_snapshot_at_1_with_entries_to_20() -> NodeStorage {
        let disk: Arc<dyn crate::env::Disk> = Arc::new(crate::env::mem_disk::MemDisk::new());
        storage_over(Arc::new(SnapshotStore::new(disk)), Arc::new(crate::env::InlineWorker))
    }

    /// The same over the given snapshot files and worker.
    fn storage_over(files: Arc<SnapshotStore>, worker: Arc<dyn crate::env::Worker>) -> NodeStorage {
        let entries: Vec<Entry> = (2..=20).map(entry).collect();
        NodeStorage::recover(ConfState::default(), Some(&snapshot_at(1, vec![1, 2, 3])), &entries, None, files, worker, 64).expect("recovers")
    }

    /// A worker that holds its jobs until the test runs them.
    #[derive(Default)]
    struct HeldWorker {
        jobs: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    }

    impl crate::env::Worker for HeldWorker {
        fn run(&self, job: Box<dyn FnOnce() + Send>) {
            self.jobs.lock().expect("jobs").push(job);
        }
    }

    impl HeldWorker {
        fn run_held(&self) {
            let jobs = std::mem::take(&mut *self.jobs.lock().expect("jobs"));
            for job in jobs {
                job();
            }
        }
    }

    /// The snapshot file at 8 is being loaded for a follower behind the log when the
    /// member makes its next snapshot, at 14, and would compact its log to it: the log is
    /// kept from 8 while the load runs, and the loaded snapshot is sent although it is no
    /// longer the newest — before, it was dropped for not being the latest and a new load
    /// started, again and again for as long as loads took longer than snapshots came
    /// (canary-slow-snapshots seed 197).
    #[test]
    fn a_snapshot_file_loaded_while_a_newer_one_was_made_is_sent() {
        let disk: Arc<dyn crate::env::Disk> = Arc::new(crate::env::mem_disk::MemDisk::new());
        let files = Arc::new(SnapshotStore::new(disk));
        let worker = Arc::new(HeldWorker::default());
        let storage = storage_over(files.clone(), worker.clone());
        for index in [8, 14] {
            files.save(snapshot_at(index, vec![1, 2, 3]).get_metadata(), &&[7u8; 3][..], crate::storage::SnapshotWriter::Own).expect("saved");
        }
        storage.set_snapshot(&snapshot_at(8, vec![1, 2, 3]), 8);
        storage.compact_step(100, None).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 8);
        assert!(matches!(storage.snapshot(0, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))), "the load starts");
        assert_eq!(storage.snapshot_kept_for_index(), Some(8));
        storage.set_snapshot(&snapshot_at(14, vec![1, 2, 3]), 14);
        storage.compact_step(100, storage.snapshot_kept_for_index()).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 8, "kept from the snapshot being loaded on");
        worker.run_held();
        let sent = storage.snapshot(0, 2).expect("the loaded snapshot");
        assert_eq!(sent.get_metadata().index, 8);
        assert_eq!(sent.get_data(), &[7u8; 3][..]);
        assert_eq!(storage.snapshot_kept_for_index(), None, "handed to raft");
        let following = storage.entries(9, 21, None, raft::GetEntriesContext::empty(false)).expect("what follows the snapshot");
        assert_eq!(following.len(), 12);
        storage.compact_step(100, None).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 14, "nothing keeps the log now");
    }

    fn snapshot_at(index: u64, voters: Vec<u64>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 1;
        snapshot.mut_metadata().mut_conf_state().voters = voters;
        snapshot
    }

    #[test]
    fn a_follower_behind_a_log_compacted_past_the_latest_snapshot_is_sent_a_fresh_one() {
        let storage = storage_after_snapshot_at_1_with_entries_to_20();
        storage.compact_towards(10);
        storage.compact_step(100, None).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 10);
        let unavailable = |result: raft::Result<Snapshot>| {
            matches!(result, Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)))
        };
        // The file's snapshot at 1 would leave the follower needing entries 2..9.
        assert!(unavailable(storage.snapshot(0, 2)));
        assert!(storage.take_fresh_snapshot_wanted(), "the loop is asked for a fresh snapshot");
        storage.set_fresh(snapshot_at(15, vec![1, 2, 3]));
        let sent = storage.snapshot(0, 2).expect("the fresh snapshot");
        assert_eq!(sent.get_metadata().index, 15);
        assert!(unavailable(storage.snapshot(0, 2)), "handed over once");
    }

    /// A fresh snapshot is being made at 12 while a stretched interval moves the
    /// compaction point on to 16: the loop keeps the log from 12, so the snapshot still
    /// fits when it arrives and the follower can go on from it; then the compaction
    /// catches up. Without the pin the snapshot would be refused on arrival.
    #[test]
    fn the_log_keeps_a_fresh_snapshot_being_made() {
        let storage = storage_after_snapshot_at_1_with_entries_to_20();
        storage.compact_towards(10);
        storage.compact_step(100, None).expect("compacts");
        assert!(matches!(storage.snapshot(0, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
        assert!(storage.take_fresh_snapshot_wanted(), "the loop is asked for a fresh snapshot");
        assert_eq!(storage.fresh_index(), None);
        storage.note_fresh_index(12);
        storage.compact_towards(16);
        storage.compact_step(100, storage.fresh_index()).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 12, "kept from the fresh snapshot on");
        storage.set_fresh(snapshot_at(12, vec![1, 2, 3]));
        assert_eq!(storage.fresh_index(), Some(12), "made, not yet handed to raft");
        let sent = storage.snapshot(0, 2).expect("the fresh snapshot fits");
        assert_eq!(sent.get_metadata().index, 12);
        assert_eq!(storage.fresh_index(), None, "raft holds the follower at 12 now");
        let following = storage.entries(13, 21, None, raft::GetEntriesContext::empty(false)).expect("what follows the snapshot");
        assert_eq!(following.len(), 8);
        storage.compact_step(100, None).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 16, "nothing keeps the log now");
    }

    /// The latest snapshot ends right before the log, but the log was compacted there by
    /// a stretched interval: the term of the snapshot's index is gone with its entry, so
    /// a follower at that snapshot could never be sent what follows (raft would send the
    /// snapshot again and again). A fresh one is made instead.
    #[test]
    fn a_snapshot_whose_last_term_the_log_lost_is_not_sent() {
        let storage = storage_after_snapshot_at_1_with_entries_to_20();
        // An own snapshot at 9 whose compaction keeps the catch-up entries...
        storage.set_snapshot(&snapshot_at(9, vec![1, 2, 3]), 7);
        storage.compact_step(100, None).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 7);
        // ...then a stretched interval's compaction to exactly 10.
        storage.compact_towards(10);
        storage.compact_step(100, None).expect("compacts");
        assert_eq!(storage.first_index().expect("first index"), 10);
        assert!(storage.term(9).is_err(), "the term of 9 went with its entry");
        let unavailable = |result: raft::Result<Snapshot>| {
            matches!(result, Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)))
        };
        assert!(unavailable(storage.snapshot(0, 2)), "not the snapshot at 9");
        assert!(storage.take_fresh_snapshot_wanted(), "the loop is asked for a fresh snapshot");
        // A fresh one at the same point would not do either; one inside the log does.
        storage.set_fresh(snapshot_at(9, vec![1, 2, 3]));
        assert!(unavailable(storage.snapshot(0, 2)));
        storage.set_fresh(snapshot_at(12, vec![1, 2, 3]));
        assert_eq!(storage.snapshot(0, 2).expect("the fresh snapshot").get_metadata().index, 12);
    }
}
