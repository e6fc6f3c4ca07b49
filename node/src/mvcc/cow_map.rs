//! [`CowMap`]: the store's sorted key index, whose clone costs one pointer per segment.
//!
//! Why it exists: a raft snapshot, a client snapshot and a hash must see the store frozen
//! at one applied index while the member goes on applying. Cloning a `BTreeMap` of a
//! million keys stops the raft loop for seconds (issue 10 measured 2.2 s); this map is a
//! sorted sequence of segments of chunks, each behind an `Arc`, so a clone shares every
//! segment and a later write copies only the segment's pointers and the chunk it touches
//! (`Arc::make_mut`). It is a B+tree of fixed depth three, which is enough for the
//! millions of keys a member holds: ten million keys make ~160k chunks in ~2.5k
//! segments. Depth two (chunks only) made a clone touch every chunk's reference count
//! (at a million keys, 16-31k cache lines scattered over the heap): the first clone of a
//! turn took 8-53 ms of the raft loop's CPU for each snapshot and each large range on
//! this machine (2026-11-28), and with depth three the loop's longest turn without its
//! fsync fell from 109-140 to 35-45 ms while loading a million keys.
//!
//! Finding a key's chunk reads two arrays, the segments' fences (each segment's last
//! key) and its segment's chunks' fences (each chunk's last key), and both the fences
//! and a chunk's entries are searched by [`KeyWindows`]: each key's 8
//! bytes after the prefix all of them share, stored beside them, so a probe reads a key
//! only when two windows tie. In a million-key store, following each probed chunk's
//! pointers to its last key cost about four cache misses a probe, and a put spent most of
//! its ~7 us locating its key (`cargo bench -p detcd-node -- "big store"`).
//!
//! Invariants (checked by [`CowMap::assert_invariants`]; decoding refuses input that
//! breaks them):
//! - every chunk holds 1 to [`CHUNK_ENTRIES_MAX`] entries, strictly increasing by key;
//!   every segment holds 1 to [`SEGMENT_CHUNKS_MAX`] chunks;
//! - the last key of a chunk is below the first key of the next one;
//! - a segment's `fences.keys[i]` is its chunk `i`'s last key, the map's
//!   `fences.keys[i]` its segment `i`'s last key; each [`KeyWindows`] indexes exactly
//!   the keys it stands beside;
//! - `len` counts the entries of all chunks.
//!
//! Iteration is in key order only (never hash order), so every member encodes and
//! hashes the same bytes. The serde form is a map of key → value, exactly the form a
//! `BTreeMap<Vec<u8>, V>` takes, so the snapshot encoding did not change with it.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries per chunk before it splits. Small enough that the first write to a chunk a
/// snapshot still shares copies little (64 keys and their histories), large enough that
/// a clone of a million-key map is ~16k pointers. Simulator builds use 4, so that the
/// simulator's small key spaces span many chunks (splits, windows of compaction steps).
pub(crate) const CHUNK_ENTRIES_MAX: usize = if cfg!(madsim) { 4 } else { 64 };
/// Chunks per segment before it splits. A clone copies one pointer per segment (a
/// million keys: ~250-500 of them, not ~16-31k chunk pointers); the first write to a
/// segment a clone still shares copies its chunk pointers (64, each a reference count
/// touched). Simulator and unit-test builds use 4, so that small key spaces span many
/// segments.
pub(crate) const SEGMENT_CHUNKS_MAX: usize = if cfg!(any(madsim, test)) { 4 } else { 64 };

/// Where a searched key stands against the prefix every indexed key shares.
enum Placement {
    BelowAll,
    AboveAll,
    /// The key shares the prefix: its window after it.
    Window(u64),
}

fn placement(common: &[u8], key: &[u8]) -> Placement {
    let n = common.len().min(key.len());
    match key[..n].cmp(&common[..n]) {
        Ordering::Less => Placement::BelowAll,
        Ordering::Greater => Placement::AboveAll,
        // A proper prefix of the common prefix is below every key that has it.
        Ordering::Equal if key.len() < common.len() => Placement::BelowAll,
        Ordering::Equal => Placement::Window(key_window(key, common.len())),
    }
}

/// The 8 bytes of `key` after its first `skip`, zero-padded, as a big-endian number. Of
/// two keys sharing their first `skip` bytes, the one with the lower window is the lower
/// key (a shorter key padded with zeros is a prefix of the longer one up to the first
/// byte they differ in); equal windows decide nothing.
fn key_window(key: &[u8], skip: usize) -> u64 {
    let rest = key.get(skip..).unwrap_or_default();
    let mut bytes = [0u8; 8];
    let n = rest.len().min(8);
    bytes[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(bytes)
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A search index over sorted keys kept elsewhere: each key's window after the prefix
/// all of them share. A binary search compares the searched key's window with the
/// stored ones and reads a stored key only when two windows tie.
///
/// Invariant: every indexed key has the same first `common_len` bytes, and `windows[i]`
/// is key `i`'s window after them. `common_len` need not be the longest such prefix
/// (a removal never lengthens it).
#[derive(Clone, Default)]
struct KeyWindows {
    common_len: usize,
    windows: Vec<u64>,
}

impl KeyWindows {
    /// Indexes `keys` afresh (sorted: the first and the last share what all share).
    fn rebuild<'k>(&mut self, keys: impl DoubleEndedIterator<Item = &'k [u8]> + Clone) {
        let (first, last) = (keys.clone().next(), keys.clone().next_back());
        self.common_len = match (first, last) {
            (Some(first), Some(last)) => common_prefix_len(first, last),
            _ => 0,
        };
        self.windows.clear();
        self.windows.extend(keys.map(|key| key_window(key, self.common_len)));
    }

    /// Indexes `key` at `index` if it has the shared prefix (`indexed`: any key indexed
    /// now); false if it has not (the caller rebuilds).
    fn insert_sharing(&mut self, index: usize, key: &[u8], indexed: &[u8]) -> bool {
        if !key.starts_with(&indexed[..self.common_len]) {
            return false;
        }
        self.windows.insert(index, key_window(key, self.common_len));
        true
    }

    /// Re-indexes key `index`, now `key`, if it has the shared prefix (`indexed`: any key
    /// indexed before); false if it has not (the caller rebuilds).
    fn set_sharing(&mut self, index: usize, key: &[u8], indexed: &[u8]) -> bool {
        if !key.starts_with(&indexed[..self.common_len]) {
            return false;
        }
        self.windows[index] = key_window(key, self.common_len);
        true
    }

    /// The first index whose key is not below `key` (the count if none); `stored(i)` is
    /// key `i`.
    fn first_not_below<'k>(&self, key: &[u8], stored: impl Fn(usize) -> &'k [u8]) -> usize {
        let count = self.windows.len();
        if count == 0 {
            return 0;
        }
        let window = match placement(&stored(0)[..self.common_len], key) {
            Placement::BelowAll => return 0,
            Placement::AboveAll => return count,
            Placement::Window(window) => window,
        };
        let (mut low, mut high) = (0, count);
        // Halves the range every round: at most 64 rounds.
        while low < high {
            let middle = low + (high - low) / 2;
            let below = match self.windows[middle].cmp(&window) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => stored(middle) < key,
            };
            if below {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// Checks the invariant against the keys it indexes (a failure is a bug: panics).
    fn assert_indexes<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        let mut count = 0;
        let mut common: Option<&[u8]> = None;
        for (index, key) in keys.enumerate() {
            let prefix = key.get(..self.common_len).expect("an indexed key is shorter than the shared prefix");
            assert!(common.is_none_or(|c| c == prefix), "an indexed key lacks the shared prefix");
            common = Some(prefix);
            assert_eq!(self.windows.get(index), Some(&key_window(key, self.common_len)), "a key's window is stale");
            count += 1;
        }
        assert_eq!(count, self.windows.len(), "a window per key");
    }
}

#[derive(Clone)]
struct Chunk<V> {
    entries: Vec<(Box<[u8]>, V)>,
    /// The entries' keys' windows: a search reads a few of these instead of following
    /// each probed entry's pointer to its key.
    index: KeyWindows,
}

impl<V> Chunk<V> {
    fn new(entries: Vec<(Box<[u8]>, V)>) -> Chunk<V> {
        let mut chunk = Chunk { entries, index: KeyWindows::default() };
        chunk.reindex();
        chunk
    }

    fn reindex(&mut self) {
        self.index.rebuild(self.entries.iter().map(|(key, _)| &**key));
    }

    fn last_key(&self) -> &[u8] {
        &self.entries.last().expect("chunks are never empty").0
    }

    fn first_not_below(&self, key: &[u8]) -> usize {
        self.index.first_not_below(key, |i| &self.entries[i].0)
    }

    fn position(&self, key: &[u8]) -> Result<usize, usize> {
        let at = self.first_not_below(key);
        match self.entries.get(at) {
            Some((found, _)) if **found == *key => Ok(at),
            _ => Err(at),
        }
    }

    /// Inserts `key` at `entry` (where [`Chunk::position`] says it goes).
    fn insert(&mut self, entry: usize, key: &[u8], value: V) -> &mut V {
        let indexed = self.entries.first().map(|(first, _)| &**first);
        let kept = indexed.is_some_and(|indexed| self.index.insert_sharing(entry, key, indexed));
        self.entries.insert(entry, (key.into(), value));
        if !kept {
            self.reindex();
        }
        &mut self.entries[entry].1
    }

    /// Moves the entries from `at` on into a new chunk.
    fn split_off(&mut self, at: usize) -> Chunk<V> {
        let tail = self.entries.split_off(at);
        // The head's keys still share what they shared.
        self.index.windows.truncate(at);
        Chunk::new(tail)
    }
}

/// The last keys of a sequence of nodes (a segment's chunks, or the map's segments),
/// searched by their windows: finding a key's node reads this array (and its index)
/// instead of following each probed node's pointers to its last key.
///
/// The keys lie end to end in one buffer, not each in an allocation of its own: a clone
/// copies three arrays. With a reference-counted allocation per key, the first clone of
/// a million-key map after a write phase touched ~950 of them, each on a page untouched
/// for seconds, and took 15-19 ms of the raft loop (this machine, 2026-11-29: a page
/// idle for two seconds costs ~3 us more to touch than one just used).
#[derive(Clone, Default)]
struct Fences {
    /// Every key, end to end.
    bytes: Vec<u8>,
    /// Key `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<usize>,
    index: KeyWindows,
}

impl Fences {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn start_of(&self, at: usize) -> usize {
        if at == 0 { 0 } else { self.ends[at - 1] }
    }

    /// Key `at`.
    fn key(&self, at: usize) -> &[u8] {
        &self.bytes[self.start_of(at)..self.ends[at]]
    }

    fn last(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).map(|last| self.key(last))
    }

    fn keys(&self) -> impl DoubleEndedIterator<Item = &[u8]> + Clone + '_ {
        (0..self.len()).map(|at| self.key(at))
    }

    /// The first node whose last key is not below `key` (the count if none is).
    fn first_not_below(&self, key: &[u8]) -> usize {
        self.index.first_not_below(key, |i| self.key(i))
    }

    fn rebuild(&mut self) {
        let mut index = std::mem::take(&mut self.index);
        index.rebuild(self.keys());
        self.index = index;
    }

    /// Puts `key` in place of the bytes `start..end`, and moves the ends from `at` on by
    /// what that changed in length.
    fn splice_bytes(&mut self, start: usize, end: usize, key: &[u8], at: usize) {
        self.bytes.splice(start..end, key.iter().copied());
        for later_end in &mut self.ends[at..] {
            *later_end = *later_end - (end - start) + key.len();
        }
    }

    /// Node `at` now ends with `last_key`.
    fn set(&mut self, at: usize, last_key: &[u8]) {
        if self.key(at) == last_key {
            return;
        }
        // Checked against the first key as it was indexed (before it changes).
        let first = &self.bytes[..self.ends[0]];
        let kept = self.index.set_sharing(at, last_key, first);
        self.splice_bytes(self.start_of(at), self.ends[at], last_key, at);
        if !kept {
            self.rebuild();
        }
    }

    /// A new node `at`, which ends with `last_key`.
    fn insert(&mut self, at: usize, last_key: &[u8]) {
        // Checked against the first key indexed now, if any.
        let kept = match self.ends.first() {
            Some(&first_end) => self.index.insert_sharing(at, last_key, &self.bytes[..first_end]),
            None => false,
        };
        let start = self.start_of(at);
        self.splice_bytes(start, start, last_key, at);
        self.ends.insert(at, start + last_key.len());
        if !kept {
            self.rebuild();
        }
    }

    fn remove(&mut self, at: usize) {
        let (start, end) = (self.start_of(at), self.ends.remove(at));
        self.splice_bytes(start, end, &[], at);
        self.index.windows.remove(at);
    }

    /// Moves the fences from `at` on into new ones (as a node split moves its nodes).
    fn split_off(&mut self, at: usize) -> Fences {
        let start = self.start_of(at);
        let bytes = self.bytes.split_off(start);
        let ends = self.ends.split_off(at).into_iter().map(|end| end - start).collect();
        let mut tail = Fences { bytes, ends, index: KeyWindows::default() };
        tail.rebuild();
        // The head's keys still share what they shared.
        self.index.windows.truncate(at);
        tail
    }

    fn assert_indexes(&self) {
        assert!(self.ends.windows(2).all(|pair| pair[0] <= pair[1]), "fence ends out of order");
        assert_eq!(self.ends.last().copied().unwrap_or(0), self.bytes.len(), "fence bytes past the last end");
        self.index.assert_indexes(self.keys());
    }
}

/// A run of chunks in key order, shared between clones as a whole until one of them
/// writes to it (then only its pointers are copied, not its chunks).
struct Segment<V> {
    chunks: Vec<Arc<Chunk<V>>>,
    /// Chunk `i`'s last key is `fences.keys[i]`.
    fences: Fences,
}

impl<V> Clone for Segment<V> {
    fn clone(&self) -> Self {
        Self { chunks: self.chunks.clone(), fences: self.fences.clone() }
    }
}

impl<V> Segment<V> {
    fn last_key(&self) -> &[u8] {
        self.fences.last().expect("segments are never empty")
    }

    /// The chunk that holds `key` or would hold it: the first whose last key is not
    /// below `key`, else the last one.
    fn chunk_for(&self, key: &[u8]) -> usize {
        self.fences.first_not_below(key).min(self.chunks.len() - 1)
    }

    /// Makes chunk `chunk`'s fence its last key again (after its entries changed).
    fn refresh_fence(&mut self, chunk: usize) {
        let last_key = self.chunks[chunk].last_key();
        self.fences.set(chunk, last_key);
    }

    fn insert_chunk(&mut self, at: usize, chunk: Chunk<V>) {
        self.fences.insert(at, chunk.last_key());
        self.chunks.insert(at, Arc::new(chunk));
    }

    fn remove_chunk(&mut self, chunk: usize) {
        self.chunks.remove(chunk);
        self.fences.remove(chunk);
    }
}

/// See the module documentation.
pub(crate) struct CowMap<V> {
    segments: Vec<Arc<Segment<V>>>,
    /// Segment `i`'s last key is `fences.keys[i]`.
    fences: Fences,
    len: usize,
}

impl<V> Clone for CowMap<V> {
    fn clone(&self) -> Self {
        Self { segments: self.segments.clone(), fences: self.fences.clone(), len: self.len }
    }
}

impl<V> Default for CowMap<V> {
    fn default() -> Self {
        Self { segments: Vec::new(), fences: Fences::default(), len: 0 }
    }
}

impl<V: fmt::Debug> fmt::Debug for CowMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for CowMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<V: Eq> Eq for CowMap<V> {}

/// Entries in key order from a start position up to an optional exclusive end key.
pub(crate) struct Iter<'a, V> {
    segments: &'a [Arc<Segment<V>>],
    segment: usize,
    chunk: usize,
    entry: usize,
    end: Option<&'a [u8]>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a [u8], &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        // At most three steps: segments and chunks are never empty.
        loop {
            let segment = self.segments.get(self.segment)?;
            let Some(chunk) = segment.chunks.get(self.chunk) else {
                self.segment += 1;
                self.chunk = 0;
                self.entry = 0;
                continue;
            };
            if let Some((key, value)) = chunk.entries.get(self.entry) {
                if self.end.is_some_and(|end| &**key >= end) {
                    self.segment = self.segments.len();
                    return None;
                }
                self.entry += 1;
                return Some((key, value));
            }
            self.chunk += 1;
            self.entry = 0;
        }
    }
}

impl<V> CowMap<V> {
    /// Chunks in the map.
    #[cfg(test)]
    pub fn chunk_count(&self) -> usize {
        self.segments.iter().map(|segment| segment.chunks.len()).sum()
    }

    /// Segments in the map (a clone copies this many pointers).
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The first chunk whose last key is not below `key`, as (segment, chunk); the
    /// segment is `segments.len()` if none is.
    fn first_chunk_not_below(&self, key: &[u8]) -> (usize, usize) {
        let segment = self.fences.first_not_below(key);
        match self.segments.get(segment) {
            // The segment's last key is not below `key`, so one of its chunks is not.
            Some(found) => (segment, found.fences.first_not_below(key)),
            None => (segment, 0),
        }
    }

    /// The chunk that holds `key` or would hold it, as (segment, chunk): the first
    /// whose last key is not below `key`, else the last chunk. The map must not be empty.
    fn chunk_for(&self, key: &[u8]) -> (usize, usize) {
        assert!(!self.segments.is_empty(), "chunk_for on an empty map");
        let segment = self.fences.first_not_below(key).min(self.segments.len() - 1);
        (segment, self.segments[segment].chunk_for(key))
    }

    /// Makes segment `segment`'s fence its last key again (after its chunks changed).
    fn refresh_segment_fence(&mut self, segment: usize) {
        let last_key = self.segments[segment].last_key();
        self.fences.set(segment, last_key);
    }

    fn locate(&self, key: &[u8]) -> Option<(usize, usize, usize)> {
        if self.segments.is_empty() {
            return None;
        }
        let (segment, chunk) = self.chunk_for(key);
        self.segments[segment].chunks[chunk].position(key).ok().map(|entry| (segment, chunk, entry))
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.get_key_value(key).map(|(_, value)| value)
    }

    pub fn get_key_value(&self, key: &[u8]) -> Option<(&[u8], &V)> {
        let (segment, chunk, entry) = self.locate(key)?;
        let (key, value) = &self.segments[segment].chunks[chunk].entries[entry];
        Some((key, value))
    }

    /// Every entry in key order.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter { segments: &self.segments, segment: 0, chunk: 0, entry: 0, end: None }
    }

    /// Entries with keys in `[start, end)` (`end = None`: to the last key), in key order.
    pub fn range<'a>(&'a self, start: &'a [u8], end: Option<&'a [u8]>) -> Iter<'a, V> {
        let (segment, chunk) = self.first_chunk_not_below(start);
        let entry = match self.segments.get(segment) {
            Some(found) => found.chunks[chunk].first_not_below(start),
            None => 0,
        };
        Iter { segments: &self.segments, segment, chunk, entry, end }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// Checks the invariants of the module documentation (a failure is a bug: panics).
    pub fn assert_invariants(&self) {
        let mut counted = 0;
        let mut previous: Option<&[u8]> = None;
        assert_eq!(self.fences.len(), self.segments.len(), "a fence per segment");
        self.fences.assert_indexes();
        for (segment, segment_fence) in self.segments.iter().zip(self.fences.keys()) {
            assert!(!segment.chunks.is_empty(), "an empty segment is kept");
            assert!(segment.chunks.len() <= SEGMENT_CHUNKS_MAX, "a segment is over its limit");
            assert_eq!(segment.fences.len(), segment.chunks.len(), "a fence per chunk");
            assert!(segment_fence == segment.last_key(), "a segment's fence is not its last key");
            segment.fences.assert_indexes();
            for (chunk, fence) in segment.chunks.iter().zip(segment.fences.keys()) {
                assert!(!chunk.entries.is_empty(), "an empty chunk is kept");
                assert!(fence == chunk.last_key(), "a fence is not its chunk's last key");
                chunk.index.assert_indexes(chunk.entries.iter().map(|(key, _)| &**key));
                assert!(chunk.entries.len() <= CHUNK_ENTRIES_MAX, "a chunk is over its limit");
                for (key, _) in &chunk.entries {
                    assert!(previous.is_none_or(|p| p < &**key), "keys out of order");
                    previous = Some(key);
                }
                counted += chunk.entries.len();
            }
        }
        assert_eq!(counted, self.len, "entry count is off");
    }
}

impl<V: Clone> CowMap<V> {
    /// Entry `entry` of chunk `chunk` of segment `segment`, to change (copies the
    /// segment's pointers and the chunk if shared).
    fn value_mut(&mut self, segment: usize, chunk: usize, entry: usize) -> &mut V {
        let segment = Arc::make_mut(&mut self.segments[segment]);
        &mut Arc::make_mut(&mut segment.chunks[chunk]).entries[entry].1
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let (segment, chunk, entry) = self.locate(key)?;
        Some(self.value_mut(segment, chunk, entry))
    }

    /// The value of `key`, inserted as `make()` first if the key is missing.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> &mut V {
        if self.segments.is_empty() {
            self.push_chunk(vec![(key.into(), make())]);
            self.len = 1;
            return self.value_mut(0, 0, 0);
        }
        let (mut segment, mut chunk) = self.chunk_for(key);
        let mut entry = match self.segments[segment].chunks[chunk].position(key) {
            Ok(entry) => return self.value_mut(segment, chunk, entry),
            Err(entry) => entry,
        };
        let full = self.segments[segment].chunks[chunk].entries.len();
        if full >= CHUNK_ENTRIES_MAX {
            let last_segment = self.segments.len() - 1;
            if segment == last_segment && chunk + 1 == self.segments[segment].chunks.len() && entry == full {
                // Appending past the last key (keys written in order): a new chunk, so
                // the full one stays full and untouched.
                self.len += 1;
                self.push_chunk(vec![(key.into(), make())]);
                let segment = self.segments.len() - 1;
                let chunk = self.segments[segment].chunks.len() - 1;
                return self.value_mut(segment, chunk, 0);
            }
            let half = full / 2;
            let split = Arc::make_mut(&mut self.segments[segment]);
            let tail = Arc::make_mut(&mut split.chunks[chunk]).split_off(half);
            // The tail keeps the old last key; the head ends earlier now.
            split.insert_chunk(chunk + 1, tail);
            split.refresh_fence(chunk);
            if entry >= half {
                chunk += 1;
                entry -= half;
            }
            if split.chunks.len() > SEGMENT_CHUNKS_MAX {
                let head_chunks = self.split_segment(segment);
                if chunk >= head_chunks {
                    segment += 1;
                    chunk -= head_chunks;
                }
            }
        }
        let ends_chunk = entry == self.segments[segment].chunks[chunk].entries.len();
        let changed = Arc::make_mut(&mut self.segments[segment]);
        Arc::make_mut(&mut changed.chunks[chunk]).insert(entry, key, make());
        if ends_chunk {
            changed.refresh_fence(chunk);
            if chunk + 1 == changed.chunks.len() {
                self.refresh_segment_fence(segment);
            }
        }
        self.len += 1;
        self.value_mut(segment, chunk, entry)
    }

    /// Moves the second half of segment `segment`'s chunks into a new segment after it;
    /// returns how many chunks stayed.
    fn split_segment(&mut self, segment: usize) -> usize {
        let head = Arc::make_mut(&mut self.segments[segment]);
        let half = head.chunks.len() / 2;
        let tail = Segment { chunks: head.chunks.split_off(half), fences: head.fences.split_off(half) };
        // The tail keeps the old last key; the head ends earlier now.
        self.fences.insert(segment + 1, tail.last_key());
        self.segments.insert(segment + 1, Arc::new(tail));
        self.refresh_segment_fence(segment);
        half
    }

    /// Calls `keep` on every entry `touches` says yes to, letting it change the value,
    /// and removes the entry if it returns false — over a window: the chunks from the one
    /// holding `start` on, until at least `keys_max` keys were looked at. Only chunks
    /// holding such an entry are copied if shared (with their segment's pointers): a
    /// compaction that changes a few keys copies a few chunks. The first key after the
    /// window (where the next call starts), or `None` once the last chunk was done.
    pub fn retain_where_from(
        &mut self,
        start: &[u8],
        keys_max: usize,
        touches: impl Fn(&[u8], &V) -> bool,
        mut keep: impl FnMut(&[u8], &mut V) -> bool,
    ) -> Option<Vec<u8>> {
        let (mut segment, mut chunk) = self.first_chunk_not_below(start);
        let mut looked_at = 0usize;
        let mut removed = 0usize;
        while segment < self.segments.len() && looked_at < keys_max {
            let shared = &self.segments[segment].chunks[chunk];
            looked_at += shared.entries.len();
            if shared.entries.iter().any(|(key, value)| touches(key, value)) {
                let changed_segment = Arc::make_mut(&mut self.segments[segment]);
                let changed = Arc::make_mut(&mut changed_segment.chunks[chunk]);
                let before = changed.entries.len();
                changed.entries.retain_mut(|(key, value)| !touches(key, value) || keep(key, value));
                let after = changed.entries.len();
                removed += before - after;
                if after == 0 {
                    changed_segment.remove_chunk(chunk);
                    if changed_segment.chunks.is_empty() {
                        // The next segment moves into this one's place.
                        self.segments.remove(segment);
                        self.fences.remove(segment);
                        chunk = 0;
                    } else if chunk == changed_segment.chunks.len() {
                        // The segment's last chunk went: it ends earlier now.
                        self.refresh_segment_fence(segment);
                        segment += 1;
                        chunk = 0;
                    }
                    continue;
                }
                if after != before {
                    changed.reindex();
                    changed_segment.refresh_fence(chunk);
                    if chunk + 1 == changed_segment.chunks.len() {
                        self.refresh_segment_fence(segment);
                    }
                }
            }
            chunk += 1;
            if chunk == self.segments[segment].chunks.len() {
                segment += 1;
                chunk = 0;
            }
        }
        self.len -= removed;
        self.segments.get(segment).map(|next| next.chunks[chunk].entries[0].0.to_vec())
    }

    /// Lets `change` rewrite every value (copies every shared segment and chunk).
    pub fn for_each_value_mut(&mut self, mut change: impl FnMut(&mut V)) {
        for segment in &mut self.segments {
            for chunk in &mut Arc::make_mut(segment).chunks {
                for (_, value) in &mut Arc::make_mut(chunk).entries {
                    change(value);
                }
            }
        }
    }

    /// The first entry in key order for which `matches` is true, to change it.
    #[cfg(madsim)]
    pub fn find_mut(&mut self, matches: impl Fn(&[u8], &V) -> bool) -> Option<(&[u8], &mut V)> {
        let (segment, chunk) = self.segments.iter().enumerate().find_map(|(s, segment)| {
            segment.chunks.iter().position(|c| c.entries.iter().any(|(k, v)| matches(k, v))).map(|c| (s, c))
        })?;
        let entries = &mut Arc::make_mut(&mut Arc::make_mut(&mut self.segments[segment]).chunks[chunk]).entries;
        let entry = entries.iter().position(|(k, v)| matches(k, v)).expect("found above");
        let (key, value) = &mut entries[entry];
        Some((key, value))
    }

    /// Adds a chunk after the last one (its keys above every key of the map): into the
    /// last segment while it has room, else into a new one.
    fn push_chunk(&mut self, entries: Vec<(Box<[u8]>, V)>) {
        let chunk = Chunk::new(entries);
        match self.segments.last_mut() {
            Some(last) if last.chunks.len() < SEGMENT_CHUNKS_MAX => {
                let last = Arc::make_mut(last);
                let at = last.chunks.len();
                last.insert_chunk(at, chunk);
                self.refresh_segment_fence(self.segments.len() - 1);
            }
            _ => {
                let mut segment = Segment { chunks: Vec::new(), fences: Fences::default() };
                segment.insert_chunk(0, chunk);
                let at = self.segments.len();
                self.fences.insert(at, segment.last_key());
                self.segments.push(Arc::new(segment));
            }
        }
    }

    /// Builds a map from entries already strictly increasing by key (decoding), with
    /// full chunks and segments. An entry out of order is refused.
    fn from_sorted(entries: impl Iterator<Item = (Vec<u8>, V)>) -> Result<Self, String> {
        let mut map = CowMap::default();
        let mut current: Vec<(Box<[u8]>, V)> = Vec::with_capacity(CHUNK_ENTRIES_MAX);
        for (key, value) in entries {
            let last = current
                .last()
                .map(|(k, _)| &**k)
                .or_else(|| map.segments.last().map(|s| s.last_key()));
            if last.is_some_and(|last| last >= key.as_slice()) {
                return Err("keys are not strictly increasing".into());
            }
            current.push((key.into_boxed_slice(), value));
            map.len += 1;
            if current.len() == CHUNK_ENTRIES_MAX {
                let full = std::mem::replace(&mut current, Vec::with_capacity(CHUNK_ENTRIES_MAX));
                map.push_chunk(full);
            }
        }
        if !current.is_empty() {
            current.shrink_to_fit();
            map.push_chunk(current);
        }
        Ok(map)
    }
}

impl<V: Serialize> Serialize for CowMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (key, value) in self.iter() {
            map.serialize_entry(&super::byte_strings::AsBytes(key), value)?;
        }
        map.end()
    }
}

struct CowMapVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de> + Clone> Visitor<'de> for CowMapVisitor<V> {
    type Value = CowMap<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of byte keys in increasing order")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut error = None;
        let entries = std::iter::from_fn(|| match access.next_entry::<super::byte_strings::ByteString, V>() {
            Ok(entry) => entry.map(|(key, value)| (key.0, value)),
            Err(e) => {
                error = Some(e);
                None
            }
        });
        let map = CowMap::from_sorted(entries).map_err(serde::de::Error::custom);
        match error {
            Some(e) => Err(e),
            None => map,
        }
    }
}

impl<'de, V: Deserialize<'de> + Clone> Deserialize<'de> for CowMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CowMapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Keys of the random test, by seed: short ones; ones sharing a long prefix (the
    /// fences' inline prefix ties); raw bytes of every length up to 4 with zeros in them
    /// (the prefix's zero padding), the empty key included.
    fn test_key(seed: u64, number: u64) -> Vec<u8> {
        match seed % 3 {
            0 => format!("k{number:04}").into_bytes(),
            1 => format!("/registry/pods/default/k{number:04}").into_bytes(),
            _ => {
                let trailing_zeros = std::iter::repeat_n(0u8, (number % 3) as usize);
                number.to_be_bytes().into_iter().skip_while(|b| *b == 0).chain(trailing_zeros).collect()
            }
        }
    }

    /// Random inserts, updates, removals and compaction-like retains, checked against a
    /// `BTreeMap` after every step, with clones taken along the way that must not change.
    #[test]
    fn behaves_as_a_btree_map_and_clones_are_frozen() {
        for seed in 0..20u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut map: CowMap<u64> = CowMap::default();
            let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            let mut frozen: Vec<(CowMap<u64>, BTreeMap<Vec<u8>, u64>)> = Vec::new();
            for step in 0..3000u64 {
                let key = test_key(seed, rng.gen_range(0..if seed % 2 == 0 { 500 } else { 5000 }));
                match rng.gen_range(0..10) {
                    0..=5 => {
                        *map.get_or_insert_with(&key, || 0) += step;
                        *model.entry(key.clone()).or_insert(0) += step;
                    }
                    6 => {
                        if let Some(v) = map.get_mut(&key) {
                            *v = 7;
                        }
                        if let Some(v) = model.get_mut(&key) {
                            *v = 7;
                        }
                    }
                    7 => {
                        // In windows of a few keys, as compaction steps run.
                        let cut = rng.gen_range(0..step.max(1));
                        let window = rng.gen_range(1..200);
                        let mut start = Vec::new();
                        while let Some(next) = map.retain_where_from(&start, window, |_, v| *v < cut, |_, v| *v % 3 != 0) {
                            start = next;
                        }
                        model.retain(|_, v| *v >= cut || *v % 3 != 0);
                    }
                    8 => frozen.push((map.clone(), model.clone())),
                    _ => {
                        let start = test_key(seed, rng.gen_range(0..5000));
                        let end = test_key(seed, rng.gen_range(0..5000));
                        let got: Vec<_> = map
                            .range(&start, Some(&end))
                            .map(|(k, v)| (k.to_vec(), *v))
                            .collect();
                        let want: Vec<_> = if start < end {
                            model
                                .range(start.clone()..end.clone())
                                .map(|(k, v)| (k.clone(), *v))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        assert_eq!(got, want, "range seed {seed} step {step}");
                        let open: Vec<_> =
                            map.range(&start, None).map(|(k, _)| k.to_vec()).collect();
                        let want_open: Vec<_> = model
                            .range(start.clone()..)
                            .map(|(k, _)| k.clone())
                            .collect();
                        assert_eq!(open, want_open);
                    }
                }
                assert_eq!(map.get(&key), model.get(&key));
                map.assert_invariants();
            }
            let all: Vec<_> = map.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
            assert_eq!(
                all,
                model
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect::<Vec<_>>()
            );
            for (copy, model_then) in &frozen {
                copy.assert_invariants();
                let got: Vec<_> = copy.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
                assert_eq!(
                    got,
                    model_then
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn encodes_as_a_btree_map_and_refuses_unordered_input() {
        let mut map: CowMap<u32> = CowMap::default();
        let mut model: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for i in (0..300u32).rev() {
            let key = format!("key-{i:03}").into_bytes();
            *map.get_or_insert_with(&key, || 0) = i;
            model.insert(key, i);
        }
        let bytes = bincode::serialize(&map).expect("encodes");
        assert_eq!(bytes, bincode::serialize(&model).expect("encodes"));
        let back: CowMap<u32> = bincode::deserialize(&bytes).expect("decodes");
        back.assert_invariants();
        assert_eq!(back, map);
        let mut unordered: Vec<(Vec<u8>, u32)> = model.into_iter().collect();
        unordered.swap(3, 4);
        let mut bad = bincode::serialize(&(unordered.len() as u64)).expect("encodes");
        for entry in &unordered {
            bad.extend(bincode::serialize(entry).expect("encodes"));
        }
        let refused = bincode::deserialize::<CowMap<u32>>(&bad).expect_err("unordered keys");
        assert!(
            refused.to_string().contains("strictly increasing"),
            "{refused}"
        );
    }

    /// Fences keep their keys end to end: every change moves the later keys and keeps
    /// the windows right, including a first key that loses the shared prefix.
    #[test]
    fn fences_keep_their_keys_end_to_end_through_every_change() {
        let mut fences = Fences::default();
        let mut model: Vec<Vec<u8>> = Vec::new();
        let check = |fences: &Fences, model: &[Vec<u8>]| {
            fences.assert_indexes();
            assert_eq!(fences.keys().map(<[u8]>::to_vec).collect::<Vec<_>>(), model);
            for (at, key) in model.iter().enumerate() {
                assert_eq!(fences.first_not_below(key), at);
            }
        };
        for (at, key) in [(0, "/p/b"), (1, "/p/dd"), (0, "/p/a"), (3, "/p/zzzz"), (2, "/p/c")] {
            fences.insert(at, key.as_bytes());
            model.insert(at, key.as_bytes().to_vec());
            check(&fences, &model);
        }
        for (at, key) in [(4, "/p/zz"), (1, "/p/bbbbbbbbbbbbbbbb"), (0, "/"), (0, "/p/")] {
            fences.set(at, key.as_bytes());
            model[at] = key.as_bytes().to_vec();
            check(&fences, &model);
        }
        fences.remove(1);
        model.remove(1);
        check(&fences, &model);
        let tail = fences.split_off(2);
        let model_tail = model.split_off(2);
        check(&fences, &model);
        check(&tail, &model_tail);
    }

    #[test]
    fn a_clone_shares_segments_and_chunks_until_one_is_written() {
        let mut map: CowMap<u64> = CowMap::default();
        for i in 0..10_000u64 {
            *map.get_or_insert_with(format!("{i:08}").as_bytes(), || 0) = i;
        }
        assert_eq!(
            map.chunk_count(),
            10_000usize.div_ceil(CHUNK_ENTRIES_MAX),
            "keys in order fill chunks"
        );
        assert_eq!(map.segment_count(), map.chunk_count().div_ceil(SEGMENT_CHUNKS_MAX), "chunks in order fill segments");
        let frozen = map.clone();
        *map.get_mut(b"00000005").expect("present") = 99;
        let pairs = || map.segments.iter().zip(&frozen.segments);
        let shared_segments = pairs().filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared_segments, map.segment_count() - 1, "one write copies one segment's pointers");
        let (written, original) = pairs().find(|(a, b)| !Arc::ptr_eq(a, b)).expect("one segment was copied");
        let shared_chunks = written.chunks.iter().zip(&original.chunks).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared_chunks, written.chunks.len() - 1, "and one chunk");
        assert_eq!(frozen.get(b"00000005"), Some(&5));
    }
}
