//! What a log operation can fail with. Kafka error codes are assigned from these at the protocol
//! edge (the broker), never here.

use std::io;
use std::path::PathBuf;

use fjord_record::RecordError;
use thiserror::Error;

use crate::config::ConfigError;

#[derive(Debug, Error)]
pub enum LogError {
    /// The batch bytes are malformed (Kafka: CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(#[from] RecordError),

    /// A batch is larger than `max.message.bytes` (Kafka: MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes={max}")]
    BatchTooLarge { size: usize, max: usize },

    /// The batch parses but breaks a rule of this log (Kafka: INVALID_RECORD).
    #[error("invalid record: {reason}")]
    InvalidRecord { reason: &'static str },

    /// Records of a batch break a rule of this log (KIP-467): each is named by its index in
    /// the batch with its own message. Kafka: INVALID_TIMESTAMP when a timestamp is out of
    /// range, otherwise INVALID_RECORD.
    #[error("{message}")]
    RecordsRejected {
        /// Whether a timestamp was out of range (INVALID_TIMESTAMP).
        timestamp: bool,
        message: String,
        records: Vec<(i32, String)>,
    },

    /// The offset is outside `[log start, log end]` (Kafka: OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },

    /// An earlier I/O error left the partition in an unknown state; it refuses writes until the
    /// broker is restarted on a healthy disk (Kafka: KAFKA_STORAGE_ERROR).
    #[error(
        "partition {dir} refuses writes after an I/O error ({reason}); fix the disk and restart the broker, which recovers the log"
    )]
    Failed { dir: PathBuf, reason: String },

    /// The log was closed.
    #[error("partition {dir} is closed")]
    Closed { dir: PathBuf },

    #[error("I/O error while {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// On-disk data this version cannot use (not a torn tail, which recovery repairs).
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },

    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A producer's batch breaks its sequence or epoch rules.
    #[error(transparent)]
    Producer(#[from] crate::producer::ProducerError),
}

impl LogError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
