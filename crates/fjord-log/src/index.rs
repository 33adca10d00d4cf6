//! The sparse per-segment indexes, kept in memory and mirrored to append-only files.
//!
//! - `.index`: 8-byte entries `(offset - segment base: u32, file position: u32)`, both strictly
//!   increasing; each names the first byte of a batch whose base offset is that offset.
//! - `.timeindex`: 12-byte entries `(timestamp: i64, offset - segment base: u32)`; timestamps
//!   strictly increasing; each says "by this offset, the segment's largest timestamp so far is
//!   this, held by the batch at this offset".
//!
//! Both are big-endian, with no header, so an index file is exactly its entries. Entries are
//! appended as batches are; a crash can tear the tail, which is why recovery rebuilds the
//! indexes of every segment it scans, and checks the others before trusting them.

use std::io;
use std::sync::Arc;

use crate::storage::StorageFile;

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

/// An index: its entries in memory and the file they are appended to.
#[derive(Debug)]
pub struct Index<E: IndexEntry> {
    pub(crate) file: Arc<dyn StorageFile>,
    entries: Vec<E>,
}

impl<E: IndexEntry> Index<E> {
    /// An index over an empty (or to-be-emptied) file.
    pub fn empty(file: Arc<dyn StorageFile>) -> io::Result<Self> {
        if file.len()? > 0 {
            file.truncate(0)?;
        }
        Ok(Self {
            file,
            entries: Vec::new(),
        })
    }

    /// Loads the file's entries; `Ok(None)` when they fail the sanity checks (size not a
    /// multiple of the entry size, keys or relative offsets not increasing, or `valid` false
    /// for an entry) and the index must be rebuilt.
    pub fn load(
        file: Arc<dyn StorageFile>,
        valid: impl Fn(&E) -> bool,
    ) -> io::Result<Option<Self>> {
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
        Ok(Some(Self { file, entries }))
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

    /// Appends an entry in memory and to the file.
    pub fn append(&mut self, entry: E) -> io::Result<()> {
        let mut buf = [0u8; 16];
        entry.encode(&mut buf);
        let pos = (self.entries.len() * E::SIZE) as u64;
        self.file.write_at(&buf[..E::SIZE], pos)?;
        self.entries.push(entry);
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
            self.file.truncate((n * E::SIZE) as u64)?;
        }
        Ok(())
    }

    /// Rough bytes of memory held.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<E>()
    }
}
