//! The sparse per-segment indexes, kept in memory and mirrored to append-only files.
//!
//! - `.index`: 8-byte entries `(offset - segment base: u32, file position: u32)`, both strictly
//!   increasing; each names the first byte of a batch whose base offset is that offset.
//! - `.timeindex`: 12-byte entries `(timestamp: i64, offset - segment base: u32)`; timestamps
//!   strictly increasing; each says "by this offset, the segment's largest timestamp so far is
//!   this, held by the batch at this offset".
//!
//! Both are big-endian, with no header, so an index file is exactly its entries. The entries
//! live in memory; the files are written whole when a segment is sealed, recovered, truncated
//! or closed, and hold no descriptor in between: a partition keeps one open file (its active
//! segment's log), not three, which is what lets a node hold tens of thousands of partitions.
//! The active segment's index files are stale until then, which costs nothing: after a crash
//! recovery rescans the active segment (it lies past the recovery point) and rebuilds its
//! indexes, and checks the others before trusting them.

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

/// An index: its entries in memory, and the file they are written to.
#[derive(Debug)]
pub struct Index<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
    /// The file does not hold exactly `entries`.
    dirty: bool,
}

impl<E: IndexEntry> Index<E> {
    /// An empty index whose file is `path` (written by [`Index::persist`]).
    pub fn empty(path: PathBuf) -> Self {
        Self {
            path,
            entries: Vec::new(),
            dirty: true,
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
        let file = storage.open(&path, false)?;
        let len = file.len()?;
        if len % E::SIZE as u64 != 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        let mut entries = Vec::with_capacity(buf.len() / E::SIZE);
        for chunk in buf.chunks_exact(E::SIZE) {
            let e = E::decode(chunk);
            if let Some(prev) = entries.last() {
                let prev: &E = prev;
                if e.key() <= prev.key() || e.relative_offset() < prev.relative_offset() {
                    return Ok(None);
                }
            }
            if !valid(&e) {
                return Ok(None);
            }
            entries.push(e);
        }
        Ok(Some(Self {
            path,
            entries,
            dirty: false,
        }))
    }

    /// Writes the entries to the file, durably, if it does not hold them already.
    pub fn persist(&mut self, storage: &dyn Storage) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut buf = vec![0u8; self.entries.len() * E::SIZE];
        for (e, out) in self.entries.iter().zip(buf.chunks_exact_mut(E::SIZE)) {
            e.encode(out);
        }
        let file = storage.open(&self.path, true)?;
        file.write_at(&buf, 0)?;
        file.truncate(buf.len() as u64)?;
        file.sync()?;
        self.dirty = false;
        Ok(())
    }

    /// The file after a rename.
    pub fn set_path(&mut self, path: &Path) {
        self.path = path.to_path_buf();
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry (in memory; see [`Index::persist`]).
    pub fn append(&mut self, entry: E) -> io::Result<()> {
        self.entries.push(entry);
        self.dirty = true;
        Ok(())
    }

    /// The last entry whose key is at most `key` (for the offset index) or, with `strict`,
    /// below `key` (for the time index).
    pub fn floor(&self, key: i64, strict: bool) -> Option<E> {
        let n = self.entries.partition_point(|e| {
            if strict {
                e.key() < key
            } else {
                e.key() <= key
            }
        });
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops every entry for which `keep` is false from the end on.
    pub fn truncate_while(&mut self, keep: impl Fn(&E) -> bool) -> io::Result<()> {
        let n = self.entries.partition_point(|e| keep(e));
        if n < self.entries.len() {
            self.entries.truncate(n);
            self.dirty = true;
        }
        Ok(())
    }

    /// Rough bytes of memory held.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<E>()
    }
}
