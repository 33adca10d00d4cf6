//! The metadata state machine: pure, deterministic, no I/O.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use crate::record::{MetadataRecord, TopicId};

/// What the cluster knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: TopicId,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
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
}

/// All metadata, as of the last applied record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    topics: BTreeMap<String, TopicMeta>,
    by_id: HashMap<TopicId, String>,
    /// The next producer id not yet handed out.
    next_producer_id: i64,
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

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
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

    /// Applies one record, or says why it cannot apply (leaving the state unchanged).
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
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
}
