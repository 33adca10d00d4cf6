//! The sparse per-segment indexes, kept in memory and mirrored to append-only files.
//!
//! - `.index`: 8-byte entries `(offset - segment base: u32, file position: u32)`, both strictly
//!   increasing; each names the first byte of a batch whose base offset is that offset.
//! - `.timeindex`: 12-byte entries `(timestamp: i64, offset - segment base: u32)`; timestamps
//!   strictly increasing; each says "by this offset, the segment's largest timestamp so far is
//!   this, held by the batch at this offset".
//!
//! Both are big-endian, with no header, so an index file is exactly its entries. The active
//! segment's entries live in memory; the files are written whole when a segment is sealed,
//! recovered, truncated or closed, and hold no descriptor in between: a partition keeps one
//! open file (its active segment's log), not three, which is what lets a node hold tens of
//! thousands of partitions. The active segment's index files are stale until then, which costs
//! nothing: after a crash recovery rescans the active segment (it lies past the recovery point)
//! and rebuilds its indexes. A sealed segment's entries leave memory once written: lookups
//! search its file (page cache, a few small reads), so memory does not grow with the data
//! kept, and a node starts without reading every index it holds.

use std::io;
use std::path::{Path, PathBuf};

use crate::storage::Storage;

/// One kind of index entry.
pub trait IndexEntry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(buf: &[u8]) -> Self;
    /// The key entries are ordered by (must strictly increase).
    fn key(&self) -> i64;
    /// The relative offset of the entry.
    fn relative_offset(&self) -> u32;
    /// Whether this entry may follow `prev` in a file: keys strictly rising, relative offsets
    /// not falling (and, for the offset index, positions strictly rising).
    fn follows(&self, prev: &Self) -> bool {
        self.key() > prev.key() && self.relative_offset() >= prev.relative_offset()
    }
}

/// `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
            position: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        }
    }
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
    fn follows(&self, prev: &Self) -> bool {
        self.relative_offset > prev.relative_offset && self.position > prev.position
    }
}

/// `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&buf[..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        }
    }
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

/// An index: its file, and while its segment is active (or being built) its entries in
/// memory. A sealed segment's index lives only in its file, searched in place: memory does not
/// grow with the data a node keeps.
#[derive(Debug)]
pub struct Index<E: IndexEntry> {
    path: PathBuf,
    held: Held<E>,
}

#[derive(Debug)]
enum Held<E> {
    /// The entries in memory; `dirty` when the file does not hold exactly them.
    Memory { entries: Entries<E>, dirty: bool },
    /// The entries only in the file: how many, and the last one.
    File { len: usize, last: Option<E> },
}

/// Bytes read at once when searching a file: a page of whole entries.
const BLOCK_BYTES: usize = 4096;
/// Bytes written or read at once when an index file is written or loaded whole.
const WRITE_BYTES: usize = 64 * 1024;

/// Entries in memory, in fixed chunks of a page each rather than one vector: growing never
/// copies (a full segment's index is megabytes, grown under the partition's lock), and the
/// memory a sealed segment gives back comes in pieces the next segment's index reuses, where
/// freed vectors of every doubling size were kept by the allocator as the data grew.
#[derive(Debug)]
struct Entries<E> {
    chunks: Vec<Vec<E>>,
    len: usize,
}

impl<E: IndexEntry> Entries<E> {
    const PER_CHUNK: usize = {
        let n = BLOCK_BYTES / std::mem::size_of::<E>();
        if n == 0 { 1 } else { n }
    };

    fn new() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, e: E) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < Self::PER_CHUNK => chunk.push(e),
            _ => {
                let mut chunk = Vec::with_capacity(Self::PER_CHUNK);
                chunk.push(e);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn last(&self) -> Option<E> {
        self.chunks.last().and_then(|c| c.last().copied())
    }

    fn iter(&self) -> impl Iterator<Item = &E> {
        self.chunks.iter().flatten()
    }

    /// The last entry for which `before` holds (entries satisfying it come first).
    fn floor(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        // No chunk is empty: its first entry says which side it starts on.
        let c = self.chunks.partition_point(|chunk| before(&chunk[0]));
        let chunk = &self.chunks[c.checked_sub(1)?];
        chunk
            .partition_point(&before)
            .checked_sub(1)
            .map(|i| chunk[i])
    }

    /// Keeps the entries for which `keep` holds (a prefix); returns whether any went.
    fn truncate_while(&mut self, keep: impl Fn(&E) -> bool) -> bool {
        let before = self.len;
        let c = self.chunks.partition_point(|chunk| keep(&chunk[0]));
        self.chunks.truncate(c);
        if let Some(chunk) = self.chunks.last_mut() {
            let n = chunk.partition_point(&keep);
            chunk.truncate(n);
        }
        self.len = self.chunks.iter().map(Vec::len).sum();
        self.len < before
    }

    fn memory_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<E>>()
            + self.chunks.len() * Self::PER_CHUNK * std::mem::size_of::<E>()
    }
}

impl<E: IndexEntry> Index<E> {
    /// An empty index whose file is `path` (written by [`Index::persist`]).
    pub fn empty(path: PathBuf) -> Self {
        Self {
            path,
            held: Held::Memory {
                entries: Entries::new(),
                dirty: true,
            },
        }
    }

    /// Loads the file's entries; `Ok(None)` when they fail the sanity checks (size not a
    /// multiple of the entry size, keys or relative offsets not increasing, or `valid` false
    /// for an entry) and the index must be rebuilt.
    pub fn load(
        storage: &dyn Storage,
        path: PathBuf,
        valid: impl Fn(&E) -> bool,
    ) -> io::Result<Option<Self>> {
        Ok(read_entries(storage, &path, valid)?.map(|entries| Self {
            path,
            held: Held::Memory {
                entries,
                dirty: false,
            },
        }))
    }

    /// An index left in its file (a sealed segment's), searched there when asked. Checks what
    /// is cheap to check: the size is a multiple of the entry size, `valid` holds for the last
    /// entry and it follows the one before; `Ok(None)` when not. Deeper damage shows at a lookup, whose answer the
    /// segment checks against its log (see `Segment::position_for`).
    pub fn in_file(
        storage: &dyn Storage,
        path: PathBuf,
        valid: impl Fn(&E) -> bool,
    ) -> io::Result<Option<Self>> {
        let file = storage.open(&path, false)?;
        let bytes = file.len()?;
        if bytes % E::SIZE as u64 != 0 {
            return Ok(None);
        }
        let len = (bytes / E::SIZE as u64) as usize;
        let last = match len {
            0 => None,
            _ => {
                let n = len.min(2);
                let mut buf = [0u8; 32];
                let tail = &mut buf[..n * E::SIZE];
                file.read_exact_at(tail, bytes - tail.len() as u64)?;
                let e = E::decode(&tail[(n - 1) * E::SIZE..]);
                if !valid(&e) || (n == 2 && !e.follows(&E::decode(tail))) {
                    return Ok(None);
                }
                Some(e)
            }
        };
        Ok(Some(Self {
            path,
            held: Held::File { len, last },
        }))
    }

    /// Writes the entries to the file, durably, if it does not hold them already.
    pub fn persist(&mut self, storage: &dyn Storage) -> io::Result<()> {
        let Held::Memory { entries, dirty } = &mut self.held else {
            return Ok(());
        };
        if !*dirty {
            return Ok(());
        }
        // Written in pieces of a bounded size: a whole index at once would be a buffer of
        // megabytes at every roll.
        let file = storage.open(&self.path, true)?;
        let mut buf = Vec::with_capacity(WRITE_BYTES);
        let mut pos = 0u64;
        for e in entries.iter() {
            let at = buf.len();
            buf.resize(at + E::SIZE, 0);
            e.encode(&mut buf[at..]);
            if buf.len() + E::SIZE > WRITE_BYTES {
                file.write_at(&buf, pos)?;
                pos += buf.len() as u64;
                buf.clear();
            }
        }
        file.write_at(&buf, pos)?;
        file.truncate(pos + buf.len() as u64)?;
        file.sync()?;
        *dirty = false;
        Ok(())
    }

    /// Drops the entries from memory if the file holds them (after [`Index::persist`]); later
    /// lookups search the file. Returns whether the index is now in its file only.
    pub fn release(&mut self) -> bool {
        match &self.held {
            Held::File { .. } => true,
            Held::Memory { dirty: true, .. } => false,
            Held::Memory { entries, .. } => {
                self.held = Held::File {
                    len: entries.len,
                    last: entries.last(),
                };
                true
            }
        }
    }

    /// Brings an index left in its file back into memory (its segment becomes the active one
    /// again); `Ok(false)` when the file fails the checks of [`Index::load`].
    pub fn reload(
        &mut self,
        storage: &dyn Storage,
        valid: impl Fn(&E) -> bool,
    ) -> io::Result<bool> {
        if self.in_memory() {
            return Ok(true);
        }
        match read_entries(storage, &self.path, valid)? {
            Some(entries) => {
                self.held = Held::Memory {
                    entries,
                    dirty: false,
                };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Starts over empty, in memory (an index being rebuilt).
    pub fn clear(&mut self) {
        self.held = Held::Memory {
            entries: Entries::new(),
            dirty: true,
        };
    }

    /// Whether the entries are in memory.
    pub fn in_memory(&self) -> bool {
        matches!(self.held, Held::Memory { .. })
    }

    /// The file after a rename.
    pub fn set_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last(&self) -> Option<E> {
        match &self.held {
            Held::Memory { entries, .. } => entries.last(),
            Held::File { last, .. } => *last,
        }
    }

    pub fn len(&self) -> usize {
        match &self.held {
            Held::Memory { entries, .. } => entries.len,
            Held::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends an entry (in memory; see [`Index::persist`]). Only an index in memory takes
    /// entries: an index in its file belongs to a sealed segment.
    pub fn append(&mut self, entry: E) -> io::Result<()> {
        let Held::Memory { entries, dirty } = &mut self.held else {
            return Err(not_in_memory(&self.path));
        };
        entries.push(entry);
        *dirty = true;
        Ok(())
    }

    /// The last entry whose key is at most `key` (for the offset index) or, with `strict`,
    /// below `key` (for the time index). An index in its file is searched there: a few reads
    /// of one entry to find the page, then one read of that page.
    pub fn floor(&self, storage: &dyn Storage, key: i64, strict: bool) -> io::Result<Option<E>> {
        let before = |e: &E| {
            if strict {
                e.key() < key
            } else {
                e.key() <= key
            }
        };
        let len = match &self.held {
            Held::Memory { entries, .. } => return Ok(entries.floor(before)),
            Held::File { len, .. } => *len,
        };
        if len == 0 {
            return Ok(None);
        }
        let file = storage.open(&self.path, false)?;
        let per_block = BLOCK_BYTES / E::SIZE;
        let blocks = len.div_ceil(per_block);
        let mut buf = vec![0u8; per_block * E::SIZE];
        // The blocks whose first entry comes before `key` are a prefix: find its length.
        let (mut lo, mut hi) = (0, blocks);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            file.read_exact_at(&mut buf[..E::SIZE], (mid * per_block * E::SIZE) as u64)?;
            if before(&E::decode(&buf[..E::SIZE])) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(block) = lo.checked_sub(1) else {
            return Ok(None);
        };
        let n = per_block.min(len - block * per_block);
        let bytes = &mut buf[..n * E::SIZE];
        file.read_exact_at(bytes, (block * per_block * E::SIZE) as u64)?;
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let n = entries.partition_point(before);
        Ok(n.checked_sub(1).map(|i| entries[i]))
    }

    /// Drops every entry for which `keep` is false from the end on (in memory only).
    pub fn truncate_while(&mut self, keep: impl Fn(&E) -> bool) -> io::Result<()> {
        let Held::Memory { entries, dirty } = &mut self.held else {
            return Err(not_in_memory(&self.path));
        };
        if entries.truncate_while(keep) {
            *dirty = true;
        }
        Ok(())
    }

    /// Rough bytes of memory held.
    pub fn memory_bytes(&self) -> usize {
        match &self.held {
            Held::Memory { entries, .. } => entries.memory_bytes(),
            Held::File { .. } => 0,
        }
    }
}

/// An index's entries, if they pass [`Index::load`]'s checks.
fn read_entries<E: IndexEntry>(
    storage: &dyn Storage,
    path: &Path,
    valid: impl Fn(&E) -> bool,
) -> io::Result<Option<Entries<E>>> {
    let file = storage.open(path, false)?;
    let len = file.len()?;
    if len % E::SIZE as u64 != 0 {
        return Ok(None);
    }
    let mut entries: Entries<E> = Entries::new();
    let mut buf = vec![0u8; WRITE_BYTES / E::SIZE * E::SIZE];
    let mut pos = 0;
    while pos < len {
        let n = buf.len().min((len - pos) as usize);
        file.read_exact_at(&mut buf[..n], pos)?;
        pos += n as u64;
        for chunk in buf[..n].chunks_exact(E::SIZE) {
            let e = E::decode(chunk);
            if let Some(prev) = entries.last()
                && !e.follows(&prev)
            {
                return Ok(None);
            }
            if !valid(&e) {
                return Ok(None);
            }
            entries.push(e);
        }
    }
    Ok(Some(entries))
}

fn not_in_memory(path: &Path) -> io::Error {
    io::Error::other(format!(
        "index {} belongs to a sealed segment and takes no changes",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimStorage, XorShift as Rng};

    /// An index of `n` entries with keys rising by 1 to 9, built in memory and written out.
    fn built<E: IndexEntry>(
        disk: &SimStorage,
        name: &str,
        n: usize,
        rng: &mut Rng,
        make: impl Fn(i64, u32) -> E,
    ) -> Index<E> {
        let mut index = Index::empty(PathBuf::from(format!("/p/{name}")));
        let (mut key, mut rel) = (1_000i64, 0u32);
        for _ in 0..n {
            key += 1 + (rng.next_u64() % 9) as i64;
            rel += (rng.next_u64() % 3) as u32;
            index.append(make(key, rel)).unwrap();
        }
        index.persist(disk).unwrap();
        index
    }

    /// Every key around every entry, and past both ends, answered the same from the file as
    /// from memory, with few bytes read.
    fn file_search_agrees<E: IndexEntry + PartialEq>(make: impl Fn(i64, u32) -> E + Copy) {
        let disk = SimStorage::new();
        let mut rng = Rng::new(7);
        let per_block = BLOCK_BYTES / E::SIZE;
        for n in [
            0,
            1,
            2,
            per_block - 1,
            per_block,
            per_block + 1,
            3 * per_block + 5,
            5_000,
        ] {
            let memory = built(&disk, &format!("i{n}"), n, &mut rng, make);
            let mut file = built(&disk, &format!("f{n}"), 0, &mut rng, make);
            file.set_path(memory.path());
            file.held = Held::File {
                len: memory.len(),
                last: memory.last(),
            };
            assert_eq!(file.last(), memory.last());
            assert_eq!(file.len(), n);
            let Held::Memory { entries, .. } = &memory.held else {
                unreachable!()
            };
            let all: Vec<E> = entries.iter().copied().collect();
            let mut keys = vec![i64::MIN, 0, 1_000, i64::MAX];
            for e in &all {
                keys.extend([e.key() - 1, e.key(), e.key() + 1]);
            }
            for key in keys {
                for strict in [false, true] {
                    let before = disk.bytes_read();
                    let got = file.floor(&disk, key, strict).unwrap();
                    let read = disk.bytes_read() - before;
                    let oracle = all
                        .iter()
                        .rfind(|e| {
                            if strict {
                                e.key() < key
                            } else {
                                e.key() <= key
                            }
                        })
                        .copied();
                    assert_eq!(got, oracle, "n {n} key {key}");
                    assert_eq!(memory.floor(&disk, key, strict).unwrap(), oracle);
                    // Probes of one entry, then one block: never the whole file.
                    assert!(
                        read <= (BLOCK_BYTES + 16 * E::SIZE) as u64,
                        "{read} bytes read"
                    );
                }
            }
        }
    }

    #[test]
    fn a_file_search_answers_as_the_entries_in_memory_do() {
        file_search_agrees(|key, rel| OffsetEntry {
            relative_offset: key as u32,
            position: rel + key as u32,
        });
        file_search_agrees(|key, rel| TimeEntry {
            timestamp: key,
            relative_offset: rel,
        });
    }

    #[test]
    fn entries_in_memory_truncate_at_any_point() {
        let disk = SimStorage::new();
        let make = |key: i64, _| TimeEntry {
            timestamp: key,
            relative_offset: key as u32,
        };
        let per_chunk = Entries::<TimeEntry>::PER_CHUNK;
        for n in [1, per_chunk, per_chunk + 1, 3 * per_chunk + 7] {
            let all: Vec<TimeEntry> = {
                let index = built(&disk, "t", n, &mut Rng::new(n as u64), make);
                let Held::Memory { entries, .. } = &index.held else {
                    unreachable!()
                };
                entries.iter().copied().collect()
            };
            for keep in 0..=n {
                let mut index = built(&disk, "t", n, &mut Rng::new(n as u64), make);
                let bound = all.get(keep).map_or(i64::MAX - 1, |e| e.timestamp);
                index.truncate_while(|e| e.timestamp < bound).unwrap();
                assert_eq!(index.len(), keep);
                assert_eq!(index.last(), keep.checked_sub(1).map(|i| all[i]));
                index.append(make(bound, 0)).unwrap();
                assert_eq!(index.len(), keep + 1);
                assert_eq!(
                    index.floor(&disk, bound, false).unwrap(),
                    Some(make(bound, 0))
                );
            }
        }
    }

    #[test]
    fn an_index_leaves_memory_only_once_written_and_comes_back_whole() {
        let disk = SimStorage::new();
        let mut rng = Rng::new(3);
        // More entries than one piece of a write or a load holds.
        let n = 2 * WRITE_BYTES / 8 + 100;
        let mut index = built(&disk, "x", n, &mut rng, |key, _| OffsetEntry {
            relative_offset: key as u32,
            position: key as u32,
        });
        index
            .append(OffsetEntry {
                relative_offset: u32::MAX - 1,
                position: u32::MAX - 1,
            })
            .unwrap();
        let written: Vec<OffsetEntry> = match &index.held {
            Held::Memory { entries, .. } => entries.iter().copied().collect(),
            Held::File { .. } => unreachable!(),
        };
        // Not written yet: it stays.
        assert!(!index.release());
        assert!(index.memory_bytes() > 0);
        index.persist(&disk).unwrap();
        assert!(index.release());
        assert_eq!(index.memory_bytes(), 0);
        assert_eq!(index.len(), n + 1);
        assert_eq!(index.last().unwrap().position, u32::MAX - 1);
        // A sealed index takes no changes.
        assert!(index.append(index.last().unwrap()).is_err());
        assert!(index.truncate_while(|_| false).is_err());
        let reopened = Index::<OffsetEntry>::in_file(&disk, index.path().into(), |_| true)
            .unwrap()
            .unwrap();
        assert_eq!((reopened.len(), reopened.last()), (n + 1, index.last()));
        // A last entry that does not follow the one before (a position falling): not trusted.
        let bytes = disk.read_file(index.path()).unwrap();
        let at = bytes.len() - 4;
        disk.corrupt(index.path(), at, &[0, 0, 0, 1]);
        assert!(
            Index::<OffsetEntry>::in_file(&disk, index.path().into(), |_| true)
                .unwrap()
                .is_none()
        );
        disk.corrupt(index.path(), at, &bytes[at..]);
        // The last entry fails the caller's check: not trusted.
        assert!(
            Index::<OffsetEntry>::in_file(&disk, index.path().into(), |e| e.position < 10)
                .unwrap()
                .is_none()
        );
        assert!(index.reload(&disk, |_| true).unwrap());
        match &index.held {
            Held::Memory { entries, .. } => assert!(entries.iter().copied().eq(written)),
            Held::File { .. } => unreachable!(),
        }
        index.truncate_while(|e| e.position < 3_000).unwrap();
        let kept = index.len();
        assert!(
            kept > 100 && index.last().unwrap().position < 3_000,
            "{kept}"
        );
        // A file cut mid-entry is refused both ways.
        let path = index.path().to_path_buf();
        index.persist(&disk).unwrap();
        assert!(index.release());
        let file = disk.open(&path, false).unwrap();
        file.truncate(file.len().unwrap() - 3).unwrap();
        assert!(!index.reload(&disk, |_| true).unwrap());
        assert!(
            Index::<OffsetEntry>::in_file(&disk, path, |_| true)
                .unwrap()
                .is_none()
        );
    }
}
