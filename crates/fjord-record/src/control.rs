//! Control batches: the commit and abort markers that end a transaction in a partition.
//!
//! A marker is a control batch (attributes bit 5) holding one record whose key is
//! `version: i16, type: i16` (0 = abort, 1 = commit) and whose value is
//! `version: i16, coordinator_epoch: i32`, the layout of Kafka's `EndTransactionMarker`.

use crate::batch::{BatchHeader, TimestampType};
use crate::builder::BatchBuilder;
use crate::record::Records;
use crate::{Compression, RecordError};

/// What a control batch says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Abort,
    Commit,
    /// A control type this build does not act on (Kafka uses others for KRaft); kept as is.
    Other(i16),
}

/// A parsed transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub kind: ControlKind,
    /// The transaction coordinator's epoch (only for commit and abort markers, else -1).
    pub coordinator_epoch: i32,
}

/// Reads the control record of a control batch (the first record's key and value).
pub fn parse_control_batch(batch: &[u8]) -> Result<ControlRecord, RecordError> {
    BatchHeader::parse(batch)?;
    let records = Records::decode(batch, 1 << 20)?;
    let bad = |reason| RecordError::InvalidRecord { index: 0, reason };
    let Some(first) = records.iter().next() else {
        return Err(bad("a control batch must hold a control record"));
    };
    let first = first?;
    let key = first
        .key
        .ok_or_else(|| bad("a control record needs a key"))?;
    if key.len() < 4 {
        return Err(bad("a control record key is version and type"));
    }
    let kind = match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlKind::Abort,
        1 => ControlKind::Commit,
        other => ControlKind::Other(other),
    };
    let coordinator_epoch = match (kind, first.value) {
        (ControlKind::Other(_), _) => -1,
        (_, Some(v)) if v.len() >= 6 => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        _ => {
            return Err(bad(
                "a transaction marker's value is version and coordinator epoch",
            ));
        }
    };
    Ok(ControlRecord {
        kind,
        coordinator_epoch,
    })
}

/// Builds a commit or abort marker for `producer_id`/`producer_epoch` (offset 0; the log
/// assigns the real one).
pub fn build_marker(
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = BatchBuilder::new(Compression::None);
    b.timestamp_type = TimestampType::CreateTime;
    b.transactional = true;
    b.control = true;
    b.producer_id = producer_id;
    b.producer_epoch = producer_epoch;
    b.push(timestamp, Some(&key), Some(&value));
    // One uncompressed record always encodes.
    b.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate_batch;

    #[test]
    fn markers_round_trip() {
        for commit in [true, false] {
            let m = build_marker(7, 3, 11, commit, 1000);
            let h = validate_batch(&m).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (7, 3));
            let c = parse_control_batch(&m).unwrap();
            assert_eq!(c.coordinator_epoch, 11);
            assert_eq!(
                c.kind,
                if commit {
                    ControlKind::Commit
                } else {
                    ControlKind::Abort
                }
            );
        }
    }
}
