//! Kafka RecordBatch v2 (magic 2), the unit in which Kafka stores and ships data.
//!
//! This crate is pure: it works on byte slices and owns no files or sockets. The broker uses it
//! to validate produced batches and patch their offsets in place; the log uses it to verify
//! what it reads back after a crash; compaction uses it to decode and rebuild batches.
//!
//! - [`batch`]: the fixed header, framing, CRC-32C validation and in-place patching.
//! - [`record`]: records inside a batch, decompressed and iterated without copying.
//! - [`compression`]: gzip, snappy, lz4 and zstd as Kafka frames them.
//! - [`builder`]: encoding new batches.

pub mod batch;
pub mod builder;
pub mod compression;
pub mod control;
mod error;
pub mod record;
pub mod varint;

pub use batch::{
    Attributes, BatchHeader, HEADER_LEN, LOG_OVERHEAD, RecordsSummary, TimestampType, compute_crc,
    is_legacy_message, next_batch_len, set_base_offset, set_max_timestamp, set_max_timestamp_parts,
    set_partition_leader_epoch, split_batches, validate_batch, validate_records,
};
pub use builder::{BatchBuilder, NewRecord, recompress};
pub use compression::Compression;
pub use control::{ControlKind, ControlRecord, build_marker, parse_control_batch};
pub use error::RecordError;
pub use record::{Header, Record, RecordIter, Records};

impl Record<'_> {
    /// The record's absolute timestamp as a consumer sees it: the batch's max timestamp for
    /// `LogAppendTime` batches, otherwise base timestamp plus delta.
    pub fn timestamp(&self, header: &BatchHeader) -> i64 {
        match header.timestamp_type() {
            TimestampType::LogAppendTime => header.max_timestamp,
            TimestampType::CreateTime => header.base_timestamp.wrapping_add(self.timestamp_delta),
        }
    }

    /// The record's absolute offset.
    pub fn offset(&self, header: &BatchHeader) -> i64 {
        header.base_offset + i64::from(self.offset_delta)
    }

    /// An owned copy, for rebuilding a batch.
    pub fn to_new_record(&self, header: &BatchHeader) -> NewRecord {
        NewRecord {
            offset_delta: self.offset_delta,
            timestamp: header.base_timestamp.wrapping_add(self.timestamp_delta),
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers()
                .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

/// Runs every decoder of this crate over arbitrary bytes; must never panic. The cargo-fuzz
/// target and a property test both call it.
pub fn fuzz_decode(data: &[u8]) {
    for batch in split_batches(data) {
        let Ok(batch) = batch else { break };
        let _ = BatchHeader::parse(batch);
        if validate_batch(batch).is_err() {
            // Still exercise the record decoder on unverified bytes: it must not panic either.
            if let Ok(records) = Records::decode(batch, 1 << 20) {
                for r in records.iter() {
                    let Ok(r) = r else { break };
                    for h in r.headers() {
                        std::hint::black_box(h);
                    }
                }
            }
            continue;
        }
        let _ = validate_records(batch, 1 << 20);
        let mut copy = batch.to_vec();
        set_max_timestamp(&mut copy, TimestampType::LogAppendTime, 42);
        assert!(
            validate_batch(&copy).is_ok(),
            "patching must keep a valid batch valid"
        );
    }
}

#[cfg(test)]
mod tests;
