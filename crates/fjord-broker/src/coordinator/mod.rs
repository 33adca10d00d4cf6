//! Coordinators as shards of their internal topic's partitions, and the one seam they write
//! through.
//!
//! A coordinator keeps the state of each partition of its internal topic (a *shard*) apart:
//! loaded by replaying that partition, unloaded on demand (the calls failover will make when
//! leadership moves), and changed by one writer at a time. Every change follows Kafka's
//! coordinator runtime: under the shard's lock the operation changes the state and appends
//! the records that describe the change, so records land in the order of the changes; outside
//! the lock it waits until they are committed and only then answers. A write that fails
//! rebuilds the shard from what its partition has committed (the state goes back to the last
//! answered change, never further) and is answered with Kafka's coordinator error codes.
//!
//! The coordinators know their partitions only through [`PartitionWriter`] (Kafka's
//! `PartitionWriter`): never the broker, so there is no import circle between them.

pub mod group;
pub mod txn;

/// One shard of a coordinator: the state of one internal-topic partition.
#[derive(Debug)]
pub(crate) struct Shard<S> {
    pub partition: i32,
    pub state: Mutex<S>,
}

/// A coordinator's shards by internal-topic partition, created on first use.
#[derive(Debug)]
pub(crate) struct Shards<S>(RwLock<HashMap<i32, Arc<Shard<S>>>>);

impl<S> Default for Shards<S> {
    fn default() -> Self {
        Self(RwLock::new(HashMap::new()))
    }
}

impl<S> Shards<S> {
    /// The shard of `partition`, made with `new` if there is none yet.
    pub fn get_or_create(&self, partition: i32, new: impl FnOnce() -> S) -> Arc<Shard<S>> {
        if let Some(s) = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
        {
            return s.clone();
        }
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_insert_with(|| {
                Arc::new(Shard {
                    partition,
                    state: Mutex::new(new()),
                })
            })
            .clone()
    }

    /// Drops the shard of `partition`: the next use makes a new one.
    pub fn remove(&self, partition: i32) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }

    /// Every shard, in partition order.
    pub fn all(&self) -> Vec<Arc<Shard<S>>> {
        let mut shards: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        shards.sort_by_key(|s| s.partition);
        shards
    }
}

/// How many record bytes one batch of a conversion holds, well under the internal topics'
/// `max.message.bytes` (1 MiB by default).
pub(crate) const CONVERSION_BATCH_BYTES: usize = 256 * 1024;

/// Splits records into batches of about [`CONVERSION_BATCH_BYTES`] (built uncompressed, all
/// stamped `now`).
pub(crate) fn conversion_batches(
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    now: i64,
) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
    let mut bytes = 0;
    for (k, v) in &records {
        let size = k.len() + v.as_ref().map_or(0, Vec::len) + 32;
        if bytes > 0 && bytes + size > CONVERSION_BATCH_BYTES {
            out.push(b.build().map_err(|e| e.to_string())?);
            b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
            bytes = 0;
        }
        b.push(now, Some(k), v.as_deref());
        bytes += size;
    }
    if bytes > 0 {
        out.push(b.build().map_err(|e| e.to_string())?);
    }
    Ok(out)
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use fjord_log::LogError;
use thiserror::Error;

use crate::errors;

/// Why a write to, or a read of, an internal-topic partition failed.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The partition is not hosted (or no longer led) here.
    #[error("{topic}-{partition} is not led by this broker")]
    NotLeader { topic: String, partition: i32 },
    /// The internal topic does not exist and could not be created.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What a coordinator may do with its internal topic's partitions (Kafka's
/// `PartitionWriter`): everything goes through the partition's one write path, so in a
/// cluster "committed" means replicated without a change here.
pub trait PartitionWriter: Send + Sync + std::fmt::Debug + 'static {
    /// The topic's partition count, creating the topic first if `create` and it does not
    /// exist; `None` when it does not exist and `create` is false.
    fn partitions(&self, topic: &str, create: bool) -> Result<Option<i32>, WriteError>;
    /// Whether this broker leads the partition (only a leader's shard loads).
    fn leads(&self, topic: &str, partition: i32) -> bool {
        let _ = (topic, partition);
        true
    }
    /// The leader epoch this broker leads the partition in (None: it does not lead it); a
    /// transaction coordinator's epoch.
    fn leader_epoch(&self, topic: &str, partition: i32) -> Option<i32> {
        self.leads(topic, partition).then_some(0)
    }
    /// Appends a batch as the partition's leader; returns the offset after it.
    fn append(&self, topic: &str, partition: i32, batch: &[u8]) -> Result<i64, WriteError>;
    /// Waits until every offset below `offset` is committed (fsynced here; in a cluster,
    /// covered by the high watermark) and raises the high watermark. Blocking.
    fn committed(&self, topic: &str, partition: i32, offset: i64) -> Result<(), WriteError>;
    /// Calls `f` with every batch of the partition below its high watermark, in order, and
    /// returns the high watermark: what loading a shard replays.
    fn replay(
        &self,
        topic: &str,
        partition: i32,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<i64, WriteError>;
}

/// A coordinator operation refused because this broker cannot coordinate it now.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoordinatorError {
    /// The shard is not here (or was unloaded after a failed write): the client looks up the
    /// coordinator again and retries.
    #[error("not the coordinator: {0}")]
    NotCoordinator(String),
    /// The coordinator cannot work at all now (its topic cannot be created).
    #[error("coordinator not available: {0}")]
    NotAvailable(String),
    /// The shard is being loaded from its partition; retry shortly.
    #[error("the coordinator is loading its state")]
    LoadInProgress,
    /// A write the coordinator should never have made (too large, malformed).
    #[error("{0}")]
    Unexpected(String),
    /// The partition refused the write for the producer's sake (a transactional write with
    /// a stale epoch): the request's error, not the coordinator's.
    #[error("{message}")]
    Refused { code: i16, message: String },
}

impl CoordinatorError {
    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        match self {
            Self::NotCoordinator(_) => errors::NOT_COORDINATOR,
            Self::NotAvailable(_) => errors::COORDINATOR_NOT_AVAILABLE,
            Self::LoadInProgress => errors::COORDINATOR_LOAD_IN_PROGRESS,
            Self::Unexpected(_) => errors::UNKNOWN_SERVER_ERROR,
            Self::Refused { code, .. } => *code,
        }
    }
}

impl From<&WriteError> for CoordinatorError {
    /// Kafka's mapping of storage errors for coordinator operations
    /// (`CoordinatorOperationExceptionHelper`): a partition that is not led here or whose
    /// storage failed is NOT_COORDINATOR (the client finds the coordinator again and
    /// retries), a topic that cannot be written at all is COORDINATOR_NOT_AVAILABLE, a write
    /// too large is UNKNOWN_SERVER_ERROR.
    fn from(e: &WriteError) -> Self {
        match e {
            WriteError::NotLeader { .. } => Self::NotCoordinator(e.to_string()),
            WriteError::Unavailable(m) => Self::NotAvailable(m.clone()),
            WriteError::Log(
                LogError::Failed { .. }
                | LogError::Io { .. }
                | LogError::Unreadable { .. }
                | LogError::Closed { .. },
            ) => Self::NotCoordinator(e.to_string()),
            WriteError::Log(l @ LogError::Producer(_)) => Self::Refused {
                code: errors::from_log_error(l),
                message: e.to_string(),
            },
            WriteError::Log(_) => Self::Unexpected(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_as_kafka_maps_them_for_coordinators() {
        let io = WriteError::Log(LogError::Failed {
            dir: "x".into(),
            reason: "disk".into(),
        });
        assert_eq!(CoordinatorError::from(&io).code(), errors::NOT_COORDINATOR);
        let gone = WriteError::NotLeader {
            topic: "__consumer_offsets".into(),
            partition: 3,
        };
        assert_eq!(
            CoordinatorError::from(&gone).code(),
            errors::NOT_COORDINATOR
        );
        let none = WriteError::Unavailable("cannot create".into());
        assert_eq!(
            CoordinatorError::from(&none).code(),
            errors::COORDINATOR_NOT_AVAILABLE
        );
        let big = WriteError::Log(LogError::BatchTooLarge { size: 10, max: 1 });
        assert_eq!(
            CoordinatorError::from(&big).code(),
            errors::UNKNOWN_SERVER_ERROR
        );
    }
}
