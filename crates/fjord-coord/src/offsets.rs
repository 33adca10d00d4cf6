//! Committed offsets, and the records that persist groups and offsets in the internal
//! compacted topic `__consumer_offsets`.
//!
//! Records are in Kafka's own binary schemas, as Kafka 4 writes them, so Kafka's tools and lag
//! monitors read the topic: the key starts with the record type (1: OffsetCommitKey, 2:
//! GroupMetadataKey), the value with its schema version (OffsetCommitValue v3,
//! GroupMetadataValue v3). A KIP-848 group's state, which Kafka splits over several record
//! types, is one Fjord record under a type Kafka does not use ([`FJORD_CONSUMER_GROUP`]). A
//! null value (tombstone) deletes the key; compaction keeps the latest value per key, and
//! replaying the topic rebuilds the state. Records of Fjord versions before this format (JSON,
//! the key starting with `{`) are still read; [`is_legacy`] finds them for conversion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::group::{GroupRecord, MemberRecord};
use crate::wire::{Reader, Writer};

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// The committed topic's id, stored with the offset as Kafka 4 does (none in records of
    /// earlier versions).
    #[serde(default)]
    pub topic_id: Option<[u8; 16]>,
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

/// Record type of an offset commit key (Kafka's OffsetCommitKey; type 0 is its older form).
pub const OFFSET_COMMIT: i16 = 1;
/// Record type of a classic group's key (Kafka's GroupMetadataKey).
pub const GROUP_METADATA: i16 = 2;
/// Record type of a KIP-848 group's whole state: Fjord's own, outside the types Kafka uses,
/// so Kafka's formatters pass it by.
pub const FJORD_CONSUMER_GROUP: i16 = 0x7f00;
/// The value versions written (Kafka 4.4's: OffsetCommitValue v4 is flexible and carries the
/// topic id in a tagged field).
const OFFSET_COMMIT_VALUE_VERSION: i16 = 4;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_VALUE_VERSION: i16 = 0;

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

/// Key and value of an offset record (`None`: a tombstone).
pub fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: Option<&Committed>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Writer::new(OFFSET_COMMIT);
    key.string(group).string(topic).i32(partition);
    let value = value.map(|c| {
        let mut w = Writer::new(OFFSET_COMMIT_VALUE_VERSION);
        w.i64(c.offset)
            .i32(c.leader_epoch)
            .compact_string(&c.metadata)
            .i64(c.commit_timestamp);
        match &c.topic_id {
            // One tagged field: tag 0, 16 bytes, the topic id.
            Some(id) => w.uvarint(1).uvarint(0).uvarint(16).raw(id),
            None => w.uvarint(0),
        };
        w.finish()
    });
    (key.finish(), value)
}

/// Key and value of a classic group record (`None`: a tombstone). Each member's subscription
/// is its metadata for the group's protocol, as Kafka stores it.
pub fn group_record(group: &str, value: Option<&GroupRecord>) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Writer::new(GROUP_METADATA);
    key.string(group);
    let value = value.map(|g| {
        let mut w = Writer::new(GROUP_METADATA_VALUE_VERSION);
        w.string(g.protocol_type.as_deref().unwrap_or(""))
            .i32(g.generation_id)
            .nullable_string(g.protocol_name.as_deref())
            .nullable_string(g.leader.as_deref())
            // currentStateTimestamp: not kept.
            .i64(-1)
            .count(Some(g.members.len()));
        for m in &g.members {
            let subscription = m
                .protocols
                .iter()
                .find(|(p, _)| Some(p) == g.protocol_name.as_ref())
                .or(m.protocols.first())
                .map_or(&[][..], |(_, md)| &md[..]);
            w.string(&m.member_id)
                .nullable_string(m.group_instance_id.as_deref())
                .string(&m.client_id)
                .string(&m.client_host)
                .i32(m.rebalance_timeout_ms)
                .i32(m.session_timeout_ms)
                .bytes(subscription)
                .bytes(&m.assignment);
        }
        w.finish()
    });
    (key.finish(), value)
}

/// Key and value of a KIP-848 consumer group record (`None`: a tombstone): Fjord's record
/// type, its value a version and the group's state as JSON.
pub fn consumer_group_record(
    group: &str,
    value: Option<&crate::consumer::GroupRecord>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Writer::new(FJORD_CONSUMER_GROUP);
    key.string(group);
    let value = value.map(|g| {
        let mut v = Writer::new(CONSUMER_GROUP_VALUE_VERSION).finish();
        v.extend_from_slice(
            &serde_json::to_vec(g).expect("consumer group records always serialize"),
        );
        v
    });
    (key.finish(), value)
}

/// Whether a stored key is in the JSON format of Fjord versions before Kafka's schemas (a
/// record to convert).
pub fn is_legacy(key: &[u8]) -> bool {
    key.first() == Some(&b'{')
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

/// Decodes a stored record (Kafka's schemas, or the JSON of earlier Fjord versions); `Err`
/// for a record type or version this build does not read.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<StoredRecord, String> {
    if is_legacy(key) {
        return legacy::decode(key, value);
    }
    let mut k = Reader::new(key);
    let kind = k.i16()?;
    let record = match kind {
        0 | OFFSET_COMMIT => {
            let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
            StoredRecord::Offset {
                group,
                topic,
                partition,
                value: value.map(decode_offset).transpose()?,
            }
        }
        GROUP_METADATA => {
            let group = k.string()?;
            let value = value.map(|v| decode_group(&group, v)).transpose()?;
            StoredRecord::Group { group, value }
        }
        FJORD_CONSUMER_GROUP => StoredRecord::ConsumerGroup {
            group: k.string()?,
            value: value
                .map(|v| {
                    let mut r = Reader::new(v);
                    let version = r.i16()?;
                    if version != CONSUMER_GROUP_VALUE_VERSION {
                        return Err(format!("consumer group value version {version}"));
                    }
                    serde_json::from_slice(&v[2..]).map_err(|e| format!("bad consumer group: {e}"))
                })
                .transpose()?,
        },
        other => return Err(format!("record type {other} is not one this build reads")),
    };
    k.done()?;
    Ok(record)
}

/// OffsetCommitValue v0-4 (v4 is flexible: compact strings, tagged fields; tag 0 is the
/// topic id).
fn decode_offset(v: &[u8]) -> Result<Committed, String> {
    let mut r = Reader::new(v);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(format!(
            "offset commit value version {version} is not one this build reads"
        ));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = if version >= 4 {
        r.compact_string()?
    } else {
        r.string()?
    };
    let commit_timestamp = r.i64()?;
    if version == 1 {
        let _expire_timestamp = r.i64()?;
    }
    let mut topic_id = None;
    if version >= 4 {
        r.tagged_fields(|tag, data| {
            if tag == 0 {
                topic_id = <[u8; 16]>::try_from(data).ok();
            }
        })?;
    }
    r.done()?;
    Ok(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        topic_id,
    })
}

/// GroupMetadataValue v0-3.
fn decode_group(group: &str, v: &[u8]) -> Result<GroupRecord, String> {
    let mut r = Reader::new(v);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!(
            "group metadata value version {version} is not one this build reads"
        ));
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol_name = r.nullable_string()?;
    let leader = r.nullable_string()?;
    if version >= 2 {
        let _current_state_timestamp = r.i64()?;
    }
    let n = r.count()?.unwrap_or(0);
    let mut members = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let session_or_rebalance = r.i32()?;
        let (rebalance_timeout_ms, session_timeout_ms) = if version >= 1 {
            (session_or_rebalance, r.i32()?)
        } else {
            (session_or_rebalance, session_or_rebalance)
        };
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberRecord {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols: protocol_name
                .iter()
                .map(|p| (p.clone(), subscription.clone()))
                .collect(),
            assignment,
        });
    }
    r.done()?;
    Ok(GroupRecord {
        group_id: group.to_string(),
        protocol_type: (!protocol_type.is_empty()).then_some(protocol_type),
        generation_id,
        protocol_name,
        leader,
        members,
    })
}

/// The JSON records of Fjord versions before Kafka's schemas (read only).
mod legacy {
    use serde::Deserialize;

    use super::StoredRecord;

    #[derive(Deserialize)]
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

    pub(super) fn decode(key: &[u8], value: Option<&[u8]>) -> Result<StoredRecord, String> {
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
            topic_id: Some([9; 16]),
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
        let g = GroupRecord {
            group_id: "g".into(),
            protocol_type: Some("consumer".into()),
            generation_id: 4,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            members: vec![MemberRecord {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 45_000,
                rebalance_timeout_ms: 300_000,
                protocols: vec![("range".into(), vec![1, 2])],
                assignment: vec![3],
            }],
        };
        let (k, v) = group_record("g", Some(&g));
        assert_eq!(
            decode(&k, v.as_deref()).unwrap(),
            StoredRecord::Group {
                group: "g".into(),
                value: Some(g)
            }
        );
    }

    #[test]
    fn bytes_are_kafkas_schemas() {
        // OffsetCommitKey (type 1) and OffsetCommitValue v4, field by field.
        let c = Committed {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp: 5,
            topic_id: Some([9; 16]),
        };
        let (k, v) = offset_record("g", "t", 3, Some(&c));
        assert_eq!(k, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let mut want = vec![0, 4];
        want.extend_from_slice(&42i64.to_be_bytes());
        want.extend_from_slice(&7i32.to_be_bytes());
        want.extend_from_slice(&[2, b'm']); // compact string: length + 1
        want.extend_from_slice(&5i64.to_be_bytes());
        want.extend_from_slice(&[1, 0, 16]); // one tagged field: tag 0, 16 bytes
        want.extend_from_slice(&[9; 16]);
        assert_eq!(v.unwrap(), want);
        // GroupMetadataKey (type 2) and an empty group's GroupMetadataValue v3.
        let empty = GroupRecord {
            group_id: "g".into(),
            protocol_type: Some("consumer".into()),
            generation_id: 2,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
        };
        let (k, v) = group_record("g", Some(&empty));
        assert_eq!(k, [0, 2, 0, 1, b'g']);
        let mut want = vec![0, 3, 0, 8];
        want.extend_from_slice(b"consumer");
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // null protocol, null leader
        want.extend_from_slice(&(-1i64).to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(v.unwrap(), want);
    }

    #[test]
    fn older_kafka_versions_and_legacy_json_decode() {
        // OffsetCommitValue v1 (with an expire timestamp) under the type-0 key.
        let key = [0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 0];
        let mut v = vec![0, 1];
        v.extend_from_slice(&9i64.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&5i64.to_be_bytes());
        v.extend_from_slice(&(-1i64).to_be_bytes());
        let StoredRecord::Offset { value: Some(c), .. } = decode(&key, Some(&v)).unwrap() else {
            panic!("an offset record")
        };
        assert_eq!((c.offset, c.leader_epoch, c.commit_timestamp), (9, -1, 5));
        // A version this build does not know is an error, not a guess.
        let mut v5 = v.clone();
        v5[1] = 5;
        assert!(decode(&key, Some(&v5)).is_err());
        // The JSON of earlier Fjord versions.
        let key = br#"{"type":"offset","group":"g","topic":"t","partition":1}"#;
        assert!(is_legacy(key));
        let value = br#"{"offset":3,"leader_epoch":-1,"metadata":"","commit_timestamp":1}"#;
        assert!(matches!(
            decode(key, Some(value)).unwrap(),
            StoredRecord::Offset {
                value: Some(Committed { offset: 3, .. }),
                ..
            }
        ));
        assert!(
            decode(&[0x12, 0x34, 0, 0], None).is_err(),
            "an unknown record type"
        );
        assert!(decode(&[0, 1, 0, 9, b'g'], None).is_err(), "a short key");
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
            topic_id: None,
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
