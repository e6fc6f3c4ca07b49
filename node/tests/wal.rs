//! WAL recovery: torn tails are cut, corruption anywhere else is an error, overrides and
//! snapshot marks replay the way raft wrote them, and release keeps what replay needs.

use std::sync::Arc;

use detcd_node::env::mem_disk::MemDisk;
use detcd_node::env::Disk;
use detcd_node::storage::wal::{record_spans, Wal, WalError};
use raft::eraftpb::{Entry, HardState};

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = data.to_vec().into();
    e
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

fn write_entries(disk: &Arc<MemDisk>, entries: &[Entry], segment_bytes_max: u64) -> Wal {
    let (mut wal, replayed) = Wal::open(disk.clone(), 0, segment_bytes_max).expect("open");
    assert!(replayed.entries.is_empty());
    for e in entries {
        wal.append_entries(std::slice::from_ref(e)).expect("append");
        wal.sync().expect("sync");
    }
    wal
}

/// Where the records of `segment` end (the file goes on with reserved zeros).
fn records_end(disk: &MemDisk, segment: &str) -> usize {
    record_spans(&disk.bytes_of(segment).expect("segment")).last().map_or(0, |(_, end)| *end)
}

fn only_segment(disk: &MemDisk) -> String {
    let files = disk.files();
    assert_eq!(files.len(), 1, "one segment: {files:?}");
    files[0].0.clone()
}

#[test]
fn replay_returns_what_was_synced() {
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _) = Wal::open(disk.clone(), 0, 1 << 20).expect("open");
    let syncs_before = disk.syncs();
    wal.append_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).expect("append");
    wal.append_hard_state(&hard_state(1, 7, 2)).expect("hs");
    assert!(wal.sync().expect("sync"), "a batch is one sync");
    assert_eq!(disk.syncs(), syncs_before + 1);
    drop(wal);
    let (_, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("reopen");
    assert_eq!(replayed.entries, vec![entry(1, 1, b"a"), entry(2, 1, b"b")]);
    assert_eq!(replayed.hard_state, Some(hard_state(1, 7, 2)));
    assert_eq!(replayed.torn_tail_truncated_at, None);
}

#[test]
fn unsynced_records_are_lost_at_crash_and_synced_ones_are_not() {
    let disk = Arc::new(MemDisk::new());
    let mut wal = write_entries(&disk, &[entry(1, 1, b"a")], 1 << 20);
    wal.append_entries(&[entry(2, 1, b"never synced")]).expect("append");
    // Queued records are written only by sync; write them without syncing by hand.
    let segment = only_segment(&disk);
    disk.append(&segment, b"garbage that was never synced").expect("raw append");
    disk.crash(|_, _| 0);
    let (_, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("reopen");
    assert_eq!(replayed.entries, vec![entry(1, 1, b"a")]);
}

#[test]
fn torn_tail_is_truncated_and_the_member_starts() {
    let disk = Arc::new(MemDisk::new());
    write_entries(&disk, &[entry(1, 1, b"first"), entry(2, 1, b"second")], 1 << 20);
    let segment = only_segment(&disk);
    let full_len = records_end(&disk, &segment);
    // Tear the last record: cut 3 bytes off its end.
    disk.truncate(&segment, (full_len - 3) as u64).expect("tear");
    let (mut wal, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("a torn tail is not fatal");
    assert_eq!(replayed.entries, vec![entry(1, 1, b"first")]);
    let (cut_segment, offset) = replayed.torn_tail_truncated_at.expect("the tear is reported");
    assert_eq!(cut_segment, segment);
    assert_eq!(records_end(&disk, &segment), offset as usize);
    assert_eq!(disk.file_len(&segment), Some(1 << 20), "the room is reserved again after the cut");
    // The WAL keeps working after the cut.
    wal.append_entries(&[entry(2, 1, b"again")]).expect("append");
    wal.sync().expect("sync");
    let (_, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("reopen");
    assert_eq!(replayed.entries, vec![entry(1, 1, b"first"), entry(2, 1, b"again")]);
}

#[test]
fn torn_tail_with_garbage_length_is_truncated() {
    let disk = Arc::new(MemDisk::new());
    write_entries(&disk, &[entry(1, 1, b"first")], 1 << 20);
    let segment = only_segment(&disk);
    disk.append(&segment, &[0xff, 0xff, 0xff, 0x7f, 1, 2]).expect("garbage");
    disk.sync(&segment).expect("sync");
    let (_, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("torn tail");
    assert_eq!(replayed.entries, vec![entry(1, 1, b"first")]);
    assert!(replayed.torn_tail_truncated_at.is_some());
}

#[test]
fn crc_corruption_before_the_tail_is_an_error() {
    let disk = Arc::new(MemDisk::new());
    write_entries(&disk, &[entry(1, 1, b"first"), entry(2, 1, b"second"), entry(3, 1, b"third")], 1 << 20);
    let segment = only_segment(&disk);
    // Flip a byte inside the first entry's payload; two good records follow it.
    let bytes = disk.read(&segment).expect("read");
    let position = bytes.windows(5).position(|w| w == b"first").expect("payload present");
    assert!(disk.corrupt_byte(&segment, position));
    match Wal::open(disk.clone(), 0, 1 << 20) {
        Err(WalError::Corrupt { segment: s, detail, .. }) => {
            assert_eq!(s, segment);
            assert!(detail.contains("CRC"), "{detail}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("corruption before the tail must not be skipped"),
    }
}

#[test]
fn corruption_in_an_older_segment_is_an_error() {
    let disk = Arc::new(MemDisk::new());
    // Tiny segments: every batch starts a new one.
    write_entries(&disk, &[entry(1, 1, b"one"), entry(2, 1, b"two"), entry(3, 1, b"three")], 1);
    let files = disk.files();
    assert!(files.len() >= 3, "segments were cut: {files:?}");
    let first = files[0].0.clone();
    let last_byte = disk.file_len(&first).expect("len") - 1;
    disk.corrupt_byte(&first, last_byte);
    assert!(matches!(Wal::open(disk.clone(), 0, 1), Err(WalError::Corrupt { .. })));
}

#[test]
fn later_entries_override_and_snapshot_marks_reset() {
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _) = Wal::open(disk.clone(), 0, 1 << 20).expect("open");
    wal.append_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")]).expect("append");
    wal.sync().expect("sync");
    // A new leader overwrote index 2 onwards.
    wal.append_entries(&[entry(2, 2, b"B")]).expect("append");
    wal.sync().expect("sync");
    let (_, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("reopen");
    assert_eq!(replayed.entries, vec![entry(1, 1, b"a"), entry(2, 2, b"B")]);

    let (mut wal, _) = Wal::open(disk.clone(), 0, 1 << 20).expect("reopen");
    wal.append_snapshot_mark(10, 3).expect("mark");
    wal.append_entries(&[entry(11, 3, b"k")]).expect("append");
    wal.sync().expect("sync");
    let (_, replayed) = Wal::open(disk.clone(), 10, 1 << 20).expect("reopen");
    assert_eq!(replayed.entries, vec![entry(11, 3, b"k")]);
}

#[test]
fn a_new_segment_starts_with_a_durable_hard_state() {
    // Regression (found by the simulator, canary-single-member seed 12): a segment cut
    // after a snapshot let older segments go while its hard state was still unsynced,
    // so power loss took the vote and the commit index with it.
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _) = Wal::open(disk.clone(), 0, 1).expect("open");
    wal.append_entries(&[entry(1, 1, b"a")]).expect("append");
    wal.append_hard_state(&hard_state(3, 9, 1)).expect("hs");
    wal.sync().expect("sync");
    // The next batch cuts a segment; release everything the snapshot at 1 covers.
    wal.append_entries(&[entry(2, 3, b"b")]).expect("append cuts");
    wal.release(1, 1).expect("release");
    disk.crash(|_, _| 0);
    let (_, replayed) = Wal::open(disk.clone(), 1, 1).expect("reopen");
    assert_eq!(replayed.hard_state, Some(hard_state(3, 9, 1)), "term, vote and commit survive");
}

#[test]
fn release_keeps_segments_replay_needs() {
    let disk = Arc::new(MemDisk::new());
    let entries: Vec<Entry> = (1..=6).map(|i| entry(i, 1, b"x")).collect();
    let mut wal = write_entries(&disk, &entries, 1);
    wal.append_hard_state(&hard_state(1, 1, 6)).expect("hs");
    wal.sync().expect("sync");
    let before = wal.segment_names().len();
    let released = wal.release(4, 2).expect("release");
    assert!(released > 0);
    assert_eq!(wal.segment_names().len(), before - released);
    // Replaying from the snapshot at 4 still yields 5 and 6, and the hard state.
    let (_, replayed) = Wal::open(disk.clone(), 4, 1).expect("reopen");
    assert_eq!(replayed.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(replayed.hard_state.map(|h| h.commit), Some(6));
}

/// A WAL of 200-byte segments holding one synced entry and, written without sync after
/// it, a commit-only hard state (what raft does not need durable at once).
fn wal_with_unsynced_commit() -> (Arc<MemDisk>, Wal) {
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _) = Wal::open(disk.clone(), 0, 200).expect("open");
    wal.append_entries(&[entry(1, 1, &[7; 150])]).expect("append");
    wal.sync().expect("sync");
    wal.append_hard_state(&hard_state(1, 1, 1)).expect("commit-only hard state");
    wal.write_without_sync().expect("write");
    (disk, wal)
}

#[test]
fn a_cut_syncs_what_the_old_segment_holds_unsynced() {
    // Commit-only hard states are written without sync; a cut must not leave them
    // unsynced in what becomes an older segment, or power loss tears a record there
    // and the member can never start again (replay calls it corruption).
    let (disk, mut wal) = wal_with_unsynced_commit();
    assert!(wal.has_unsynced_bytes());
    wal.append_entries(&[entry(2, 1, b"next")]).expect("append cuts a new segment");
    wal.sync().expect("sync");
    assert_eq!(wal.segment_names().len(), 2, "the segment was cut");
    drop(wal);
    // Power loss keeps a torn prefix of whatever is still unsynced anywhere.
    disk.crash(|_, unsynced| unsynced / 2);
    let (_, replayed) = Wal::open(disk.clone(), 0, 200).expect("the member starts after power loss");
    assert_eq!(replayed.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn a_zero_filled_tail_is_the_end_of_the_log() {
    // Some file systems expose zeros where unsynced appends were after power loss.
    let disk = Arc::new(MemDisk::new());
    write_entries(&disk, &[entry(1, 1, b"a"), entry(2, 1, b"b")], 1 << 20);
    let segment = only_segment(&disk);
    disk.truncate(&segment, records_end(&disk, &segment) as u64).expect("no reserved room");
    disk.append(&segment, &[0u8; 300]).expect("zeros");
    let (_, replayed) = Wal::open(disk.clone(), 0, 1 << 20).expect("zeros to the end are the end of the log");
    assert_eq!(replayed.entries.len(), 2);
    assert_eq!(replayed.torn_tail_truncated_at, None, "zeros are the end of the log, not a tear");
}

#[test]
fn the_newest_segment_is_preallocated_and_an_older_one_ends_at_its_records() {
    let disk = Arc::new(MemDisk::new());
    let segment_bytes_max = 4096;
    let mut wal = write_entries(&disk, &[entry(1, 1, b"a")], segment_bytes_max);
    let first = only_segment(&disk);
    assert_eq!(disk.file_len(&first), Some(segment_bytes_max as usize), "reserved to the segment size");
    let syncs_before = disk.syncs();
    let writes_before = disk.writes();
    wal.append_entries(&[entry(2, 1, b"b")]).expect("append");
    wal.sync().expect("sync");
    assert_eq!((disk.syncs() - syncs_before, disk.writes() - writes_before), (1, 2), "one write into the room, one sync");
    assert_eq!(disk.file_len(&first), Some(segment_bytes_max as usize), "writes into the room do not grow the file");
    // Fill the segment; the next append cuts.
    let big = vec![7u8; segment_bytes_max as usize];
    wal.append_entries(&[entry(3, 1, &big)]).expect("append");
    wal.sync().expect("sync");
    wal.append_entries(&[entry(4, 1, b"d")]).expect("append (cuts)");
    wal.sync().expect("sync");
    let files = disk.files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0].1, records_end(&disk, &files[0].0), "an older segment holds no zeros");
    assert_eq!(files[1].1, segment_bytes_max as usize, "the new segment is reserved");
    drop(wal);
    // Power loss: the unsynced tail of the reserved segment reads as zeros; replay ends
    // there without calling it a tear, and appends go on where the records end.
    let (mut wal, replayed) = Wal::open(disk.clone(), 0, segment_bytes_max).expect("reopen");
    assert_eq!(replayed.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(replayed.torn_tail_truncated_at, None);
    wal.append_entries(&[entry(5, 1, b"e")]).expect("append");
    wal.write_without_sync().expect("write");
    disk.crash(|_, _| 0);
    let (mut wal, replayed) = Wal::open(disk.clone(), 0, segment_bytes_max).expect("reopen after power loss");
    assert_eq!(replayed.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(replayed.torn_tail_truncated_at, None);
    wal.append_entries(&[entry(5, 2, b"e2")]).expect("append");
    wal.sync().expect("sync");
    let (_, replayed) = Wal::open(disk.clone(), 0, segment_bytes_max).expect("reopen");
    assert_eq!(replayed.entries.last(), Some(&entry(5, 2, b"e2")));
}

#[test]
fn zeros_in_an_older_segment_are_corruption() {
    let disk = Arc::new(MemDisk::new());
    let mut wal = write_entries(&disk, &[entry(1, 1, &[1u8; 600])], 512);
    wal.append_entries(&[entry(2, 1, b"b")]).expect("append (cuts)");
    wal.sync().expect("sync");
    drop(wal);
    let files = disk.files();
    assert_eq!(files.len(), 2, "{files:?}");
    // The older segment grows zeros, as if its reserved room had never been cut away.
    disk.append(&files[0].0, &[0u8; 64]).expect("zeros");
    disk.sync(&files[0].0).expect("sync");
    match Wal::open(disk.clone(), 0, 512) {
        Err(WalError::Corrupt { segment, .. }) => assert_eq!(segment, files[0].0),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("zeros in an older segment must not be passed over"),
    }
}

#[test]
fn a_flipped_length_before_valid_records_is_corruption_not_a_torn_tail() {
    let disk = Arc::new(MemDisk::new());
    write_entries(&disk, &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")], 1 << 20);
    let segment = only_segment(&disk);
    let spans = detcd_node::storage::wal::record_spans(&disk.read(&segment).expect("read"));
    assert!(spans.len() >= 4, "hard state and three entries: {spans:?}");
    // Flip the top byte of the first entry's length: it now claims to run past the end
    // of the file, as a torn record would — but synced, valid records follow it.
    let (first_entry_start, _) = spans[1];
    disk.corrupt_byte(&segment, first_entry_start + 3);
    match Wal::open(disk.clone(), 0, 1 << 20) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, first_entry_start as u64),
        Ok((_, replayed)) => panic!("synced entries were cut silently: replayed {} entries", replayed.entries.len()),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn open_makes_what_an_earlier_process_left_unsynced_durable() {
    // A process crash keeps the page cache: the next process replays bytes that are not
    // durable. Found by the simulator (canary-torn-wal seed 84): a later cut left them
    // unsynced in an older segment, and power loss then tore that segment.
    let (disk, wal) = wal_with_unsynced_commit();
    drop(wal); // process crash: the bytes stay in the page cache
    let (mut wal, _) = Wal::open(disk.clone(), 0, 200).expect("reopen");
    wal.append_entries(&[entry(2, 1, b"next")]).expect("append cuts a new segment");
    wal.sync().expect("sync");
    drop(wal);
    disk.power_loss(|_, _, _| detcd_node::env::mem_disk::UnsyncedFate::ZeroFilledFrom(0));
    let (_, replayed) = Wal::open(disk.clone(), 0, 200).expect("the member starts after power loss");
    assert_eq!(replayed.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
}

fn spare_names(disk: &MemDisk) -> Vec<String> {
    disk.files().into_iter().map(|(name, _)| name).filter(|name| name.ends_with(".spare")).collect()
}

/// The indexes a fresh open of `disk` replays.
fn replayed_indexes(disk: &Arc<MemDisk>, segment_bytes_max: u64) -> Vec<u64> {
    let (_, replayed) = Wal::open(disk.clone(), 0, segment_bytes_max).expect("reopen");
    replayed.entries.iter().map(|e| e.index).collect()
}

#[test]
fn a_cut_renames_the_spare_prepared_away_from_the_loop() {
    let disk = Arc::new(MemDisk::new());
    let segment_bytes_max = 4096;
    let mut wal = write_entries(&disk, &[entry(1, 1, b"a")], segment_bytes_max);
    // The first segment's room is only reserved: a spare is wanted at once.
    let job = wal.spare_wanted().expect("a spare for a segment that is not zeroed");
    assert!(wal.spare_wanted().is_none(), "one spare at a time");
    let prepared = job.run();
    let spare = spare_names(&disk);
    assert_eq!(spare.len(), 1, "{:?}", disk.files());
    assert_eq!(disk.file_len(&spare[0]), Some(segment_bytes_max as usize), "the spare has the segment's room");
    let spare_id = disk.file_id(&spare[0]);
    wal.spare_prepared(prepared);
    // The next batch cuts to it, however little the segment holds.
    wal.append_entries(&[entry(2, 1, b"b")]).expect("append (cuts)");
    wal.sync().expect("sync");
    let segments = wal.segment_names();
    assert_eq!(segments.len(), 2);
    assert_eq!(disk.file_id(&segments[1]), spare_id, "the new segment is the spare, renamed");
    assert_eq!(disk.file_len(&segments[1]), Some(segment_bytes_max as usize), "with its room");
    assert!(spare_names(&disk).is_empty());
    // A zeroed segment asks for the next spare once half full.
    assert!(wal.spare_wanted().is_none(), "a zeroed segment, not half full");
    wal.append_entries(&[entry(3, 1, &[3u8; 2100])]).expect("append");
    wal.sync().expect("sync");
    assert!(wal.spare_wanted().is_some(), "half full");
    // Power loss: the renamed spare replays as a segment cut in place would.
    wal.append_entries(&[entry(4, 1, b"d")]).expect("append");
    wal.write_without_sync().expect("write");
    disk.crash(|_, _| 0);
    assert_eq!(replayed_indexes(&disk, segment_bytes_max), vec![1, 2, 3]);
}

#[test]
fn a_cut_before_the_spare_is_ready_creates_its_segment_and_keeps_the_spare() {
    let disk = Arc::new(MemDisk::new());
    let segment_bytes_max = 4096;
    let mut wal = write_entries(&disk, &[entry(1, 1, b"a")], segment_bytes_max);
    let job = wal.spare_wanted().expect("a spare at once");
    wal.append_entries(&[entry(2, 1, &[2u8; 4100])]).expect("append");
    wal.sync().expect("sync");
    wal.append_entries(&[entry(3, 1, b"c")]).expect("append (cuts in place while the spare is prepared)");
    wal.sync().expect("sync");
    assert_eq!(wal.segment_names().len(), 2);
    // The job finishes after that cut: the spare replaces the segment cut in place.
    wal.spare_prepared(job.run());
    let spare = spare_names(&disk);
    assert_eq!(spare.len(), 1);
    let spare_id = disk.file_id(&spare[0]);
    assert!(wal.spare_wanted().is_none(), "a spare is ready");
    wal.append_entries(&[entry(4, 1, b"d")]).expect("append (cuts)");
    wal.sync().expect("sync");
    let segments = wal.segment_names();
    assert_eq!(segments.len(), 3);
    assert_eq!(disk.file_id(&segments[2]), spare_id, "the next cut took it");
    assert_eq!(replayed_indexes(&disk, segment_bytes_max), vec![1, 2, 3, 4]);
}

#[test]
fn a_spare_that_failed_or_was_left_by_a_crash_is_never_used() {
    let disk = Arc::new(MemDisk::new());
    let segment_bytes_max = 4096;
    let mut wal = write_entries(&disk, &[entry(1, 1, b"a")], segment_bytes_max);
    // No room for the spare: its preparation fails and leaves no file.
    let used = disk.used_bytes();
    disk.set_capacity_bytes(Some(used + 100));
    let job = wal.spare_wanted().expect("a spare at once");
    wal.spare_prepared(job.run());
    assert!(spare_names(&disk).is_empty(), "{:?}", disk.files());
    assert!(wal.spare_wanted().is_none(), "no new attempt within this segment");
    disk.set_capacity_bytes(None);
    wal.append_entries(&[entry(2, 1, b"b")]).expect("append (no spare: no cut)");
    wal.sync().expect("sync");
    assert_eq!(wal.segment_names().len(), 1);
    wal.append_entries(&[entry(3, 1, &[3u8; 4100])]).expect("append");
    wal.sync().expect("sync");
    wal.append_entries(&[entry(4, 1, b"d")]).expect("append (cuts in place)");
    wal.sync().expect("sync");
    assert_eq!(wal.segment_names().len(), 2);
    // The new segment asks again; a crash leaves the spare the job prepared.
    let job = wal.spare_wanted().expect("asked again in the next segment");
    drop(job.run());
    assert_eq!(spare_names(&disk).len(), 1);
    drop(wal);
    disk.crash(|_, _| 0);
    assert_eq!(replayed_indexes(&disk, segment_bytes_max), vec![1, 2, 3, 4]);
    assert!(spare_names(&disk).is_empty(), "open removes a spare an earlier process left");
}
