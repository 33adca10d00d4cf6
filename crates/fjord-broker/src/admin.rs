//! Topic administration and producer-id blocks: each request goes through the controller
//! (`fjord_meta::Controller`, which turns it into records checked against the applied state),
//! is committed to the metadata log, and takes effect when the publisher applies it. One node
//! runs the path a cluster will: only the commit (Raft instead of the local log) changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_log::LastShutdown;
use fjord_meta::{
    Controller, ControllerConfig, LocalChanges, MetadataRecord, MetadataState, NewTopic, TopicId,
    TopicMeta,
};

use crate::broker::{AdminError, Broker, open_failure};
use crate::coordinator::group::OFFSETS_TOPIC;
use crate::coordinator::txn::TXN_TOPIC;
use crate::errors;
use crate::topic_config;

/// The most partitions one topic may have.
const MAX_PARTITIONS: i32 = 100_000;

impl Broker {
    /// The brokers that can hold new replicas: this node (a cluster registers its brokers).
    fn usable_brokers(&self) -> Vec<i32> {
        vec![self.config.node_id]
    }

    fn controller_config(&self) -> ControllerConfig {
        ControllerConfig {
            default_partitions: self.config.num_partitions,
            default_replication_factor: self.config.default_replication_factor,
            max_partitions: MAX_PARTITIONS,
        }
    }

    /// Runs `decide` with the controller over the applied state, under the admin lock (one
    /// change at a time, each decided on the state the previous one left).
    fn with_controller<T>(&self, decide: impl FnOnce(&Controller<'_>) -> T) -> T {
        let state = self.quorum.state();
        let brokers = self.usable_brokers();
        let config = self.controller_config();
        decide(&Controller {
            state: &state,
            brokers: &brokers,
            config: &config,
        })
    }

    /// Commits a change decided by the controller and publishes it; returns the state after
    /// it. The partitions it places on this node are opened first: if they cannot be, nothing
    /// is recorded and the error ends with `unchanged` (what the caller's request left as it
    /// was). The caller holds the admin lock.
    fn commit_change(
        &self,
        change: &[MetadataRecord],
        unchanged: &str,
    ) -> Result<Arc<MetadataState>, AdminError> {
        let current = self.quorum.state();
        let mut preview = (*current).clone();
        preview.apply_all(change).map_err(|e| {
            AdminError::new(
                errors::UNKNOWN_SERVER_ERROR,
                format!("the controller decided a change that does not apply: {e}"),
            )
        })?;
        let local = LocalChanges::between(&current, &preview, self.config.node_id);
        let prepared = self.prepare(&preview, &local.added).map_err(|e| {
            tracing::error!(error = %e, "could not open the partitions of a change; it is not recorded");
            AdminError::new(
                errors::KAFKA_STORAGE_ERROR,
                format!("{}; {unchanged}", open_failure(&e)),
            )
        })?;
        let written = self.runtime.block_on(self.quorum.write(change.to_vec()));
        let next = match written {
            Ok(published) => published.state,
            Err(e) => {
                self.discard(prepared);
                return Err(AdminError::new(
                    errors::KAFKA_STORAGE_ERROR,
                    format!("could not record the change in the metadata log: {e}; {unchanged}"),
                ));
            }
        };
        if let Err(e) = self.publish(&current, &next, prepared, LastShutdown::Unclean) {
            // Only partitions not prepared can fail here: none on one node.
            tracing::error!(error = %e, "a committed change could not be fully published");
        }
        Ok(next)
    }

    /// Creates a topic (or only checks that it could be created). Blocking.
    pub fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<TopicMeta, AdminError> {
        let _admin = self.admin_lock();
        let id = TopicId::from_entropy(self.random_u128());
        let seed = self.random_u128() as u64;
        let change = self.with_controller(|c| {
            c.create_topic(&topic, id, seed, |configs| {
                self.check_topic_configs(configs)
            })
        })?;
        if validate_only {
            let mut preview = (*self.quorum.state()).clone();
            preview
                .apply_all(&change)
                .map_err(|e| AdminError::new(errors::UNKNOWN_SERVER_ERROR, e.to_string()))?;
            return Self::existing(&preview, &topic.name);
        }
        let state = self.commit_change(&change, "the topic was not created")?;
        let created = Self::existing(&state, &topic.name)?;
        tracing::info!(topic = %created.name, partitions = created.partitions, "created topic");
        Ok(created)
    }

    /// Deletes a topic: its metadata, then (published) its partitions' data. Blocking.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta, AdminError> {
        let _admin = self.admin_lock();
        let (topic, change) = self.with_controller(|c| c.delete_topic(name))?;
        self.commit_change(&change, "the topic was not deleted")?;
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Grows a topic to `total` partitions, placed as `assignments` say (one replica list per
    /// new partition) or by the controller (or only checks that it could). Blocking.
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _admin = self.admin_lock();
        let seed = self.random_u128() as u64;
        let (current, change) = self.with_controller(|c| {
            let current = c.state.topic(name).map_or(0, |t| t.partitions);
            c.create_partitions(name, total, assignments.as_deref(), seed)
                .map(|change| (current, change))
        })?;
        if validate_only {
            return Ok(());
        }
        self.commit_change(
            &change,
            &format!("the topic keeps its {current} partitions"),
        )?;
        tracing::info!(topic = name, from = current, to = total, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides with what `change` makes of the current ones (or
    /// only checks them); the publisher applies them to its running partitions. `change` runs
    /// under the admin lock, so concurrent incremental changes each see the other's result.
    /// Blocking.
    pub fn set_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _admin = self.admin_lock();
        let current = Self::existing(&self.quorum.state(), name)?;
        let configs = change(&current.configs)?;
        let records = self.with_controller(|c| {
            c.set_topic_configs(name, &configs, |configs| self.check_topic_configs(configs))
        })?;
        if validate_only || records.is_empty() {
            return Ok(());
        }
        self.commit_change(&records, "the configs are unchanged")?;
        tracing::info!(
            topic = name,
            changes = records.len(),
            "changed topic configs"
        );
        Ok(())
    }

    /// Hands out the next block of `count` producer ids, recorded durably in the metadata
    /// log so no id is handed out twice, even across restarts. Blocking.
    pub fn allocate_producer_ids(&self, count: i64) -> Result<(i64, i64), AdminError> {
        let _admin = self.admin_lock();
        let (start, change) = self.with_controller(|c| c.allocate_producer_ids(count));
        let state = self.commit_change(&change, "no producer ids were handed out")?;
        Ok((start, state.next_producer_id()))
    }

    /// Creates `__consumer_offsets` on first use (compacted, `offsets.topic.num.partitions`);
    /// returns its partition count. Blocking.
    pub fn ensure_offsets_topic(&self) -> Result<i32, AdminError> {
        self.ensure_internal_topic(OFFSETS_TOPIC, self.config.offsets_topic_partitions)
    }

    /// Creates `__transaction_state` on first use (compacted,
    /// `transaction.state.log.num.partitions`); returns its partition count. Blocking.
    pub fn ensure_transaction_topic(&self) -> Result<i32, AdminError> {
        self.ensure_internal_topic(TXN_TOPIC, self.config.transaction_state_partitions)
    }

    fn ensure_internal_topic(&self, name: &str, partitions: i32) -> Result<i32, AdminError> {
        {
            // Under the admin lock: a creation in progress has been published by the time
            // the lock is ours.
            let _admin = self.admin_lock();
            if let Some(t) = self.quorum.state().topic(name) {
                return Ok(t.partitions);
            }
        }
        let topic = NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            assignments: None,
            configs: BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), "104857600".to_string()),
            ]),
        };
        match self.create_topic(topic, false) {
            Ok(t) => Ok(t.partitions),
            Err(e) if e.code == errors::TOPIC_ALREADY_EXISTS => {
                Ok(self.quorum.state().topic(name).map_or(1, |t| t.partitions))
            }
            Err(e) => Err(e),
        }
    }

    /// Topic config overrides as the controller checks them: each valid, and together a log
    /// config this broker can run.
    fn check_topic_configs(&self, configs: &BTreeMap<String, String>) -> Result<(), String> {
        topic_config::validate_all(configs)?;
        topic_config::log_config(&self.config.log_defaults, configs).map(|_| ())
    }

    fn existing(state: &MetadataState, name: &str) -> Result<TopicMeta, AdminError> {
        state.topic(name).cloned().ok_or_else(|| {
            AdminError::new(
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("The topic '{name}' does not exist."),
            )
        })
    }
}
