//! The RecordBatch v2 header: parsing, validation, and in-place patching.
//!
//! Layout (big-endian), offsets from the start of the batch:
//!
//! | at | size | field | covered by CRC |
//! |----|------|-------|----------------|
//! | 0  | 8 | baseOffset | no |
//! | 8  | 4 | batchLength (bytes after this field) | no |
//! | 12 | 4 | partitionLeaderEpoch | no |
//! | 16 | 1 | magic (2) | no |
//! | 17 | 4 | crc (CRC-32C of bytes 21..end) | no |
//! | 21 | 2 | attributes | yes |
//! | 23 | 4 | lastOffsetDelta | yes |
//! | 27 | 8 | baseTimestamp | yes |
//! | 35 | 8 | maxTimestamp | yes |
//! | 43 | 8 | producerId | yes |
//! | 51 | 2 | producerEpoch | yes |
//! | 53 | 4 | baseSequence | yes |
//! | 57 | 4 | recordsCount | yes |
//! | 61 | … | records (compressed as a whole when a codec is set) | yes |
//!
//! The offsets and the leader epoch sit outside the CRC so a broker can assign them without
//! rehashing; changing the timestamp type or max timestamp does need a new CRC.

use crate::{Compression, RecordError, Records};

/// Bytes before the records: the whole fixed header.
pub const HEADER_LEN: usize = 61;
/// Bytes of baseOffset + batchLength, which frame a batch in a stream of batches.
pub const LOG_OVERHEAD: usize = 12;
/// The only magic this crate reads.
pub const MAGIC: i8 = 2;

const LENGTH_AT: usize = 8;
const EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: u16 = 0x07;
const TIMESTAMP_TYPE_BIT: u16 = 0x08;
const TRANSACTIONAL_BIT: u16 = 0x10;
const CONTROL_BIT: u16 = 0x20;
const DELETE_HORIZON_BIT: u16 = 0x40;

/// How a batch's timestamps were set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the batch (`maxTimestamp` holds it).
    LogAppendTime,
}

/// The decoded attribute bits of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes(pub u16);

impl Attributes {
    pub fn compression(self) -> Result<Compression, RecordError> {
        Compression::from_id((self.0 & COMPRESSION_MASK) as u8)
    }

    pub fn timestamp_type(self) -> TimestampType {
        if self.0 & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(self) -> bool {
        self.0 & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(self) -> bool {
        self.0 & CONTROL_BIT != 0
    }

    /// Set when `baseTimestamp` holds a delete horizon (KIP-534), written by log compaction.
    pub fn has_delete_horizon(self) -> bool {
        self.0 & DELETE_HORIZON_BIT != 0
    }

    pub fn build(
        compression: Compression,
        timestamp_type: TimestampType,
        transactional: bool,
        control: bool,
    ) -> Self {
        let mut bits = u16::from(compression.id());
        if timestamp_type == TimestampType::LogAppendTime {
            bits |= TIMESTAMP_TYPE_BIT;
        }
        if transactional {
            bits |= TRANSACTIONAL_BIT;
        }
        if control {
            bits |= CONTROL_BIT;
        }
        Self(bits)
    }
}

/// The fixed header of one RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: Attributes,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header at the front of `buf`; checks the magic and the length field but
    /// not the CRC (see [`validate_batch`]).
    pub fn parse(buf: &[u8]) -> Result<Self, RecordError> {
        // The magic first: an old-format message may be shorter than a v2 header.
        if let Some(&magic) = buf.get(MAGIC_AT)
            && magic as i8 != MAGIC
        {
            return Err(RecordError::UnsupportedMagic { magic: magic as i8 });
        }
        if buf.len() < HEADER_LEN {
            return Err(RecordError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        let batch_length = be_i32(buf, LENGTH_AT);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(RecordError::InvalidBatchLength {
                length: batch_length,
                min: HEADER_LEN - LOG_OVERHEAD,
            });
        }
        Ok(Self {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, EPOCH_AT),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: Attributes(be_i16(buf, ATTRIBUTES_AT) as u16),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// The total size of the batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Result<Compression, RecordError> {
        self.attributes.compression()
    }

    pub fn timestamp_type(&self) -> TimestampType {
        self.attributes.timestamp_type()
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes.is_transactional()
    }

    pub fn is_control(&self) -> bool {
        self.attributes.is_control()
    }

    /// True when the producer id is set (idempotent or transactional producer).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Looks at the front of a stream of batches: `Ok(None)` when fewer than [`LOG_OVERHEAD`] bytes
/// are there yet, otherwise the total length the first batch claims (at least [`HEADER_LEN`]).
pub fn next_batch_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let length = be_i32(buf, LENGTH_AT);
    if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(RecordError::InvalidBatchLength {
            length,
            min: HEADER_LEN - LOG_OVERHEAD,
        });
    }
    Ok(Some(LOG_OVERHEAD + length as usize))
}

/// Splits a buffer holding whole batches back to back (a produce request's records, a fetch
/// response) into single batches. A partial batch at the end is an error.
pub fn split_batches(mut buf: &[u8]) -> impl Iterator<Item = Result<&[u8], RecordError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let result = match next_batch_len(buf) {
            Ok(Some(len)) if len <= buf.len() => {
                let (batch, rest) = buf.split_at(len);
                buf = rest;
                Ok(batch)
            }
            Ok(Some(len)) => Err(RecordError::Truncated {
                needed: len,
                available: buf.len(),
            }),
            Ok(None) => Err(RecordError::Truncated {
                needed: LOG_OVERHEAD,
                available: buf.len(),
            }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            buf = &[];
        }
        Some(result)
    })
}

/// The CRC-32C a batch should carry: over everything from the attributes to the end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Structural validation of exactly one batch: header, length matching the buffer, CRC, codec,
/// counts. This is what recovery checks before it serves a batch; it does not look inside the
/// records (see [`validate_records`] for that).
pub fn validate_batch(batch: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len();
    if total != batch.len() {
        return Err(if total > batch.len() {
            RecordError::Truncated {
                needed: total,
                available: batch.len(),
            }
        } else {
            RecordError::TrailingBytes {
                trailing: batch.len() - total,
            }
        });
    }
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(RecordError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    header.compression()?;
    if header.records_count < 0 {
        return Err(RecordError::InvalidRecordCount {
            count: header.records_count,
        });
    }
    if header.last_offset_delta < 0
        || header.records_count > header.last_offset_delta.saturating_add(1)
    {
        return Err(RecordError::InvalidRecordCount {
            count: header.records_count,
        });
    }
    Ok(header)
}

/// What iterating a batch's records found, for the appender's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsSummary {
    pub count: i32,
    /// The largest record timestamp (base timestamp + delta); `-1` for an empty batch.
    pub max_timestamp: i64,
    /// The smallest record timestamp; `i64::MAX` for an empty batch.
    pub min_timestamp: i64,
    /// Whether offset deltas run 0, 1, 2, … as a producer must write them.
    pub dense_offsets: bool,
    /// Whether any record has a null key (compacted topics refuse those).
    pub has_null_key: bool,
    /// The uncompressed size of the records section.
    pub uncompressed_len: usize,
}

/// Iterates every record of a structurally valid batch (decompressing up to `limit` bytes) and
/// checks that the declared count matches, that nothing trails, and that every record parses.
pub fn validate_records(batch: &[u8], limit: usize) -> Result<RecordsSummary, RecordError> {
    let header = BatchHeader::parse(batch)?;
    let records = Records::decode(batch, limit)?;
    let mut summary = RecordsSummary {
        count: 0,
        max_timestamp: -1,
        min_timestamp: i64::MAX,
        dense_offsets: true,
        has_null_key: false,
        uncompressed_len: records.data().len(),
    };
    for record in records.iter() {
        let record = record?;
        if record.offset_delta != summary.count {
            summary.dense_offsets = false;
        }
        if record.key.is_none() {
            summary.has_null_key = true;
        }
        let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
        summary.max_timestamp = summary.max_timestamp.max(timestamp);
        summary.min_timestamp = summary.min_timestamp.min(timestamp);
        summary.count += 1;
    }
    if summary.count != header.records_count {
        return Err(RecordError::RecordCountMismatch {
            declared: header.records_count,
            actual: summary.count,
        });
    }
    Ok(summary)
}

/// Writes the base offset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the timestamp type and the max timestamp, recomputing the CRC only when a covered
/// byte changed. For `LogAppendTime` Kafka leaves the per-record timestamps alone: readers take
/// the batch's max timestamp as every record's timestamp.
pub fn set_max_timestamp(batch: &mut [u8], timestamp_type: TimestampType, max_timestamp: i64) {
    let (head, rest) = batch.split_at_mut(HEADER_LEN);
    set_max_timestamp_parts(head, rest, timestamp_type, max_timestamp);
}

/// [`set_max_timestamp`] for a batch held in two parts: `head`, its first [`HEADER_LEN`]
/// bytes (patched), and `rest`, the bytes after them (read for the CRC, never written).
pub fn set_max_timestamp_parts(
    head: &mut [u8],
    rest: &[u8],
    timestamp_type: TimestampType,
    max_timestamp: i64,
) {
    let old_attributes = be_i16(head, ATTRIBUTES_AT) as u16;
    let attributes = match timestamp_type {
        TimestampType::LogAppendTime => old_attributes | TIMESTAMP_TYPE_BIT,
        TimestampType::CreateTime => old_attributes & !TIMESTAMP_TYPE_BIT,
    };
    let old_max = be_i64(head, MAX_TIMESTAMP_AT);
    if attributes == old_attributes && old_max == max_timestamp {
        return;
    }
    head[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    head[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_AT..HEADER_LEN]), rest);
    head[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

pub(crate) fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

pub(crate) fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

/// Whether `buf` starts with a whole, checksum-valid legacy message (magic 0 or 1, Kafka's
/// pre-0.11 format). Storage uses it to tell an old-format log, which it must refuse to touch,
/// from a torn or corrupt tail, which it may cut.
pub fn is_legacy_message(buf: &[u8]) -> bool {
    // offset i64, size i32, crc u32 (CRC-32/IEEE of magic..end), magic i8, attributes i8, ...
    if buf.len() < LOG_OVERHEAD + 14 {
        return false;
    }
    let magic = buf[MAGIC_AT];
    let min_size = match magic {
        0 => 14,
        1 => 22,
        _ => return false,
    };
    let size = be_i32(buf, LENGTH_AT);
    let Ok(size) = usize::try_from(size) else {
        return false;
    };
    if size < min_size || buf.len() < LOG_OVERHEAD + size {
        return false;
    }
    let expected = be_i32(buf, 12) as u32;
    let mut crc = flate2::Crc::new();
    crc.update(&buf[MAGIC_AT..LOG_OVERHEAD + size]);
    crc.sum() == expected
}
