//! The production [`Disk`]: real files under one root directory, `fdatasync` for `sync`,
//! and a directory fsync after every create, rename and remove so those are durable.
//!
//! A failed sync poisons the disk (see the trait's contract): the page cache may have
//! dropped the dirty pages, so the only honest answer to every later write is an error.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Disk, DiskError};

/// Files at least this large are mapped by [`Disk::read_immutable`]; smaller ones read.
pub const MAPPED_READ_BYTES_MIN: u64 = 1 << 20;

/// [`Disk::remove_paced`] frees a removed file's blocks this many bytes at a time, with
/// [`REMOVE_PACED_PAUSE_MS`] between slices (a 400 MB snapshot file: 50 slices, ~0.2 s
/// of the worker's time).
const REMOVE_PACED_SLICE_BYTES: u64 = 8 << 20;
const REMOVE_PACED_PAUSE_MS: u64 = 2;

/// [`Disk::preallocate_zeroed`] writes zeros this many bytes at a time, each slice
/// written back to the device before the next (as a snapshot file is), with
/// [`ZEROED_PAUSE_MS`] between slices, so that the WAL's fsyncs on the same device never
/// queue behind more than a slice. Three members of a cluster on one disk cut at about
/// the same index and fill their spares together: unpaced 2 MiB slices made the
/// longest of 400k puts at 64 clients 34-44 ms instead of 27 (p99.9 20 vs 15.5 ms).
const ZEROED_SLICE_BYTES: usize = 1 << 20;
const ZEROED_PAUSE_MS: u64 = 2;
/// ... in writes of this many bytes (a page): the page cache then holds the zeros in
/// pages of their own, as writes into reserved room leave them. Written 2 MiB at a time,
/// they sat in large folios, and every later small write and its write-back walked
/// the buffers of a whole folio: one member's puts at one client took ~10 us more CPU
/// each and were 5% slower (this machine's 6.18 kernel, 2026-11-29).
const ZEROED_WRITE_BYTES: usize = 4096;

/// A file mapped read-only into memory, unmapped on drop. Its pages are the page
/// cache's: mapping a snapshot file costs no fresh (zeroed) memory and no copy, and the
/// kernel may drop clean pages under pressure.
///
/// Safety of reading it as a slice: only files that are never written or truncated
/// again are mapped (`Disk::read_immutable`): complete snapshot files (written under a
/// temp name, synced, renamed) and WAL segments older than the last (synced at their
/// cut); both are later only unlinked, which leaves a mapping valid (`remove_paced`
/// shortens a file before its close only if no mapping of it lives). The data and WAL
/// dirs are locked to this process. Another process truncating the file, or an I/O error
/// on a page, raises SIGBUS and stops the member — fail-stop, as etcd's mapped bbolt
/// file does — never a wrong read.
struct ReadOnlyMapping {
    address: std::ptr::NonNull<u8>,
    len: usize,
    /// Alive while the mapping is: `FsDisk::mapped` holds a weak reference.
    _alive: std::sync::Arc<()>,
}

// The mapping is read-only and owned: nothing mutates it while it lives.
unsafe impl Send for ReadOnlyMapping {}
unsafe impl Sync for ReadOnlyMapping {}

impl ReadOnlyMapping {
    fn of(file: &File, len: usize, alive: std::sync::Arc<()>) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        assert!(len > 0, "an empty file is read, not mapped");
        // SAFETY: a fresh private read-only mapping of an open file; the kernel checks
        // the descriptor and the length. MAP_POPULATE reads the file ahead in one go.
        let address = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_POPULATE, file.as_raw_fd(), 0)
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let address = std::ptr::NonNull::new(address.cast::<u8>()).expect("mmap never maps address 0");
        Ok(Self { address, len, _alive: alive })
    }
}

impl AsRef<[u8]> for ReadOnlyMapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped readable at `address` until drop; the file is
        // never modified while mapped (see the type's comment).
        unsafe { std::slice::from_raw_parts(self.address.as_ptr(), self.len) }
    }
}

impl Drop for ReadOnlyMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped, once; no slice of it outlives `self`
        // (`Bytes::from_owner` drops the owner after its last slice).
        let unmapped = unsafe { libc::munmap(self.address.as_ptr().cast(), self.len) };
        assert_eq!(unmapped, 0, "munmap of a mapping this process made cannot fail");
    }
}

/// Real files rooted at a directory.
pub struct FsDisk {
    root: PathBuf,
    /// Write handles kept open between writes and `sync` (not O_APPEND: `write_at` writes
    /// at its offset; `append` seeks to the end).
    open_files: Mutex<BTreeMap<String, File>>,
    /// Set by the first failed sync; every later write fails with it.
    poisoned_by: Mutex<Option<String>>,
    /// Told how long every successful sync took (the `/metrics` fsync histograms).
    sync_observer: Option<Box<dyn Fn(std::time::Duration) + Send + Sync>>,
    /// Files mapped by `read_immutable`, each with a reference that lives as long as its
    /// mapping: a file mapped now must never be shortened (a read past its new end would
    /// raise SIGBUS). Held while a file is opened and mapped, and while `remove_paced`
    /// decides and unlinks. An entry goes when its file is removed.
    mapped: Mutex<BTreeMap<String, std::sync::Weak<()>>>,
}

impl FsDisk {
    /// Opens (creating if needed) the directory `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DiskError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| io_error(&root.display().to_string(), &e))?;
        Ok(Self {
            root,
            open_files: Mutex::new(BTreeMap::new()),
            poisoned_by: Mutex::new(None),
            sync_observer: None,
            mapped: Mutex::new(BTreeMap::new()),
        })
    }

    /// Reports the duration of every successful sync to `observe`.
    pub fn with_sync_observer(mut self, observe: impl Fn(std::time::Duration) + Send + Sync + 'static) -> Self {
        self.sync_observer = Some(Box::new(observe));
        self
    }

    /// Durably removes a file (see `Disk::remove`; the caller holds `mapped`).
    fn unlink(&self, name: &str) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        self.open_files.lock().expect("open files lock").remove(name);
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir_of(&path),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(name, &e)),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        assert!(!name.contains(".."), "disk paths stay below the root: {name}");
        self.root.join(name)
    }

    fn check_poisoned(&self, name: &str) -> Result<(), DiskError> {
        let poisoned = self.poisoned_by.lock().expect("disk poison lock");
        match poisoned.as_ref() {
            Some(detail) => Err(DiskError::Io {
                path: name.to_string(),
                detail: format!("disk refused writes after an earlier failed fsync: {detail}"),
            }),
            None => Ok(()),
        }
    }

    /// Runs `write` on the file's kept write handle (opened now if it is not kept).
    fn with_write_handle(&self, name: &str, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        let mut open_files = self.open_files.lock().expect("open files lock");
        if !open_files.contains_key(name) {
            let file = OpenOptions::new().write(true).open(self.path(name)).map_err(|e| io_error(name, &e))?;
            open_files.insert(name.to_string(), file);
        }
        let file = open_files.get_mut(name).expect("handle inserted above");
        write(file).map_err(|e| io_error(name, &e))
    }

    /// Remembers a failed sync or write-back: every later write or sync fails (the
    /// bytes' fate is unknown). Returns the error, to hand on.
    fn poison(&self, error: DiskError) -> DiskError {
        *self.poisoned_by.lock().expect("disk poison lock") = Some(error.to_string());
        error
    }

    /// Writes `file`'s dirty bytes in `[offset, offset + len)` to the device and waits
    /// (`len` 0: to the end of the file), making nothing durable; a failure poisons.
    fn write_back_range(&self, name: &str, file: &File, offset: u64, len: u64) -> Result<(), DiskError> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
            return Err(io_error(name, &std::io::Error::from(ErrorKind::InvalidInput)));
        };
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: sync_file_range on an open descriptor of this process; it touches no
        // memory of ours.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } != 0 {
            return Err(self.poison(io_error(name, &std::io::Error::last_os_error())));
        }
        Ok(())
    }

    fn sync_dir_of(&self, path: &Path) -> Result<(), DiskError> {
        let dir = path.parent().unwrap_or(&self.root);
        let handle = File::open(dir).map_err(|e| io_error(&dir.display().to_string(), &e))?;
        handle.sync_all().map_err(|e| io_error(&dir.display().to_string(), &e))
    }
}

fn io_error(path: &str, error: &std::io::Error) -> DiskError {
    if error.kind() == ErrorKind::NotFound {
        return DiskError::NotFound { path: path.to_string() };
    }
    // ENOSPC (28) and EDQUOT (122) both mean "no room".
    if matches!(error.raw_os_error(), Some(28) | Some(122)) || error.kind() == ErrorKind::StorageFull {
        return DiskError::NoSpace { path: path.to_string() };
    }
    DiskError::Io { path: path.to_string(), detail: error.to_string() }
}

impl Disk for FsDisk {
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let path = self.path(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(dir, &e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, &e))?;
            let is_file = entry.file_type().map_err(|e| io_error(dir, &e))?.is_file();
            if is_file {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        fs::read(self.path(name)).map_err(|e| io_error(name, &e))
    }

    fn read_immutable(&self, name: &str) -> Result<bytes::Bytes, DiskError> {
        let mut mapped = self.mapped.lock().expect("mapped files lock");
        let mut file = File::open(self.path(name)).map_err(|e| io_error(name, &e))?;
        let len = file.metadata().map_err(|e| io_error(name, &e))?.len();
        if len < MAPPED_READ_BYTES_MIN {
            let mut bytes = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| io_error(name, &e))?;
            return Ok(bytes.into());
        }
        let len = usize::try_from(len).map_err(|_| DiskError::Io { path: name.to_string(), detail: "too large to map".into() })?;
        let alive = std::sync::Arc::new(());
        let mapping = ReadOnlyMapping::of(&file, len, alive.clone()).map_err(|e| io_error(name, &e))?;
        mapped.insert(name.to_string(), std::sync::Arc::downgrade(&alive));
        Ok(bytes::Bytes::from_owner(mapping))
    }

    fn create(&self, name: &str) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error(name, &e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error(name, &e))?;
        file.sync_all().map_err(|e| io_error(name, &e))?;
        self.sync_dir_of(&path)?;
        self.open_files.lock().expect("open files lock").insert(name.to_string(), file);
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.with_write_handle(name, |file| {
            file.seek(std::io::SeekFrom::End(0))?;
            file.write_all(bytes)
        })
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
        self.with_write_handle(name, |file| file.write_all_at(bytes, offset))
    }

    fn preallocate(&self, name: &str, len_bytes: u64) -> Result<(), DiskError> {
        use std::os::fd::AsRawFd;
        self.with_write_handle(name, |file| {
            if file.metadata()?.len() >= len_bytes {
                return Ok(());
            }
            let len = libc::off_t::try_from(len_bytes).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
            // SAFETY: fallocate on an open descriptor of this process; mode 0 allocates
            // the range and grows the file to it (zeros), touching no memory of ours.
            let allocated = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
            if allocated != 0 {
                let error = std::io::Error::last_os_error();
                // A file system without fallocate still gets the size (sparse zeros):
                // correct, only without the faster sync.
                if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
                    return Err(error);
                }
                file.set_len(len_bytes)?;
            }
            file.sync_all()
        })
    }

    fn preallocate_zeroed(&self, name: &str, len_bytes: u64) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        // A handle of its own: the shared ones' lock is what the WAL's writes and syncs
        // take, and this writes for a while.
        let file = OpenOptions::new().write(true).open(self.path(name)).map_err(|e| io_error(name, &e))?;
        let mut at = file.metadata().map_err(|e| io_error(name, &e))?.len();
        let zeros = [0u8; ZEROED_WRITE_BYTES];
        // One slice per round: at most len_bytes / ZEROED_SLICE_BYTES + 1 rounds, each of
        // at most ZEROED_SLICE_BYTES / ZEROED_WRITE_BYTES writes.
        while at < len_bytes {
            let slice_bytes = usize::try_from(len_bytes - at).map_or(ZEROED_SLICE_BYTES, |left| left.min(ZEROED_SLICE_BYTES));
            for write_at in (0..slice_bytes).step_by(ZEROED_WRITE_BYTES) {
                let write_bytes = (slice_bytes - write_at).min(ZEROED_WRITE_BYTES);
                file.write_all_at(&zeros[..write_bytes], at + write_at as u64).map_err(|e| io_error(name, &e))?;
            }
            self.write_back_range(name, &file, at, slice_bytes as u64)?;
            at += slice_bytes as u64;
            std::thread::sleep(std::time::Duration::from_millis(ZEROED_PAUSE_MS));
        }
        // The size is new metadata: a full sync, remembered if it fails (as `sync`).
        file.sync_all().map_err(|e| self.poison(io_error(name, &e)))
    }

    fn truncate(&self, name: &str, len_bytes: u64) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        self.open_files.lock().expect("open files lock").remove(name);
        let file = OpenOptions::new().write(true).open(self.path(name)).map_err(|e| io_error(name, &e))?;
        file.set_len(len_bytes).map_err(|e| io_error(name, &e))?;
        file.sync_all().map_err(|e| io_error(name, &e))
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        let open_files = self.open_files.lock().expect("open files lock");
        let started = std::time::Instant::now();
        let result = match open_files.get(name) {
            Some(file) => file.sync_data(),
            None => File::open(self.path(name)).and_then(|f| f.sync_data()),
        };
        if let Err(e) = result {
            return Err(self.poison(io_error(name, &e)));
        }
        if let Some(observe) = &self.sync_observer {
            observe(started.elapsed());
        }
        Ok(())
    }

    fn write_back(&self, name: &str) -> Result<(), DiskError> {
        self.check_poisoned(name)?;
        let open_files = self.open_files.lock().expect("open files lock");
        // No handle: nothing was written to the file through this disk since it opened.
        let Some(file) = open_files.get(name) else { return Ok(()) };
        self.write_back_range(name, file, 0, 0)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.check_poisoned(to)?;
        self.open_files.lock().expect("open files lock").remove(from);
        let to_path = self.path(to);
        fs::rename(self.path(from), &to_path).map_err(|e| io_error(from, &e))?;
        self.sync_dir_of(&to_path)
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        let mut mapped = self.mapped.lock().expect("mapped files lock");
        mapped.remove(name);
        self.unlink(name)
    }

    fn remove_paced(&self, name: &str) -> Result<(), DiskError> {
        // Held open across the removal: an unlinked file's blocks are freed only when its
        // last descriptor closes, so the shortening below frees them slice by slice and
        // the close frees what is left. After a crash the file is gone all the same (the
        // removal was durable; the filesystem frees an orphan's blocks at mount). A file
        // mapped now is only unlinked: its mapping keeps its blocks until it goes.
        let held = {
            let mut mapped = self.mapped.lock().expect("mapped files lock");
            let mapped_now = mapped.remove(name).is_some_and(|alive| alive.strong_count() > 0);
            let held = if mapped_now { None } else { OpenOptions::new().write(true).open(self.path(name)).ok() };
            self.unlink(name)?;
            held
        };
        let Some(file) = held else { return Ok(()) };
        let mut len_bytes = file.metadata().map_or(0, |metadata| metadata.len());
        // At most len / slice turns: the length only shrinks.
        while len_bytes > REMOVE_PACED_SLICE_BYTES {
            len_bytes -= REMOVE_PACED_SLICE_BYTES;
            // The file is removed already: if a slice cannot be freed now, the close
            // frees the rest at once.
            if file.set_len(len_bytes).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(REMOVE_PACED_PAUSE_MS));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocated_room_reads_as_zeros_and_write_at_fills_it() {
        let root = std::env::temp_dir().join(format!("detcd-fs-disk-room-{}", std::process::id()));
        let disk = FsDisk::open(&root).expect("opens");
        disk.create("wal/a.wal").expect("creates");
        disk.preallocate("wal/a.wal", 1 << 16).expect("reserves");
        disk.write_at("wal/a.wal", 0, b"abcd").expect("writes");
        disk.write_at("wal/a.wal", 4, b"efgh").expect("writes");
        disk.sync("wal/a.wal").expect("syncs");
        let read = disk.read("wal/a.wal").expect("reads");
        assert_eq!(read.len(), 1 << 16, "the file has the reserved size");
        assert_eq!(&read[..8], b"abcdefgh");
        assert!(read[8..].iter().all(|b| *b == 0));
        // A smaller reservation changes nothing; an append goes after the room.
        disk.preallocate("wal/a.wal", 10).expect("reserves nothing more");
        disk.append("wal/a.wal", b"z").expect("appends");
        assert_eq!(disk.read("wal/a.wal").expect("reads").len(), (1 << 16) + 1);
        // A second process (a new disk object) writes where it is told.
        drop(disk);
        let disk = FsDisk::open(&root).expect("opens again");
        disk.truncate("wal/a.wal", 8).expect("truncates");
        disk.write_at("wal/a.wal", 8, b"ij").expect("writes");
        disk.sync("wal/a.wal").expect("syncs");
        assert_eq!(disk.read("wal/a.wal").expect("reads"), b"abcdefghij");
        fs::remove_dir_all(&root).expect("cleans up");
    }

    /// Zeros written out over several slices keep what the file held and end at the
    /// size asked for; writes then go into the room as into reserved room.
    #[test]
    fn zeroed_room_keeps_the_content_and_reads_as_zeros() {
        let root = std::env::temp_dir().join(format!("detcd-fs-disk-zeroed-{}", std::process::id()));
        let disk = FsDisk::open(&root).expect("opens");
        disk.create("wal/1.spare").expect("creates");
        disk.write_at("wal/1.spare", 0, b"head").expect("writes");
        disk.sync("wal/1.spare").expect("syncs");
        let len = 2 * ZEROED_SLICE_BYTES as u64 + 5;
        disk.preallocate_zeroed("wal/1.spare", len).expect("zeroes");
        let read = disk.read("wal/1.spare").expect("reads");
        assert_eq!(read.len() as u64, len);
        assert_eq!(&read[..4], b"head");
        assert!(read[4..].iter().all(|b| *b == 0));
        disk.rename("wal/1.spare", "wal/a.wal").expect("renames");
        disk.write_at("wal/a.wal", 4, b"tail").expect("writes into the room");
        disk.sync("wal/a.wal").expect("syncs");
        let read = disk.read("wal/a.wal").expect("reads");
        assert_eq!((read.len() as u64, &read[..8]), (len, &b"headtail"[..]));
        fs::remove_dir_all(&root).expect("cleans up");
    }

    /// Bytes written back are not durable yet, so they may be rewritten; the sync then
    /// makes the file as last written durable. A file never written through this disk
    /// has nothing to write back.
    #[test]
    fn written_back_bytes_may_be_rewritten_until_the_sync() {
        let root = std::env::temp_dir().join(format!("detcd-fs-disk-write-back-{}", std::process::id()));
        let disk = FsDisk::open(&root).expect("opens");
        disk.create("snap/a.tmp").expect("creates");
        disk.append("snap/a.tmp", &[0; 4]).expect("appends");
        disk.append("snap/a.tmp", &vec![9u8; 1 << 20]).expect("appends");
        disk.write_back("snap/a.tmp").expect("writes back");
        disk.write_at("snap/a.tmp", 0, b"crc!").expect("rewrites the start");
        disk.sync("snap/a.tmp").expect("syncs");
        let read = disk.read("snap/a.tmp").expect("reads");
        assert_eq!(&read[..4], b"crc!");
        assert_eq!(read.len(), 4 + (1 << 20));
        assert!(read[4..].iter().all(|b| *b == 9));
        drop(disk);
        let disk = FsDisk::open(&root).expect("opens again");
        disk.write_back("snap/a.tmp").expect("nothing to write back");
        fs::remove_dir_all(&root).expect("cleans up");
    }

    /// A paced removal leaves the file gone, frees a large one slice by slice, and never
    /// shortens a file mapped now (its mapping reads whole after the removal: a shortened
    /// one would raise SIGBUS here). A missing file is no error.
    #[test]
    fn a_paced_removal_removes_and_never_shortens_a_mapped_file() {
        let root = std::env::temp_dir().join(format!("detcd-fs-disk-paced-{}", std::process::id()));
        let disk = FsDisk::open(&root).expect("opens");
        let content: Vec<u8> = (0..(3 * REMOVE_PACED_SLICE_BYTES as usize + 5)).map(|i| (i % 249) as u8).collect();
        for name in ["snap/a.snap", "snap/b.snap"] {
            disk.create(name).expect("creates");
            disk.append(name, &content).expect("appends");
            disk.sync(name).expect("syncs");
        }
        let mapping = disk.read_immutable("snap/b.snap").expect("maps");
        let started = std::time::Instant::now();
        disk.remove_paced("snap/a.snap").expect("removes");
        assert!(started.elapsed() >= std::time::Duration::from_millis(3 * REMOVE_PACED_PAUSE_MS), "freed in three slices, pausing after each");
        disk.remove_paced("snap/b.snap").expect("removes");
        assert_eq!(disk.list("snap").expect("lists"), Vec::<String>::new());
        assert!(mapping[..] == content[..], "the mapping of a removed file reads whole");
        drop(mapping);
        disk.remove_paced("snap/a.snap").expect("a missing file is no error");
        // A file mapped once and no longer is freed in slices again.
        disk.create("snap/c.snap").expect("creates");
        disk.append("snap/c.snap", &content).expect("appends");
        drop(disk.read_immutable("snap/c.snap").expect("maps"));
        disk.remove_paced("snap/c.snap").expect("removes");
        assert!(disk.mapped.lock().expect("lock").is_empty(), "removed files are forgotten");
        fs::remove_dir_all(&root).expect("cleans up");
    }

    #[test]
    fn an_immutable_file_reads_the_same_mapped_or_not() {
        let root = std::env::temp_dir().join(format!("detcd-fs-disk-{}", std::process::id()));
        let disk = FsDisk::open(&root).expect("opens");
        let large: Vec<u8> = (0..MAPPED_READ_BYTES_MIN as usize * 2 + 3).map(|i| (i % 253) as u8).collect();
        for (name, content) in [("snap/large.snap", large), ("snap/small.snap", b"small".to_vec())] {
            disk.create(name).expect("creates");
            disk.append(name, &content).expect("appends");
            disk.sync(name).expect("syncs");
            let read = disk.read_immutable(name).expect("reads");
            assert_eq!(&read[..], &content[..], "{name}");
            // A mapping outlives the file's removal (a purge while a snapshot is sent).
            disk.remove(name).expect("removes");
            assert_eq!(&read[..], &content[..], "{name} after removal");
        }
        assert!(matches!(disk.read_immutable("snap/missing.snap"), Err(DiskError::NotFound { .. })));
        let _ = fs::remove_dir_all(&root);
    }
}
