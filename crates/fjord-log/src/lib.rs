//! One partition's log on disk, laid out as Kafka lays it out.
//!
//! A partition is a directory of segments (`{base_offset:020}.log` with its `.index` and
//! `.timeindex`) plus a checkpoint. [`Log`] appends validated batches and assigns offsets,
//! reads byte ranges the server can send without decoding, looks up offsets by timestamp,
//! recovers after a crash, and applies retention and compaction. See docs/storage.md for the
//! bytes on disk and what the code assumes of the disk.
//!
//! All file I/O goes through [`storage::Storage`], so tests run the same code against
//! [`sim::SimStorage`], which injects failures and makes crash images.

pub mod checkpoint;
mod cleaner;
pub mod config;
pub mod epochs;
mod error;
pub mod flusher;
pub mod index;
mod log;
pub mod producer;
pub mod segment;
pub mod sim;
pub mod storage;

pub use cleaner::CompactionOutcome;
pub use config::{CleanupPolicy, ConfigError, LOG_CONFIG_KEYS, LogConfig};
pub use error::LogError;
pub use flusher::{Flusher, SyncRequest};
pub use log::{
    AppendInfo, AppendOrigin, FetchSlice, LastShutdown, Log, PendingSync, ReadResult, ReadUpTo,
    RetentionOutcome, SegmentInfo, TimestampOffset,
};
pub use producer::{AbortedTxn, ProducerEntry, ProducerError};
pub use storage::{FilesystemSync, FsStorage, Storage, StorageFile};
