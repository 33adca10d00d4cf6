//! The one error type of this crate: everything that can be wrong with bytes claiming to be a
//! record batch. Each variant carries just enough to say what was wrong and where.

use thiserror::Error;

/// A record batch (or a buffer of them) failed to parse or validate.
///
/// "Need more bytes" is not an error: [`crate::next_batch_len`] reports it as `Ok(None)`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },

    #[error("unsupported record batch magic {magic} (only magic 2 is accepted)")]
    UnsupportedMagic { magic: i8 },

    #[error(
        "invalid batch length {length}: a magic 2 batch is at least {min} bytes after the length field"
    )]
    InvalidBatchLength { length: i32, min: usize },

    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },

    #[error("unknown compression codec {codec} in batch attributes")]
    UnknownCompression { codec: u8 },

    #[error("invalid record count {count}")]
    InvalidRecordCount { count: i32 },

    #[error("record count mismatch: header says {declared} records, batch holds {actual}")]
    RecordCountMismatch { declared: i32, actual: i32 },

    #[error("record {index}: {reason}")]
    InvalidRecord { index: i32, reason: &'static str },

    #[error("{trailing} trailing bytes after the last record")]
    TrailingBytes { trailing: usize },

    #[error("malformed varint")]
    MalformedVarint,

    #[error("{codec} decompression failed: {reason}")]
    Decompression { codec: &'static str, reason: String },

    #[error("{codec} compression failed: {reason}")]
    Compression { codec: &'static str, reason: String },

    #[error("decompressed records exceed the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },

    #[error("batch is not valid for append: {reason}")]
    InvalidForAppend { reason: &'static str },
}
