//! The leader-epoch cache: for each leader epoch in the log, the offset its first batch has
//! (Kafka's `LeaderEpochFileCache` and its `leader-epoch-checkpoint` file, in Kafka's text
//! format so the file reads the same). OffsetForLeaderEpoch answers from it, and a returning
//! replica finds where its log diverges from the leader's with it.
//!
//! Entries rise in both epoch and start offset. Appends add an entry when a batch carries a
//! newer epoch; truncation removes the entries it cut off; moving the log start drops
//! entries below it (the one the new start falls in starts there instead).

use std::path::Path;

use crate::error::LogError;
use crate::storage::{Storage, write_atomic};

/// The cache's file in a partition directory.
pub const FILE_NAME: &str = "leader-epoch-checkpoint";
/// Kafka's version line for the file.
const VERSION: u32 = 0;
/// "No such epoch" / "no such offset" in OffsetForLeaderEpoch answers.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// One epoch and the offset of its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Every leader epoch of a log, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest epoch
    /// (an older or equal epoch changes nothing: its start is already known). Entries at or
    /// past `start_offset` belonged to a history this one replaces and go. True if changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest().is_some_and(|l| epoch <= l.epoch) {
            return false;
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// The log lost everything at and past `end_offset`: epochs that started there go.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset`: epochs wholly below it go, and the one it falls
    /// in starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let keep_from = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset);
        let Some(i) = keep_from else {
            return false;
        };
        let changed = i > 0 || self.entries[i].start_offset != start_offset;
        self.entries.drain(..i);
        self.entries[0].start_offset = start_offset;
        changed
    }

    /// Forgets every epoch (the log restarts empty).
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested`, and the offset where
    /// it ends (the next epoch's start, or the log end for the latest epoch). UNDEFINED for an
    /// epoch past the latest, or when nothing is known.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        let Some(latest) = self.latest() else {
            return undefined;
        };
        if requested < 0 {
            return undefined;
        }
        if requested == latest.epoch {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return undefined;
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            // Older than anything known: the epoch ends where the first known one starts.
            None => (requested, higher.start_offset),
            Some(floor) => (floor.epoch, higher.start_offset),
        }
    }

    /// The file's bytes (Kafka's format: version, count, then "epoch offset" per line).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        let mut lines = text.lines();
        let version: u32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("no version line")?;
        if version != VERSION {
            return Err(format!("version {version}, expected {VERSION}"));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("no entry count")?;
        let mut cache = Self::default();
        for _ in 0..count {
            let line = lines.next().ok_or("fewer entries than counted")?;
            let mut parts = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("bad entry {line:?}"));
            };
            let entry = EpochEntry {
                epoch: epoch
                    .parse()
                    .map_err(|_| format!("bad epoch in {line:?}"))?,
                start_offset: offset
                    .parse()
                    .map_err(|_| format!("bad offset in {line:?}"))?,
            };
            if cache
                .latest()
                .is_some_and(|l| entry.epoch <= l.epoch || entry.start_offset <= l.start_offset)
            {
                return Err(format!("entries out of order at {line:?}"));
            }
            cache.entries.push(entry);
        }
        Ok(cache)
    }

    /// Reads the cache of a partition directory: `None` when there is no file, or a file
    /// that does not parse (the caller rebuilds it from the log).
    pub fn load(storage: &dyn Storage, dir: &Path) -> Result<Option<Self>, LogError> {
        let path = dir.join(FILE_NAME);
        if !storage
            .exists(&path)
            .map_err(LogError::io("checking", &path))?
        {
            return Ok(None);
        }
        let file = storage
            .open(&path, false)
            .map_err(LogError::io("opening", &path))?;
        let len = file.len().map_err(LogError::io("reading", &path))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)
            .map_err(LogError::io("reading", &path))?;
        match Self::decode(&buf) {
            Ok(cache) => Ok(Some(cache)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "leader-epoch checkpoint is damaged; rebuilding it from the log");
                Ok(None)
            }
        }
    }

    /// Replaces the file atomically (written, synced, renamed, directory synced).
    pub fn store(&self, storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
        write_atomic(storage, dir, FILE_NAME, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rule() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(
            c.end_offset_for(4, 40),
            (4, 40),
            "the latest ends at the log end"
        );
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(
            c.end_offset_for(2, 40),
            (1, 10),
            "a gap: the floor epoch, ended by 3"
        );
        assert_eq!(
            c.end_offset_for(0, 40),
            (0, 0),
            "before the first known epoch"
        );
        assert_eq!(c.end_offset_for(5, 40), (-1, -1), "unknown future epoch");
        assert_eq!(c.end_offset_for(-1, 40), (-1, -1));
        assert_eq!(EpochCache::default().end_offset_for(0, 5), (-1, -1));
    }

    #[test]
    fn assign_truncate_and_the_file_format() {
        let mut c = cache(&[(0, 0), (2, 5)]);
        assert!(!c.assign(2, 9), "an epoch already known keeps its start");
        assert!(!c.assign(1, 9), "an older epoch changes nothing");
        assert!(c.assign(3, 12));
        assert!(c.truncate_from_end(12));
        assert_eq!(
            c.latest(),
            Some(EpochEntry {
                epoch: 2,
                start_offset: 5
            })
        );
        assert!(!c.truncate_from_end(100));
        assert!(c.truncate_from_start(7));
        assert_eq!(
            c.entries(),
            [EpochEntry {
                epoch: 2,
                start_offset: 7
            }]
        );
        assert!(
            !c.truncate_from_start(3),
            "a start below the first entry changes nothing"
        );
        assert_eq!(c.encode(), b"0\n1\n2 7\n");
        assert_eq!(EpochCache::decode(&c.encode()), Ok(c.clone()));
        // A new epoch past entries that a new history replaces.
        let mut c = cache(&[(0, 0), (1, 10)]);
        assert!(c.assign(5, 4));
        assert_eq!(
            c.entries(),
            [
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 5,
                    start_offset: 4
                }
            ]
        );
        for bad in [
            &b"1\n0\n"[..],
            b"0\n2\n1 5\n",
            b"0\n2\n3 5\n2 9\n",
            b"0\n1\nx 5\n",
            b"\xff",
        ] {
            assert!(EpochCache::decode(bad).is_err(), "{bad:?}");
        }
    }
}
