//! Per-log settings, with Kafka's names and defaults, and validation that names the bad key.

use fjord_record::TimestampType;
use thiserror::Error;

/// A setting that does not make sense, named by its Kafka config key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid value {value:?} for {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// Which of Kafka's cleanup policies apply (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: Self = Self {
        delete: true,
        compact: false,
    };
    pub const COMPACT: Self = Self {
        delete: false,
        compact: true,
    };

    /// Parses `delete`, `compact`, or a comma-separated combination.
    pub fn parse(value: &str) -> Option<Self> {
        let mut policy = Self {
            delete: false,
            compact: false,
        };
        if value.trim().is_empty() {
            // Kafka 4: an empty policy neither deletes nor compacts (the log is kept whole).
            return Some(policy);
        }
        for part in value.split(',') {
            match part.trim() {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return None,
            }
        }
        Some(policy)
    }
}

/// One partition log's settings. Defaults are Kafka's, except `flush_messages`, which is 1 so
/// that an acknowledged append is on disk (see docs/storage.md, "Durability").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before this size is exceeded.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment whose first batch is older than this.
    pub segment_ms: i64,
    /// `segment.index.bytes`: the most bytes one segment's offset index may hold.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between two index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete old segments while the log is larger; -1 means no limit.
    pub retention_bytes: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long compaction keeps a tombstone once it reached a cleaned
    /// segment.
    pub delete_retention_ms: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: a CreateTime record older than this (against the
    /// broker's clock) is refused with INVALID_TIMESTAMP.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: a CreateTime record further ahead than this is
    /// refused (Kafka 4's default: one hour).
    pub message_timestamp_after_max_ms: i64,
    /// `flush.messages`: fsync once this many records are unflushed; 1 = every append waits for
    /// its own fsync (shared with concurrent appends).
    pub flush_messages: u64,
    /// `flush.ms`: fsync when the oldest unflushed append is this old.
    pub flush_ms: i64,
    /// The most bytes a compressed batch may inflate to while it is validated or compacted
    /// (`max.decompressed.message.bytes`, at most [`MAX_DECOMPRESSED_BYTES`]).
    pub max_decompressed_bytes: usize,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record is compacted at most this long after it was written
    /// (compacted logs also roll their active segment at this age).
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: compact once the uncompacted share of the log reaches this.
    pub min_cleanable_dirty_ratio: f64,
    /// `compression.type`: `None` keeps the producer's compression ("producer"); a codec
    /// makes the log rewrite client batches in it (`Compression::None` for "uncompressed").
    pub compression: Option<fjord_record::Compression>,
    /// The broker's `log.cleaner.dedupe.buffer.size`: the memory one compaction pass may use
    /// for its map of keys (not a topic config).
    pub cleaner_dedupe_bytes: u64,
}

/// Fjord's bound on a batch's decompressed size, whatever `max.decompressed.message.bytes`
/// says (Kafka's default, 2 GiB, would let one request hold that much memory).
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 3_600_000,
            flush_messages: 1,
            flush_ms: i64::MAX,
            max_decompressed_bytes: MAX_DECOMPRESSED_BYTES,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            compression: None,
            cleaner_dedupe_bytes: 128 * 1024 * 1024,
        }
    }
}

/// The Kafka config names [`LogConfig::set`] understands.
pub const LOG_CONFIG_KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "delete.retention.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "flush.messages",
    "flush.ms",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "max.decompressed.message.bytes",
    "compression.type",
];

impl LogConfig {
    /// Sets one value by its Kafka name; the result still needs [`LogConfig::validate`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let err = |reason: &str| ConfigError {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let int = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| err("not an integer"))
        };
        match key {
            "segment.bytes" => self.segment_bytes = non_negative(int()?, &err)?,
            "segment.ms" => self.segment_ms = int()?,
            "segment.index.bytes" => self.segment_index_bytes = non_negative(int()?, &err)?,
            "index.interval.bytes" => self.index_interval_bytes = non_negative(int()?, &err)?,
            "retention.ms" => self.retention_ms = int()?,
            "retention.bytes" => self.retention_bytes = int()?,
            "cleanup.policy" => {
                self.cleanup_policy = CleanupPolicy::parse(value)
                    .ok_or_else(|| err("expected delete, compact, or compact,delete"))?;
            }
            "delete.retention.ms" => self.delete_retention_ms = int()?,
            "max.message.bytes" => {
                self.max_message_bytes =
                    usize::try_from(non_negative(int()?, &err)?).map_err(|_| err("too large"))?;
            }
            "message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(err("expected CreateTime or LogAppendTime")),
                };
            }
            "message.timestamp.before.max.ms" => {
                self.message_timestamp_before_max_ms = non_negative(int()?, &err)? as i64;
            }
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = non_negative(int()?, &err)? as i64;
            }
            "flush.messages" => self.flush_messages = non_negative(int()?, &err)?,
            "flush.ms" => self.flush_ms = int()?,
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms = non_negative(int()?, &err)? as i64;
            }
            "max.compaction.lag.ms" => {
                self.max_compaction_lag_ms = non_negative(int()?, &err)? as i64;
            }
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = match value.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => return Err(err("must be a number from 0 to 1")),
                };
            }
            "compression.type" => {
                use fjord_record::Compression;
                self.compression = match value.trim() {
                    "producer" => None,
                    "uncompressed" => Some(Compression::None),
                    "gzip" => Some(Compression::Gzip),
                    "snappy" => Some(Compression::Snappy),
                    "lz4" => Some(Compression::Lz4),
                    "zstd" => Some(Compression::Zstd),
                    _ => {
                        return Err(err(
                            "expected uncompressed, zstd, lz4, snappy, gzip or producer",
                        ));
                    }
                };
            }
            "max.decompressed.message.bytes" => {
                let n = usize::try_from(non_negative(int()?, &err)?).unwrap_or(usize::MAX);
                self.max_decompressed_bytes = n.min(MAX_DECOMPRESSED_BYTES);
            }
            _ => return Err(err("not a log config")),
        }
        Ok(())
    }

    /// Rejects settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, value: String, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    key: key.into(),
                    value,
                    reason: reason.into(),
                })
            }
        };
        check(
            self.segment_bytes >= 14,
            "segment.bytes",
            self.segment_bytes.to_string(),
            "must be at least 14",
        )?;
        check(
            self.segment_bytes <= i32::MAX as u64,
            "segment.bytes",
            self.segment_bytes.to_string(),
            "must fit in 32-bit positions (at most 2147483647)",
        )?;
        check(
            self.segment_ms >= 1,
            "segment.ms",
            self.segment_ms.to_string(),
            "must be at least 1",
        )?;
        check(
            self.segment_index_bytes >= 8,
            "segment.index.bytes",
            self.segment_index_bytes.to_string(),
            "must hold at least one entry (8 bytes)",
        )?;
        check(
            self.index_interval_bytes >= 1,
            "index.interval.bytes",
            self.index_interval_bytes.to_string(),
            "must be at least 1",
        )?;
        check(
            self.retention_ms >= -1,
            "retention.ms",
            self.retention_ms.to_string(),
            "must be -1 (forever) or a duration",
        )?;
        check(
            self.delete_retention_ms >= 0,
            "delete.retention.ms",
            self.delete_retention_ms.to_string(),
            "must not be negative",
        )?;
        check(
            self.max_message_bytes >= fjord_record::HEADER_LEN,
            "max.message.bytes",
            self.max_message_bytes.to_string(),
            "must hold at least a batch header (61 bytes)",
        )?;
        check(
            self.flush_messages >= 1,
            "flush.messages",
            self.flush_messages.to_string(),
            "must be at least 1",
        )?;
        check(
            self.flush_ms >= 0,
            "flush.ms",
            self.flush_ms.to_string(),
            "must not be negative",
        )?;
        Ok(())
    }
}

fn non_negative(v: i64, err: &dyn Fn(&str) -> ConfigError) -> Result<u64, ConfigError> {
    u64::try_from(v).map_err(|_| err("must not be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_set_and_validate() {
        let mut c = LogConfig::default();
        c.set("cleanup.policy", "compact,delete").unwrap();
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
        c.set("message.timestamp.type", "LogAppendTime").unwrap();
        c.set("segment.bytes", "1048576").unwrap();
        c.validate().unwrap();
        let e = c.set("retention.ms", "soon").unwrap_err();
        assert_eq!(e.key, "retention.ms");
        c.set("flush.messages", "0").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "flush.messages");
        assert!(c.set("no.such.key", "1").is_err());
        for key in LOG_CONFIG_KEYS {
            // Every advertised key is understood (values may be rejected, never the key).
            let e = LogConfig::default().set(key, "x");
            assert!(e.is_err_and(|e| e.reason != "not a log config"), "{key}");
        }
    }
}
