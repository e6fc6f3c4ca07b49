//! An in-memory [`Disk`] that knows which bytes are durable: the simulated twin of
//! `fs_disk`, used by the simulator and by crash-consistency tests.
//!
//! Every file holds its bytes and the length of its durable prefix. `append` and
//! `write_at` extend the live bytes; `sync` makes them durable; [`MemDisk::crash`] throws
//! away what was not synced (keeping, if the caller says so, a torn prefix of it).
//! `preallocate` reserves room the file reads as zeros, durably: unsynced writes into it
//! that a crash throws away read as zeros again, as on a real file system. Faults can be armed:
//! a capacity (ENOSPC), a failing sync (which poisons the disk, like a real one must be
//! treated), and corruption of durable bytes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Disk, DiskError};

#[derive(Clone, Debug, Default)]
struct MemFile {
    /// What was written, from the start of the file.
    bytes: Vec<u8>,
    durable_len: usize,
    /// The size [`Disk::preallocate`] gave the file (durable): past `bytes` it reads as
    /// zeros.
    reserved_len: usize,
    /// Which file this is: set when it is created, kept through renames (a file
    /// written again under the same name is another file).
    id: u64,
}

impl MemFile {
    /// The file's size as a reader sees it.
    fn size(&self) -> usize {
        self.bytes.len().max(self.reserved_len)
    }

    /// The file as a reader sees it: the bytes, then the reserved room's zeros.
    fn content(&self) -> Vec<u8> {
        let mut content = self.bytes.clone();
        content.resize(self.size(), 0);
        content
    }
}

#[derive(Debug, Default)]
struct MemDiskState {
    files: BTreeMap<String, MemFile>,
    /// The id the next created file gets.
    next_file_id: u64,
    capacity_bytes: Option<u64>,
    fail_next_sync: bool,
    poisoned_by: Option<String>,
    syncs: u64,
    /// Write operations left before power is lost (`None`: not armed).
    power_loss_after_ops: Option<u64>,
    /// Power was lost at an exact operation: every later operation fails until the
    /// harness restores power (see [`MemDisk::arm_power_loss`]).
    powered_off: bool,
    /// Reads left that go wrong (see [`MemDisk::fail_next_reads`]).
    read_faults_left: u64,
    /// How they go wrong: `None` an I/O error; `Some(n)` the read returns the file with
    /// byte `n % len` flipped (a latent sector error the disk does not report).
    read_fault_flips: Option<u64>,
    /// Reads that went wrong so far.
    read_faults_struck: u64,
    /// Write operations so far (create, append, write_at, preallocate, truncate, sync,
    /// rename, remove).
    writes: u64,
    /// `write_back` calls so far (not write operations: they make nothing durable).
    write_backs: u64,
    /// Renames done so far (on a WAL disk: spares a cut took).
    renames: u64,
}

/// What an armed power loss does to the operation it strikes.
enum Strike {
    /// Not armed, or not yet: perform the operation.
    No,
    /// Power goes now: an append still reaches the page cache (unsynced; its sectors
    /// may survive torn), any other operation does not happen.
    Now,
}

impl MemDiskState {
    /// Counts one write operation against an armed power loss.
    fn strike(&mut self) -> Strike {
        self.writes += 1;
        match self.power_loss_after_ops {
            Some(0) | Some(1) => {
                self.power_loss_after_ops = None;
                self.powered_off = true;
                Strike::Now
            }
            Some(left) => {
                self.power_loss_after_ops = Some(left - 1);
                Strike::No
            }
            None => Strike::No,
        }
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size() as u64).sum()
    }

    /// `NoSpace` if growing the disk's files by `growth_bytes` passes its capacity.
    fn check_room(&self, path: &str, growth_bytes: u64) -> Result<(), DiskError> {
        match self.capacity_bytes {
            Some(capacity) if self.used_bytes() + growth_bytes > capacity => Err(DiskError::NoSpace { path: path.to_string() }),
            _ => Ok(()),
        }
    }

    fn check_writable(&self, path: &str) -> Result<(), DiskError> {
        if self.powered_off {
            return Err(DiskError::Io { path: path.to_string(), detail: "power lost".to_string() });
        }
        match &self.poisoned_by {
            Some(detail) => Err(DiskError::Io {
                path: path.to_string(),
                detail: format!("disk refused writes after an earlier failed fsync: {detail}"),
            }),
            None => Ok(()),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MemDisk {
    state: Mutex<MemDiskState>,
}

/// What power loss does to one file's unsynced bytes (see [`MemDisk::power_loss`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsyncedFate {
    /// Gone: the file ends at its durable length.
    Lost,
    /// Kept up to this length of the file (a torn write when it cuts a record).
    KeptUpTo(usize),
    /// The file keeps its length, but from this offset on it holds zeros.
    ZeroFilledFrom(usize),
}

/// What a crash left of one file's unsynced bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLoss {
    pub path: String,
    pub unsynced_bytes: usize,
    pub kept_bytes: usize,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// A blank disk in place of this one (a machine replaced by a new one): no files, no
    /// faults, no limits.
    pub fn replace_with_blank(&self) {
        *self.lock() = MemDiskState::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemDiskState> {
        self.state.lock().expect("mem disk lock")
    }

    /// Simulates power loss: every file keeps its durable bytes plus however many of its
    /// unsynced bytes `keep_unsynced(path, unsynced_len)` returns (a torn write when it is
    /// neither 0 nor all). Clears armed faults' poison: a restarted machine has a fresh
    /// page cache.
    pub fn crash(&self, mut keep_unsynced: impl FnMut(&str, usize) -> usize) -> Vec<CrashLoss> {
        let mut state = self.lock();
        let mut losses = Vec::new();
        for (path, file) in state.files.iter_mut() {
            let unsynced = file.bytes.len() - file.durable_len;
            if unsynced == 0 {
                continue;
            }
            let kept = keep_unsynced(path, unsynced).min(unsynced);
            file.bytes.truncate(file.durable_len + kept);
            file.durable_len = file.bytes.len();
            losses.push(CrashLoss { path: path.clone(), unsynced_bytes: unsynced, kept_bytes: kept });
        }
        state.poisoned_by = None;
        state.fail_next_sync = false;
        losses
    }

    /// Simulates power loss with a per-file fate for the unsynced bytes, chosen by
    /// `fate(path, durable_len, live_len)`. Clears armed faults' poison like [`MemDisk::crash`].
    pub fn power_loss(&self, mut fate: impl FnMut(&str, usize, usize) -> UnsyncedFate) -> Vec<CrashLoss> {
        let mut state = self.lock();
        let mut losses = Vec::new();
        for (path, file) in state.files.iter_mut() {
            let live = file.bytes.len();
            let unsynced = live - file.durable_len;
            if unsynced == 0 {
                continue;
            }
            let kept = match fate(path, file.durable_len, live) {
                UnsyncedFate::Lost => {
                    file.bytes.truncate(file.durable_len);
                    0
                }
                UnsyncedFate::KeptUpTo(end) => {
                    let end = end.clamp(file.durable_len, live);
                    file.bytes.truncate(end);
                    end - file.durable_len
                }
                UnsyncedFate::ZeroFilledFrom(from) => {
                    let from = from.clamp(file.durable_len, live);
                    file.bytes[from..].fill(0);
                    live - file.durable_len
                }
            };
            file.durable_len = file.bytes.len();
            losses.push(CrashLoss { path: path.clone(), unsynced_bytes: unsynced, kept_bytes: kept });
        }
        state.poisoned_by = None;
        state.fail_next_sync = false;
        losses
    }

    /// Arms a power loss at the `ops`-th write operation from now (create, append,
    /// write_at, preallocate, truncate, sync, rename, remove): that operation and every later one fail as if the
    /// machine died mid-Ready (an append still reaches the page cache). The harness then
    /// applies [`MemDisk::power_loss`] and [`MemDisk::restore_power`].
    pub fn arm_power_loss(&self, ops: u64) {
        self.lock().power_loss_after_ops = Some(ops.max(1));
    }

    /// Whether an armed power loss has struck.
    pub fn is_powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Disarms a pending power loss and restores power after one struck.
    pub fn restore_power(&self) {
        let mut state = self.lock();
        state.power_loss_after_ops = None;
        state.powered_off = false;
    }

    /// Limits the total bytes of all files; appends beyond it fail with `NoSpace`.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity_bytes = capacity_bytes;
    }

    /// Makes the next `count` reads go wrong: fail with an I/O error, or (with
    /// `flip = Some(n)`) silently return the file with byte `n % len` flipped. Durable
    /// bytes stay intact: a read fault is transient.
    pub fn fail_next_reads(&self, count: u64, flip: Option<u64>) {
        let mut state = self.lock();
        state.read_faults_left = count;
        state.read_fault_flips = flip;
    }

    /// Whether reads are armed to go wrong: a member that refuses to start is right to.
    pub fn has_read_fault(&self) -> bool {
        self.lock().read_faults_left > 0
    }

    /// Reads that went wrong so far (a start that saw one may refuse, rightly).
    pub fn read_faults_struck(&self) -> u64 {
        self.lock().read_faults_struck
    }

    /// Whether appends are limited by a capacity (a full disk armed by the harness).
    pub fn has_capacity_limit(&self) -> bool {
        self.lock().capacity_bytes.is_some()
    }

    /// Disarms a sync failure that has not struck yet (a disk that already failed a sync
    /// stays poisoned until the machine restarts: see [`MemDisk::crash`]).
    pub fn disarm_sync_fault(&self) {
        self.lock().fail_next_sync = false;
    }

    /// Makes the next `sync` fail (and poison the disk).
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Flips the bits of the byte at `offset` of `path` (durable data going bad).
    pub fn corrupt_byte(&self, path: &str, offset: usize) -> bool {
        let mut state = self.lock();
        match state.files.get_mut(path) {
            Some(file) if offset < file.bytes.len() => {
                file.bytes[offset] ^= 0xff;
                true
            }
            _ => false,
        }
    }

    /// Current size of a file (reserved room included), if it exists.
    pub fn file_len(&self, path: &str) -> Option<usize> {
        self.lock().files.get(path).map(MemFile::size)
    }

    /// Whether an fsync failed on this disk since the machine last restarted (the member
    /// using it may not have acted on the failure yet: a background job's sync).
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned_by.is_some()
    }

    /// Whether an injected fsync failure is armed or has poisoned the disk: a member that
    /// refuses to start on this disk is right to.
    pub fn has_sync_fault(&self) -> bool {
        let state = self.lock();
        state.fail_next_sync || state.poisoned_by.is_some()
    }

    /// A copy of a file's current content (reserved room as zeros), if it exists.
    pub fn bytes_of(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(MemFile::content)
    }

    /// Every file with its length, sorted by name.
    /// Which file `path` is now (see `MemFile::id`): the harness tells a file it damaged
    /// from one written again under the same name since.
    pub fn file_id(&self, path: &str) -> Option<u64> {
        self.lock().files.get(path).map(|file| file.id)
    }

    pub fn files(&self) -> Vec<(String, usize)> {
        self.lock().files.iter().map(|(p, f)| (p.clone(), f.size())).collect()
    }

    /// Write operations so far: the numbers [`MemDisk::arm_power_loss`] counts.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    pub fn write_backs(&self) -> u64 {
        self.lock().write_backs
    }

    /// Renames done so far (on a WAL disk, only a cut renames: a spare into place).
    pub fn renames(&self) -> u64 {
        self.lock().renames
    }

    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }
}

impl Disk for MemDisk {
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let state = self.lock();
        let prefix = if dir.is_empty() { String::new() } else { format!("{}/", dir.trim_end_matches('/')) };
        Ok(state
            .files
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        let mut state = self.lock();
        let mut bytes = state.files.get(path).map(MemFile::content).ok_or_else(|| DiskError::NotFound { path: path.to_string() })?;
        if state.read_faults_left > 0 {
            state.read_faults_left -= 1;
            state.read_faults_struck += 1;
            match state.read_fault_flips {
                None => return Err(DiskError::Io { path: path.to_string(), detail: "injected read error".to_string() }),
                Some(n) if !bytes.is_empty() => {
                    let at = (n % bytes.len() as u64) as usize;
                    bytes[at] ^= 0xff;
                }
                Some(_) => {}
            }
        }
        Ok(bytes)
    }

    fn create(&self, path: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        if let Strike::Now = state.strike() {
            return state.check_writable(path);
        }
        state.next_file_id += 1;
        let id = state.next_file_id;
        state.files.insert(path.to_string(), MemFile { id, ..MemFile::default() });
        Ok(())
    }

    fn append(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        if let Strike::Now = state.strike() {
            // The write reached the page cache as power went: unsynced, maybe torn later.
            if let Some(file) = state.files.get_mut(path) {
                let end = file.size();
                file.bytes.resize(end, 0);
                file.bytes.extend_from_slice(bytes);
            }
            return state.check_writable(path);
        }
        state.check_room(path, bytes.len() as u64)?;
        let file = state.files.get_mut(path).ok_or_else(|| DiskError::NotFound { path: path.to_string() })?;
        // The end of the file is after any reserved room, as for a real file.
        let end = file.size();
        file.bytes.resize(end, 0);
        file.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, path: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        let offset = usize::try_from(offset).expect("offset fits memory");
        let write = |file: &mut MemFile| {
            assert!(offset <= file.size(), "write_at {offset} past the end ({}) of {path}", file.size());
            assert!(offset >= file.durable_len, "write_at {offset} rewrites synced bytes (durable to {}) of {path}", file.durable_len);
            let end = offset + bytes.len();
            if file.bytes.len() < end {
                file.bytes.resize(end, 0);
            }
            file.bytes[offset..end].copy_from_slice(bytes);
        };
        if let Strike::Now = state.strike() {
            // The write reached the page cache as power went: unsynced, maybe torn later.
            if let Some(file) = state.files.get_mut(path) {
                write(file);
            }
            return state.check_writable(path);
        }
        let file = state.files.get(path).ok_or_else(|| DiskError::NotFound { path: path.to_string() })?;
        let growth_bytes = (offset + bytes.len()).saturating_sub(file.size()) as u64;
        state.check_room(path, growth_bytes)?;
        write(state.files.get_mut(path).expect("found above"));
        Ok(())
    }

    fn preallocate(&self, path: &str, len_bytes: u64) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        if let Strike::Now = state.strike() {
            return state.check_writable(path);
        }
        let len = usize::try_from(len_bytes).expect("length fits memory");
        let file = state.files.get(path).ok_or_else(|| DiskError::NotFound { path: path.to_string() })?;
        let growth_bytes = len.saturating_sub(file.size()) as u64;
        state.check_room(path, growth_bytes)?;
        let file = state.files.get_mut(path).expect("found above");
        file.reserved_len = file.reserved_len.max(len);
        Ok(())
    }

    fn truncate(&self, path: &str, len_bytes: u64) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        if let Strike::Now = state.strike() {
            return state.check_writable(path);
        }
        let file = state.files.get_mut(path).ok_or_else(|| DiskError::NotFound { path: path.to_string() })?;
        // The file becomes exactly `len` long (zeros if it grows, as ftruncate), reserved
        // room included: what is past `len` is gone.
        let len = usize::try_from(len_bytes).expect("length fits memory");
        let mut content = file.content();
        content.resize(len, 0);
        file.bytes = content;
        file.reserved_len = 0;
        file.durable_len = len;
        Ok(())
    }

    fn sync(&self, path: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        if let Strike::Now = state.strike() {
            return state.check_writable(path);
        }
        if state.fail_next_sync {
            state.fail_next_sync = false;
            let detail = "injected fsync failure".to_string();
            state.poisoned_by = Some(detail.clone());
            return Err(DiskError::Io { path: path.to_string(), detail });
        }
        state.syncs += 1;
        let file = state.files.get_mut(path).ok_or_else(|| DiskError::NotFound { path: path.to_string() })?;
        file.durable_len = file.bytes.len();
        Ok(())
    }

    fn write_back(&self, path: &str) -> Result<(), DiskError> {
        // Nothing becomes durable, so nothing changes here: a power loss after it loses
        // what one before it would (not a write operation either).
        let mut state = self.lock();
        state.check_writable(path)?;
        if !state.files.contains_key(path) {
            return Err(DiskError::NotFound { path: path.to_string() });
        }
        state.write_backs += 1;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(to)?;
        if let Strike::Now = state.strike() {
            return state.check_writable(to);
        }
        let file = state.files.remove(from).ok_or_else(|| DiskError::NotFound { path: from.to_string() })?;
        state.files.insert(to.to_string(), file);
        state.renames += 1;
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.check_writable(path)?;
        if let Strike::Now = state.strike() {
            return state.check_writable(path);
        }
        state.files.remove(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_room_reads_as_zeros_and_unsynced_writes_into_it_are_lost_at_a_crash() {
        let disk = MemDisk::new();
        disk.create("wal/a").expect("creates");
        disk.preallocate("wal/a", 16).expect("reserves");
        assert_eq!(disk.read("wal/a").expect("reads"), vec![0u8; 16]);
        assert_eq!(disk.used_bytes(), 16, "reserved room counts as used");
        disk.write_at("wal/a", 0, b"abcd").expect("writes");
        disk.sync("wal/a").expect("syncs");
        disk.write_at("wal/a", 4, b"efgh").expect("writes");
        assert_eq!(&disk.read("wal/a").expect("reads")[..10], b"abcdefgh\0\0");
        disk.crash(|_, _| 0);
        let mut expected = b"abcd".to_vec();
        expected.resize(16, 0);
        assert_eq!(disk.read("wal/a").expect("reads"), expected, "the unsynced write is zeros again");
        // An append goes after the reserved room, as on a real file.
        disk.append("wal/a", b"z").expect("appends");
        assert_eq!(disk.file_len("wal/a"), Some(17));
        // A truncate ends the file, reserved room included.
        disk.truncate("wal/a", 4).expect("truncates");
        assert_eq!(disk.read("wal/a").expect("reads"), b"abcd");
    }

    #[test]
    fn room_beyond_the_capacity_is_refused_and_writes_into_reserved_room_need_none() {
        let disk = MemDisk::new();
        disk.create("wal/a").expect("creates");
        disk.preallocate("wal/a", 8).expect("reserves");
        disk.set_capacity_bytes(Some(8));
        assert_eq!(disk.preallocate("wal/a", 9), Err(DiskError::NoSpace { path: "wal/a".into() }));
        assert_eq!(disk.file_len("wal/a"), Some(8), "nothing reserved by the refused call");
        disk.write_at("wal/a", 0, b"12345678").expect("the room is there");
        assert_eq!(disk.write_at("wal/a", 8, b"9"), Err(DiskError::NoSpace { path: "wal/a".into() }));
    }

    #[test]
    #[should_panic(expected = "rewrites synced bytes")]
    fn rewriting_synced_bytes_is_a_bug() {
        let disk = MemDisk::new();
        disk.create("wal/a").expect("creates");
        disk.write_at("wal/a", 0, b"abcd").expect("writes");
        disk.sync("wal/a").expect("syncs");
        let _ = disk.write_at("wal/a", 2, b"x");
    }
}
