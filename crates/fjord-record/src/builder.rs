//! Building batches from records: used by tests, by the client, and by log compaction, which
//! rewrites a batch keeping only some of its records (their offsets unchanged).

use crate::batch::{
    Attributes, BatchHeader, HEADER_LEN, LOG_OVERHEAD, MAGIC, TimestampType, compute_crc,
    set_base_offset,
};
use crate::varint::{varint_len, varlong_len, write_varint, write_varlong};
use crate::{Compression, RecordError};

/// An owned record to put into a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Offset relative to the batch's base offset; builders of fresh batches use 0, 1, 2, ….
    pub offset_delta: i32,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Builds one RecordBatch v2.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub transactional: bool,
    pub control: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// When set, overrides `lastOffsetDelta` (compaction keeps the original one so producer
    /// sequence bookkeeping still lines up); otherwise the last record's offset delta.
    pub last_offset_delta: Option<i32>,
    /// When set, overrides `baseTimestamp` (a delete horizon); otherwise the first timestamp.
    pub base_timestamp: Option<i64>,
    pub delete_horizon: bool,
    records: Vec<NewRecord>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new(Compression::None)
    }
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> Self {
        Self {
            base_offset: 0,
            partition_leader_epoch: -1,
            compression,
            timestamp_type: TimestampType::CreateTime,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            last_offset_delta: None,
            base_timestamp: None,
            delete_horizon: false,
            records: Vec::new(),
        }
    }

    /// A builder for a rewrite of the batch `header` describes (recompression, compaction):
    /// its base offset, leader epoch, timestamp type, transactional flag, producer fields and
    /// `lastOffsetDelta`, in `compression`; no records yet.
    pub fn rewriting(header: &BatchHeader, compression: Compression) -> Self {
        let mut b = Self::new(compression);
        b.base_offset = header.base_offset;
        b.partition_leader_epoch = header.partition_leader_epoch;
        b.timestamp_type = header.timestamp_type();
        b.transactional = header.is_transactional();
        b.producer_id = header.producer_id;
        b.producer_epoch = header.producer_epoch;
        b.base_sequence = header.base_sequence;
        b.last_offset_delta = Some(header.last_offset_delta);
        b
    }

    /// Adds a record at the next dense offset delta.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> &mut Self {
        let offset_delta = self.records.last().map_or(0, |r| r.offset_delta + 1);
        self.records.push(NewRecord {
            offset_delta,
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        });
        self
    }

    /// Adds a fully specified record (its offset delta as given).
    pub fn push_record(&mut self, record: NewRecord) -> &mut Self {
        self.records.push(record);
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch with a correct CRC.
    pub fn build(&self) -> Result<Vec<u8>, RecordError> {
        let first_ts = self.records.first().map_or(-1, |r| r.timestamp);
        let base_timestamp = self.base_timestamp.unwrap_or(first_ts);
        let max_timestamp = self.records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
        let last_offset_delta = self
            .last_offset_delta
            .unwrap_or_else(|| self.records.last().map_or(0, |r| r.offset_delta));

        let mut body = Vec::new();
        for record in &self.records {
            // Deltas are relative to the base timestamp actually written, so a delete horizon
            // in that field leaves every record's own timestamp intact.
            encode_record(&mut body, record, base_timestamp);
        }
        let body = match self.compression {
            Compression::None => body,
            codec => codec.compress(&body)?,
        };
        let count = i32::try_from(self.records.len())
            .map_err(|_| RecordError::InvalidRecordCount { count: i32::MAX })?;
        let total = HEADER_LEN + body.len();
        let batch_length =
            i32::try_from(total - LOG_OVERHEAD).map_err(|_| RecordError::InvalidBatchLength {
                length: i32::MAX,
                min: HEADER_LEN - LOG_OVERHEAD,
            })?;

        let mut attributes = Attributes::build(
            self.compression,
            self.timestamp_type,
            self.transactional,
            self.control,
        )
        .0;
        if self.delete_horizon {
            attributes |= 0x40;
        }
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC as u8);
        out.extend_from_slice(&[0; 4]); // CRC, filled below
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&last_offset_delta.to_be_bytes());
        out.extend_from_slice(&base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&body);
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        set_base_offset(&mut out, self.base_offset);
        Ok(out)
    }
}

fn encode_record(out: &mut Vec<u8>, record: &NewRecord, base_timestamp: i64) {
    let timestamp_delta = record.timestamp.wrapping_sub(base_timestamp);
    let bytes_len = |b: &Option<Vec<u8>>| match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    };
    let mut len = 1
        + varlong_len(timestamp_delta)
        + varint_len(record.offset_delta)
        + bytes_len(&record.key)
        + bytes_len(&record.value)
        + varint_len(record.headers.len() as i32);
    for (k, v) in &record.headers {
        len += varint_len(k.len() as i32) + k.len() + bytes_len(v);
    }
    out.reserve(len + 5);
    write_varint(out, len as i32);
    out.push(0); // record attributes: unused
    write_varlong(out, timestamp_delta);
    write_varint(out, record.offset_delta);
    write_bytes(out, record.key.as_deref());
    write_bytes(out, record.value.as_deref());
    write_varint(out, record.headers.len() as i32);
    for (k, v) in &record.headers {
        write_bytes(out, Some(k));
        write_bytes(out, v.as_deref());
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(b) => {
            write_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Rewrites a record batch with `target` compression (a topic's `compression.type` other
/// than `producer`), as Kafka's broker does: the same records with their offset deltas,
/// timestamps, keys, values and headers, the same producer fields, transactional flag,
/// timestamp type and `lastOffsetDelta`; a new CRC. The batch is validated (CRC, records)
/// first, so a corrupt batch is refused as it would be without recompression. `limit` bounds
/// the decompressed size.
pub fn recompress(batch: &[u8], target: Compression, limit: usize) -> Result<Vec<u8>, RecordError> {
    let header = crate::batch::validate_batch(batch)?;
    let records = crate::Records::decode(batch, limit)?;
    let mut b = BatchBuilder::rewriting(&header, target);
    for record in records.iter() {
        b.push_record(record?.to_new_record(&header));
    }
    b.build()
}
