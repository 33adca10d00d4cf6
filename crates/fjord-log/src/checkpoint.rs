//! The partition checkpoint: what the log knows about itself beyond its segments.
//!
//! File `partition.checkpoint`, 36 bytes, big-endian:
//!
//! | at | size | field |
//! |----|------|-------|
//! | 0  | 4 | magic `FJCP` |
//! | 4  | 2 | format version (1) |
//! | 6  | 2 | flags: bit 0 = written by a clean shutdown |
//! | 8  | 8 | log start offset |
//! | 16 | 8 | recovery point: every byte below it is synced, indexes included |
//! | 24 | 8 | high watermark |
//! | 32 | 4 | CRC-32C of bytes 0..32 |
//!
//! It is replaced atomically: written to `partition.checkpoint.tmp`, synced, renamed over the
//! old one, and the directory synced.

use std::path::Path;

use crate::LogError;
use crate::storage::Storage;

pub const FILE_NAME: &str = "partition.checkpoint";
const MAGIC: &[u8; 4] = b"FJCP";
const VERSION: u16 = 1;
const LEN: usize = 36;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub clean_shutdown: bool,
    pub log_start_offset: i64,
    pub recovery_point: i64,
    pub high_watermark: i64,
}

/// What reading the checkpoint found.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Missing,
    /// Torn or damaged: the log recovers everything and says so.
    Damaged(String),
    Found(Checkpoint),
}

impl Checkpoint {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[6..8].copy_from_slice(&u16::from(self.clean_shutdown).to_be_bytes());
        b[8..16].copy_from_slice(&self.log_start_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.recovery_point.to_be_bytes());
        b[24..32].copy_from_slice(&self.high_watermark.to_be_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != LEN {
            return Err(format!("{} bytes, expected {LEN}", b.len()));
        }
        if &b[..4] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32::from_be_bytes([b[32], b[33], b[34], b[35]]);
        if crc != crc32c::crc32c(&b[..32]) {
            return Err("checksum mismatch".into());
        }
        let i64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            i64::from_be_bytes(x)
        };
        Ok(Self {
            clean_shutdown: u16::from_be_bytes([b[6], b[7]]) & 1 == 1,
            log_start_offset: i64_at(8),
            recovery_point: i64_at(16),
            high_watermark: i64_at(24),
        })
    }

    /// Reads the checkpoint of the partition in `dir`. A newer format version is an error (not
    /// damage): this build must not guess at it.
    pub fn load(storage: &dyn Storage, dir: &Path) -> Result<Loaded, LogError> {
        let path = dir.join(FILE_NAME);
        if !storage
            .exists(&path)
            .map_err(LogError::io("checking", &path))?
        {
            return Ok(Loaded::Missing);
        }
        let file = storage
            .open(&path, false)
            .map_err(LogError::io("opening", &path))?;
        let len = file.len().map_err(LogError::io("reading", &path))?;
        let mut buf = vec![0u8; len.min(4096) as usize];
        file.read_exact_at(&mut buf, 0)
            .map_err(LogError::io("reading", &path))?;
        if buf.len() >= 6 && &buf[..4] == MAGIC {
            let version = u16::from_be_bytes([buf[4], buf[5]]);
            if version > VERSION {
                return Err(LogError::Unreadable {
                    path,
                    reason: format!(
                        "checkpoint format version {version} is newer than this build understands ({VERSION}); upgrade Fjord"
                    ),
                });
            }
        }
        Ok(match Self::decode(&buf) {
            Ok(cp) => Loaded::Found(cp),
            Err(reason) => Loaded::Damaged(reason),
        })
    }

    /// Atomically replaces the checkpoint in `dir`.
    pub fn store(&self, storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
        crate::storage::write_atomic(storage, dir, FILE_NAME, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn round_trip_and_damage() {
        let disk = SimStorage::new();
        let dir = Path::new("/p");
        assert_eq!(Checkpoint::load(&disk, dir).unwrap(), Loaded::Missing);
        let cp = Checkpoint {
            clean_shutdown: true,
            log_start_offset: 5,
            recovery_point: 99,
            high_watermark: 90,
        };
        cp.store(&disk, dir).unwrap();
        assert_eq!(Checkpoint::load(&disk, dir).unwrap(), Loaded::Found(cp));
        disk.corrupt(&dir.join(FILE_NAME), 10, &[0xff]);
        assert!(matches!(
            Checkpoint::load(&disk, dir).unwrap(),
            Loaded::Damaged(_)
        ));
        disk.corrupt(&dir.join(FILE_NAME), 4, &[0, 9]);
        assert!(Checkpoint::load(&disk, dir).is_err());
    }
}
