//! A read-only reader of bbolt database files — what `etcdctl snapshot save` writes when
//! it talks to etcd — so that `detcd snapshot restore` can migrate etcd's data. It reads
//! the two meta pages (the valid one with the newest transaction wins, as bbolt does)
//! and walks a bucket's B+tree, yielding its key-values in key order; nested buckets,
//! inline buckets and overflow pages included.
//!
//! Layout (bbolt's, little-endian): every page starts with a 16-byte header — page id
//! (u64), flags (u16: branch 0x01, leaf 0x02, meta 0x04, freelist 0x10), element count
//! (u16), overflow pages (u32). A meta page holds magic 0xED0CDAED, version 2, page
//! size, flags, the root bucket (root page u64, sequence u64), the freelist page, the
//! page high-water mark, the transaction id and an FNV-1a 64 checksum of what precedes
//! it. Branch elements are {pos u32, ksize u32, child page u64}, leaf elements {flags u32,
//! pos u32, ksize u32, vsize u32}, each `pos` counted from the element itself. A leaf
//! element with flag 0x01 is a bucket: its value is {root page u64, sequence u64},
//! followed, when the root is 0, by the bucket's only page inline.
//!
//! Every offset read from the file is checked against the file: a damaged file is an
//! error, never a panic; the walk is bounded ([`BOLT_PAGES_VISITED_MAX`]), so a cycle in
//! the page graph ends it.

/// bbolt's magic number, in both meta pages.
pub const BOLT_MAGIC: u32 = 0xED0C_DAED;
const BOLT_VERSION: u32 = 2;
const PAGE_HEADER_BYTES: usize = 16;
const ELEMENT_BYTES: usize = 16;
const META_CHECKSUMMED_BYTES: usize = 56;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const BUCKET_ELEMENT: u32 = 0x01;
/// Pages one walk may visit.
pub const BOLT_PAGES_VISITED_MAX: usize = 1 << 26;
/// Smallest and largest page sizes accepted.
const PAGE_BYTES_MIN: usize = 512;
const PAGE_BYTES_MAX: usize = 1 << 20;

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, String> {
    bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(|| format!("bbolt file cut short at byte {at}"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, String> {
    bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).ok_or_else(|| format!("bbolt file cut short at byte {at}"))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, String> {
    bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).ok_or_else(|| format!("bbolt file cut short at byte {at}"))
}

/// Whether `bytes` starts like a bbolt file (the first meta page's magic).
pub fn looks_like_bolt(bytes: &[u8]) -> bool {
    u32_at(bytes, PAGE_HEADER_BYTES).is_ok_and(|magic| magic == BOLT_MAGIC)
}

/// A bucket's tree: a page of the file, or a page inline in its parent's leaf.
#[derive(Clone, Copy, Debug)]
pub enum BucketRoot<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

/// One page's bytes (header included) with its flags and element count.
#[derive(Clone, Copy)]
struct PageView<'a> {
    bytes: &'a [u8],
    flags: u16,
    count: usize,
}

impl<'a> PageView<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let flags = u16_at(bytes, 8)?;
        let count = usize::from(u16_at(bytes, 10)?);
        if PAGE_HEADER_BYTES + count * ELEMENT_BYTES > bytes.len() {
            return Err(format!("bbolt page holds {count} elements but has {} bytes", bytes.len()));
        }
        Ok(Self { bytes, flags, count })
    }

    /// `len` bytes at `pos` counted from element `index`.
    fn slice_from_element(&self, index: usize, pos: u32, len: u32) -> Result<&'a [u8], String> {
        let start = (PAGE_HEADER_BYTES + index * ELEMENT_BYTES).checked_add(pos as usize).ok_or("bbolt element offset overflows")?;
        let end = start.checked_add(len as usize).ok_or("bbolt element length overflows")?;
        self.bytes.get(start..end).ok_or_else(|| format!("bbolt element {index} points past its page ({start}..{end} of {})", self.bytes.len()))
    }
}

/// An open bbolt file (borrowed bytes).
pub struct BoltFile<'a> {
    bytes: &'a [u8],
    page_bytes: usize,
    root: u64,
    pub txid: u64,
}

impl<'a> BoltFile<'a> {
    /// Checks the meta pages and picks the valid one with the newest transaction.
    pub fn open(bytes: &'a [u8]) -> Result<Self, String> {
        if !looks_like_bolt(bytes) {
            return Err("not a bbolt file (no bbolt magic in its first meta page)".into());
        }
        let page_bytes = u32_at(bytes, PAGE_HEADER_BYTES + 8)? as usize;
        if !(PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&page_bytes) || !page_bytes.is_power_of_two() {
            return Err(format!("bbolt page size {page_bytes} is not plausible"));
        }
        let mut best: Option<(u64, u64)> = None;
        let mut errors = Vec::new();
        for meta_page in 0..2usize {
            match Self::read_meta(bytes, meta_page * page_bytes, page_bytes) {
                Ok((txid, root)) if best.is_none_or(|(best_txid, _)| txid > best_txid) => best = Some((txid, root)),
                Ok(_) => {}
                Err(e) => errors.push(format!("meta page {meta_page}: {e}")),
            }
        }
        let (txid, root) = best.ok_or_else(|| format!("no valid bbolt meta page: {}", errors.join("; ")))?;
        Ok(Self { bytes, page_bytes, root, txid })
    }

    /// (transaction id, root bucket page) of the meta page at `offset`, if it checks out.
    fn read_meta(bytes: &[u8], offset: usize, page_bytes: usize) -> Result<(u64, u64), String> {
        if u16_at(bytes, offset + 8)? & META_PAGE == 0 {
            return Err("not a meta page".into());
        }
        let meta = offset + PAGE_HEADER_BYTES;
        let checksummed = bytes.get(meta..meta + META_CHECKSUMMED_BYTES).ok_or("cut short")?;
        if u32_at(bytes, meta)? != BOLT_MAGIC || u32_at(bytes, meta + 4)? != BOLT_VERSION {
            return Err("bad magic or version".into());
        }
        if u32_at(bytes, meta + 8)? as usize != page_bytes {
            return Err("page size differs from the first meta page's".into());
        }
        if crate::digest::fnv1a64(checksummed) != u64_at(bytes, meta + META_CHECKSUMMED_BYTES)? {
            return Err("checksum mismatch".into());
        }
        Ok((u64_at(bytes, meta + 48)?, u64_at(bytes, meta + 16)?))
    }

    fn page(&self, id: u64) -> Result<PageView<'a>, String> {
        let start = usize::try_from(id).ok().and_then(|id| id.checked_mul(self.page_bytes)).ok_or("bbolt page id overflows")?;
        let overflow = u32_at(self.bytes, start + 12)? as usize;
        let len = (overflow + 1).checked_mul(self.page_bytes).ok_or("bbolt overflow count overflows")?;
        let bytes = self.bytes.get(start..start + len).ok_or_else(|| format!("bbolt page {id} lies past the end of the file"))?;
        PageView::parse(bytes)
    }

    /// The root bucket (the tree of top-level buckets).
    pub fn root(&self) -> BucketRoot<'a> {
        BucketRoot::Page(self.root)
    }

    /// The top-level bucket `name`, if the file has it.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<BucketRoot<'a>>, String> {
        let mut found = None;
        self.for_each(self.root(), |key, value, is_bucket| {
            if is_bucket && key == name && found.is_none() {
                found = Some(Self::bucket_root(value)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    fn bucket_root(value: &'a [u8]) -> Result<BucketRoot<'a>, String> {
        let root = u64_at(value, 0)?;
        if root != 0 {
            return Ok(BucketRoot::Page(root));
        }
        let inline = value.get(16..).filter(|page| page.len() >= PAGE_HEADER_BYTES).ok_or("bbolt inline bucket cut short")?;
        Ok(BucketRoot::Inline(inline))
    }

    /// Calls `visit(key, value, is_bucket)` for every element of the bucket, in key
    /// order. Depth-first over branch pages with an explicit stack (no recursion).
    pub fn for_each(&self, bucket: BucketRoot<'a>, mut visit: impl FnMut(&'a [u8], &'a [u8], bool) -> Result<(), String>) -> Result<(), String> {
        let first = match bucket {
            BucketRoot::Page(id) => self.page(id)?,
            BucketRoot::Inline(bytes) => PageView::parse(bytes)?,
        };
        let mut stack: Vec<(PageView<'a>, usize)> = vec![(first, 0)];
        let mut pages_visited = 1usize;
        while let Some((page, index)) = stack.pop() {
            if index >= page.count {
                continue;
            }
            stack.push((page, index + 1));
            let element = PAGE_HEADER_BYTES + index * ELEMENT_BYTES;
            if page.flags & BRANCH_PAGE != 0 {
                let child = u64_at(page.bytes, element + 8)?;
                pages_visited += 1;
                if pages_visited > BOLT_PAGES_VISITED_MAX || stack.len() > 64 {
                    return Err("bbolt page graph is too deep or has a cycle".into());
                }
                stack.push((self.page(child)?, 0));
            } else if page.flags & LEAF_PAGE != 0 {
                let flags = u32_at(page.bytes, element)?;
                let pos = u32_at(page.bytes, element + 4)?;
                let key_len = u32_at(page.bytes, element + 8)?;
                let value_len = u32_at(page.bytes, element + 12)?;
                let key = page.slice_from_element(index, pos, key_len)?;
                let value = page.slice_from_element(index, pos.checked_add(key_len).ok_or("bbolt key length overflows")?, value_len)?;
                visit(key, value, flags & BUCKET_ELEMENT != 0)?;
            } else {
                return Err(format!("bbolt page with flags {:#x} inside a bucket's tree", page.flags));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
        bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn meta(file: &mut [u8], page: usize, root: u64, txid: u64) {
        let at = page * PAGE;
        put_u64(file, at, page as u64);
        put_u16(file, at + 8, META_PAGE);
        let m = at + PAGE_HEADER_BYTES;
        put_u32(file, m, BOLT_MAGIC);
        put_u32(file, m + 4, BOLT_VERSION);
        put_u32(file, m + 8, PAGE as u32);
        put_u64(file, m + 16, root);
        put_u64(file, m + 48, txid);
        let checksum = crate::digest::fnv1a64(&file[m..m + META_CHECKSUMMED_BYTES]);
        put_u64(file, m + META_CHECKSUMMED_BYTES, checksum);
    }

    /// A leaf page at `page` with `(key, value, is_bucket)` elements.
    fn leaf(file: &mut [u8], page: usize, elements: &[(&[u8], Vec<u8>, bool)]) {
        let at = page * PAGE;
        put_u64(file, at, page as u64);
        put_u16(file, at + 8, LEAF_PAGE);
        put_u16(file, at + 10, elements.len() as u16);
        let mut data = at + PAGE_HEADER_BYTES + elements.len() * ELEMENT_BYTES;
        for (i, (key, value, is_bucket)) in elements.iter().enumerate() {
            let element = at + PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
            put_u32(file, element, u32::from(*is_bucket));
            put_u32(file, element + 4, (data - element) as u32);
            put_u32(file, element + 8, key.len() as u32);
            put_u32(file, element + 12, value.len() as u32);
            file[data..data + key.len()].copy_from_slice(key);
            file[data + key.len()..data + key.len() + value.len()].copy_from_slice(value);
            data += key.len() + value.len();
        }
    }

    /// A branch page at `page` pointing at `(first key, child page)`.
    fn branch(file: &mut [u8], page: usize, children: &[(&[u8], u64)]) {
        let at = page * PAGE;
        put_u64(file, at, page as u64);
        put_u16(file, at + 8, BRANCH_PAGE);
        put_u16(file, at + 10, children.len() as u16);
        let mut data = at + PAGE_HEADER_BYTES + children.len() * ELEMENT_BYTES;
        for (i, (key, child)) in children.iter().enumerate() {
            let element = at + PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
            put_u32(file, element, (data - element) as u32);
            put_u32(file, element + 4, key.len() as u32);
            put_u64(file, element + 8, *child);
            file[data..data + key.len()].copy_from_slice(key);
            data += key.len();
        }
    }

    fn bucket_value(root: u64) -> Vec<u8> {
        let mut value = vec![0u8; 16];
        put_u64(&mut value, 0, root);
        value
    }

    /// Root (page 3) holds bucket "a" (tree at page 4: a branch over leaves 5 and 6) and
    /// bucket "b" inline.
    fn sample_file(newer_meta_damaged: bool) -> Vec<u8> {
        let mut file = vec![0u8; 7 * PAGE];
        meta(&mut file, 0, 3, 1);
        meta(&mut file, 1, 3, 2);
        if newer_meta_damaged {
            file[PAGE + PAGE_HEADER_BYTES + 20] ^= 0xff;
        }
        let mut inline = bucket_value(0);
        let mut inline_page = vec![0u8; PAGE];
        leaf(&mut inline_page, 0, &[(b"x", b"1".to_vec(), false)]);
        inline.extend_from_slice(&inline_page[..64]);
        leaf(&mut file, 3, &[(b"a", bucket_value(4), true), (b"b", inline, true)]);
        branch(&mut file, 4, &[(b"k1", 5), (b"k3", 6)]);
        leaf(&mut file, 5, &[(b"k1", b"v1".to_vec(), false), (b"k2", b"v2".to_vec(), false)]);
        leaf(&mut file, 6, &[(b"k3", b"v3".to_vec(), false)]);
        file
    }

    fn collect(file: &BoltFile<'_>, bucket: BucketRoot<'_>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        file.for_each(bucket, |k, v, _| {
            out.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()));
            Ok(())
        })
        .expect("walk");
        out
    }

    #[test]
    fn walks_paged_and_inline_buckets_in_key_order() {
        for damaged in [false, true] {
            let bytes = sample_file(damaged);
            let file = BoltFile::open(&bytes).expect("open");
            assert_eq!(file.txid, if damaged { 1 } else { 2 }, "the valid meta with the newest transaction wins");
            let a = file.bucket(b"a").expect("walk").expect("bucket a");
            let pairs = collect(&file, a);
            assert_eq!(pairs, [("k1", "v1"), ("k2", "v2"), ("k3", "v3")].map(|(k, v)| (k.to_string(), v.to_string())));
            let b = file.bucket(b"b").expect("walk").expect("bucket b");
            assert_eq!(collect(&file, b), vec![("x".to_string(), "1".to_string())]);
            assert!(file.bucket(b"c").expect("walk").is_none());
        }
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let bytes = sample_file(false);
        // Cut after the first meta page: it opens, but the tree is gone.
        assert!(BoltFile::open(&bytes[..100]).and_then(|file| file.bucket(b"a")).is_err());
        assert!(BoltFile::open(b"not a bolt file at all, not at all").is_err());
        // Every single-byte flip and every truncation: an error or a walk, never a panic.
        for at in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x5a;
            if let Ok(file) = BoltFile::open(&flipped) {
                if let Ok(Some(a)) = file.bucket(b"a") {
                    let _ = file.for_each(a, |_, _, _| Ok(()));
                }
            }
        }
        for len in (0..bytes.len()).step_by(97) {
            if let Ok(file) = BoltFile::open(&bytes[..len]) {
                let _ = file.bucket(b"a");
            }
        }
        // A cycle: the branch points at itself.
        let mut cyclic = bytes.clone();
        put_u64(&mut cyclic, 4 * PAGE + PAGE_HEADER_BYTES + 8, 4);
        let file = BoltFile::open(&cyclic).expect("open");
        let a = file.bucket(b"a").expect("walk").expect("bucket a");
        assert!(file.for_each(a, |_, _, _| Ok(())).is_err());
    }
}
