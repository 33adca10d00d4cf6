//! The durable metadata log: records are JSON values in record batches of a `fjord-log`
//! partition, `__cluster_metadata-0`, replayed on start.

use std::path::Path;
use std::sync::{Arc, Mutex};

use fjord_log::{AppendOrigin, Log, LogConfig, LogError, ReadUpTo, Storage};
use fjord_record::{BatchBuilder, Compression, Records, split_batches, validate_batch};
use thiserror::Error;

use crate::record::MetadataRecord;
use crate::state::{ApplyError, MetadataState};

/// The directory of the metadata log inside the data directory.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("metadata log: {0}")]
    Log(#[from] LogError),
    #[error("metadata record at offset {offset} does not decode: {reason}")]
    Decode { offset: i64, reason: String },
    #[error("metadata record at offset {offset} does not apply: {source}")]
    Replay {
        offset: i64,
        #[source]
        source: ApplyError,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The metadata state and the log it is rebuilt from.
#[derive(Debug)]
pub struct MetadataStore {
    log: Log,
    state: Mutex<Arc<MetadataState>>,
}

impl MetadataStore {
    /// Opens the metadata log under `data_dir` and replays it. Partitions of topics an
    /// earlier Fjord version recorded (without placement) are placed on `node_id`, the node
    /// that has always held them, by records written at once.
    pub fn open(
        storage: Arc<dyn Storage>,
        data_dir: &Path,
        now_ms: i64,
        node_id: i32,
    ) -> Result<Self, StoreError> {
        Self::open_dir(storage, &data_dir.join(METADATA_DIR), now_ms, node_id)
    }

    /// [`Self::open`] on the metadata log's own directory, wherever it is.
    pub fn open_dir(
        storage: Arc<dyn Storage>,
        dir: &Path,
        now_ms: i64,
        node_id: i32,
    ) -> Result<Self, StoreError> {
        let config = LogConfig {
            retention_ms: -1,
            segment_bytes: 64 * 1024 * 1024,
            // One change is one batch: a topic of many partitions is a large one.
            max_message_bytes: 64 * 1024 * 1024,
            ..LogConfig::default()
        };
        let log = Log::open(storage, dir.to_path_buf(), config, now_ms)?;
        log.set_high_watermark(log.log_end_offset())?;
        let mut state = MetadataState::default();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let read = log.read(offset, 1 << 20, ReadUpTo::LogEnd, true)?;
            let Some(slice) = read.data else { break };
            let bytes = slice.read().map_err(|e| StoreError::Decode {
                offset,
                reason: e.to_string(),
            })?;
            for batch in split_batches(&bytes) {
                let bad = |reason: String| StoreError::Decode { offset, reason };
                let batch = batch.map_err(|e| bad(e.to_string()))?;
                let header = validate_batch(batch).map_err(|e| bad(e.to_string()))?;
                let records = Records::decode(batch, 64 << 20).map_err(|e| bad(e.to_string()))?;
                // A batch holds the records of one change; they apply together.
                let mut change = Vec::new();
                for r in records.iter() {
                    let r = r.map_err(|e| bad(e.to_string()))?;
                    let value = r.value.unwrap_or_default();
                    change.push(
                        MetadataRecord::decode(value).map_err(|e| StoreError::Decode {
                            offset: r.offset(&header),
                            reason: e.to_string(),
                        })?,
                    );
                }
                state
                    .apply_all(&change)
                    .map_err(|source| StoreError::Replay {
                        offset: header.base_offset,
                        source,
                    })?;
            }
            offset = slice.next_offset;
        }
        let unassigned = state.unassigned_partitions();
        let store = Self {
            log,
            state: Mutex::new(Arc::new(state)),
        };
        if !unassigned.is_empty() {
            let placed: Vec<MetadataRecord> = unassigned
                .iter()
                .map(|&(topic_id, partition)| MetadataRecord::Partition {
                    topic_id,
                    partition,
                    replicas: vec![node_id],
                    isr: vec![node_id],
                    leader: node_id,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding: Vec::new(),
                    removing: Vec::new(),
                })
                .collect();
            store.commit(&placed, now_ms)?;
            tracing::info!(
                partitions = placed.len(),
                node_id,
                "placed the partitions of an earlier Fjord version's metadata on this node"
            );
        }
        Ok(store)
    }

    /// The current state (a cheap snapshot).
    pub fn state(&self) -> Arc<MetadataState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Durably appends one change (records that apply together) and applies it; returns the
    /// states before and after. Checked against the state first: a change that does not
    /// apply is never written.
    pub fn commit(
        &self,
        change: &[MetadataRecord],
        now_ms: i64,
    ) -> Result<(Arc<MetadataState>, Arc<MetadataState>), StoreError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let prev = guard.clone();
        let mut next = (*prev).clone();
        next.apply_all(change)?;
        let mut builder = BatchBuilder::new(Compression::None);
        for r in change {
            builder.push(now_ms, None, Some(&r.encode()));
        }
        let batch = builder.build().map_err(LogError::from)?;
        let info = self
            .log
            .append_durable(&batch, AppendOrigin::Internal, now_ms)?;
        self.log.set_high_watermark(info.next_offset())?;
        let next = Arc::new(next);
        *guard = next.clone();
        Ok((prev, next))
    }

    /// Flushes and marks a clean shutdown.
    pub fn close(&self) -> Result<(), StoreError> {
        Ok(self.log.close()?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fjord_log::FsStorage;

    use super::*;
    use crate::record::TopicId;

    #[test]
    fn changes_survive_restart_and_bad_changes_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let store = MetadataStore::open(storage.clone(), dir.path(), 1, 1).unwrap();
        let create = MetadataRecord::TopicCreated {
            name: "orders".into(),
            id: TopicId([9; 16]),
            partitions: 2,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".to_string(), "5".to_string())]),
        };
        store.commit(std::slice::from_ref(&create), 1).unwrap();
        assert!(store.commit(&[create], 1).is_err());
        store
            .commit(
                &[MetadataRecord::PartitionsCreated {
                    topic: "orders".into(),
                    total: 4,
                }],
                2,
            )
            .unwrap();
        drop(store); // no clean close: recovery path
        let store = MetadataStore::open(storage, dir.path(), 3, 1).unwrap();
        let t = store.state().topic("orders").cloned().unwrap();
        assert_eq!(t.partitions, 4);
        // The records of an earlier version were placed on this node on open.
        assert!(store.state().unassigned_partitions().is_empty());
        assert!(
            t.partition_states
                .iter()
                .all(|p| p.leader == 1 && p.replicas == [1])
        );
        assert_eq!(t.configs["retention.ms"], "5");
        assert_eq!(t.id, TopicId([9; 16]));
    }

    #[test]
    fn a_topic_of_many_partitions_is_one_change_that_replays() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let store = MetadataStore::open(storage.clone(), dir.path(), 1, 1).unwrap();
        let id = TopicId([5; 16]);
        let mut change = vec![MetadataRecord::Topic {
            name: "wide".into(),
            id,
        }];
        change.extend((0..20_000).map(|p| MetadataRecord::Partition {
            topic_id: id,
            partition: p,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }));
        store.commit(&change, 1).unwrap();
        drop(store);
        let store = MetadataStore::open(storage, dir.path(), 2, 1).unwrap();
        assert_eq!(store.state().topic("wide").unwrap().partitions, 20_000);
    }
}
