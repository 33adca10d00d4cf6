//! Committed offsets, and the records that persist groups and offsets in the internal
//! compacted topic `__consumer_offsets`.
//!
//! Record keys and values are JSON (not Kafka's binary schemas): key
//! `{"type":"offset","group","topic","partition"}` or `{"type":"group","group"}`; the value is
//! the committed offset or the [`GroupRecord`], and a null value (tombstone) deletes the key.
//! Compaction keeps the latest value per key; replaying the topic rebuilds the state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::group::GroupRecord;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// Committed offsets of every group.
#[derive(Debug, Default)]
pub struct Offsets {
    by_group: BTreeMap<String, BTreeMap<(String, i32), Committed>>,
}

impl Offsets {
    pub fn commit(&mut self, group: &str, topic: &str, partition: i32, c: Committed) {
        self.by_group
            .entry(group.to_string())
            .or_default()
            .insert((topic.to_string(), partition), c);
    }

    pub fn remove(&mut self, group: &str, topic: &str, partition: i32) {
        if let Some(g) = self.by_group.get_mut(group) {
            g.remove(&(topic.to_string(), partition));
            if g.is_empty() {
                self.by_group.remove(group);
            }
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.by_group
            .get(group)?
            .get(&(topic.to_string(), partition))
    }

    /// Every committed offset of a group: ((topic, partition), offset).
    pub fn of_group(&self, group: &str) -> Vec<((String, i32), Committed)> {
        self.by_group
            .get(group)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn groups(&self) -> Vec<String> {
        self.by_group.keys().cloned().collect()
    }

    pub fn remove_group(&mut self, group: &str) -> Vec<(String, i32)> {
        self.by_group
            .remove(group)
            .map(|g| g.into_keys().collect())
            .unwrap_or_default()
    }

    /// Offsets older than `retention_ms` of groups for which `inactive` says yes
    /// (`offsets.retention.minutes`); returns what expired, already removed.
    pub fn expire(
        &mut self,
        now: i64,
        retention_ms: i64,
        inactive: impl Fn(&str) -> bool,
    ) -> Vec<(String, String, i32)> {
        let mut gone = Vec::new();
        for (group, offsets) in self.by_group.iter_mut() {
            if !inactive(group) {
                continue;
            }
            offsets.retain(|(topic, partition), c| {
                let keep = now.saturating_sub(c.commit_timestamp) <= retention_ms;
                if !keep {
                    gone.push((group.clone(), topic.clone(), *partition));
                }
                keep
            });
        }
        self.by_group.retain(|_, o| !o.is_empty());
        gone
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    ConsumerGroup {
        group: String,
    },
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<Committed>,
    },
    Group {
        group: String,
        value: Option<GroupRecord>,
    },
    ConsumerGroup {
        group: String,
        value: Option<crate::consumer::GroupRecord>,
    },
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("coordinator records always serialize")
}

/// Key and value of an offset record (`None`: a tombstone).
pub fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: Option<&Committed>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (to_json(&key), value.map(to_json))
}

/// Key and value of a group record (`None`: a tombstone).
pub fn group_record(group: &str, value: Option<&GroupRecord>) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        to_json(&Key::Group {
            group: group.to_string(),
        }),
        value.map(to_json),
    )
}

/// Key and value of a KIP-848 consumer group record (`None`: a tombstone).
pub fn consumer_group_record(
    group: &str,
    value: Option<&crate::consumer::GroupRecord>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        to_json(&Key::ConsumerGroup {
            group: group.to_string(),
        }),
        value.map(to_json),
    )
}

/// The partition of `__consumer_offsets` a group's records go to (Kafka's rule: the group id's
/// Java hash code, made positive, modulo the partition count).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

/// Decodes a stored record; `Err` for bytes this version did not write.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<StoredRecord, String> {
    let key: Key = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
    Ok(match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => StoredRecord::Offset {
            group,
            topic,
            partition,
            value: value
                .map(serde_json::from_slice)
                .transpose()
                .map_err(|e| format!("bad offset value: {e}"))?,
        },
        Key::Group { group } => StoredRecord::Group {
            group,
            value: value
                .map(serde_json::from_slice)
                .transpose()
                .map_err(|e| format!("bad group value: {e}"))?,
        },
        Key::ConsumerGroup { group } => StoredRecord::ConsumerGroup {
            group,
            value: value
                .map(serde_json::from_slice)
                .transpose()
                .map_err(|e| format!("bad consumer group value: {e}"))?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tombstones() {
        let c = Committed {
            offset: 42,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp: 5,
        };
        let (k, v) = offset_record("g", "t", 3, Some(&c));
        assert_eq!(
            decode(&k, v.as_deref()).unwrap(),
            StoredRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(c)
            }
        );
        let (k, v) = group_record("g", None);
        assert_eq!(
            decode(&k, v.as_deref()).unwrap(),
            StoredRecord::Group {
                group: "g".into(),
                value: None
            }
        );
        assert!(decode(b"garbage", None).is_err());
    }

    #[test]
    fn partition_matches_java_hash() {
        // "group".hashCode() == 98629247 in Java; 98629247 % 50 == 47.
        assert_eq!(partition_for("group", 50), 47);
        assert!((0..50).contains(&partition_for("a-very-long-group-name-with-unicode-ø", 50)));
    }

    #[test]
    fn expiry_only_for_inactive_groups() {
        let mut o = Offsets::default();
        let c = |ts| Committed {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: ts,
        };
        o.commit("idle", "t", 0, c(0));
        o.commit("busy", "t", 0, c(0));
        o.commit("idle", "t", 1, c(900));
        let gone = o.expire(1_000, 500, |g| g == "idle");
        assert_eq!(gone, vec![("idle".to_string(), "t".to_string(), 0)]);
        assert!(o.get("busy", "t", 0).is_some());
        assert!(o.get("idle", "t", 1).is_some());
    }
}
