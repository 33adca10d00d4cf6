//! Topic administration and producer-id blocks: each request goes through the controller
//! (`fjord_meta::Controller`, which turns it into records checked against the applied state),
//! is committed to the metadata log, and takes effect when the publisher applies it. One node
//! runs the path a cluster will: only the commit (Raft instead of the local log) changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_log::LastShutdown;
use fjord_meta::{
    Controller, ControllerConfig, ControllerError, ElectionError, ElectionType, LocalChanges,
    MetadataRecord, MetadataState, NewTopic, TopicId, TopicMeta, UnregisterError,
};
use fjord_quorum::QuorumError;

use crate::broker::{AdminError, Broker, open_failure};
use crate::coordinator::group::OFFSETS_TOPIC;
use crate::coordinator::txn::TXN_TOPIC;
use crate::errors;
use crate::topic_config;

/// How many partitions one ElectLeaders change elects at most (the rest in further changes).
const ELECTIONS_PER_CHANGE: usize = 100;

/// Why a change was not committed.
#[derive(Debug)]
enum CommitError {
    /// It no longer applies: another change was committed first. Decide again.
    Refused(String),
    /// It could not be committed; the request fails with this.
    Failed(AdminError),
}

/// One partition's outcome of an ElectLeaders request.
pub(crate) type ElectionOutcome = ((String, i32), Result<(), ElectionError>);

/// The most partitions one topic may have.
pub(crate) const MAX_PARTITIONS: i32 = 100_000;

impl Broker {
    /// The brokers that can hold new replicas: the registered ones not fenced (this node
    /// until it has registered).
    fn usable_brokers(&self, state: &MetadataState) -> Vec<i32> {
        if state.brokers().next().is_none() {
            return vec![self.config.node_id];
        }
        state
            .brokers()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    fn controller_config(&self) -> ControllerConfig {
        ControllerConfig {
            default_partitions: self.config.num_partitions,
            default_replication_factor: self.config.default_replication_factor,
            max_partitions: MAX_PARTITIONS,
            // As many as there are brokers (placement says so when asked for more).
            max_replication_factor: i16::MAX,
            unclean_leader_election: self.config.unclean_leader_election,
        }
    }

    /// Runs `decide` with the controller over the applied state. Admin changes call it under
    /// the admin lock (one at a time, each decided on the state the previous one left).
    pub(crate) fn with_controller<T>(&self, decide: impl FnOnce(&Controller<'_>) -> T) -> T {
        let state = self.quorum.state();
        let brokers = self.usable_brokers(&state);
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
    ) -> Result<Arc<MetadataState>, CommitError> {
        let current = self.quorum.state();
        let mut preview = (*current).clone();
        if let Err(e) = preview.apply_all(change) {
            // Decided on a state another change has moved on from since.
            return Err(CommitError::Refused(e.to_string()));
        }
        let local = LocalChanges::between(&current, &preview, self.config.node_id);
        let prepared = self.prepare(&preview, &local.added).map_err(|e| {
            tracing::error!(error = %e, "could not open the partitions of a change; it is not recorded");
            CommitError::Failed(AdminError::new(
                errors::KAFKA_STORAGE_ERROR,
                format!("{}; {unchanged}", open_failure(&e)),
            ))
        })?;
        if !prepared {
            return Err(CommitError::Refused(
                "a partition it places here is served already: another change was committed first"
                    .into(),
            ));
        }
        let written = self.runtime.block_on(self.quorum.write(change.to_vec()));
        let next = match written {
            Ok(published) => published.state,
            Err(e) => {
                self.unprepare(&local.added);
                if let QuorumError::Refused(reason) = e {
                    return Err(CommitError::Refused(reason));
                }
                return Err(CommitError::Failed(AdminError::new(
                    errors::KAFKA_STORAGE_ERROR,
                    format!("could not record the change in the metadata quorum: {e}; {unchanged}"),
                )));
            }
        };
        if let Err(e) = self.publish_to(&next, LastShutdown::Unclean) {
            // Only partitions not prepared can fail here.
            tracing::error!(error = %e, "a committed change could not be fully published");
        }
        self.unprepare(&local.added);
        Ok(next)
    }

    /// Decides a change with the controller and commits it; a change refused because another
    /// was committed first (on another node) is decided again on the state that won, so the
    /// answer is the one that state gives. Returns what `decide` returned with the records, and
    /// the state after them (`None` when there was nothing to change). The caller holds the
    /// admin lock.
    fn decide_and_commit<T>(
        &self,
        unchanged: &str,
        decide: impl Fn(&Controller<'_>) -> Result<(T, Vec<MetadataRecord>), AdminError>,
    ) -> Result<(T, Option<Arc<MetadataState>>), AdminError> {
        let mut attempts = 0;
        loop {
            let (out, records) = self.with_controller(&decide)?;
            if records.is_empty() {
                return Ok((out, None));
            }
            match self.commit_change(&records, unchanged) {
                Ok(state) => return Ok((out, Some(state))),
                Err(CommitError::Failed(e)) => return Err(e),
                Err(CommitError::Refused(reason)) if attempts < 5 => {
                    attempts += 1;
                    tracing::debug!(reason, "a concurrent metadata change won; deciding again");
                    // Give this node's publisher time to catch up with the change that won.
                    std::thread::sleep(std::time::Duration::from_millis(20 * attempts));
                }
                Err(CommitError::Refused(reason)) => {
                    return Err(AdminError::new(
                        errors::UNKNOWN_SERVER_ERROR,
                        format!(
                            "the metadata kept changing under this request ({reason}); retry it"
                        ),
                    ));
                }
            }
        }
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
        if validate_only {
            let change = self.with_controller(|c| {
                c.create_topic(&topic, id, seed, |configs| {
                    self.check_topic_configs(configs)
                })
            })?;
            let mut preview = (*self.quorum.state()).clone();
            preview
                .apply_all(&change)
                .map_err(|e| AdminError::new(errors::UNKNOWN_SERVER_ERROR, e.to_string()))?;
            return Self::existing(&preview, &topic.name);
        }
        let ((), state) = self.decide_and_commit("the topic was not created", |c| {
            let change = c.create_topic(&topic, id, seed, |configs| {
                self.check_topic_configs(configs)
            })?;
            Ok(((), change))
        })?;
        let state = state.unwrap_or_else(|| self.quorum.state());
        let created = Self::existing(&state, &topic.name)?;
        tracing::info!(topic = %created.name, partitions = created.partitions, "created topic");
        Ok(created)
    }

    /// Deletes a topic: its metadata, then (published) its partitions' data. Blocking.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta, AdminError> {
        let _admin = self.admin_lock();
        let (topic, _) =
            self.decide_and_commit("the topic was not deleted", |c| Ok(c.delete_topic(name)?))?;
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
        let decide = |c: &Controller<'_>| {
            let current = c.state.topic(name).map_or(0, |t| t.partitions);
            let change = c.create_partitions(name, total, assignments.as_deref(), seed)?;
            Ok((current, change))
        };
        if validate_only {
            self.with_controller(decide)?;
            return Ok(());
        }
        let current = self.quorum.state().topic(name).map_or(0, |t| t.partitions);
        let (current, _) =
            self.decide_and_commit(&format!("the topic keeps its {current} partitions"), decide)?;
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
        change: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _admin = self.admin_lock();
        let decide = |c: &Controller<'_>| {
            let current = c
                .state
                .topic(name)
                .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
            let configs = change(&current.configs)?;
            let records =
                c.set_topic_configs(name, &configs, |configs| self.check_topic_configs(configs))?;
            Ok((records.len(), records))
        };
        if validate_only {
            self.with_controller(decide)?;
            return Ok(());
        }
        let (changes, _) = self.decide_and_commit("the configs are unchanged", decide)?;
        if changes > 0 {
            tracing::info!(topic = name, changes, "changed topic configs");
        }
        Ok(())
    }

    /// ElectLeaders: elects leaders for `partitions` (every partition when `None`) as `kind`
    /// asks and returns each named partition's outcome, once the elections are committed
    /// (clients then find the new leaders in the metadata). Asked for every partition, only
    /// the partitions an election was tried for are answered (not those that need none), as
    /// Kafka does. Blocking.
    pub fn elect_leaders(
        &self,
        kind: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<ElectionOutcome>, AdminError> {
        let _admin = self.admin_lock();
        let all = partitions.is_none();
        let named = match partitions {
            Some(p) => p,
            None => self.with_controller(|c| {
                c.state
                    .topics()
                    .flat_map(|t| (0..t.partitions).map(|i| (t.name.clone(), i)))
                    .collect()
            }),
        };
        // A change applies only to the partition epochs it was decided on: committed a
        // bounded number of partitions at a time, a large election is not refused over and
        // over by the ISR changes of a busy cluster (each part is decided again if it is).
        let mut outcomes = Vec::with_capacity(named.len());
        for (n, part) in named.chunks(ELECTIONS_PER_CHANGE).enumerate() {
            let decide = |c: &Controller<'_>| {
                let (decided, records) = c.elect_leaders(kind, part);
                Ok((
                    part.iter().cloned().zip(decided).collect::<Vec<_>>(),
                    records,
                ))
            };
            match self.decide_and_commit("no leader was changed", decide) {
                Ok((decided, _)) => outcomes.extend(decided),
                // What an earlier part changed stands; this part's partitions say why not.
                Err(e) if n > 0 => outcomes.extend(part.iter().cloned().map(|p| {
                    let why = e.message.clone();
                    let not_now = match kind {
                        ElectionType::Preferred => ElectionError::PreferredLeaderNotAvailable(why),
                        ElectionType::Unclean => ElectionError::EligibleLeadersNotAvailable(why),
                    };
                    (p, Err(not_now))
                })),
                Err(e) => return Err(e),
            }
        }
        if all {
            outcomes.retain(|(_, r)| !matches!(r, Err(ElectionError::ElectionNotNeeded(_))));
        }
        let elected = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
        if elected > 0 {
            tracing::info!(partitions = elected, ?kind, "elected leaders");
        }
        Ok(outcomes)
    }

    /// AlterPartitionReassignments: for each (topic, partition, target replicas or `None`
    /// to cancel), starts, replaces or cancels its reassignment, all in one change; returns
    /// each one's outcome once committed. Unless `allow_replication_factor_change`, a target
    /// of another size than the partition's replica count is refused (KIP-860). Blocking.
    pub fn alter_reassignments(
        &self,
        asked: &[(String, i32, Option<Vec<i32>>)],
        allow_replication_factor_change: bool,
    ) -> Result<Vec<Result<(), AdminError>>, AdminError> {
        let _admin = self.admin_lock();
        let decide = |c: &Controller<'_>| {
            // Decided one after another, each on the state the previous ones leave.
            let mut scratch = (*c.state).clone();
            let mut records = Vec::new();
            let mut outcomes = Vec::with_capacity(asked.len());
            for (topic, partition, target) in asked {
                let step = Controller {
                    state: &scratch,
                    ..*c
                };
                if let (false, Some(target), Some(p)) = (
                    allow_replication_factor_change,
                    target,
                    scratch.partition(topic, *partition),
                ) {
                    let current = p.target_replicas().len();
                    if target.len() != current && !target.is_empty() {
                        outcomes.push(Err(AdminError::new(
                            errors::INVALID_REPLICATION_FACTOR,
                            format!(
                                "The replication factor is changed from {current} to {}",
                                target.len()
                            ),
                        )));
                        continue;
                    }
                }
                match step.reassign(topic, *partition, target.as_deref()) {
                    Ok(change) => {
                        if let Err(e) = scratch.apply_all(&change) {
                            outcomes.push(Err(AdminError::new(
                                errors::UNKNOWN_SERVER_ERROR,
                                e.to_string(),
                            )));
                            continue;
                        }
                        records.extend(change);
                        outcomes.push(Ok(()));
                    }
                    Err(e) => outcomes.push(Err(e.into())),
                }
            }
            Ok((outcomes, records))
        };
        let (outcomes, _) = self.decide_and_commit("no reassignment changed", decide)?;
        let changed = outcomes.iter().filter(|r| r.is_ok()).count();
        if changed > 0 {
            tracing::info!(partitions = changed, "partition reassignments changed");
        }
        Ok(outcomes)
    }

    /// Sets broker resource `broker`'s dynamic configs (an id, or "" for every broker's
    /// default) to what `change` makes of the current ones, under the admin lock; only the
    /// configs Fjord changes at runtime ([`crate::config::DYNAMIC_BROKER_CONFIGS`]) may be
    /// named. Blocking.
    pub fn set_broker_configs(
        &self,
        broker: &str,
        change: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        if !broker.is_empty() && broker.parse::<i32>().map_or(true, |id| id < 0) {
            return Err(AdminError::new(
                errors::INVALID_REQUEST,
                format!(
                    "Invalid broker id {broker}: a broker resource is a broker id, or empty for the default of every broker"
                ),
            ));
        }
        let _admin = self.admin_lock();
        let decide = |c: &Controller<'_>| {
            let empty = BTreeMap::new();
            let configs = change(c.state.broker_configs(broker).unwrap_or(&empty))?;
            for (key, value) in &configs {
                // Kafka answers a bad broker config INVALID_REQUEST.
                crate::config::check_dynamic_broker_config(key, value)
                    .map_err(|message| AdminError::new(errors::INVALID_REQUEST, message))?;
            }
            let records = c.set_broker_configs(broker, &configs);
            Ok((records.len(), records))
        };
        if validate_only {
            self.with_controller(decide)?;
            return Ok(());
        }
        let (changes, _) = self.decide_and_commit("the broker configs are unchanged", decide)?;
        if changes > 0 {
            tracing::info!(broker, changes, "changed dynamic broker configs");
        }
        Ok(())
    }

    /// UnregisterBroker: removes a stopped broker's registration once no partition depends on
    /// it alone (`Controller::unregister_broker`). Blocking.
    pub fn unregister_broker(&self, broker: i32) -> Result<(), AdminError> {
        let _admin = self.admin_lock();
        let decide = |c: &Controller<'_>| {
            let records = c.unregister_broker(broker).map_err(|e| match e {
                UnregisterError::NotRegistered(m) => {
                    AdminError::new(errors::BROKER_ID_NOT_REGISTERED, m)
                }
                UnregisterError::Refused(m) => AdminError::new(errors::INVALID_REQUEST, m),
            })?;
            Ok(((), records))
        };
        self.decide_and_commit("the broker is still registered", decide)?;
        tracing::info!(broker, "unregistered a broker");
        Ok(())
    }

    /// Hands out the next block of `count` producer ids, recorded durably in the metadata
    /// log so no id is handed out twice, even across restarts. Blocking.
    pub fn allocate_producer_ids(&self, count: i64) -> Result<(i64, i64), AdminError> {
        let _admin = self.admin_lock();
        // The block is the one this change recorded (its record applies only if no other
        // block was handed out since it was decided).
        let ((start, end), _) = self.decide_and_commit("no producer ids were handed out", |c| {
            let (start, records) = c.allocate_producer_ids(count);
            let end = match records.first() {
                Some(MetadataRecord::ProducerIds { next, .. }) => *next,
                _ => start,
            };
            Ok(((start, end), records))
        })?;
        Ok((start, end))
    }

    /// Hands this broker's leaderships to the other in-sync replicas before it stops (Kafka's
    /// controlled shutdown): its heartbeats stop, it is fenced now, which moves its
    /// leaderships and takes it out of the in-sync replicas, and this waits (at most
    /// `timeout`) until the published metadata shows it leading no partition another in-sync
    /// replica could lead. Clients meanwhile get NOT_LEADER_OR_FOLLOWER with the new leader.
    /// Nothing to do for a broker alone in its cluster. Cancellable (dropped, it leaves
    /// nothing running).
    pub async fn controlled_shutdown(&self, timeout: std::time::Duration) {
        if !self.config.is_broker() {
            return;
        }
        let node = self.config.node_id;
        let others = self
            .quorum
            .state()
            .brokers()
            .any(|b| b.id != node && !b.fenced);
        if !others {
            return;
        }
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        // Decided on the current state; a concurrent change refuses it, and it is decided again.
        for attempt in 1..=5u32 {
            let change = self.with_controller(|c| c.controlled_shutdown(node));
            if change.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.quorum.write(change)).await {
                Ok(Ok(_)) => break,
                Ok(Err(QuorumError::Refused(_))) if attempt < 5 => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt)))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "controlled shutdown: could not record this broker's fencing; stopping anyway (its partitions move when its session expires)");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "controlled shutdown: no answer from the metadata quorum in {timeout:?}; stopping anyway"
                    );
                    return;
                }
            }
        }
        let leading = || {
            let state = self.metadata();
            state
                .topics()
                .flat_map(|t| &t.partition_states)
                .filter(|p| p.leader == node && p.isr.iter().any(|&b| b != node))
                .count()
        };
        while leading() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let left = leading();
        if left > 0 {
            tracing::warn!(
                partitions = left,
                "controlled shutdown: still leading partitions after {timeout:?}; stopping anyway"
            );
        } else {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "controlled shutdown: leaderships handed to the other in-sync replicas"
            );
        }
    }

    /// Creates `__consumer_offsets` on first use (compacted, `offsets.topic.num.partitions`);
    /// returns its partition count. Blocking.
    pub fn ensure_offsets_topic(&self) -> Result<i32, AdminError> {
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            self.config.offsets_topic_partitions,
            self.config.offsets_topic_replication_factor,
            &[],
        )
    }

    /// Creates `__transaction_state` on first use (compacted,
    /// `transaction.state.log.num.partitions`); returns its partition count. Blocking.
    pub fn ensure_transaction_topic(&self) -> Result<i32, AdminError> {
        let min_isr = self.config.transaction_state_min_isr.to_string();
        self.ensure_internal_topic(
            TXN_TOPIC,
            self.config.transaction_state_partitions,
            self.config.transaction_state_replication_factor,
            &[("min.insync.replicas", &min_isr)],
        )
    }

    /// Creates an internal topic with `replication_factor` replicas, or as many as the
    /// cluster has brokers if fewer (a single node: one; Kafka refuses the default of 3 there),
    /// compacted, with `configs` too.
    fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<i32, AdminError> {
        {
            // Under the admin lock: a creation in progress has been published by the time
            // the lock is ours.
            let _admin = self.admin_lock();
            if let Some(t) = self.quorum.state().topic(name) {
                return Ok(t.partitions);
            }
        }
        // The brokers of the cluster, fenced or not: one that is down when the topic is first
        // needed makes its creation fail (COORDINATOR_NOT_AVAILABLE, clients retry), as in
        // Kafka, rather than leave the topic with fewer replicas for good.
        let brokers = self.quorum.state().brokers().count().max(1);
        let mut topic_configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), "104857600".to_string()),
        ]);
        topic_configs.extend(configs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let topic = NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor: replication_factor.min(i16::try_from(brokers).unwrap_or(i16::MAX)),
            assignments: None,
            configs: topic_configs,
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
