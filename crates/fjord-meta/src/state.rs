//! The metadata state machine: pure, deterministic, no I/O.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use crate::record::{MetadataRecord, TopicId};

/// What the cluster knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: TopicId,
    /// The partition count (`partition_states.len()`).
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Each partition's placement and leadership, by index.
    pub partition_states: Vec<PartitionMeta>,
}

impl TopicMeta {
    /// The indexes of the partitions with a replica on `node`.
    pub fn partitions_on(&self, node: i32) -> impl Iterator<Item = i32> + '_ {
        self.partition_states
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.replicas.contains(&node))
            .map(|(i, _)| i as i32)
    }
}

/// One partition's replicas, in-sync replicas, leader and epochs (Kafka's PartitionRecord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's node id (-1: none).
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress: the replicas joining (in `replicas` too, not yet in
    /// sync) and those leaving once the others are in sync (Kafka's adding and removing
    /// replicas). Both empty otherwise.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl PartitionMeta {
    /// A partition of an earlier Fjord version's record, before it is assigned to a node.
    fn unassigned() -> Self {
        Self {
            replicas: Vec::new(),
            isr: Vec::new(),
            leader: -1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment in progress moves to (all of them otherwise).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    /// Whether the partition was never placed on a node (an earlier Fjord version's topic).
    pub fn is_unassigned(&self) -> bool {
        self.replicas.is_empty()
    }
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    pub id: i32,
    /// Changes at every start of the broker.
    pub incarnation: String,
    /// Where clients reach its Kafka listener.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Stopped heartbeating: its partitions are unavailable, it gets no new ones.
    pub fenced: bool,
    /// In a controlled shutdown: fenced until it registers again, whatever its heartbeats.
    pub shutting_down: bool,
}

/// A record that does not apply to the current state.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApplyError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic id {0} is already in use")]
    TopicIdInUse(TopicId),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic} has {current} partitions; it cannot go to {requested}")]
    PartitionCount {
        topic: String,
        current: i32,
        requested: i32,
    },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("producer ids are allocated up to {current}; cannot go back to {requested}")]
    ProducerIds { current: i64, requested: i64 },
    #[error("topic id {0} does not exist")]
    UnknownTopicId(TopicId),
    #[error(
        "partition {partition} of topic {topic} must be the next one ({next}) or an existing one"
    )]
    PartitionIndex {
        topic: String,
        partition: i32,
        next: i32,
    },
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("partition {partition} of topic {topic} has no replicas or a leader outside them")]
    Placement { topic: String, partition: i32 },
    #[error(
        "partition {partition} of topic {topic} is at partition epoch {current}, not {expected}: the change was decided on an older state"
    )]
    StalePartition {
        topic: String,
        partition: i32,
        current: i32,
        expected: i32,
    },
    #[error(
        "partition {partition} of topic {topic}: in-sync replicas must be replicas of the partition, and its leader one of them"
    )]
    InSyncReplicas { topic: String, partition: i32 },
}

/// All metadata, as of the last applied record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    topics: BTreeMap<String, TopicMeta>,
    by_id: HashMap<TopicId, String>,
    /// The next producer id not yet handed out.
    next_producer_id: i64,
    /// Registered brokers by id.
    brokers: BTreeMap<i32, BrokerMeta>,
    /// The cluster's id (set by the first node to register).
    cluster_id: Option<String>,
    /// Dynamic broker configs: by broker id ("" for every broker's default), then by name.
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Kafka's rules for topic names: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    // Kafka 4.4's wording (`Topic.validate`), after "Topic name is invalid: ".
    if name.is_empty() {
        return Err("the empty string is not allowed".into());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "the length of '{name}' is longer than the max allowed length 249"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "'{name}' contains one or more characters other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl MetadataState {
    /// The next producer id not yet handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// The cluster's id, once a node has registered.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Registered brokers, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values()
    }

    pub fn broker(&self, id: i32) -> Option<&BrokerMeta> {
        self.brokers.get(&id)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// The partitions with a replica on `node`, by topic name and index.
    pub fn placed_on(&self, node: i32) -> impl Iterator<Item = (String, i32)> + '_ {
        self.topics()
            .flat_map(move |t| t.partitions_on(node).map(|i| (t.name.clone(), i)))
    }

    /// The dynamic configs of broker resource `broker` (an id, or "" for the default).
    pub fn broker_configs(&self, broker: &str) -> Option<&BTreeMap<String, String>> {
        self.broker_configs.get(broker)
    }

    /// A dynamic broker config as broker `id` sees it: its own value, else the cluster-wide
    /// default; with whether it is the default.
    pub fn broker_config(&self, id: i32, key: &str) -> Option<(&str, bool)> {
        let own = self
            .broker_configs
            .get(&id.to_string())
            .and_then(|c| c.get(key));
        match own {
            Some(v) => Some((v, false)),
            None => self
                .broker_configs
                .get("")
                .and_then(|c| c.get(key))
                .map(|v| (v.as_str(), true)),
        }
    }

    /// Partition `index` of `topic`, if it exists.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionMeta> {
        self.topic(topic)
            .and_then(|t| t.partition_states.get(usize::try_from(index).ok()?))
    }

    /// Whether partition `index` of `topic` has a replica on `node`.
    pub fn is_placed_on(&self, topic: &str, index: i32, node: i32) -> bool {
        self.topic(topic)
            .and_then(|t| t.partition_states.get(usize::try_from(index).ok()?))
            .is_some_and(|p| p.replicas.contains(&node))
    }

    /// An existing topic whose name differs from `name` only by '.' versus '_' (Kafka refuses
    /// such pairs: their metric names collide).
    pub fn colliding_topic(&self, name: &str) -> Option<&TopicMeta> {
        let norm = |s: &str| s.replace('.', "_");
        let n = norm(name);
        self.topics
            .values()
            .find(|t| t.name != name && norm(&t.name) == n)
    }

    /// Partitions of topics from an earlier Fjord version's records, not yet placed on a node.
    pub fn unassigned_partitions(&self) -> Vec<(TopicId, i32)> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partition_states
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_unassigned())
                    .map(|(i, _)| (t.id, i as i32))
            })
            .collect()
    }

    fn topic_mut_by_id(&mut self, id: &TopicId) -> Result<&mut TopicMeta, ApplyError> {
        let name = self.by_id.get(id).ok_or(ApplyError::UnknownTopicId(*id))?;
        self.topics
            .get_mut(name)
            .ok_or(ApplyError::UnknownTopicId(*id))
    }

    /// Adds a topic with no partitions yet (they follow as their own records).
    fn add_topic(&mut self, name: &str, id: TopicId) -> Result<&mut TopicMeta, ApplyError> {
        validate_topic_name(name).map_err(|reason| ApplyError::InvalidName {
            name: name.to_string(),
            reason,
        })?;
        if self.topics.contains_key(name) {
            return Err(ApplyError::TopicExists(name.to_string()));
        }
        if self.by_id.contains_key(&id) || id == TopicId::ZERO {
            return Err(ApplyError::TopicIdInUse(id));
        }
        self.by_id.insert(id, name.to_string());
        Ok(self.topics.entry(name.to_string()).or_insert(TopicMeta {
            name: name.to_string(),
            id,
            partitions: 0,
            replication_factor: 0,
            configs: BTreeMap::new(),
            partition_states: Vec::new(),
        }))
    }

    /// Applies one record, or says why it cannot apply (leaving the state unchanged).
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::Topic { name, id } => {
                self.add_topic(name, *id)?;
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding,
                removing,
            } => {
                let t = self.topic_mut_by_id(topic_id)?;
                let placed = |b: &i32| replicas.contains(b);
                if replicas.is_empty()
                    || (*leader >= 0 && !replicas.contains(leader))
                    || !adding.iter().all(placed)
                    || !removing.iter().all(placed)
                    || removing.len() >= replicas.len()
                {
                    return Err(ApplyError::Placement {
                        topic: t.name.clone(),
                        partition: *partition,
                    });
                }
                let state = PartitionMeta {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    adding: adding.clone(),
                    removing: removing.clone(),
                };
                let next = t.partition_states.len() as i32;
                match usize::try_from(*partition) {
                    Ok(i) if i < t.partition_states.len() => t.partition_states[i] = state,
                    Ok(_) if *partition == next => t.partition_states.push(state),
                    _ => {
                        return Err(ApplyError::PartitionIndex {
                            topic: t.name.clone(),
                            partition: *partition,
                            next,
                        });
                    }
                }
                t.partitions = t.partition_states.len() as i32;
                // Partition 0's (target) replica count, as Kafka describes a topic.
                if *partition == 0 {
                    t.replication_factor = replicas.len().saturating_sub(removing.len()) as i16;
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                partition_epoch,
                leader,
                leader_epoch,
                isr,
                reassignment,
            } => {
                let t = self.topic_mut_by_id(topic_id)?;
                let topic = t.name.clone();
                let Some(p) = usize::try_from(*partition)
                    .ok()
                    .and_then(|i| t.partition_states.get_mut(i))
                else {
                    return Err(ApplyError::PartitionIndex {
                        topic,
                        partition: *partition,
                        next: t.partitions,
                    });
                };
                if p.partition_epoch != *partition_epoch {
                    return Err(ApplyError::StalePartition {
                        topic,
                        partition: *partition,
                        current: p.partition_epoch,
                        expected: *partition_epoch,
                    });
                }
                let replicas = reassignment.as_ref().map_or(&p.replicas, |r| &r.replicas);
                let replica = |b: &i32| replicas.contains(b);
                if isr.is_empty()
                    || !isr.iter().all(replica)
                    || (*leader >= 0 && !isr.contains(leader))
                {
                    return Err(ApplyError::InSyncReplicas {
                        topic,
                        partition: *partition,
                    });
                }
                if let Some(r) = reassignment {
                    let mut distinct = r.replicas.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    if distinct.len() != r.replicas.len()
                        || !r.adding.iter().all(replica)
                        || !r.removing.iter().all(replica)
                        || r.removing.len() >= r.replicas.len()
                    {
                        return Err(ApplyError::Placement {
                            topic,
                            partition: *partition,
                        });
                    }
                    p.replicas = r.replicas.clone();
                    p.adding = r.adding.clone();
                    p.removing = r.removing.clone();
                }
                p.leader = *leader;
                p.leader_epoch = *leader_epoch;
                p.isr = isr.clone();
                p.partition_epoch += 1;
                if let Some(r) = reassignment.as_ref().filter(|_| *partition == 0) {
                    t.replication_factor = (r.replicas.len() - r.removing.len()) as i16;
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                let name = self
                    .by_id
                    .remove(id)
                    .ok_or(ApplyError::UnknownTopicId(*id))?;
                self.topics.remove(&name);
            }
            MetadataRecord::TopicConfig {
                topic_id,
                key,
                value,
            } => {
                let t = self.topic_mut_by_id(topic_id)?;
                match value {
                    Some(v) => {
                        t.configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        t.configs.remove(key);
                    }
                }
            }
            MetadataRecord::BrokerConfig { broker, key, value } => {
                let configs = self.broker_configs.entry(broker.clone()).or_default();
                match value {
                    Some(v) => {
                        configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        configs.remove(key);
                    }
                }
                if configs.is_empty() {
                    self.broker_configs.remove(broker);
                }
            }
            MetadataRecord::ProducerIds { from, next } => {
                if *next <= self.next_producer_id
                    || from.is_some_and(|from| from != self.next_producer_id)
                {
                    return Err(ApplyError::ProducerIds {
                        current: self.next_producer_id,
                        requested: *next,
                    });
                }
                self.next_producer_id = *next;
            }
            MetadataRecord::ClusterId { id } => {
                self.cluster_id.get_or_insert_with(|| id.clone());
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                host,
                port,
                rack,
            } => {
                self.brokers.insert(
                    *id,
                    BrokerMeta {
                        id: *id,
                        incarnation: incarnation.clone(),
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: false,
                        shutting_down: false,
                    },
                );
            }
            MetadataRecord::BrokerShutdown { id } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .ok_or(ApplyError::UnknownBroker(*id))?;
                b.fenced = true;
                b.shutting_down = true;
            }
            MetadataRecord::UnregisterBroker { id } => {
                self.brokers
                    .remove(id)
                    .ok_or(ApplyError::UnknownBroker(*id))?;
            }
            MetadataRecord::BrokerFencing { id, fenced } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .ok_or(ApplyError::UnknownBroker(*id))?;
                b.fenced = *fenced;
            }
            MetadataRecord::TopicCreated {
                name,
                id,
                partitions,
                replication_factor,
                configs,
            } => {
                validate_topic_name(name).map_err(|reason| ApplyError::InvalidName {
                    name: name.clone(),
                    reason,
                })?;
                if self.topics.contains_key(name) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if self.by_id.contains_key(id) || *id == TopicId::ZERO {
                    return Err(ApplyError::TopicIdInUse(*id));
                }
                if *partitions < 1 {
                    return Err(ApplyError::PartitionCount {
                        topic: name.clone(),
                        current: 0,
                        requested: *partitions,
                    });
                }
                self.by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        replication_factor: *replication_factor,
                        configs: configs.clone(),
                        partition_states: vec![PartitionMeta::unassigned(); *partitions as usize],
                    },
                );
            }
            MetadataRecord::PartitionsCreated { topic, total } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| ApplyError::UnknownTopic(topic.clone()))?;
                if *total <= t.partitions {
                    return Err(ApplyError::PartitionCount {
                        topic: topic.clone(),
                        current: t.partitions,
                        requested: *total,
                    });
                }
                t.partitions = *total;
                t.partition_states
                    .resize(*total as usize, PartitionMeta::unassigned());
            }
            MetadataRecord::TopicDeleted { name } => {
                let t = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| ApplyError::UnknownTopic(name.clone()))?;
                self.by_id.remove(&t.id);
            }
            MetadataRecord::ProducerIdsAllocated { next } => {
                if *next <= self.next_producer_id {
                    return Err(ApplyError::ProducerIds {
                        current: self.next_producer_id,
                        requested: *next,
                    });
                }
                self.next_producer_id = *next;
            }
            MetadataRecord::TopicConfigChanged { topic, key, value } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| ApplyError::UnknownTopic(topic.clone()))?;
                match value {
                    Some(v) => {
                        t.configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        t.configs.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that rebuild this state when applied to an empty one (a snapshot): each
    /// topic, its partitions and configs, and the producer-id block. Every partition must be
    /// placed (the store places an earlier version's partitions when it opens).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out: Vec<MetadataRecord> = self
            .cluster_id
            .iter()
            .map(|id| MetadataRecord::ClusterId { id: id.clone() })
            .collect();
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker {
                id: b.id,
                incarnation: b.incarnation.clone(),
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
            });
            if b.shutting_down {
                out.push(MetadataRecord::BrokerShutdown { id: b.id });
            } else if b.fenced {
                out.push(MetadataRecord::BrokerFencing {
                    id: b.id,
                    fenced: true,
                });
            }
        }
        for t in self.topics.values() {
            out.push(MetadataRecord::Topic {
                name: t.name.clone(),
                id: t.id,
            });
            for (i, p) in t.partition_states.iter().enumerate() {
                out.push(MetadataRecord::Partition {
                    topic_id: t.id,
                    partition: i as i32,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    adding: p.adding.clone(),
                    removing: p.removing.clone(),
                });
            }
            out.extend(t.configs.iter().map(|(k, v)| MetadataRecord::TopicConfig {
                topic_id: t.id,
                key: k.clone(),
                value: Some(v.clone()),
            }));
        }
        for (broker, configs) in &self.broker_configs {
            out.extend(configs.iter().map(|(k, v)| MetadataRecord::BrokerConfig {
                broker: broker.clone(),
                key: k.clone(),
                value: Some(v.clone()),
            }));
        }
        if self.next_producer_id > 0 {
            out.push(MetadataRecord::ProducerIds {
                from: None,
                next: self.next_producer_id,
            });
        }
        out
    }

    /// Applies all records or none.
    pub fn apply_all(&mut self, records: &[MetadataRecord]) -> Result<(), ApplyError> {
        let mut next = self.clone();
        for r in records {
            next.apply(r)?;
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(name: &str, id: u8, partitions: i32) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            id: TopicId([id; 16]),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut s = MetadataState::default();
        s.apply(&MetadataRecord::ProducerIdsAllocated { next: 1000 })
            .unwrap();
        assert_eq!(s.next_producer_id(), 1000);
        assert!(
            s.apply(&MetadataRecord::ProducerIdsAllocated { next: 1000 })
                .is_err()
        );
        let r = MetadataRecord::ProducerIdsAllocated { next: 2000 };
        assert_eq!(MetadataRecord::decode(&r.encode()).unwrap(), r);
        // Two blocks decided on the same state: the second is refused whatever its size, so
        // no two brokers hand out overlapping blocks.
        let first = MetadataRecord::ProducerIds {
            from: Some(1000),
            next: 2000,
        };
        let bigger = MetadataRecord::ProducerIds {
            from: Some(1000),
            next: 5000,
        };
        s.apply(&first).unwrap();
        assert_eq!(
            s.apply(&bigger),
            Err(ApplyError::ProducerIds {
                current: 2000,
                requested: 5000
            })
        );
        assert_eq!(s.next_producer_id(), 2000);
        assert_eq!(MetadataRecord::decode(&bigger.encode()).unwrap(), bigger);
        let v: serde_json::Value = serde_json::from_slice(&bigger.encode()).unwrap();
        assert_eq!(
            v["version"], 2,
            "an earlier build must refuse it, not skip the check"
        );
    }

    #[test]
    fn topics_are_created_grown_configured_and_deleted() {
        let mut s = MetadataState::default();
        s.apply(&created("orders", 1, 3)).unwrap();
        assert_eq!(
            s.apply(&created("orders", 2, 1)),
            Err(ApplyError::TopicExists("orders".into()))
        );
        assert!(matches!(
            s.apply(&created("other", 1, 1)),
            Err(ApplyError::TopicIdInUse(_))
        ));
        s.apply(&MetadataRecord::PartitionsCreated {
            topic: "orders".into(),
            total: 5,
        })
        .unwrap();
        assert!(
            s.apply(&MetadataRecord::PartitionsCreated {
                topic: "orders".into(),
                total: 4
            })
            .is_err()
        );
        s.apply(&MetadataRecord::TopicConfigChanged {
            topic: "orders".into(),
            key: "retention.ms".into(),
            value: Some("1000".into()),
        })
        .unwrap();
        let t = s.topic("orders").unwrap();
        assert_eq!(t.partitions, 5);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(s.topic_by_id(&TopicId([1; 16])).unwrap().name, "orders");
        s.apply(&MetadataRecord::TopicConfigChanged {
            topic: "orders".into(),
            key: "retention.ms".into(),
            value: None,
        })
        .unwrap();
        assert!(s.topic("orders").unwrap().configs.is_empty());
        s.apply(&MetadataRecord::TopicDeleted {
            name: "orders".into(),
        })
        .unwrap();
        assert!(s.topic("orders").is_none());
        assert!(s.topic_by_id(&TopicId([1; 16])).is_none());
        assert!(
            s.apply(&MetadataRecord::TopicDeleted {
                name: "orders".into()
            })
            .is_err()
        );
    }

    #[test]
    fn apply_all_is_atomic() {
        let mut s = MetadataState::default();
        let before = s.clone();
        assert!(
            s.apply_all(&[created("a", 1, 1), created("a", 2, 1)])
                .is_err()
        );
        assert_eq!(s, before);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        let mut s = MetadataState::default();
        s.apply(&created("a.b", 1, 1)).unwrap();
        assert_eq!(s.colliding_topic("a_b").unwrap().name, "a.b");
        assert!(s.colliding_topic("a.b").is_none());
    }

    #[test]
    fn records_round_trip_through_their_encoding() {
        let r = created("t", 7, 2);
        assert_eq!(MetadataRecord::decode(&r.encode()).unwrap(), r);
        let id = TopicId::from_entropy(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.to_string().len(), 36);
        assert_eq!(&id.to_string()[14..15], "4", "version 4 uuid");
    }

    fn placed(id: u8, partition: i32, leader: i32, epoch: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: TopicId([id; 16]),
            partition,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    #[test]
    fn cluster_shaped_records_key_topics_by_id() {
        let mut s = MetadataState::default();
        s.apply_all(&[
            MetadataRecord::Topic {
                name: "t".into(),
                id: TopicId([1; 16]),
            },
            placed(1, 0, 1, 0),
            placed(1, 1, 2, 0),
        ])
        .unwrap();
        let t = s.topic("t").unwrap();
        assert_eq!((t.partitions, t.replication_factor), (2, 2));
        assert_eq!(t.partition_states[1].leader, 2);
        // A later state of a partition (a new leader) replaces it; a gap is refused.
        s.apply(&placed(1, 1, 1, 1)).unwrap();
        assert_eq!(s.topic("t").unwrap().partition_states[1].leader_epoch, 1);
        assert!(matches!(
            s.apply(&placed(1, 5, 1, 0)),
            Err(ApplyError::PartitionIndex { next: 2, .. })
        ));
        // A leader outside the replicas, or no replicas, is refused.
        let mut bad = placed(1, 0, 9, 0);
        assert!(matches!(s.apply(&bad), Err(ApplyError::Placement { .. })));
        if let MetadataRecord::Partition { replicas, .. } = &mut bad {
            replicas.clear();
        }
        assert!(s.apply(&bad).is_err());
        // Deleted by id; a config change for the old id cannot reach a new topic of the name.
        s.apply(&MetadataRecord::RemoveTopic {
            id: TopicId([1; 16]),
        })
        .unwrap();
        s.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id: TopicId([2; 16]),
        })
        .unwrap();
        let stale = MetadataRecord::TopicConfig {
            topic_id: TopicId([1; 16]),
            key: "retention.ms".into(),
            value: Some("1".into()),
        };
        assert_eq!(
            s.apply(&stale),
            Err(ApplyError::UnknownTopicId(TopicId([1; 16])))
        );
        assert!(s.topic("t").unwrap().configs.is_empty());
    }

    #[test]
    fn records_carry_their_version_and_newer_ones_are_refused() {
        let r = MetadataRecord::ProducerIds {
            from: None,
            next: 5,
        };
        let bytes = r.encode();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["type"], "producer_ids");
        assert_eq!(MetadataRecord::decode(&bytes), Ok(r));
        // Earlier Fjord versions wrote no version: version 0.
        let legacy = br#"{"type":"producer_ids_allocated","next":7}"#;
        let decoded = MetadataRecord::decode(legacy).unwrap();
        assert!(decoded.is_legacy());
        let newer = br#"{"type":"producer_ids","next":7,"version":4}"#;
        assert!(
            MetadataRecord::decode(newer)
                .unwrap_err()
                .contains("upgrade Fjord")
        );
        // A reassignment needs version 3 (an earlier build would drop its fields).
        let moving = MetadataRecord::PartitionChange {
            topic_id: TopicId([1; 16]),
            partition: 0,
            partition_epoch: 0,
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            reassignment: Some(crate::record::Reassignment {
                replicas: vec![2, 1],
                adding: vec![2],
                removing: vec![1],
            }),
        };
        let bytes = moving.encode();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["version"], 3);
        assert_eq!(MetadataRecord::decode(&bytes), Ok(moving));
    }

    #[test]
    fn legacy_topics_are_unassigned_until_placed() {
        let mut s = MetadataState::default();
        s.apply(&created("old", 3, 2)).unwrap();
        assert_eq!(
            s.unassigned_partitions(),
            vec![(TopicId([3; 16]), 0), (TopicId([3; 16]), 1)]
        );
        s.apply(&placed(3, 0, 1, 0)).unwrap();
        assert_eq!(s.unassigned_partitions(), vec![(TopicId([3; 16]), 1)]);
    }

    #[test]
    fn a_state_is_rebuilt_from_its_records() {
        let mut s = MetadataState::default();
        s.apply_all(&[
            MetadataRecord::Topic {
                name: "a".into(),
                id: TopicId([1; 16]),
            },
            MetadataRecord::Partition {
                topic_id: TopicId([1; 16]),
                partition: 0,
                replicas: vec![2, 1],
                isr: vec![2],
                leader: 2,
                leader_epoch: 4,
                partition_epoch: 7,
                adding: Vec::new(),
                removing: Vec::new(),
            },
            MetadataRecord::TopicConfig {
                topic_id: TopicId([1; 16]),
                key: "retention.ms".into(),
                value: Some("9".into()),
            },
            MetadataRecord::ProducerIds {
                from: None,
                next: 5000,
            },
            MetadataRecord::ClusterId { id: "c".into() },
            MetadataRecord::RegisterBroker {
                id: 2,
                incarnation: "i".into(),
                host: "h".into(),
                port: 9,
                rack: Some("r".into()),
            },
            MetadataRecord::BrokerFencing {
                id: 2,
                fenced: true,
            },
        ])
        .unwrap();
        let mut rebuilt = MetadataState::default();
        rebuilt.apply_all(&s.to_records()).unwrap();
        assert_eq!(rebuilt, s);
    }
}
