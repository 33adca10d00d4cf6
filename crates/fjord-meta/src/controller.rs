//! The controller: turns admin requests into metadata records, checked against the applied
//! state. Pure: the caller gives it the state, the brokers that can hold replicas, the new
//! topic's id and a seed for placement, and commits the records it returns (on one node to the
//! metadata log; in a cluster through the Raft quorum, whose leader is the controller). Nothing
//! changes on any broker until those records are applied and published.

use std::collections::{BTreeMap, HashSet};

use thiserror::Error;

use crate::record::{MetadataRecord, Reassignment, TopicId};
use crate::state::{MetadataState, PartitionMeta, TopicMeta, validate_topic_name};

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
    /// AlterPartition from a leader of an older leader epoch.
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// AlterPartition decided on an older partition epoch.
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// AlterPartition from a broker that does not lead the partition.
    #[error("{0}")]
    NotLeader(String),
    /// AlterPartition adding a replica that is fenced or not a replica of the partition.
    #[error("{0}")]
    IneligibleReplica(String),
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
    /// `unclean.leader.election.enable`: a partition whose in-sync replicas are all gone may
    /// take any live replica as leader (losing what only the others had). A topic's own
    /// setting overrides it.
    pub unclean_leader_election: bool,
}

/// Which leader an ElectLeaders request asks for (Kafka's ElectionType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica (the preferred leader), if it is in sync and alive.
    Preferred,
    /// A leader for a partition without one: an in-sync replica, else any live replica.
    Unclean,
}

/// Why ElectLeaders gave a partition no new leader (each is Kafka's error code of that name).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ElectionError {
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("{0}")]
    ElectionNotNeeded(String),
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
}

/// Why UnregisterBroker was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UnregisterError {
    /// Kafka's BROKER_ID_NOT_REGISTERED.
    #[error("{0}")]
    NotRegistered(String),
    /// Fjord's own refusals (alive, or holding an only copy): INVALID_REQUEST.
    #[error("{0}")]
    Refused(String),
}

/// Why AlterPartitionReassignments refused a partition (each is Kafka's error code of that
/// name).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReassignError {
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

/// The completion of `p`'s reassignment once `isr` holds every replica it moves to (Kafka's
/// `PartitionChangeBuilder.completeReassignmentIfNeeded`): the leaving replicas go from the
/// replicas and the in-sync replicas, a leader that left is replaced by the first target
/// replica in sync and alive, and the leader epoch moves on (the replicas that left are
/// fenced). `None` while a target replica is out of sync, or without a reassignment.
fn complete_reassignment(
    p: &PartitionMeta,
    leader: i32,
    leader_epoch: i32,
    isr: &[i32],
    alive: impl Fn(i32) -> bool,
) -> Option<(i32, i32, Vec<i32>, Reassignment)> {
    let target = p.target_replicas();
    if !p.is_reassigning() || !target.iter().all(|b| isr.contains(b)) {
        return None;
    }
    let isr: Vec<i32> = isr.iter().copied().filter(|b| target.contains(b)).collect();
    let leader = if leader >= 0 && target.contains(&leader) {
        leader
    } else {
        target
            .iter()
            .copied()
            .find(|&b| alive(b) && isr.contains(&b))
            .unwrap_or(-1)
    };
    // One bump over the partition's epoch (a caller that elected a leader already made it).
    let epoch = if p.removing.is_empty() && leader == p.leader {
        leader_epoch
    } else {
        leader_epoch.max(p.leader_epoch + 1)
    };
    let done = Reassignment {
        replicas: target,
        adding: Vec::new(),
        removing: Vec::new(),
    };
    Some((leader, epoch, isr, done))
}

/// A topic's `unclean.leader.election.enable` override.
const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

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

    /// The records that make broker resource `broker`'s dynamic configs `configs` (checked
    /// by the caller, which knows their rules).
    pub fn set_broker_configs(
        &self,
        broker: &str,
        configs: &BTreeMap<String, String>,
    ) -> Vec<MetadataRecord> {
        let empty = BTreeMap::new();
        let current = self.state.broker_configs(broker).unwrap_or(&empty);
        let set = configs
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| MetadataRecord::BrokerConfig {
                broker: broker.to_string(),
                key: k.clone(),
                value: Some(v.clone()),
            });
        let removed = current
            .keys()
            .filter(|k| !configs.contains_key(*k))
            .map(|k| MetadataRecord::BrokerConfig {
                broker: broker.to_string(),
                key: k.clone(),
                value: None,
            });
        set.chain(removed).collect()
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
        let mut change: Vec<MetadataRecord> = self
            .state
            .brokers()
            .filter_map(|b| {
                let heard = last_heard.get(&b.id).copied().unwrap_or(since);
                // A broker in a controlled shutdown stays fenced until it registers again.
                let alive = now - heard <= session_timeout_ms && !b.shutting_down;
                (alive == b.fenced).then_some(MetadataRecord::BrokerFencing {
                    id: b.id,
                    fenced: !alive,
                })
            })
            .collect();
        // The elections the fencing calls for, decided on the state after it (and any left
        // undone by an earlier write that failed).
        let elections = if change.is_empty() {
            self.elections(&[])
        } else {
            let mut after = self.state.clone();
            if after.apply_all(&change).is_err() {
                return change;
            }
            Controller {
                state: &after,
                ..*self
            }
            .elections(&[])
        };
        change.extend(elections);
        change
    }

    /// A broker's controlled shutdown (Kafka's BrokerHeartbeat with `want_shut_down`): it is
    /// fenced now rather than when its session ends, so it leaves the in-sync replicas and its
    /// leaderships move to other in-sync replicas (the elections its fencing calls for).
    pub fn controlled_shutdown(&self, broker: i32) -> Vec<MetadataRecord> {
        let Some(meta) = self.state.broker(broker) else {
            return Vec::new();
        };
        let mut change = Vec::new();
        if !meta.shutting_down {
            change.push(MetadataRecord::BrokerShutdown { id: broker });
        }
        let mut after = self.state.clone();
        if after.apply_all(&change).is_err() {
            return change;
        }
        change.extend(
            Controller {
                state: &after,
                ..*self
            }
            .elections(&[]),
        );
        change
    }

    /// UnregisterBroker (Kafka's `ReplicationControlManager.unregisterBroker`): the broker
    /// leaves every in-sync replica set (where it is not the last member), its leaderships
    /// move, and its registration goes. Refused, unlike Kafka, while it is alive (a running
    /// broker would go on serving unregistered: stop it first) and while it holds the only
    /// copy, or the only in-sync one, of a partition (move those first).
    pub fn unregister_broker(&self, broker: i32) -> Result<Vec<MetadataRecord>, UnregisterError> {
        let Some(meta) = self.state.broker(broker) else {
            return Err(UnregisterError::NotRegistered(format!(
                "Broker ID {broker} is not currently registered"
            )));
        };
        if !meta.fenced {
            return Err(UnregisterError::Refused(format!(
                "broker {broker} is running (not fenced): stop it first, then unregister it"
            )));
        }
        let only: Vec<String> = self
            .state
            .topics()
            .flat_map(|t| {
                t.partition_states
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.replicas == [broker] || p.isr == [broker])
                    .map(|(i, _)| format!("{}-{i}", t.name))
            })
            .collect();
        if !only.is_empty() {
            let shown: Vec<&str> = only.iter().take(5).map(String::as_str).collect();
            return Err(UnregisterError::Refused(format!(
                "broker {broker} holds the only copy (or the only in-sync one) of {} partition(s): {}{}; move them to other brokers first (fjord topic reassign, kafka-reassign-partitions)",
                only.len(),
                shown.join(", "),
                if only.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )));
        }
        let mut change = vec![MetadataRecord::UnregisterBroker { id: broker }];
        let mut after = self.state.clone();
        if after.apply_all(&change).is_err() {
            return Ok(change);
        }
        // The elections on the state without it: it leaves the in-sync replicas it is in.
        let elections = Controller {
            state: &after,
            ..*self
        }
        .elections(&[]);
        change.splice(0..0, elections);
        Ok(change)
    }

    /// The leader and in-sync replica changes that the brokers' liveness calls for (Kafka's
    /// `ReplicationControlManager` on fencing and unfencing). A fenced (or unregistered)
    /// broker leaves every in-sync replica set it is in, unless it is the last member, and
    /// leads nothing. A broker in `restarted` (registered again after a stop, so its log may
    /// have lost a tail its followers had fetched) leaves the in-sync replicas of replicated
    /// partitions and their leadership when another in-sync replica is alive, and otherwise
    /// leads in a new leader epoch. A partition whose leader went is given the first replica
    /// (in replica order) in sync and alive; with none it has no leader (-1) until one comes
    /// back, or, when unclean election is enabled for its topic, the first live replica leads
    /// with itself as the only in-sync replica (losing what only the others had). A leader
    /// change moves the leader epoch on.
    pub fn elections(&self, restarted: &[i32]) -> Vec<MetadataRecord> {
        let alive = |b: i32| self.state.broker(b).is_some_and(|meta| !meta.fenced);
        let mut out = Vec::new();
        for topic in self.state.topics() {
            let unclean = match topic.configs.get(UNCLEAN_LEADER_ELECTION) {
                Some(v) => v.eq_ignore_ascii_case("true"),
                None => self.config.unclean_leader_election,
            };
            for (index, p) in topic.partition_states.iter().enumerate() {
                if p.is_unassigned() {
                    continue;
                }
                let replicated = p.replicas.len() > 1;
                let fresh = |b: i32| alive(b) && !(replicated && restarted.contains(&b));
                let pick = |isr: &[i32], ok: &dyn Fn(i32) -> bool| -> Vec<i32> {
                    isr.iter().copied().filter(|&b| ok(b)).collect()
                };
                let mut isr = [pick(&p.isr, &fresh), pick(&p.isr, &alive)]
                    .into_iter()
                    .find(|isr| !isr.is_empty())
                    .unwrap_or_else(|| p.isr.clone());
                let candidate = |ok: &dyn Fn(i32) -> bool| {
                    p.replicas
                        .iter()
                        .copied()
                        .find(|&b| ok(b) && isr.contains(&b))
                };
                let mut leader = if p.leader >= 0 && fresh(p.leader) && isr.contains(&p.leader) {
                    p.leader
                } else {
                    candidate(&fresh)
                        .or_else(|| candidate(&alive))
                        .unwrap_or(-1)
                };
                if leader < 0
                    && unclean
                    && let Some(b) = p.replicas.iter().copied().find(|&b| alive(b))
                {
                    leader = b;
                    isr = vec![b];
                }
                let new_incarnation = replicated && leader >= 0 && restarted.contains(&leader);
                let leader_epoch = if leader != p.leader || new_incarnation {
                    p.leader_epoch + 1
                } else {
                    p.leader_epoch
                };
                // A reassignment whose target replicas are all in sync now completes (an
                // unclean election may have left only target replicas in sync).
                let completed = complete_reassignment(p, leader, leader_epoch, &isr, alive);
                if leader == p.leader && isr == p.isr && !new_incarnation && completed.is_none() {
                    continue;
                }
                let (leader, leader_epoch, isr, reassignment) = match completed {
                    Some((leader, epoch, isr, done)) => (leader, epoch, isr, Some(done)),
                    None => (leader, leader_epoch, isr, None),
                };
                out.push(MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition: index as i32,
                    partition_epoch: p.partition_epoch,
                    leader,
                    leader_epoch,
                    isr,
                    reassignment,
                });
            }
        }
        out
    }

    /// ElectLeaders (Kafka's `ReplicationControlManager.electLeaders` and the election of
    /// its `PartitionChangeBuilder`): for each partition named, its outcome, and the records
    /// of the elections made. A leader must be alive; a clean one also in sync. A preferred
    /// election takes the first replica, else keeps a leader that may stay, else takes the
    /// next replica that may lead; an unclean one gives a partition without a leader an
    /// in-sync replica, else any live replica (which becomes the only in-sync one, losing
    /// what only the others had). A new leader moves the leader epoch on. A partition named
    /// twice is elected once.
    pub fn elect_leaders(
        &self,
        kind: ElectionType,
        partitions: &[(String, i32)],
    ) -> (Vec<Result<(), ElectionError>>, Vec<MetadataRecord>) {
        let alive = |b: i32| self.state.broker(b).is_some_and(|meta| !meta.fenced);
        let not_needed = || {
            ElectionError::ElectionNotNeeded(
                "Leader election not needed for topic partition.".into(),
            )
        };
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(partitions.len());
        let mut elected = HashSet::new();
        for (name, index) in partitions {
            let Some(topic) = self.state.topic(name) else {
                outcomes.push(Err(ElectionError::UnknownTopicOrPartition(format!(
                    "No such topic as {name}"
                ))));
                continue;
            };
            let Some(p) = usize::try_from(*index)
                .ok()
                .and_then(|i| topic.partition_states.get(i))
                .filter(|p| !p.is_unassigned())
            else {
                outcomes.push(Err(ElectionError::UnknownTopicOrPartition(format!(
                    "No such partition as {name}-{index}"
                ))));
                continue;
            };
            let valid = |b: i32| alive(b) && p.isr.contains(&b);
            let first_valid = || p.replicas.iter().copied().find(|&b| valid(b));
            let choice = match kind {
                ElectionType::Preferred if p.leader == p.replicas[0] => Err(not_needed()),
                ElectionType::Preferred => {
                    let preferred = p.replicas[0];
                    let choice = if valid(preferred) {
                        Some(preferred)
                    } else if p.leader >= 0 && valid(p.leader) {
                        None
                    } else {
                        first_valid()
                    };
                    choice.map(|b| (b, p.isr.clone())).ok_or_else(|| {
                        ElectionError::PreferredLeaderNotAvailable(
                            "The preferred leader was not available.".into(),
                        )
                    })
                }
                ElectionType::Unclean if p.leader >= 0 => Err(not_needed()),
                ElectionType::Unclean => first_valid()
                    .map(|b| (b, p.isr.clone()))
                    .or_else(|| {
                        let b = p.replicas.iter().copied().find(|&b| alive(b))?;
                        Some((b, vec![b]))
                    })
                    .ok_or_else(|| {
                        ElectionError::EligibleLeadersNotAvailable(
                            "Eligible topic partition leaders are not available.".into(),
                        )
                    }),
            };
            match choice {
                Ok((leader, isr)) => {
                    if elected.insert((topic.id, *index)) {
                        let epoch = p.leader_epoch + 1;
                        let (leader, leader_epoch, isr, reassignment) =
                            match complete_reassignment(p, leader, epoch, &isr, alive) {
                                Some((leader, epoch, isr, done)) => {
                                    (leader, epoch, isr, Some(done))
                                }
                                None => (leader, epoch, isr, None),
                            };
                        records.push(MetadataRecord::PartitionChange {
                            topic_id: topic.id,
                            partition: *index,
                            partition_epoch: p.partition_epoch,
                            leader,
                            leader_epoch,
                            isr,
                            reassignment,
                        });
                    }
                    outcomes.push(Ok(()));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        (outcomes, records)
    }

    /// Every partition whose leader is not its first replica while that replica is in sync
    /// and alive: what a preferred election would move (Kafka's imbalanced partitions).
    pub fn imbalanced(&self) -> Vec<(String, i32)> {
        let alive = |b: i32| self.state.broker(b).is_some_and(|meta| !meta.fenced);
        self.state
            .topics()
            .flat_map(|t| {
                t.partition_states
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        !p.is_unassigned()
                            && p.leader != p.replicas[0]
                            && alive(p.replicas[0])
                            && p.isr.contains(&p.replicas[0])
                    })
                    .map(|(i, _)| (t.name.clone(), i as i32))
            })
            .collect()
    }

    /// A leader's request to change a partition's in-sync replicas (Kafka's AlterPartition),
    /// checked as Kafka's controller checks it: from the leader (`broker`) in the current
    /// leader epoch, decided on the current partition epoch, the new set holding the leader
    /// and, beyond the current members, only live replicas.
    pub fn alter_partition(
        &self,
        topic_id: TopicId,
        partition: i32,
        broker: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> Result<MetadataRecord, ControllerError> {
        let topic = self
            .state
            .topic_by_id(&topic_id)
            .ok_or_else(|| ControllerError::UnknownTopic(topic_id.to_string()))?;
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| topic.partition_states.get(i))
            .ok_or_else(|| ControllerError::UnknownTopic(format!("{}-{partition}", topic.name)))?;
        let name = format!("{}-{partition}", topic.name);
        if leader_epoch < p.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch(format!(
                "{name}: leader epoch {leader_epoch} is older than the current {}",
                p.leader_epoch
            )));
        }
        if p.leader != broker || leader_epoch != p.leader_epoch {
            return Err(ControllerError::NotLeader(format!(
                "{name}: broker {broker} at leader epoch {leader_epoch} does not lead it (leader {} at epoch {})",
                p.leader, p.leader_epoch
            )));
        }
        if partition_epoch != p.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion(format!(
                "{name}: partition epoch {partition_epoch} is not the current {}",
                p.partition_epoch
            )));
        }
        let alive = |b: i32| self.state.broker(b).is_some_and(|meta| !meta.fenced);
        for &b in isr {
            if !p.replicas.contains(&b) || (!p.isr.contains(&b) && !alive(b)) {
                return Err(ControllerError::IneligibleReplica(format!(
                    "{name}: broker {b} cannot join the in-sync replicas (not a replica, or fenced)"
                )));
            }
        }
        if !isr.contains(&broker) {
            return Err(ControllerError::IneligibleReplica(format!(
                "{name}: the leader must stay in the in-sync replicas"
            )));
        }
        let mut distinct = isr.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != isr.len() {
            return Err(ControllerError::IneligibleReplica(format!(
                "{name}: a replica is named twice"
            )));
        }
        // An in-sync set that holds every replica a reassignment moves to completes it.
        let (leader, leader_epoch, isr, reassignment) =
            match complete_reassignment(p, p.leader, p.leader_epoch, isr, alive) {
                Some((leader, epoch, isr, r)) => (leader, epoch, isr, Some(r)),
                None => (p.leader, p.leader_epoch, isr.to_vec(), None),
            };
        Ok(MetadataRecord::PartitionChange {
            topic_id,
            partition,
            partition_epoch,
            leader,
            leader_epoch,
            isr,
            reassignment,
        })
    }

    /// AlterPartitionReassignments for one partition (Kafka's `ReplicationControlManager`
    /// with `PartitionReassignmentReplicas` / `PartitionReassignmentRevert`): `Some(target)`
    /// starts a reassignment to `target` (or replaces the one in progress): the replicas are
    /// the target ones then those leaving, the new ones follow and join the in-sync replicas
    /// as they catch up, and once every target replica is in sync the others leave (at once
    /// when they already are). `None` cancels the reassignment in progress: the replicas it
    /// was adding leave, the others stay. The records to commit (none when nothing changes).
    pub fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<&[i32]>,
    ) -> Result<Vec<MetadataRecord>, ReassignError> {
        let t = self.state.topic(topic).ok_or_else(|| {
            ReassignError::UnknownTopicOrPartition(format!("Unable to find a topic named {topic}."))
        })?;
        let p = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partition_states.get(i))
            .filter(|p| !p.is_unassigned())
            .ok_or_else(|| {
                ReassignError::UnknownTopicOrPartition(format!(
                    "Unable to find partition {topic}:{partition}."
                ))
            })?;
        let alive = |b: i32| self.state.broker(b).is_some_and(|meta| !meta.fenced);
        let change = |leader, leader_epoch, isr, reassignment| MetadataRecord::PartitionChange {
            topic_id: t.id,
            partition,
            partition_epoch: p.partition_epoch,
            leader,
            leader_epoch,
            isr,
            reassignment,
        };
        let Some(target) = target else {
            if !p.is_reassigning() {
                return Err(ReassignError::NoReassignmentInProgress(
                    "No partition reassignment is in progress.".into(),
                ));
            }
            let keep = |b: &i32| !p.adding.contains(b);
            let replicas: Vec<i32> = p.replicas.iter().copied().filter(keep).collect();
            let isr: Vec<i32> = p.isr.iter().copied().filter(keep).collect();
            if replicas.is_empty() {
                return Err(ReassignError::InvalidReplicaAssignment(
                    "Invalid replica assignment: addingReplicas contains all replicas.".into(),
                ));
            }
            // None of the original replicas in sync: reverting would need an unclean election
            // (Kafka allows it where the topic allows unclean elections; Fjord does not).
            if isr.is_empty() {
                return Err(ReassignError::InvalidReplicaAssignment(format!(
                    "Unable to revert partition assignment for {topic}:{partition} because it would require an unclean leader election."
                )));
            }
            // The replicas dropped are fenced by a new leader epoch (Kafka bumps it whenever
            // the replicas lose a broker).
            let (leader, leader_epoch) = if p.leader >= 0 && keep(&p.leader) {
                (p.leader, p.leader_epoch + 1)
            } else {
                let leader = replicas
                    .iter()
                    .copied()
                    .find(|&b| alive(b) && isr.contains(&b))
                    .unwrap_or(-1);
                (leader, p.leader_epoch + 1)
            };
            let reverted = Reassignment {
                replicas,
                adding: Vec::new(),
                removing: Vec::new(),
            };
            return Ok(vec![change(leader, leader_epoch, isr, Some(reverted))]);
        };
        if target.is_empty() {
            return Err(ReassignError::InvalidReplicaAssignment(
                "The manual partition assignment includes an empty replica list.".into(),
            ));
        }
        // Checked in ascending order, as Kafka's validateManualPartitionAssignment: the lowest
        // offending id is named. Fenced brokers may be named (they catch up when back).
        let mut sorted = target.to_vec();
        sorted.sort_unstable();
        for (i, &b) in sorted.iter().enumerate() {
            if self.state.broker(b).is_none() {
                return Err(ReassignError::InvalidReplicaAssignment(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is registered."
                )));
            }
            if i > 0 && sorted[i - 1] == b {
                return Err(ReassignError::InvalidReplicaAssignment(format!(
                    "The manual partition assignment includes the broker {b} more than once."
                )));
            }
        }
        // Joining: the target replicas not placed yet, and those a reassignment in progress
        // is still adding; leaving: the replicas not in the target (ascending, as Kafka's
        // PartitionReassignmentReplicas).
        let mut adding: Vec<i32> = target
            .iter()
            .copied()
            .filter(|b| !p.replicas.contains(b) || p.adding.contains(b))
            .collect();
        adding.sort_unstable();
        let mut removing: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        removing.sort_unstable();
        let replicas: Vec<i32> = target
            .iter()
            .copied()
            .chain(removing.iter().copied())
            .collect();
        let moving = PartitionMeta {
            replicas: replicas.clone(),
            adding: adding.clone(),
            removing: removing.clone(),
            ..p.clone()
        };
        // Already in sync (only removals, back to replicas in sync, or a move whose target
        // got in sync without an ISR change): complete at once.
        if let Some((leader, epoch, isr, done)) =
            complete_reassignment(&moving, p.leader, p.leader_epoch, &p.isr, alive)
        {
            return Ok(vec![change(leader, epoch, isr, Some(done))]);
        }
        if replicas == p.replicas && adding == p.adding && removing == p.removing {
            return Ok(Vec::new());
        }
        let started = Reassignment {
            replicas,
            adding,
            removing,
        };
        Ok(vec![change(
            p.leader,
            p.leader_epoch,
            p.isr.clone(),
            Some(started),
        )])
    }

    /// The partitions being reassigned, of `topics` (every topic when `None`), each with its
    /// replicas and those it adds and removes (ListPartitionReassignments).
    pub fn reassignments(
        &self,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, PartitionMeta)> {
        let mut out = Vec::new();
        let mut consider = |t: &TopicMeta, i: i32| {
            if let Some(p) = usize::try_from(i)
                .ok()
                .and_then(|i| t.partition_states.get(i))
                && p.is_reassigning()
            {
                out.push((t.name.clone(), i, p.clone()));
            }
        };
        match topics {
            None => {
                for t in self.state.topics() {
                    for i in 0..t.partitions {
                        consider(t, i);
                    }
                }
            }
            Some(named) => {
                for (name, partitions) in named {
                    if let Some(t) = self.state.topic(name) {
                        for &i in partitions {
                            consider(t, i);
                        }
                    }
                }
            }
        }
        out
    }

    /// The next block of `count` producer ids (its first id) and the record that hands it out.
    pub fn allocate_producer_ids(&self, count: i64) -> (i64, Vec<MetadataRecord>) {
        let start = self.state.next_producer_id();
        let next = start.saturating_add(count.max(1));
        (
            start,
            vec![MetadataRecord::ProducerIds {
                from: Some(start),
                next,
            }],
        )
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
        adding: Vec::new(),
        removing: Vec::new(),
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
        unclean_leader_election: false,
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

    /// Brokers 1–3 registered, topic "r" with one partition on `replicas` (every one in sync,
    /// the first leading).
    fn replicated(replicas: &[i32]) -> MetadataState {
        let mut state = MetadataState::default();
        for id in [1, 2, 3] {
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
        let id = TopicId([9; 16]);
        state
            .apply_all(&[
                MetadataRecord::Topic {
                    name: "r".into(),
                    id,
                },
                new_partition(id, 0, replicas.to_vec()),
            ])
            .unwrap();
        state
    }

    fn fence(state: &mut MetadataState, id: i32, fenced: bool) {
        state
            .apply(&MetadataRecord::BrokerFencing { id, fenced })
            .unwrap();
    }

    fn elect(state: &mut MetadataState, restarted: &[i32], config: &ControllerConfig) {
        let change = Controller {
            state,
            brokers: &[],
            config,
        }
        .elections(restarted);
        state.apply_all(&change).unwrap();
    }

    fn leader_and_isr(state: &MetadataState) -> (i32, i32, Vec<i32>) {
        let p = &state.topic("r").unwrap().partition_states[0];
        (p.leader, p.leader_epoch, p.isr.clone())
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_in_sync_replicas() {
        let mut state = replicated(&[1, 2, 3]);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(
            leader_and_isr(&state),
            (1, 0, vec![1, 2, 3]),
            "nothing to do"
        );
        fence(&mut state, 1, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (2, 1, vec![2, 3]));
        // A fenced follower only leaves the in-sync replicas.
        fence(&mut state, 3, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (2, 1, vec![2]));
        // The last in-sync replica fenced: no leader, and it stays the one that may lead.
        fence(&mut state, 2, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (-1, 2, vec![2]));
        // Broker 1 is back, but out of sync: it may not lead (clean election)...
        fence(&mut state, 1, false);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (-1, 2, vec![2]));
        // ...until the in-sync one returns.
        fence(&mut state, 2, false);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (2, 3, vec![2]));
        let p = &state.topic("r").unwrap().partition_states[0];
        assert_eq!(
            p.partition_epoch, 4,
            "every change moved the partition epoch"
        );
    }

    #[test]
    fn unclean_election_takes_a_live_replica_when_no_in_sync_one_is_left() {
        let mut state = replicated(&[1, 2]);
        fence(&mut state, 2, true);
        elect(&mut state, &[], &CONFIG);
        fence(&mut state, 1, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (-1, 1, vec![1]));
        fence(&mut state, 2, false);
        let unclean = ControllerConfig {
            unclean_leader_election: true,
            ..CONFIG
        };
        elect(&mut state, &[], &unclean);
        assert_eq!(leader_and_isr(&state), (2, 2, vec![2]));
        // A topic's own setting overrides the broker's.
        let mut state = replicated(&[1, 2]);
        let id = state.topic("r").unwrap().id;
        state
            .apply(&MetadataRecord::TopicConfig {
                topic_id: id,
                key: UNCLEAN_LEADER_ELECTION.into(),
                value: Some("false".into()),
            })
            .unwrap();
        fence(&mut state, 2, true);
        elect(&mut state, &[], &unclean);
        fence(&mut state, 1, true);
        elect(&mut state, &[], &unclean);
        fence(&mut state, 2, false);
        elect(&mut state, &[], &unclean);
        assert_eq!(leader_and_isr(&state), (-1, 1, vec![1]));
    }

    #[test]
    fn a_restarted_leader_hands_over_or_leads_in_a_new_epoch() {
        let mut state = replicated(&[1, 2, 3]);
        elect(&mut state, &[1], &CONFIG);
        assert_eq!(leader_and_isr(&state), (2, 1, vec![2, 3]));
        // Alone in sync: it leads again, in a new epoch.
        let mut state = replicated(&[1, 2]);
        fence(&mut state, 2, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (1, 0, vec![1]));
        elect(&mut state, &[1], &CONFIG);
        assert_eq!(leader_and_isr(&state), (1, 1, vec![1]));
        // An unreplicated partition keeps its epoch (nobody could have fetched a lost tail).
        let mut state = replicated(&[1]);
        elect(&mut state, &[1], &CONFIG);
        assert_eq!(leader_and_isr(&state), (1, 0, vec![1]));
    }

    #[test]
    fn alter_partition_is_checked_as_kafka_checks_it() {
        let mut state = replicated(&[1, 2, 3]);
        let id = state.topic("r").unwrap().id;
        let c = |state: &MetadataState, broker, leader_epoch, partition_epoch, isr: &[i32]| {
            Controller {
                state,
                brokers: &[],
                config: &CONFIG,
            }
            .alter_partition(id, 0, broker, leader_epoch, partition_epoch, isr)
        };
        let shrink = c(&state, 1, 0, 0, &[1, 2]).unwrap();
        state.apply(&shrink).unwrap();
        assert_eq!(leader_and_isr(&state), (1, 0, vec![1, 2]));
        assert!(matches!(
            c(&state, 1, 0, 0, &[1]),
            Err(ControllerError::InvalidUpdateVersion(_))
        ));
        assert!(
            state.apply(&shrink).is_err(),
            "a change decided on an older partition epoch does not apply"
        );
        assert!(matches!(
            c(&state, 2, 0, 1, &[2]),
            Err(ControllerError::NotLeader(_))
        ));
        assert!(matches!(
            c(&state, 1, -1, 1, &[1]),
            Err(ControllerError::FencedLeaderEpoch(_))
        ));
        assert!(matches!(
            c(&state, 1, 0, 1, &[2]),
            Err(ControllerError::IneligibleReplica(_))
        ));
        assert!(matches!(
            c(&state, 1, 0, 1, &[1, 4]),
            Err(ControllerError::IneligibleReplica(_))
        ));
        // A fenced broker may not join, but may stay.
        fence(&mut state, 3, true);
        assert!(matches!(
            c(&state, 1, 0, 1, &[1, 2, 3]),
            Err(ControllerError::IneligibleReplica(_))
        ));
        fence(&mut state, 2, true);
        assert!(c(&state, 1, 0, 1, &[1, 2]).is_ok());
        fence(&mut state, 3, false);
        let expand = c(&state, 1, 0, 1, &[1, 2, 3]).unwrap();
        state.apply(&expand).unwrap();
        assert_eq!(leader_and_isr(&state), (1, 0, vec![1, 2, 3]));
    }

    fn elect_leaders(
        state: &mut MetadataState,
        kind: ElectionType,
        partitions: &[(&str, i32)],
    ) -> Vec<Result<(), ElectionError>> {
        let named: Vec<(String, i32)> = partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
        let (outcomes, change) = Controller {
            state,
            brokers: &[],
            config: &CONFIG,
        }
        .elect_leaders(kind, &named);
        state.apply_all(&change).unwrap();
        outcomes
    }

    fn imbalanced(state: &MetadataState) -> Vec<(String, i32)> {
        Controller {
            state,
            brokers: &[],
            config: &CONFIG,
        }
        .imbalanced()
    }

    #[test]
    fn a_preferred_election_gives_the_first_replica_its_leadership_back() {
        use ElectionError as E;
        use ElectionType::Preferred;
        let mut state = replicated(&[1, 2, 3]);
        assert!(matches!(
            elect_leaders(&mut state, Preferred, &[("r", 0)])[..],
            [Err(E::ElectionNotNeeded(_))]
        ));
        assert!(imbalanced(&state).is_empty());
        // Broker 1 fenced: 2 leads; back and in sync again, it is imbalanced.
        fence(&mut state, 1, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (2, 1, vec![2, 3]));
        fence(&mut state, 1, false);
        assert!(
            imbalanced(&state).is_empty(),
            "out of sync, the preferred leader may not lead"
        );
        assert!(matches!(
            elect_leaders(&mut state, Preferred, &[("r", 0)])[..],
            [Err(E::PreferredLeaderNotAvailable(_))]
        ));
        assert_eq!(
            leader_and_isr(&state),
            (2, 1, vec![2, 3]),
            "nothing changed"
        );
        let id = state.topic("r").unwrap().id;
        let p = &state.topic("r").unwrap().partition_states[0];
        state
            .apply(&MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                partition_epoch: p.partition_epoch,
                leader: 2,
                leader_epoch: 1,
                isr: vec![2, 3, 1],
                reassignment: None,
            })
            .unwrap();
        assert_eq!(imbalanced(&state), vec![("r".to_string(), 0)]);
        // Named twice, unknown partitions and topics beside it.
        let outcomes = elect_leaders(
            &mut state,
            Preferred,
            &[("r", 0), ("r", 0), ("r", 7), ("nope", 0)],
        );
        assert!(matches!(
            &outcomes[..],
            [Ok(()), Ok(()), Err(E::UnknownTopicOrPartition(a)), Err(E::UnknownTopicOrPartition(b))]
                if a == "No such partition as r-7" && b == "No such topic as nope"
        ));
        assert_eq!(leader_and_isr(&state), (1, 2, vec![2, 3, 1]));
        assert!(imbalanced(&state).is_empty());
    }

    #[test]
    fn a_preferred_election_of_a_leaderless_partition_takes_any_in_sync_replica() {
        let mut state = replicated(&[1, 2, 3]);
        // Leaderless with 2 in sync and alive (Kafka's builder elects it, and answers NONE).
        let id = state.topic("r").unwrap().id;
        state
            .apply(&MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                partition_epoch: 0,
                leader: -1,
                leader_epoch: 1,
                isr: vec![2],
                reassignment: None,
            })
            .unwrap();
        assert!(matches!(
            elect_leaders(&mut state, ElectionType::Preferred, &[("r", 0)])[..],
            [Ok(())]
        ));
        assert_eq!(leader_and_isr(&state), (2, 2, vec![2]));
    }

    #[test]
    fn an_unclean_election_leads_a_leaderless_partition_from_any_live_replica() {
        use ElectionError as E;
        use ElectionType::Unclean;
        let mut state = replicated(&[1, 2]);
        assert!(matches!(
            elect_leaders(&mut state, Unclean, &[("r", 0)])[..],
            [Err(E::ElectionNotNeeded(_))]
        ));
        fence(&mut state, 2, true);
        elect(&mut state, &[], &CONFIG);
        fence(&mut state, 1, true);
        elect(&mut state, &[], &CONFIG);
        assert_eq!(leader_and_isr(&state), (-1, 1, vec![1]));
        assert!(matches!(
            elect_leaders(&mut state, Unclean, &[("r", 0)])[..],
            [Err(E::EligibleLeadersNotAvailable(_))]
        ));
        // Only the out-of-sync replica is back: it leads, alone in sync (the topic's and
        // broker's unclean.leader.election.enable do not matter to an explicit request).
        fence(&mut state, 2, false);
        assert!(matches!(
            elect_leaders(&mut state, Unclean, &[("r", 0)])[..],
            [Ok(())]
        ));
        assert_eq!(leader_and_isr(&state), (2, 2, vec![2]));
    }

    fn reassign(state: &mut MetadataState, target: Option<&[i32]>) -> Result<(), ReassignError> {
        let change = Controller {
            state,
            brokers: &[],
            config: &CONFIG,
        }
        .reassign("r", 0, target)?;
        state.apply_all(&change).unwrap();
        Ok(())
    }

    fn moving(state: &MetadataState) -> (Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>, i32, i32) {
        let p = &state.topic("r").unwrap().partition_states[0];
        (
            p.replicas.clone(),
            p.adding.clone(),
            p.removing.clone(),
            p.isr.clone(),
            p.leader,
            p.leader_epoch,
        )
    }

    /// The leader's AlterPartition adding `joining` to the in-sync replicas.
    fn joins(state: &mut MetadataState, joining: i32) {
        let p = state.topic("r").unwrap().partition_states[0].clone();
        let mut isr = p.isr.clone();
        isr.push(joining);
        let record = Controller {
            state,
            brokers: &[],
            config: &CONFIG,
        }
        .alter_partition(
            TopicId([9; 16]),
            0,
            p.leader,
            p.leader_epoch,
            p.partition_epoch,
            &isr,
        )
        .unwrap();
        state.apply(&record).unwrap();
    }

    #[test]
    fn a_reassignment_completes_once_every_target_replica_is_in_sync() {
        let mut state = replicated(&[1]);
        reassign(&mut state, Some(&[2, 3])).unwrap();
        assert_eq!(
            moving(&state),
            (vec![2, 3, 1], vec![2, 3], vec![1], vec![1], 1, 0),
            "the new replicas follow, the old one still leads"
        );
        assert_eq!(state.topic("r").unwrap().replication_factor, 2);
        joins(&mut state, 3);
        assert_eq!(
            moving(&state),
            (vec![2, 3, 1], vec![2, 3], vec![1], vec![1, 3], 1, 0)
        );
        // The last target replica in sync: broker 1 leaves, 2 (first of the target) leads.
        joins(&mut state, 2);
        assert_eq!(
            moving(&state),
            (vec![2, 3], vec![], vec![], vec![3, 2], 2, 1)
        );
        // Back to broker 1, which must catch up again.
        reassign(&mut state, Some(&[1, 3])).unwrap();
        assert_eq!(
            moving(&state),
            (vec![1, 3, 2], vec![1], vec![2], vec![3, 2], 2, 1)
        );
    }

    #[test]
    fn a_reassignment_without_new_replicas_completes_at_once() {
        let mut state = replicated(&[1, 2, 3]);
        reassign(&mut state, Some(&[3, 2])).unwrap();
        assert_eq!(
            moving(&state),
            (vec![3, 2], vec![], vec![], vec![2, 3], 3, 1)
        );
        // The same again: nothing to do.
        let before = state.clone();
        reassign(&mut state, Some(&[3, 2])).unwrap();
        assert_eq!(state, before);
    }

    #[test]
    fn a_cancelled_reassignment_drops_the_replicas_it_was_adding() {
        let mut state = replicated(&[1, 2]);
        assert!(matches!(
            reassign(&mut state, None),
            Err(ReassignError::NoReassignmentInProgress(_))
        ));
        reassign(&mut state, Some(&[2, 3])).unwrap();
        assert_eq!(
            moving(&state),
            (vec![2, 3, 1], vec![3], vec![1], vec![1, 2], 1, 0)
        );
        reassign(&mut state, None).unwrap();
        assert_eq!(
            moving(&state),
            (vec![2, 1], vec![], vec![], vec![1, 2], 1, 1)
        );
    }

    #[test]
    fn bad_reassignments_are_refused_as_kafka_refuses_them() {
        let mut state = replicated(&[1, 2]);
        let refused = |state: &MetadataState, topic: &str, partition: i32, target: &[i32]| {
            Controller {
                state,
                brokers: &[],
                config: &CONFIG,
            }
            .reassign(topic, partition, Some(target))
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            refused(&state, "nope", 0, &[1]),
            "Unable to find a topic named nope."
        );
        assert_eq!(
            refused(&state, "r", 4, &[1]),
            "Unable to find partition r:4."
        );
        assert_eq!(
            refused(&state, "r", 0, &[]),
            "The manual partition assignment includes an empty replica list."
        );
        assert_eq!(
            refused(&state, "r", 0, &[7, 2, 2]),
            "The manual partition assignment includes the broker 2 more than once."
        );
        assert_eq!(
            refused(&state, "r", 0, &[7, 3]),
            "The manual partition assignment includes broker 7, but no such broker is registered."
        );
        assert_eq!(
            refused(&state, "r", 0, &[-1, 3]),
            "The manual partition assignment includes broker -1, but no such broker is registered."
        );
        // Nothing was written.
        reassign(&mut state, Some(&[1, 2])).unwrap();
        assert_eq!(
            moving(&state),
            (vec![1, 2], vec![], vec![], vec![1, 2], 1, 0)
        );
    }

    #[test]
    fn a_move_whose_target_is_left_in_sync_by_an_election_completes() {
        let unclean = ControllerConfig {
            unclean_leader_election: true,
            ..CONFIG
        };
        let mut state = replicated(&[1]);
        reassign(&mut state, Some(&[2])).unwrap();
        assert_eq!(
            moving(&state),
            (vec![2, 1], vec![2], vec![1], vec![1], 1, 0)
        );
        // Broker 1 goes; an unclean election makes 2 the leader, alone in sync: the move is
        // complete (its target is in sync), and broker 1 is no longer a replica.
        fence(&mut state, 1, true);
        elect(&mut state, &[], &unclean);
        assert_eq!(moving(&state), (vec![2], vec![], vec![], vec![2], 2, 1));
    }

    #[test]
    fn a_state_with_moves_in_progress_is_rebuilt_from_its_records() {
        let mut state = replicated(&[1, 2]);
        reassign(&mut state, Some(&[3])).unwrap();
        let mut rebuilt = MetadataState::default();
        rebuilt.apply_all(&state.to_records()).unwrap();
        assert_eq!(rebuilt, state);
        assert_eq!(rebuilt.topic("r").unwrap().replication_factor, 1);
    }

    #[test]
    fn a_broker_in_controlled_shutdown_stays_fenced_until_it_registers_again() {
        let mut state = replicated(&[1, 2, 3]);
        let c = |state: &MetadataState| -> Vec<MetadataRecord> {
            Controller {
                state,
                brokers: &[],
                config: &CONFIG,
            }
            .controlled_shutdown(1)
        };
        let change = c(&state);
        state.apply_all(&change).unwrap();
        assert_eq!(leader_and_isr(&state), (2, 1, vec![2, 3]));
        // Its last heartbeat is recent: the controller still keeps it fenced.
        let heard = std::collections::HashMap::from([(1, 1_000), (2, 1_000), (3, 1_000)]);
        let fencing = Controller {
            state: &state,
            brokers: &[],
            config: &CONFIG,
        }
        .fencing(&heard, 0, 1_500, 9_000);
        assert!(fencing.is_empty(), "{fencing:?}");
        // Registered again (a restart): it is a broker like the others.
        state
            .apply(&MetadataRecord::RegisterBroker {
                id: 1,
                incarnation: "j".into(),
                host: "h".into(),
                port: 1,
                rack: None,
            })
            .unwrap();
        assert!(!state.broker(1).unwrap().fenced);
        let mut rebuilt = MetadataState::default();
        rebuilt.apply_all(&state.to_records()).unwrap();
        assert_eq!(rebuilt, state);
    }

    #[test]
    fn a_broker_is_unregistered_once_stopped_and_holding_no_only_copy() {
        let mut state = replicated(&[1]);
        let unregister = |state: &MetadataState, id| {
            Controller {
                state,
                brokers: &[],
                config: &CONFIG,
            }
            .unregister_broker(id)
        };
        assert!(matches!(
            unregister(&state, 9),
            Err(UnregisterError::NotRegistered(_))
        ));
        assert!(matches!(
            unregister(&state, 1),
            Err(UnregisterError::Refused(m)) if m.contains("stop it first")
        ));
        fence(&mut state, 1, true);
        assert!(matches!(
            unregister(&state, 1),
            Err(UnregisterError::Refused(m)) if m.contains("only copy") && m.contains("r-0")
        ));
        fence(&mut state, 2, true);
        let change = unregister(&state, 2).unwrap();
        state.apply_all(&change).unwrap();
        assert!(state.broker(2).is_none());
    }
}
