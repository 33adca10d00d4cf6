//! The controller: turns admin requests into metadata records, checked against the applied
//! state. Pure: the caller gives it the state, the brokers that can hold replicas, the new
//! topic's id and a seed for placement, and commits the records it returns (on one node to the
//! metadata log; in a cluster through the Raft quorum, whose leader is the controller). Nothing
//! changes on any broker until those records are applied and published.

use std::collections::{BTreeMap, HashSet};

use thiserror::Error;

use crate::record::{MetadataRecord, TopicId};
use crate::state::{MetadataState, TopicMeta, validate_topic_name};

/// The topic name the metadata log's own directory takes (`__cluster_metadata-0`).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Why the controller refused a request (the broker maps each to Kafka's error code).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ControllerError {
    #[error("{0}")]
    InvalidTopic(String),
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    #[error("The topic '{0}' does not exist.")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
}

/// The controller's settings (the broker's defaults for topic creation).
#[derive(Debug, Clone, Copy)]
pub struct ControllerConfig {
    /// `num.partitions`: a creation that asks for -1 partitions gets this many.
    pub default_partitions: i32,
    /// `default.replication.factor`: a creation that asks for -1 replicas gets this many.
    pub default_replication_factor: i16,
    /// The most partitions one topic may have.
    pub max_partitions: i32,
    /// The most replicas a partition may have (what the cluster can keep in sync).
    pub max_replication_factor: i16,
}

/// A topic to create, as CreateTopics asks for it.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions` (ignored when `assignments` are given).
    pub partitions: i32,
    /// -1: `default.replication.factor` (ignored when `assignments` are given).
    pub replication_factor: i16,
    /// Manual placement: (partition index, replica broker ids), which must cover 0..n once.
    pub assignments: Option<Vec<(i32, Vec<i32>)>>,
    pub configs: BTreeMap<String, String>,
}

/// Turns requests into records against one applied state.
#[derive(Debug, Clone, Copy)]
pub struct Controller<'a> {
    pub state: &'a MetadataState,
    /// The brokers that can hold new replicas (registered and unfenced), ascending.
    pub brokers: &'a [i32],
    pub config: &'a ControllerConfig,
}

impl Controller<'_> {
    /// The records that create `topic` with id `id` (placed from `seed` unless the request
    /// places it); `check_configs` validates the configs (the broker knows their rules).
    pub fn create_topic(
        &self,
        topic: &NewTopic,
        id: TopicId,
        seed: u64,
        check_configs: impl Fn(&BTreeMap<String, String>) -> Result<(), String>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let name = topic.name.as_str();
        validate_topic_name(name).map_err(|reason| {
            ControllerError::InvalidTopic(format!("Topic name is invalid: {reason}"))
        })?;
        if name == METADATA_TOPIC {
            return Err(ControllerError::InvalidTopic(format!(
                "{name} is reserved for cluster metadata"
            )));
        }
        if self.state.topic(name).is_some() {
            return Err(ControllerError::TopicExists(name.to_string()));
        }
        if let Some(other) = self.state.colliding_topic(name) {
            return Err(ControllerError::InvalidTopic(format!(
                "Topic '{name}' collides with existing topic: {}",
                other.name
            )));
        }
        let placement = match &topic.assignments {
            Some(assignments) => self.manual_placement(assignments)?,
            None => {
                let partitions = match topic.partitions {
                    -1 => self.config.default_partitions,
                    n => n,
                };
                if partitions < 1 {
                    return Err(ControllerError::InvalidPartitions(
                        "Number of partitions was set to an invalid non-positive value.".into(),
                    ));
                }
                self.check_partition_count(partitions)?;
                let rf = match topic.replication_factor {
                    -1 => self.config.default_replication_factor,
                    n => n,
                };
                if rf < 1 {
                    return Err(ControllerError::InvalidReplicationFactor(
                        "Replication factor must be larger than 0, or -1 to use the default value."
                            .into(),
                    ));
                }
                self.place(0, partitions, rf, seed)?
            }
        };
        check_configs(&topic.configs).map_err(ControllerError::InvalidConfig)?;
        let mut change = vec![MetadataRecord::Topic {
            name: name.to_string(),
            id,
        }];
        change.extend(
            placement
                .into_iter()
                .enumerate()
                .map(|(p, replicas)| new_partition(id, p as i32, replicas)),
        );
        change.extend(
            topic
                .configs
                .iter()
                .map(|(k, v)| MetadataRecord::TopicConfig {
                    topic_id: id,
                    key: k.clone(),
                    value: Some(v.clone()),
                }),
        );
        Ok(change)
    }

    /// The records that grow topic `name` to `total` partitions, placed as the request says
    /// (one replica list per new partition) or from `seed` with the topic's replication factor.
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignments: Option<&[Vec<i32>]>,
        seed: u64,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = self.existing(name)?;
        let current = topic.partitions;
        if total < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "The topic {name} currently has {current} partition(s); {total} would not be an increase."
            )));
        }
        if total == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic already has {total} partition(s)."
            )));
        }
        self.check_partition_count(total)?;
        let placement = match assignments {
            Some(assignments) => {
                let added = (total - current) as usize;
                if assignments.len() != added {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                        assignments.len()
                    )));
                }
                for replicas in assignments {
                    self.check_replicas(replicas, Some(topic.replication_factor as usize))?;
                }
                assignments.to_vec()
            }
            None => self.place(current, total - current, topic.replication_factor, seed)?,
        };
        Ok(placement
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| new_partition(topic.id, current + i as i32, replicas))
            .collect())
    }

    /// The topic and the record that deletes it.
    pub fn delete_topic(
        &self,
        name: &str,
    ) -> Result<(TopicMeta, Vec<MetadataRecord>), ControllerError> {
        let topic = self.existing(name)?;
        let change = vec![MetadataRecord::RemoveTopic { id: topic.id }];
        Ok((topic.clone(), change))
    }

    /// The records that make `configs` topic `name`'s whole set of overrides (empty: nothing
    /// changes), validated by `check_configs`.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
        check_configs: impl Fn(&BTreeMap<String, String>) -> Result<(), String>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = self.existing(name)?;
        check_configs(configs).map_err(ControllerError::InvalidConfig)?;
        let set = configs
            .iter()
            .filter(|(k, v)| topic.configs.get(*k) != Some(*v))
            .map(|(k, v)| MetadataRecord::TopicConfig {
                topic_id: topic.id,
                key: k.clone(),
                value: Some(v.clone()),
            });
        let removed = topic
            .configs
            .keys()
            .filter(|k| !configs.contains_key(*k))
            .map(|k| MetadataRecord::TopicConfig {
                topic_id: topic.id,
                key: k.clone(),
                value: None,
            });
        Ok(set.chain(removed).collect())
    }

    /// Fencing as the controller decides it from heartbeats (Kafka's BrokerHeartbeatManager):
    /// a registered broker not heard from for `session_timeout_ms` is fenced, a fenced one heard
    /// from within it is unfenced. `last_heard` holds when each broker last heartbeated (ms);
    /// one missing counts from `since` (when this controller started listening).
    pub fn fencing(
        &self,
        last_heard: &std::collections::HashMap<i32, i64>,
        since: i64,
        now: i64,
        session_timeout_ms: i64,
    ) -> Vec<MetadataRecord> {
        self.state
            .brokers()
            .filter_map(|b| {
                let heard = last_heard.get(&b.id).copied().unwrap_or(since);
                let alive = now - heard <= session_timeout_ms;
                (alive == b.fenced).then_some(MetadataRecord::BrokerFencing {
                    id: b.id,
                    fenced: !alive,
                })
            })
            .collect()
    }

    /// The next block of `count` producer ids (its first id) and the record that hands it out.
    pub fn allocate_producer_ids(&self, count: i64) -> (i64, Vec<MetadataRecord>) {
        let start = self.state.next_producer_id();
        let next = start.saturating_add(count.max(1));
        (start, vec![MetadataRecord::ProducerIds { next }])
    }

    fn existing(&self, name: &str) -> Result<&TopicMeta, ControllerError> {
        self.state
            .topic(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
    }

    fn check_partition_count(&self, partitions: i32) -> Result<(), ControllerError> {
        if partitions > self.config.max_partitions {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} partitions is more than this cluster allows ({})",
                self.config.max_partitions
            )));
        }
        Ok(())
    }

    fn check_replication_factor(&self, rf: usize) -> Result<(), ControllerError> {
        if rf > self.config.max_replication_factor as usize {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "a replication factor of {rf} is not supported yet: this cluster keeps at most {} replica(s) of a partition; use a replication factor of {}",
                self.config.max_replication_factor, self.config.max_replication_factor
            )));
        }
        Ok(())
    }

    /// Kafka's checks of one manual replica list (`validateManualPartitionAssignment`).
    fn check_replicas(&self, replicas: &[i32], rf: Option<usize>) -> Result<(), ControllerError> {
        let bad = ControllerError::InvalidReplicaAssignment;
        if replicas.is_empty() {
            return Err(bad(
                "The manual partition assignment includes an empty replica list.".into(),
            ));
        }
        let mut seen = HashSet::new();
        for &b in replicas {
            if !seen.insert(b) {
                return Err(bad(format!(
                    "The manual partition assignment includes the broker {b} more than once."
                )));
            }
            if !self.brokers.contains(&b) {
                return Err(bad(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is registered."
                )));
            }
        }
        match rf {
            Some(rf) if rf != replicas.len() => Err(bad(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is inconsistent with previous partitions, which have {rf} replica(s).",
                replicas.len()
            ))),
            _ => self.check_replication_factor(replicas.len()),
        }
    }

    fn manual_placement(
        &self,
        assignments: &[(i32, Vec<i32>)],
    ) -> Result<Vec<Vec<i32>>, ControllerError> {
        let n = assignments.len();
        self.check_partition_count(n as i32)?;
        let mut placement: Vec<Option<Vec<i32>>> = vec![None; n];
        for (index, replicas) in assignments {
            let slot = usize::try_from(*index)
                .ok()
                .and_then(|i| placement.get_mut(i))
                .ok_or_else(|| {
                    ControllerError::InvalidReplicaAssignment(format!(
                        "partitions should be a consecutive 0-based integer sequence; found partition {index} among {n}"
                    ))
                })?;
            if slot.is_some() {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "Found multiple manual partition assignments for partition {index}"
                )));
            }
            *slot = Some(replicas.clone());
        }
        let placement: Vec<Vec<i32>> = placement.into_iter().flatten().collect();
        let rf = placement.first().map(Vec::len);
        for replicas in &placement {
            self.check_replicas(replicas, rf)?;
        }
        Ok(placement)
    }

    /// Places `count` partitions from index `first` with `rf` replicas each over the brokers,
    /// as Kafka places them (`assignReplicasToBrokersRackAware` and its rack-unaware case):
    /// the brokers are ordered alternating their racks (`broker.rack`; a broker without one
    /// is in a rack of its own kind), the first replicas go round-robin from a random broker,
    /// the others shifted by a random amount that grows each time the first replicas wrap
    /// around, each in a rack that holds no replica yet while there is one, so no two brokers
    /// share every partition and a rack's loss takes one replica of each partition.
    fn place(
        &self,
        first: i32,
        count: i32,
        rf: i16,
        seed: u64,
    ) -> Result<Vec<Vec<i32>>, ControllerError> {
        let n = self.brokers.len();
        let rf = rf as usize;
        if rf > n {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {n} broker(s) are registered or some brokers have all their log directories cordoned."
            )));
        }
        self.check_replication_factor(rf)?;
        let rack_of = |b: i32| {
            self.state
                .broker(b)
                .and_then(|m| m.rack.clone())
                .unwrap_or_default()
        };
        // Kafka's getRackAlternatedBrokerList: one broker of each rack in turn.
        let mut by_rack: std::collections::BTreeMap<String, std::collections::VecDeque<i32>> =
            Default::default();
        for &b in self.brokers {
            by_rack.entry(rack_of(b)).or_default().push_back(b);
        }
        let racks = by_rack.len();
        let mut arranged = Vec::with_capacity(n);
        while arranged.len() < n {
            for queue in by_rack.values_mut() {
                if let Some(b) = queue.pop_front() {
                    arranged.push(b);
                }
            }
        }
        let start = (seed % n as u64) as usize;
        let mut shift = ((seed >> 32) % n as u64) as usize;
        let mut placement = Vec::with_capacity(count.max(0) as usize);
        for p in first..first + count {
            let p = p as usize;
            if p > 0 && p.is_multiple_of(n) {
                shift += 1;
            }
            let leader = (p + start) % n;
            let mut replicas = vec![arranged[leader]];
            let mut used_racks = HashSet::from([rack_of(arranged[leader])]);
            let mut k = 0;
            while replicas.len() < rf {
                let offset = 1 + (shift * racks + k) % (n - 1);
                let b = arranged[(leader + offset) % n];
                let rack = rack_of(b);
                k += 1;
                let rack_ok = !used_racks.contains(&rack) || used_racks.len() == racks;
                let broker_ok = !replicas.contains(&b);
                if rack_ok && broker_ok {
                    used_racks.insert(rack);
                    replicas.push(b);
                } else if k > n * n {
                    // Every candidate was tried: take the first broker not used yet.
                    if let Some(&b) = arranged.iter().find(|b| !replicas.contains(b)) {
                        used_racks.insert(rack_of(b));
                        replicas.push(b);
                    }
                }
            }
            placement.push(replicas);
        }
        Ok(placement)
    }
}

/// A new partition: every replica in sync, the first the leader, epochs 0.
fn new_partition(topic_id: TopicId, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: ControllerConfig = ControllerConfig {
        default_partitions: 3,
        default_replication_factor: 1,
        max_partitions: 1000,
        max_replication_factor: 3,
    };

    fn ok(_: &BTreeMap<String, String>) -> Result<(), String> {
        Ok(())
    }

    fn create(state: &mut MetadataState, brokers: &[i32], topic: NewTopic, id: u8, seed: u64) {
        let c = Controller {
            state,
            brokers,
            config: &CONFIG,
        };
        let change = c.create_topic(&topic, TopicId([id; 16]), seed, ok).unwrap();
        state.apply_all(&change).unwrap();
    }

    fn topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            ..NewTopic::default()
        }
    }

    #[test]
    fn placement_spreads_leaders_and_replicas_like_kafka() {
        let brokers = [1, 2, 3, 4];
        for seed in [0, 1, 7, u64::MAX, 0x0000_0003_0000_0002] {
            let mut state = MetadataState::default();
            create(&mut state, &brokers, topic("t", 12, 3), 1, seed);
            let t = state.topic("t").unwrap();
            let mut leaders = BTreeMap::new();
            let mut pairs = HashSet::new();
            for p in &t.partition_states {
                assert_eq!(p.replicas.len(), 3);
                assert_eq!(p.leader, p.replicas[0]);
                assert_eq!(p.isr, p.replicas);
                let distinct: HashSet<_> = p.replicas.iter().collect();
                assert_eq!(distinct.len(), 3, "{:?}", p.replicas);
                *leaders.entry(p.leader).or_insert(0) += 1;
                pairs.insert((p.replicas[0], p.replicas[1]));
            }
            // Leaders round-robin: each broker leads 12 / 4 partitions.
            assert!(leaders.values().all(|&n| n == 3), "{leaders:?}");
            // The shift grows as the leaders wrap: followers vary per leader.
            assert!(pairs.len() > 4, "{pairs:?}");
        }
    }

    #[test]
    fn defaults_counts_and_replication_are_checked() {
        let mut state = MetadataState::default();
        create(&mut state, &[1], topic("d", -1, -1), 1, 5);
        assert_eq!(state.topic("d").unwrap().partitions, 3);
        let c = Controller {
            state: &state,
            brokers: &[1],
            config: &CONFIG,
        };
        let id = TopicId([2; 16]);
        let err = |t: NewTopic| c.create_topic(&t, id, 0, ok).unwrap_err();
        assert!(matches!(
            err(topic("d", 1, 1)),
            ControllerError::TopicExists(_)
        ));
        assert!(matches!(
            err(topic("x", 0, 1)),
            ControllerError::InvalidPartitions(_)
        ));
        assert!(matches!(
            err(topic("x", 1001, 1)),
            ControllerError::InvalidPartitions(_)
        ));
        assert!(matches!(
            err(topic("x", 1, 2)),
            ControllerError::InvalidReplicationFactor(_)
        ));
        assert!(matches!(
            err(topic("x", 1, 0)),
            ControllerError::InvalidReplicationFactor(_)
        ));
        assert!(matches!(
            err(topic("__cluster_metadata", 1, 1)),
            ControllerError::InvalidTopic(_)
        ));
        assert!(matches!(
            err(topic("bad/name", 1, 1)),
            ControllerError::InvalidTopic(_)
        ));
        let refused = c
            .create_topic(&topic("x", 1, 1), id, 0, |_| Err("no".into()))
            .unwrap_err();
        assert_eq!(refused, ControllerError::InvalidConfig("no".into()));
    }

    #[test]
    fn names_that_collide_in_metric_names_are_refused() {
        let mut state = MetadataState::default();
        create(&mut state, &[1], topic("a.b", 1, 1), 1, 0);
        let c = Controller {
            state: &state,
            brokers: &[1],
            config: &CONFIG,
        };
        let refused = c.create_topic(&topic("a_b", 1, 1), TopicId([2; 16]), 0, ok);
        assert_eq!(
            refused,
            Err(ControllerError::InvalidTopic(
                "Topic 'a_b' collides with existing topic: a.b".into()
            ))
        );
    }

    #[test]
    fn manual_assignments_are_checked_as_kafka_checks_them() {
        let state = MetadataState::default();
        let c = Controller {
            state: &state,
            brokers: &[1, 2, 3],
            config: &CONFIG,
        };
        let with = |a: Vec<(i32, Vec<i32>)>| NewTopic {
            name: "m".into(),
            partitions: -1,
            replication_factor: -1,
            assignments: Some(a),
            ..NewTopic::default()
        };
        let id = TopicId([3; 16]);
        let change = c
            .create_topic(&with(vec![(1, vec![3, 1]), (0, vec![2, 3])]), id, 0, ok)
            .unwrap();
        let mut s = state.clone();
        s.apply_all(&change).unwrap();
        let t = s.topic("m").unwrap();
        assert_eq!(t.partition_states[0].replicas, [2, 3]);
        assert_eq!(t.partition_states[1].leader, 3);
        for bad in [
            vec![(0, vec![])],
            vec![(0, vec![1, 1])],
            vec![(0, vec![9])],
            vec![(0, vec![1]), (1, vec![1, 2])],
            vec![(0, vec![1]), (0, vec![2])],
            vec![(0, vec![1]), (2, vec![2])],
        ] {
            assert!(
                matches!(
                    c.create_topic(&with(bad.clone()), id, 0, ok),
                    Err(ControllerError::InvalidReplicaAssignment(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replication_beyond_what_the_cluster_keeps_is_refused() {
        let state = MetadataState::default();
        let config = ControllerConfig {
            max_replication_factor: 1,
            ..CONFIG
        };
        let c = Controller {
            state: &state,
            brokers: &[1, 2, 3],
            config: &config,
        };
        let id = TopicId([4; 16]);
        assert!(matches!(
            c.create_topic(&topic("r", 1, 2), id, 0, ok),
            Err(ControllerError::InvalidReplicationFactor(m)) if m.contains("not supported yet")
        ));
        let manual = NewTopic {
            name: "m".into(),
            partitions: -1,
            replication_factor: -1,
            assignments: Some(vec![(0, vec![1, 2])]),
            ..NewTopic::default()
        };
        assert!(matches!(
            c.create_topic(&manual, id, 0, ok),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        assert!(c.create_topic(&topic("one", 3, 1), id, 0, ok).is_ok());
    }

    #[test]
    fn partitions_grow_with_the_topics_replication_factor() {
        let mut state = MetadataState::default();
        let brokers = [1, 2, 3];
        create(&mut state, &brokers, topic("g", 2, 2), 1, 9);
        let c = Controller {
            state: &state,
            brokers: &brokers,
            config: &CONFIG,
        };
        assert!(matches!(
            c.create_partitions("g", 2, None, 0),
            Err(ControllerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.create_partitions("nope", 3, None, 0),
            Err(ControllerError::UnknownTopic(_))
        ));
        assert!(matches!(
            c.create_partitions("g", 4, Some(&[vec![1, 2]]), 0),
            Err(ControllerError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            c.create_partitions("g", 3, Some(&[vec![1]]), 0),
            Err(ControllerError::InvalidReplicaAssignment(_))
        ));
        let change = c.create_partitions("g", 5, None, 4).unwrap();
        state.apply_all(&change).unwrap();
        let t = state.topic("g").unwrap();
        assert_eq!(t.partitions, 5);
        assert!(t.partition_states.iter().all(|p| p.replicas.len() == 2));
    }

    #[test]
    fn configs_become_the_difference_and_ids_only_move_forward() {
        let mut state = MetadataState::default();
        let mut t = topic("c", 1, 1);
        t.configs = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        create(&mut state, &[1], t, 1, 0);
        let c = Controller {
            state: &state,
            brokers: &[1],
            config: &CONFIG,
        };
        let wanted = BTreeMap::from([
            ("b".to_string(), "3".to_string()),
            ("c".to_string(), "4".to_string()),
        ]);
        let change = c.set_topic_configs("c", &wanted, ok).unwrap();
        assert_eq!(change.len(), 3, "{change:?}");
        let mut next = state.clone();
        next.apply_all(&change).unwrap();
        assert_eq!(next.topic("c").unwrap().configs, wanted);
        assert!(
            Controller {
                state: &next,
                brokers: &[1],
                config: &CONFIG
            }
            .set_topic_configs("c", &wanted, ok)
            .unwrap()
            .is_empty()
        );
        let (first, change) = c.allocate_producer_ids(1000);
        state.apply_all(&change).unwrap();
        let (second, _) = Controller {
            state: &state,
            brokers: &[1],
            config: &CONFIG,
        }
        .allocate_producer_ids(1000);
        assert_eq!((first, second), (0, 1000));
    }

    #[test]
    fn brokers_are_fenced_when_silent_and_unfenced_when_heard() {
        let mut state = MetadataState::default();
        for id in [1, 2] {
            state
                .apply(&MetadataRecord::RegisterBroker {
                    id,
                    incarnation: "i".into(),
                    host: "h".into(),
                    port: 1,
                    rack: None,
                })
                .unwrap();
        }
        let heard = std::collections::HashMap::from([(1, 10_000)]);
        let decide = |state: &MetadataState, now| {
            Controller {
                state,
                brokers: &[1, 2],
                config: &CONFIG,
            }
            .fencing(&heard, 0, now, 9_000)
        };
        // Broker 2 was never heard from since this controller started: fenced after 9 s.
        assert!(decide(&state, 9_000).is_empty());
        let fence = decide(&state, 9_001);
        assert_eq!(
            fence,
            [MetadataRecord::BrokerFencing {
                id: 2,
                fenced: true
            }]
        );
        state.apply_all(&fence).unwrap();
        assert!(state.broker(2).unwrap().fenced);
        assert!(decide(&state, 9_001).is_empty(), "decided once");
        let heard = std::collections::HashMap::from([(1, 10_000), (2, 10_500)]);
        let back = Controller {
            state: &state,
            brokers: &[1, 2],
            config: &CONFIG,
        }
        .fencing(&heard, 0, 11_000, 9_000);
        assert_eq!(
            back,
            [MetadataRecord::BrokerFencing {
                id: 2,
                fenced: false
            }]
        );
    }

    #[test]
    fn replicas_of_a_partition_go_to_different_racks() {
        let mut state = MetadataState::default();
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            state
                .apply(&MetadataRecord::RegisterBroker {
                    id,
                    incarnation: "i".into(),
                    host: "h".into(),
                    port: 1,
                    rack: Some(rack.into()),
                })
                .unwrap();
        }
        let rack = |b: i32| state.broker(b).unwrap().rack.clone().unwrap();
        for seed in [0, 3, 11, u64::MAX] {
            let mut s = state.clone();
            create(&mut s, &[1, 2, 3, 4, 5, 6], topic("r", 12, 3), 1, seed);
            let t = s.topic("r").unwrap();
            let mut leaders_per_rack = BTreeMap::new();
            for p in &t.partition_states {
                let racks: HashSet<String> = p.replicas.iter().map(|&b| rack(b)).collect();
                assert_eq!(racks.len(), 3, "{:?}", p.replicas);
                *leaders_per_rack.entry(rack(p.leader)).or_insert(0) += 1;
            }
            assert!(
                leaders_per_rack.values().all(|&n| n == 4),
                "{leaders_per_rack:?}"
            );
        }
        // More replicas than racks: every rack once, then the rest anywhere.
        let mut s = state.clone();
        let two_racks: Vec<i32> = vec![1, 2, 3, 4];
        create(&mut s, &two_racks, topic("w", 4, 3), 2, 5);
        for p in &s.topic("w").unwrap().partition_states {
            let distinct: HashSet<i32> = p.replicas.iter().copied().collect();
            assert_eq!(distinct.len(), 3);
            let racks: HashSet<String> = p.replicas.iter().map(|&b| rack(b)).collect();
            assert_eq!(racks.len(), 2);
        }
    }
}
